//! Before and after the load, on the main thread with the blocking client: the topic's route
//! from the nameservers (with the TBW102 fallback a Java producer uses for a topic that does not
//! exist yet) and queue offsets from the brokers (GET_MAX_OFFSET / GET_MIN_OFFSET).

use std::time::Duration;

use ringmq::client::{ClientError, Connection, NamesrvClient};
use ringmq::protocol::route::TopicRouteData;
use ringmq::remoting::{request, response};

use crate::LoadgenError;

/// Java's `TopicValidator.AUTO_CREATE_TOPIC_KEY_TOPIC`.
const AUTO_CREATE_TOPIC: &str = "TBW102";

const PERM_WRITE: i32 = 2;
const PERM_READ: i32 = 4;

/// One message queue: a broker (index into [`Topology::brokers`]) and a queue id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRef {
    pub broker: usize,
    pub queue_id: i32,
}

/// Where a topic's queues are.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Master address of each broker group that has queues of the topic.
    pub brokers: Vec<String>,
    /// Queues sends go to (writable queues of master brokers).
    pub write: Vec<QueueRef>,
    /// Queues pulls read (readable queues of master brokers).
    pub read: Vec<QueueRef>,
    /// False when the route came from TBW102 (the first send creates the topic).
    pub exists: bool,
}

/// Looks the topic up on each nameserver of `namesrvs` in turn until one answers. A topic the
/// cluster does not know is routed like TBW102 with at most `queue_nums` queues per broker, as
/// the Java producer does (`updateTopicRouteInfoFromNameServer(topic, true, producer)`).
pub fn discover(
    namesrvs: &[String],
    topic: &str,
    queue_nums: i32,
    timeout: Duration,
) -> Result<Topology, LoadgenError> {
    let mut last = None;
    for addr in namesrvs {
        match route_from(addr, topic, timeout) {
            Ok((route, exists)) => return topology(&route, exists, queue_nums, topic),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => LoadgenError::Setup(format!("no route for topic {topic}: {e}")),
        None => LoadgenError::Setup("no nameserver given (-n)".into()),
    })
}

fn route_from(
    addr: &str,
    topic: &str,
    timeout: Duration,
) -> Result<(TopicRouteData, bool), ClientError> {
    let mut ns = NamesrvClient::connect(addr, timeout)?;
    match ns.route(topic) {
        Ok(route) => Ok((route, true)),
        Err(e) if e.code() == Some(response::TOPIC_NOT_EXIST) => ns
            .route(AUTO_CREATE_TOPIC)
            .map(|r| (r, false))
            .map_err(|_| e),
        Err(e) => Err(e),
    }
}

fn topology(
    route: &TopicRouteData,
    exists: bool,
    queue_nums: i32,
    topic: &str,
) -> Result<Topology, LoadgenError> {
    let mut topo = Topology {
        brokers: Vec::new(),
        write: Vec::new(),
        read: Vec::new(),
        exists,
    };
    for q in &route.queue_datas {
        let master = route
            .broker_datas
            .iter()
            .find(|b| b.broker_name == q.broker_name)
            .and_then(|b| b.broker_addrs.get(&0));
        let Some(master) = master else { continue };
        let broker = match topo.brokers.iter().position(|b| b == master) {
            Some(i) => i,
            None => {
                topo.brokers.push(master.clone());
                topo.brokers.len() - 1
            }
        };
        let (writes, reads) = match exists {
            true => (q.write_queue_nums, q.read_queue_nums),
            false => {
                let n = queue_nums.min(q.read_queue_nums);
                (n, n)
            }
        };
        let queues = |n: i32| (0..n).map(move |queue_id| QueueRef { broker, queue_id });
        if q.perm & PERM_WRITE != 0 {
            topo.write.extend(queues(writes));
        }
        if q.perm & PERM_READ != 0 {
            topo.read.extend(queues(reads));
        }
    }
    if topo.write.is_empty() && topo.read.is_empty() {
        return Err(LoadgenError::Setup(format!(
            "the route of {topic} has no queue on a master broker"
        )));
    }
    Ok(topo)
}

/// Which end of a queue.
#[derive(Debug, Clone, Copy)]
pub enum End {
    /// GET_MIN_OFFSET.
    Min,
    /// GET_MAX_OFFSET.
    Max,
}

/// The `end` offset of every queue of `queues`; 0 for a queue the broker does not have (a topic
/// that does not exist yet).
pub fn offsets(
    topo: &Topology,
    queues: &[QueueRef],
    topic: &str,
    end: End,
    timeout: Duration,
    credentials: Option<&ringmq::client::Credentials>,
) -> Result<Vec<i64>, LoadgenError> {
    let code = match end {
        End::Min => request::GET_MIN_OFFSET,
        End::Max => request::GET_MAX_OFFSET,
    };
    let mut conns: Vec<Option<Connection>> = topo.brokers.iter().map(|_| None).collect();
    let mut out = Vec::with_capacity(queues.len());
    for q in queues {
        let conn = match &mut conns[q.broker] {
            Some(conn) => conn,
            slot => {
                let mut conn = Connection::connect(&topo.brokers[q.broker], timeout)?;
                conn.set_credentials(credentials.cloned());
                slot.insert(conn)
            }
        };
        let queue_id = q.queue_id.to_string();
        let fields = [("topic", topic), ("queueId", queue_id.as_str())];
        match conn.offset_call(code, &fields) {
            Ok(offset) => out.push(offset.max(0)),
            Err(e) if e.code().is_some() => out.push(0),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}
