//! `loadgen null-broker`: the cheapest server `loadgen produce` can run against, to measure this
//! machine's floor of CPU per message (`loadgen/cpu.sh`, cases `open-*` with a `null` build).
//!
//! It is its own nameserver and broker on one port: GET_ROUTEINFO_BY_TOPIC answers TBW102 with
//! a route to itself (any other topic is TOPIC_NOT_EXIST, so loadgen takes the TBW102 route and
//! asks for no offsets), and every SEND_MESSAGE / SEND_MESSAGE_V2 / SEND_BATCH_MESSAGE is
//! decoded like the broker decodes it and answered SEND_OK with a per-queue offset, storing
//! nothing. Two servers share [`answer`]:
//!
//! * `--runtime glommio` (default): one glommio executor (ringmq's runtime, one "shard"), a task
//!   per connection that reads what arrived, answers every whole frame in it and writes all the
//!   answers with one write: one read and one write per pass, nothing else.
//! * `--runtime threads`: a blocking std thread per connection, the same loop on plain
//!   read(2)/write(2): the kernel's own floor of a request/response over loopback.
//! * `--runtime hop`: the glommio server, plus a second executor (the "owner" of the odd
//!   queues, as a 2-shard broker owns half the queues on its other shard). Each read pass hands
//!   the bodies of its sends to odd queues to the owner over one cross-executor channel message;
//!   the owner only counts them. The reader still answers every send itself, without waiting
//!   for the owner: less than any 2-shard broker can do (its owner appends before the send is
//!   answered), so this is a lower bound of what handing half the records to another core costs
//!   here — `cpu.sh` runs it in the `*-a2` cases, beside `glommio` in the `*-a1` ones.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use ringmq::limits::FRAME_SIZE_MAX_BYTES;
use ringmq::protocol::route::{to_json_body, BrokerData, QueueData, TopicRouteData};
use ringmq::protocol::send::{SendRequest, SendResponse};
use ringmq::remoting::{next_frame, request, response, RemotingCommand, WireError};
use ringmq::runtime::{spawn_executor, ExecutorOptions};
use thiserror::Error;

/// Java's `TopicValidator.AUTO_CREATE_TOPIC_KEY_TOPIC`: the only topic with a route here.
const AUTO_CREATE_TOPIC: &str = "TBW102";
/// Queues the TBW102 route offers (loadgen uses at most its `--queue-nums` of them).
const ROUTE_QUEUES: i32 = 8;
/// PERM_READ | PERM_WRITE.
const ROUTE_PERM: i32 = 6;
/// Bytes one read takes at most.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// `--runtime hop`: handed batches the owner's inbox holds before the reader waits.
const HOP_INBOX_BATCHES: usize = 1024;

/// Which server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NullRuntime {
    /// One glommio executor, a task per connection.
    Glommio,
    /// A blocking std thread per connection.
    Threads,
    /// The glommio server handing odd queues' records to a second executor.
    Hop,
}

/// `loadgen null-broker`: answers sends without storing them (see the module docs).
#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen null-broker")]
pub struct NullArgs {
    /// Port on 127.0.0.1 serving both the nameserver's route and the sends.
    #[arg(long, default_value_t = 9876)]
    pub port: u16,
    /// glommio (ringmq's runtime, one executor), threads (one blocking thread per connection)
    /// or hop (glommio handing odd queues' records to a second executor).
    #[arg(long, value_enum, default_value_t = NullRuntime::Glommio)]
    pub runtime: NullRuntime,
}

/// Why the null broker stopped.
#[derive(Debug, Error)]
pub enum NullError {
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Listen { port: u16, source: std::io::Error },
    #[error("cannot start executor: {0}")]
    Executor(std::io::Error),
    #[error("executor failed: {0}")]
    Join(String),
}

/// What the null broker remembers: the next offset of each queue it answered for.
pub struct NullState {
    /// Our own address, the broker address of the route.
    addr: SocketAddr,
    offsets: HashMap<(String, i32), i64>,
}

impl NullState {
    /// State of a null broker listening on `addr`.
    pub fn new(addr: SocketAddr) -> NullState {
        NullState {
            addr,
            offsets: HashMap::new(),
        }
    }
}

/// The answer to one request (`None` for a oneway request or a response).
pub fn answer(state: &mut NullState, req: &RemotingCommand) -> Option<RemotingCommand> {
    if req.is_response() || req.is_oneway() {
        return None;
    }
    Some(match req.code {
        request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
            send(state, req)
        }
        request::GET_ROUTEINFO_BY_TOPIC => route(state, req),
        request::HEART_BEAT | request::UNREGISTER_CLIENT => req.success_to(),
        code => req.error_to(
            response::REQUEST_CODE_NOT_SUPPORTED,
            format!("the null broker does not serve request code {code}"),
        ),
    })
}

fn send(state: &mut NullState, req: &RemotingCommand) -> RemotingCommand {
    let header = match SendRequest::from_command(req) {
        Ok(header) => header,
        Err(e) => return req.error_to(response::SYSTEM_ERROR, e.to_string()),
    };
    let queue_id = header.queue_id.max(0);
    let next = state.offsets.entry((header.topic, queue_id)).or_insert(0);
    let queue_offset = *next;
    *next += 1;
    let mut reply = req.success_to();
    SendResponse {
        msg_id: format!("{:032X}", queue_offset),
        queue_id,
        queue_offset,
        transaction_id: None,
        region_id: "DefaultRegion".into(),
        trace_on: false,
    }
    .apply(&mut reply);
    reply
}

fn route(state: &NullState, req: &RemotingCommand) -> RemotingCommand {
    let topic = req.ext("topic").unwrap_or_default();
    if topic != AUTO_CREATE_TOPIC {
        return req.error_to(
            response::TOPIC_NOT_EXIST,
            format!("No topic route info in name server for the topic: {topic}"),
        );
    }
    let route = TopicRouteData {
        broker_datas: vec![BrokerData {
            broker_addrs: [(0, state.addr.to_string())].into_iter().collect(),
            broker_name: "null-broker".into(),
            cluster: "DefaultCluster".into(),
            enable_acting_master: false,
        }],
        filter_server_table: Default::default(),
        order_topic_conf: None,
        queue_datas: vec![QueueData {
            broker_name: "null-broker".into(),
            perm: ROUTE_PERM,
            read_queue_nums: ROUTE_QUEUES,
            topic_sys_flag: 0,
            write_queue_nums: ROUTE_QUEUES,
        }],
    };
    req.success_to().with_body(to_json_body(&route))
}

/// Answers every whole frame at the front of `input` into `output`. Err when a frame is
/// malformed: the connection is then closed.
pub fn answer_all(
    state: &mut NullState,
    input: &mut BytesMut,
    output: &mut BytesMut,
) -> Result<(), WireError> {
    answer_all_handing(state, input, output, None)
}

/// [`answer_all`], and with `handed` the bodies of the sends it answered for odd queues are
/// pushed there (the records a 2-shard broker's reader hands to the other shard).
pub fn answer_all_handing(
    state: &mut NullState,
    input: &mut BytesMut,
    output: &mut BytesMut,
    mut handed: Option<&mut Vec<Bytes>>,
) -> Result<(), WireError> {
    while let Some(frame) = next_frame(input, FRAME_SIZE_MAX_BYTES)? {
        let req = RemotingCommand::decode(frame)?;
        if let Some(reply) = answer(state, &req) {
            let odd_queue = reply
                .ext("queueId")
                .and_then(|q| q.parse::<i32>().ok())
                .is_some_and(|q| q % 2 == 1);
            if let (Some(handed), true) = (handed.as_deref_mut(), odd_queue) {
                handed.push(req.body.clone());
            }
            reply.encode(output)?;
        }
    }
    Ok(())
}

/// Runs `loadgen null-broker` (`args` without the program name) until killed.
pub fn main(args: impl Iterator<Item = String>) -> Result<(), NullError> {
    // Usage errors and --help print and exit here, as for loadgen's other commands.
    let args = NullArgs::parse_from(args);
    match args.runtime {
        NullRuntime::Threads => serve_threads(args.port),
        NullRuntime::Glommio => serve_glommio(args.port),
        NullRuntime::Hop => serve_hop(args.port),
    }
}

fn listen_error(port: u16) -> impl FnOnce(std::io::Error) -> NullError {
    move |source| NullError::Listen { port, source }
}

fn serve_threads(port: u16) -> Result<(), NullError> {
    let listener = reusable_listener(port).map_err(listen_error(port))?;
    let addr = listener.local_addr().map_err(listen_error(port))?;
    let state = std::sync::Arc::new(std::sync::Mutex::new(NullState::new(addr)));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let state = std::sync::Arc::clone(&state);
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            let mut chunk = vec![0u8; READ_CHUNK_BYTES];
            let (mut input, mut output) = (BytesMut::new(), BytesMut::new());
            while let Ok(n @ 1..) = stream.read(&mut chunk) {
                input.extend_from_slice(&chunk[..n]);
                let answered = match state.lock() {
                    Ok(mut state) => answer_all(&mut state, &mut input, &mut output),
                    Err(_) => return,
                };
                if answered.is_err() || stream.write_all(&output).is_err() {
                    return;
                }
                output.clear();
            }
        });
    }
    Ok(())
}

/// A listener on 127.0.0.1:`port` with SO_REUSEADDR and SO_REUSEPORT, as glommio's are: the
/// previous run's connections in TIME_WAIT on the port (from either server, or a broker)
/// must not keep the next run from binding.
fn reusable_listener(port: u16) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn serve_glommio(port: u16) -> Result<(), NullError> {
    serve_reader(port, None)
}

/// Serves `port` on one glommio executor until its accept loop fails; with `to_owner`, the
/// records of odd queues are handed there (`--runtime hop`).
fn serve_reader(port: u16, to_owner: Option<SharedSender<HandedBatch>>) -> Result<(), NullError> {
    let options = ExecutorOptions::control_plane("null-broker");
    let handle = spawn_executor(&options, move || accept_loop(port, to_owner))
        .map_err(NullError::Executor)?;
    match handle.join() {
        Ok(Err(e)) => Err(listen_error(port)(e)),
        Ok(Ok(())) => Ok(()),
        Err(e) => Err(NullError::Join(format!("{e:?}"))),
    }
}

/// One cross-executor message of `--runtime hop`: the bodies one read pass handed over.
type HandedBatch = Vec<Bytes>;

fn serve_hop(port: u16) -> Result<(), NullError> {
    let (to_owner, owner_inbox) = shared_channel::new_bounded::<HandedBatch>(HOP_INBOX_BATCHES);
    let owner = spawn_executor(&ExecutorOptions::control_plane("null-owner"), move || {
        own_odd_queues(owner_inbox)
    })
    .map_err(NullError::Executor)?;
    let served = serve_reader(port, Some(to_owner));
    // The reader's end of the channel is gone with it: the owner's loop ends.
    let _ = owner.join();
    served
}

/// The owner executor of `--runtime hop`: takes every handed batch and counts it.
async fn own_odd_queues(inbox: SharedReceiver<HandedBatch>) -> u64 {
    let inbox = inbox.connect().await;
    let mut records = 0u64;
    while let Some(batch) = inbox.recv().await {
        records += batch.len() as u64;
    }
    records
}

async fn accept_loop(
    port: u16,
    to_owner: Option<SharedSender<HandedBatch>>,
) -> std::io::Result<()> {
    let listener = glommio::net::TcpListener::bind(("127.0.0.1", port))?;
    let state = Rc::new(RefCell::new(NullState::new(listener.local_addr()?)));
    let to_owner = match to_owner {
        Some(sender) => Some(Rc::new(sender.connect().await)),
        None => None,
    };
    loop {
        let stream = listener.accept().await?;
        glommio::spawn_local(serve_glommio_conn(
            stream,
            Rc::clone(&state),
            to_owner.clone(),
        ))
        .detach();
    }
}

async fn serve_glommio_conn(
    mut stream: glommio::net::TcpStream,
    state: Rc<RefCell<NullState>>,
    to_owner: Option<Rc<ConnectedSender<HandedBatch>>>,
) {
    let _ = stream.set_nodelay(true);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let (mut input, mut output) = (BytesMut::new(), BytesMut::new());
    let mut handed = HandedBatch::new();
    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
        input.extend_from_slice(&chunk[..n]);
        let answered = answer_all_handing(
            &mut state.borrow_mut(),
            &mut input,
            &mut output,
            to_owner.is_some().then_some(&mut handed),
        );
        if answered.is_err() {
            return;
        }
        if let (Some(owner), false) = (&to_owner, handed.is_empty()) {
            if owner.send(std::mem::take(&mut handed)).await.is_err() {
                return;
            }
        }
        if stream.write_all(&output).await.is_err() {
            return;
        }
        output.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq::protocol::route::TopicRouteData;

    fn state() -> NullState {
        NullState::new("127.0.0.1:19876".parse().unwrap())
    }

    /// A SEND_MESSAGE_V2 with the fields the broker requires (letters: producerGroup, topic,
    /// queueId, bornTimestamp).
    fn send_request(queue_id: i32, opaque: i32) -> RemotingCommand {
        let mut cmd = RemotingCommand::request(request::SEND_MESSAGE_V2)
            .with_ext("a", "pg")
            .with_ext("b", "T")
            .with_ext("e", queue_id.to_string())
            .with_ext("g", "1")
            .with_body(&b"hello"[..]);
        cmd.opaque = opaque;
        cmd
    }

    #[test]
    fn sends_are_answered_send_ok_with_offsets_per_queue() {
        let mut st = state();
        let offsets: Vec<(i32, i32, String)> = [(1, 10), (1, 11), (2, 12), (1, 13)]
            .into_iter()
            .map(|(q, opaque)| {
                let reply = answer(&mut st, &send_request(q, opaque)).unwrap();
                assert_eq!(reply.code, response::SUCCESS);
                assert!(reply.is_response());
                assert_eq!(reply.ext("queueId"), Some(q.to_string().as_str()));
                (
                    reply.opaque,
                    q,
                    reply.ext("queueOffset").unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            offsets,
            vec![
                (10, 1, "0".into()),
                (11, 1, "1".into()),
                (12, 2, "0".into()),
                (13, 1, "2".into())
            ]
        );
    }

    #[test]
    fn only_tbw102_has_a_route_and_it_points_here() {
        let mut st = state();
        let ask = |topic: &str| {
            let mut cmd =
                RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", topic);
            cmd.opaque = 7;
            cmd
        };
        let missing = answer(&mut st, &ask("Bench")).unwrap();
        assert_eq!(missing.code, response::TOPIC_NOT_EXIST);
        assert!(missing.remark.unwrap().contains("Bench"));
        let found = answer(&mut st, &ask(AUTO_CREATE_TOPIC)).unwrap();
        assert_eq!(found.code, response::SUCCESS);
        let route: TopicRouteData = serde_json::from_slice(&found.body).unwrap();
        assert_eq!(
            route.broker_datas[0]
                .broker_addrs
                .get(&0)
                .map(String::as_str),
            Some("127.0.0.1:19876")
        );
        assert_eq!(route.queue_datas[0].write_queue_nums, ROUTE_QUEUES);
    }

    #[test]
    fn bad_send_header_and_unknown_codes_get_error_codes_and_oneway_gets_nothing() {
        let mut st = state();
        let mut bad = send_request(0, 1);
        bad.ext_fields.as_mut().unwrap().remove("b");
        let reply = answer(&mut st, &bad).unwrap();
        assert_eq!(reply.code, response::SYSTEM_ERROR);
        assert!(reply.remark.is_some());
        let unknown = answer(&mut st, &RemotingCommand::request(request::GET_MAX_OFFSET)).unwrap();
        assert_eq!(unknown.code, response::REQUEST_CODE_NOT_SUPPORTED);
        let mut oneway = send_request(0, 2);
        oneway.set_oneway();
        assert!(answer(&mut st, &oneway).is_none());
    }

    #[test]
    fn answer_all_answers_every_whole_frame_and_keeps_a_partial_one() {
        let mut st = state();
        let mut input = BytesMut::new();
        for opaque in 0..3 {
            send_request(0, opaque).encode(&mut input).unwrap();
        }
        let whole = input.len();
        send_request(0, 3).encode(&mut input).unwrap();
        let partial = input.len() - 5;
        input.truncate(partial);
        let mut output = BytesMut::new();
        answer_all(&mut st, &mut input, &mut output).unwrap();
        assert_eq!(input.len(), partial - whole);
        let mut opaques = Vec::new();
        while let Some(frame) = next_frame(&mut output, FRAME_SIZE_MAX_BYTES).unwrap() {
            let reply = RemotingCommand::decode(frame).unwrap();
            assert_eq!(reply.code, response::SUCCESS);
            opaques.push(reply.opaque);
        }
        assert_eq!(opaques, vec![0, 1, 2]);
    }

    #[test]
    fn answer_all_handing_hands_the_bodies_of_odd_queues_only_and_answers_every_send() {
        let mut st = state();
        let mut input = BytesMut::new();
        for (opaque, queue) in [(0, 0), (1, 1), (2, 2), (3, 3), (4, 1)] {
            let mut req = send_request(queue, opaque);
            req.body = Bytes::from(format!("body-{opaque}"));
            req.encode(&mut input).unwrap();
        }
        let (mut output, mut handed) = (BytesMut::new(), Vec::new());
        answer_all_handing(&mut st, &mut input, &mut output, Some(&mut handed)).unwrap();
        assert_eq!(handed, ["body-1", "body-3", "body-4"].map(Bytes::from));
        let mut answered = 0;
        while let Some(frame) = next_frame(&mut output, FRAME_SIZE_MAX_BYTES).unwrap() {
            assert_eq!(
                RemotingCommand::decode(frame).unwrap().code,
                response::SUCCESS
            );
            answered += 1;
        }
        assert_eq!(answered, 5);
    }

    /// loadgen's own producer, through the route, against each server: every send
    /// acknowledged.
    #[test]
    fn loadgen_produces_against_every_server() {
        use clap::Parser as _;
        for runtime in ["glommio", "threads", "hop"] {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let args = [
                "null-broker",
                "--port",
                &port.to_string(),
                "--runtime",
                runtime,
            ]
            .map(String::from);
            std::thread::spawn(move || main(args.into_iter()));
            let namesrv = format!("127.0.0.1:{port}");
            let lg = crate::Args::parse_from([
                "loadgen",
                "produce",
                "-n",
                &namesrv,
                "-t",
                "NullT",
                "-w",
                "4",
                "--duration",
                "1",
                "--warmup",
                "0",
                "-q",
            ]);
            // The server binds on its own thread: retried until it listens.
            let report = (0..50)
                .find_map(|_| {
                    crate::run(lg.clone()).ok().or_else(|| {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        None
                    })
                })
                .unwrap_or_else(|| panic!("loadgen never ran against the {runtime} null broker"));
            assert!(report.sent_messages > 0, "{runtime}");
            assert_eq!(report.failed_messages, 0, "{runtime}");
        }
    }

    #[test]
    fn a_malformed_frame_is_an_error() {
        let mut st = state();
        let mut input = BytesMut::from(&[0u8, 0, 0, 8, 0, 0, 0, 200, 1, 2, 3, 4][..]);
        let mut output = BytesMut::new();
        assert!(answer_all(&mut st, &mut input, &mut output).is_err());
    }
}
