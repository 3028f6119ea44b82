//! SEND_MESSAGE (10), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320) on the shard that owns
//! the target queue (PROTOCOL.md §7.2): checks, topic auto-creation, building the stored record
//! once, the put, and the flush wait under SYNC_FLUSH.

use bytes::BytesMut;

use super::{field_failure, Failure};
use crate::broker::shard::{Origin, Shard};
use crate::broker::topic_config::{check_send_topic, perm};
use crate::message::properties::{self, Properties};
use crate::message::record::{RecordInput, RecordSlots};
use crate::message::{batch, offset_msg_id, sysflag};
use crate::protocol::register::TopicConfig;
use crate::protocol::send::{SendRequest, SendResponse};
use crate::remoting::{response as resp, RemotingCommand};
use crate::store::{PutStatus, StoreError};

impl Shard {
    pub(super) async fn send(
        &self,
        origin: Origin,
        cmd: &RemotingCommand,
    ) -> Result<RemotingCommand, Failure> {
        let request = SendRequest::from_command(cmd).map_err(field_failure)?;
        if !self.ctx.writable() {
            let remark = format!(
                "the broker[{}] sending message is forbidden (it is a slave or its write permission is off)",
                self.ctx.broker_addr
            );
            return Err((resp::SERVICE_NOT_AVAILABLE, remark));
        }
        check_send_topic(&request.topic).map_err(|r| (resp::SYSTEM_ERROR, r))?;
        let topic = self.send_topic(&request).await?;
        let queue_id = check_queue(&request, &topic)?;
        let max = self.ctx.cfg.max_message_size_bytes as usize;
        if cmd.body.len() > max {
            let remark = format!(
                "the message body size {} exceeds the limit of {max} bytes (maxMessageSize)",
                cmd.body.len()
            );
            return Err((resp::MESSAGE_ILLEGAL, remark));
        }
        let mut props = Properties::parse(&request.properties);
        let wait = props
            .remove(properties::WAIT)
            .is_none_or(|w| !w.eq_ignore_ascii_case("false"));
        refuse_unsupported(&props, &request)?;
        props.set(properties::CLUSTER, &self.ctx.cfg.broker_cluster_name);
        let records = if request.batch {
            self.batch_records(origin, &request, queue_id, &props, &cmd.body)?
        } else {
            vec![self.record(
                origin,
                &request,
                queue_id,
                request.flag,
                &cmd.body,
                &props.to_wire(),
            )?]
        };
        let result = self
            .store
            .put_batch(records, wait)
            .await
            .map_err(store_failure)?;
        let msg_ids: Vec<String> = result
            .physical_offsets
            .iter()
            .map(|p| offset_msg_id(self.ctx.store_host, *p))
            .collect();
        let code = match result.status {
            PutStatus::PutOk => resp::SUCCESS,
            PutStatus::FlushDiskTimeout => resp::FLUSH_DISK_TIMEOUT,
        };
        let mut response = cmd.response_to(code, None);
        SendResponse {
            msg_id: msg_ids.join(","),
            queue_id,
            queue_offset: result.queue_offset,
            transaction_id: None,
            region_id: self.ctx.cfg.region_id.clone(),
            trace_on: self.ctx.cfg.trace_on,
        }
        .apply(&mut response);
        Ok(response)
    }

    /// The topic's config, auto-creating it when allowed; NO_PERMISSION when not writable.
    async fn send_topic(&self, request: &SendRequest) -> Result<TopicConfig, Failure> {
        let existing = self.topic(&request.topic);
        let topic = match existing {
            Some(t) => t,
            None => self
                .create_topic_for_send(
                    &request.topic,
                    &request.default_topic,
                    request.default_topic_queue_nums,
                    0,
                )
                .await
                .ok_or_else(|| {
                    let remark = format!(
                        "topic[{}] not exist, apply first please! (autoCreateTopicEnable is off \
                         or the template topic {} is missing)",
                        request.topic, request.default_topic
                    );
                    (resp::TOPIC_NOT_EXIST, remark)
                })?,
        };
        if topic.perm & perm::WRITE == 0 {
            return Err((
                resp::NO_PERMISSION,
                format!("the topic[{}] sending message is forbidden", request.topic),
            ));
        }
        Ok(topic)
    }

    fn record(
        &self,
        origin: Origin,
        request: &SendRequest,
        queue_id: i32,
        flag: i32,
        body: &[u8],
        properties: &str,
    ) -> Result<(BytesMut, RecordSlots), Failure> {
        let input = RecordInput {
            topic: &request.topic,
            queue_id,
            flag,
            sys_flag: request.sys_flag,
            born_timestamp: request.born_timestamp,
            born_host: origin.peer,
            store_host: self.ctx.store_host,
            reconsume_times: request.reconsume_times,
            prepared_transaction_offset: 0,
            body,
            properties,
        };
        let mut buf = BytesMut::with_capacity(input.encoded_len());
        let slots = input
            .encode(&mut buf)
            .map_err(|e| (resp::MESSAGE_ILLEGAL, e.to_string()))?;
        Ok((buf, slots))
    }

    /// One stored record per batch element, each with the header's properties appended.
    fn batch_records(
        &self,
        origin: Origin,
        request: &SendRequest,
        queue_id: i32,
        header_props: &Properties,
        body: &[u8],
    ) -> Result<Vec<(BytesMut, RecordSlots)>, Failure> {
        let elements = batch::decode(body).map_err(|e| (resp::MESSAGE_ILLEGAL, e.to_string()))?;
        if elements.is_empty() {
            return Err((resp::MESSAGE_ILLEGAL, "the batch is empty".into()));
        }
        elements
            .iter()
            .map(|e| {
                let mut props = Properties::parse(e.properties);
                if props.get(properties::DELAY).is_some() {
                    return Err((
                        resp::MESSAGE_ILLEGAL,
                        "a batch message may not be delayed".into(),
                    ));
                }
                for (k, v) in header_props.iter() {
                    props.set(k, v);
                }
                self.record(origin, request, queue_id, e.flag, e.body, &props.to_wire())
            })
            .collect()
    }
}

/// The target queue: `queueId` as sent (the route picked it); it must exist.
fn check_queue(request: &SendRequest, topic: &TopicConfig) -> Result<i32, Failure> {
    let max = topic.write_queue_nums.max(topic.read_queue_nums);
    if request.queue_id < 0 || request.queue_id >= max {
        let remark = format!(
            "request queueId[{}] is illegal, topic:[{}] topicConfig.writeQueueNums:[{}] producer:[{}]",
            request.queue_id, request.topic, topic.write_queue_nums, request.producer_group
        );
        return Err((resp::SYSTEM_ERROR, remark));
    }
    Ok(request.queue_id)
}

/// Message kinds this broker does not store yet are refused plainly rather than stored wrong.
fn refuse_unsupported(props: &Properties, request: &SendRequest) -> Result<(), Failure> {
    let delayed = props
        .get(properties::DELAY)
        .is_some_and(|d| d.trim().parse::<i32>().unwrap_or(0) > 0);
    let transactional = props
        .get(properties::TRAN_MSG)
        .is_some_and(|t| t.eq_ignore_ascii_case("true"))
        || request.sys_flag & sysflag::TRANSACTION_MASK == sysflag::TRANSACTION_PREPARED;
    let retry = request
        .topic
        .starts_with(crate::broker::topic_config::RETRY_GROUP_TOPIC_PREFIX);
    let unsupported = match (delayed, transactional, retry) {
        (true, _, _) => "delayed messages (DELAY)",
        (_, true, _) => "transactional messages (TRAN_MSG)",
        (_, _, true) => "sends to retry topics",
        _ => return Ok(()),
    };
    Err((
        resp::SYSTEM_ERROR,
        format!("this ringmq broker does not store {unsupported} yet"),
    ))
}

fn store_failure(e: StoreError) -> Failure {
    match e {
        StoreError::RecordTooLarge { .. } | StoreError::BadRecord { .. } => {
            (resp::MESSAGE_ILLEGAL, e.to_string())
        }
        StoreError::Busy { .. } => (resp::SYSTEM_BUSY, format!("[PC_SYNCHRONIZED] {e}")),
        StoreError::Unwritable { .. } | StoreError::ShutDown | StoreError::FlushFailed { .. } => {
            (resp::SERVICE_NOT_AVAILABLE, e.to_string())
        }
        other => (resp::SYSTEM_ERROR, other.to_string()),
    }
}
