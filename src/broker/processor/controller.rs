//! Requests of controller mode (DESIGN.md, HA.md): GET_BROKER_EPOCH_CACHE (every shard's HA
//! epochs), NOTIFY_BROKER_ROLE_CHANGED (the agent reads its group at once) and
//! RINGMQ_FENCE_REPLICA (the followers stop acknowledging before an election). Replication
//! itself lives in [`crate::broker::replication`].

use super::Failure;
use crate::broker::context::BrokerContext;
use crate::broker::mesh_proto::{HaStatus, MeshRequest, MeshResponse, Origin};
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::replication::gather_status;
use crate::ha::history::History;
use crate::remoting::{response as resp, RemotingCommand};
use crate::store::commitlog::to_physical;

/// GET_BROKER_EPOCH_CACHE (mqadmin getBrokerEpoch): every shard's epochs (its HA history:
/// one entry per master start, numbered after the controller's master epoch), with start
/// and end as physical offsets (the shard in bits 45–52), and the last shard's end.
pub(crate) async fn epoch_cache(
    ctx: &BrokerContext,
    here: HaStatus,
    mesh: &MeshClient,
    command: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let cfg = &ctx.cfg;
    if !cfg.enable_controller_mode {
        return Err((
            resp::SYSTEM_ERROR,
            "this request only for controllerMode ".to_string(),
        ));
    }
    let mut statuses = gather_status(here, mesh).await;
    statuses.sort_by_key(|s| s.shard);
    let (mut list, mut max) = (Vec::new(), 0);
    for status in statuses {
        // A few hundred bytes per shard, read on an admin request (not a hot path).
        let path = History::path(&cfg.store_path_root_dir, status.shard);
        let history = History::load(&path).map_err(|e| (resp::SYSTEM_ERROR, e.to_string()))?;
        let at = |pos: u64| to_physical(status.shard as u8, pos.min(status.end));
        for (k, e) in history.epochs.iter().enumerate() {
            let end = history.epochs.get(k + 1).map_or(status.end, |n| n.start);
            list.push(serde_json::json!({
                "epoch": e.epoch, "startOffset": at(e.start), "endOffset": at(end),
            }));
        }
        max = at(status.end);
    }
    let body = serde_json::json!({
        "clusterName": cfg.broker_cluster_name,
        "brokerName": cfg.broker_name,
        "brokerId": cfg.broker_id,
        "epochList": list,
        "maxOffset": max,
    });
    Ok(command
        .success_to()
        .with_body(serde_json::to_vec(&body).expect("serializes")))
}

/// NOTIFY_BROKER_ROLE_CHANGED from the controller: the broker's agent reads its group's
/// master at once (instead of at its next `syncBrokerMetadataPeriod`).
pub(crate) fn role_changed_notice(
    ctx: &BrokerContext,
    command: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    match &ctx.sync_state {
        Some(view) => {
            view.notify();
            Ok(command.success_to())
        }
        None => Err((
            resp::REQUEST_CODE_NOT_SUPPORTED,
            "this broker is not in controller mode (enableControllerMode=false)".to_string(),
        )),
    }
}

/// RINGMQ_FENCE_REPLICA from the controller leader, before it elects this replica at
/// (`masterEpoch`, `syncStateSetEpoch`): the followers acknowledge nothing more to any
/// master until the agent lifts the fence (it reads a newer state of the group: the
/// election happened, or can never commit). Answered once every shard ran past the fence,
/// so no acknowledgement leaves this broker after the answer and the old master, whose
/// every SEND_OK needs this replica, acknowledges nothing once the election commits.
/// Only a controller's host (an address of `controllerAddr`) may fence: anyone else could
/// stop the master's acknowledgements with it.
pub(crate) async fn fence_for_election(
    ctx: &BrokerContext,
    mesh: &MeshClient,
    origin: Origin,
    command: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let Some(view) = &ctx.sync_state else {
        return Err((
            resp::REQUEST_CODE_NOT_SUPPORTED,
            "this broker is not in controller mode (enableControllerMode=false)".to_string(),
        ));
    };
    if !view.is_controller_host(origin.peer.ip()) {
        return Err((
            resp::NO_PERMISSION,
            format!(
                "{} is not a controller of this broker (controllerAddr): only its \
                 controllers may fence it",
                origin.peer.ip()
            ),
        ));
    }
    let number = |k: &str| {
        command
            .ext(k)
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| {
                (
                    resp::CONTROLLER_INVALID_REQUEST,
                    format!("the header lacks a numeric {k}"),
                )
            })
    };
    let (master_epoch, sync_state_set_epoch) =
        (number("masterEpoch")?, number("syncStateSetEpoch")?);
    view.fence(master_epoch, sync_state_set_epoch);
    // A barrier: every shard's thread runs once after the fence went on, so a follower
    // that checked it just before has sent its acknowledgement by now.
    if let Some(shards) = mesh.get() {
        for shard in (0..mesh.shards()).filter(|s| *s != mesh.here()) {
            if !matches!(
                shards.call(shard, MeshRequest::HaStatus).await,
                Ok(MeshResponse::Ha(_))
            ) {
                return Err((
                    resp::SYSTEM_ERROR,
                    format!("shard {shard} did not take the fence"),
                ));
            }
        }
    }
    tracing::info!(
        master_epoch,
        sync_state_set_epoch,
        "fenced by the controller for an election: no more acknowledgements to the master"
    );
    Ok(command.success_to())
}
