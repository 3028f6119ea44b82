//! Handing records to the shard that owns their queue, many per mesh message (DESIGN.md: the
//! shard that reads a request decodes it and builds the stored record; the owner only appends
//! and assigns offsets).
//!
//! Records for another shard that are put during one run of the executor's ready tasks (the
//! requests of one socket read, the sends of many connections that woke together) go into one
//! open [`HopBatch`] per destination. The first record of a batch spawns the task that sends
//! it: glommio runs tasks in the order they became ready, so that task runs after the other
//! requests already woken and carries all of their records in one `PutMany`, answered by one
//! message. One cross-shard wake-up per batch instead of two per message. Each put then waits
//! on the batch's `done` watch and takes its own result. Order is kept: batches to one shard
//! leave in order over one FIFO channel, and the owner appends a batch's records in order.
//!
//! **Sends answered by the owner.** A plain send (SEND_MESSAGE/V2, one message, not oneway,
//! not transactional, not under SYNC_MASTER) goes with a [`Ticket`]: what its SEND response
//! needs and the connection's [`SocketLink`]. Its records travel in a `PutHanded` batch that is
//! told, not called: the owner appends them and, with each put's result (under SYNC_FLUSH once
//! it is durable, as the reader would have answered), encodes the response and writes it on
//! the client's socket itself. The reader is not woken for these answers: the request gave its
//! claim on the connection back when it was handed over, and the connection's bound on answers
//! owed by other shards (`CONNECTION_DIRECT_ANSWERS_MAX`) is kept in the link. What the owner
//! cannot write cleanly (the write lock held, the socket full, an error) it hands back to the
//! reader to queue ([`Handback`]). The reader keeps a copy of each handed send's response
//! header until the owner has answered it ([`HandedProgress`]), so a shard that dies holding
//! them gets them answered with an error by the reader, as a failed call would.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;

use crate::broker::consumer_groups::ChannelId;
use crate::message::record::RecordSlots;
use crate::net::socket_link::{SocketLink, TryWrite};
use crate::net::Connection;
use crate::remoting::RemotingCommand;
use crate::runtime::OffsetWatch;
use crate::store::{PutResult, StoreError, StoreResult};

/// One record put as [`crate::store::MessageStore::put`] takes it, and its WAIT property.
pub type HopItem = (BytesMut, RecordSlots, bool);

/// Records on their way to one shard, and their results once it answered.
pub struct HopBatch {
    items: RefCell<Vec<HopItem>>,
    results: RefCell<Vec<Option<StoreResult<PutResult>>>>,
    /// Set when the sending task took the items: later puts start a new batch.
    sealed: Cell<bool>,
    /// Moves to 1 when `results` are in.
    done: OffsetWatch,
}

impl HopBatch {
    /// Takes the records to send (once).
    pub fn seal(&self) -> Vec<HopItem> {
        self.sealed.set(true);
        std::mem::take(&mut *self.items.borrow_mut())
    }

    /// Stores the owner's answers (one per record, in order) and releases the waiting puts.
    pub fn finish(&self, results: Vec<StoreResult<PutResult>>) {
        *self.results.borrow_mut() = results.into_iter().map(Some).collect();
        self.done.advance(1);
    }

    /// Fails every record of the batch with `reason` (the owner could not be reached).
    pub fn fail(&self, reason: &str, count: usize) {
        let results = (0..count)
            .map(|_| {
                Err(StoreError::Unwritable {
                    reason: reason.to_string(),
                })
            })
            .collect();
        self.finish(results);
    }

    /// Waits for this batch's answer and takes the result of record `index`.
    pub async fn result(&self, index: usize) -> StoreResult<PutResult> {
        let _ = self.done.wait_for(1).await;
        let taken = self
            .results
            .borrow_mut()
            .get_mut(index)
            .and_then(Option::take);
        taken.unwrap_or_else(|| Err(no_answer()))
    }
}

/// The result of a record the owning shard's answer did not cover.
fn no_answer() -> StoreError {
    StoreError::Unwritable {
        reason: "the owning shard gave no answer for this record".into(),
    }
}

/// Whether handed sends are answered by the owner (on unless `RINGMQ_DIRECT_ANSWERS=0` is in
/// the broker's environment, to compare both ways with one binary).
pub fn owner_answers() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("RINGMQ_DIRECT_ANSWERS").map_or(true, |v| v != "0"))
}

/// Answers to handed sends owners of this process wrote on sockets themselves (tests read it
/// to know the way was taken).
static OWNER_WRITTEN: AtomicU64 = AtomicU64::new(0);

/// How many answers to handed sends their owners wrote themselves, in this process so far.
pub fn answers_written_by_owners() -> u64 {
    OWNER_WRITTEN.load(Ordering::Relaxed)
}

/// What the owner needs to answer a handed send on the client's connection itself.
pub struct Ticket {
    /// The connection's socket (write lock, owed answers).
    pub link: Arc<SocketLink>,
    /// The client's address and connection (the request's `Origin`).
    pub peer: std::net::SocketAddr,
    pub channel: ChannelId,
    /// The response's frame fields (opaque, serialize type); `code` holds the request's code.
    pub head: RemotingCommand,
    /// The queue id the response reports.
    pub queue_id: i32,
    /// The topic the record is stored in (the owner counts the put).
    pub topic: String,
}

/// A handed send: its record as [`HopItem`] and its ticket.
pub type HandedItem = (HopItem, Ticket);

/// How many of a `PutHanded` batch's sends the owner has answered (in order), shared by the
/// owner and the reader.
#[derive(Default)]
pub struct HandedProgress {
    answered: AtomicUsize,
}

/// What the owner gives back to the reader shard of a connection.
pub enum Handback {
    /// Queue these answers (the owner could not write them).
    Answers {
        channel: ChannelId,
        answers: Vec<RemotingCommand>,
    },
    /// A partial write's remainder waits in the link: wake the connection's writer.
    Nudge { channel: ChannelId },
}

impl Handback {
    /// The connection it is for.
    pub fn channel(&self) -> ChannelId {
        match self {
            Handback::Answers { channel, .. } | Handback::Nudge { channel } => *channel,
        }
    }
}

/// On the owner: answers handed sends (`tickets`, in order, with their `results`) on their
/// connections' sockets, runs of one connection in one write; `respond` builds each answer.
/// Returns what must go back to the readers.
pub fn answer_handed(
    tickets: Vec<Ticket>,
    results: Vec<StoreResult<PutResult>>,
    progress: &HandedProgress,
    respond: impl Fn(&Ticket, StoreResult<PutResult>) -> RemotingCommand,
) -> Vec<Handback> {
    let mut handbacks = Vec::new();
    let mut frames = BytesMut::new();
    let mut run: Vec<RemotingCommand> = Vec::new();
    let mut results = results.into_iter();
    let mut tickets = tickets.into_iter().peekable();
    while let Some(ticket) = tickets.next() {
        let result = results.next().unwrap_or_else(|| Err(no_answer()));
        let answer = respond(&ticket, result);
        if let Err(e) = answer.encode(&mut frames) {
            tracing::error!(opaque = answer.opaque, error = %e, "answer not encoded");
        }
        run.push(answer);
        let same_next = tickets
            .peek()
            .is_some_and(|next| Arc::ptr_eq(&next.link, &ticket.link));
        if same_next {
            continue;
        }
        let count = run.len();
        match ticket.link.try_write(&frames) {
            TryWrite::NotWritten => handbacks.push(Handback::Answers {
                channel: ticket.channel,
                answers: std::mem::take(&mut run),
            }),
            written => {
                OWNER_WRITTEN.fetch_add(count as u64, Ordering::Relaxed);
                ticket.link.answered(count);
                run.clear();
                if written == TryWrite::Partial {
                    handbacks.push(Handback::Nudge {
                        channel: ticket.channel,
                    });
                }
            }
        }
        frames.clear();
        progress.answered.fetch_add(count, Ordering::AcqRel);
    }
    handbacks
}

/// A `PutHanded` batch the reader sent and the owner may not have answered whole yet: each
/// send's connection and response header, for an error answer if the owner goes away.
struct Handed {
    to: usize,
    progress: Arc<HandedProgress>,
    owed: Vec<(Weak<Connection>, RemotingCommand)>,
}

/// Handed sends on their way to one shard, each with its connection.
pub type OpenHanded = RefCell<Vec<(HandedItem, Weak<Connection>)>>;

/// The handed batches one shard sent whose answers may still be owed.
#[derive(Default)]
pub struct HandedRegistry {
    sent: RefCell<Vec<Handed>>,
}

impl HandedRegistry {
    /// Takes a handed batch to send to `to`: its items, and the progress the owner reports,
    /// kept here (with copies of the response headers) until every send is answered.
    pub fn seal(&self, to: usize, batch: &OpenHanded) -> (Vec<HandedItem>, Arc<HandedProgress>) {
        let taken = std::mem::take(&mut *batch.borrow_mut());
        let mut owed = Vec::with_capacity(taken.len());
        let items = taken
            .into_iter()
            .map(|(item, conn)| {
                owed.push((conn, item.1.head.clone()));
                item
            })
            .collect();
        let progress = Arc::new(HandedProgress::default());
        let mut sent = self.sent.borrow_mut();
        sent.retain(|h| h.progress.answered.load(Ordering::Acquire) < h.owed.len());
        sent.push(Handed {
            to,
            progress: Arc::clone(&progress),
            owed,
        });
        (items, progress)
    }

    /// Shard `to` is gone (or could not be told): the sends handed to it that it has not
    /// answered get `error(head)` from here. Returns the answers to queue, with their
    /// connections.
    pub fn fail(
        &self,
        to: usize,
        error: impl Fn(&RemotingCommand) -> RemotingCommand,
    ) -> Vec<(Rc<Connection>, RemotingCommand)> {
        let mut failed = Vec::new();
        self.sent.borrow_mut().retain(|h| {
            if h.to != to {
                return true;
            }
            // Nothing more comes from a shard that is gone: what it has answered is final.
            let answered = h.progress.answered.swap(h.owed.len(), Ordering::AcqRel);
            for (conn, head) in h.owed.iter().skip(answered) {
                if let Some(conn) = conn.upgrade() {
                    failed.push((conn, error(head)));
                }
            }
            false
        });
        failed
    }

    /// Handed sends whose answers may still be owed.
    pub fn owed(&self) -> usize {
        self.sent
            .borrow()
            .iter()
            .map(|h| {
                h.owed
                    .len()
                    .saturating_sub(h.progress.answered.load(Ordering::Acquire))
            })
            .sum()
    }
}

/// The open batch per destination shard of one shard.
#[derive(Default)]
pub struct PutHop {
    open: RefCell<HashMap<usize, Rc<HopBatch>>>,
    /// Handed sends not yet sent, per destination.
    open_handed: RefCell<HashMap<usize, Rc<OpenHanded>>>,
    /// Handed batches sent whose answers may still be owed.
    handed: Rc<HandedRegistry>,
}

impl PutHop {
    /// Adds a record for shard `to`. Returns its batch, its index in it, and whether this
    /// record opened the batch (the caller then spawns the task that sends it).
    pub fn enqueue(&self, to: usize, item: HopItem) -> (Rc<HopBatch>, usize, bool) {
        // Records for one shard leave in the order they were put: a handed batch opened
        // before this record takes no record put after it.
        self.open_handed.borrow_mut().remove(&to);
        let mut open = self.open.borrow_mut();
        let fresh = || {
            Rc::new(HopBatch {
                items: RefCell::new(Vec::new()),
                results: RefCell::new(Vec::new()),
                sealed: Cell::new(false),
                done: OffsetWatch::new(0),
            })
        };
        let batch = open.entry(to).or_insert_with(fresh);
        let opened = batch.sealed.get() || batch.items.borrow().is_empty();
        if batch.sealed.get() {
            *batch = fresh();
        }
        let mut items = batch.items.borrow_mut();
        items.push(item);
        (Rc::clone(batch), items.len() - 1, opened)
    }

    /// Adds a handed send for shard `to` (`conn`: its connection). Returns the open batch and
    /// whether this send opened it (the caller then spawns the task that sends it, which
    /// takes the batch with [`HandedRegistry::seal`]).
    pub fn enqueue_handed(
        &self,
        to: usize,
        item: HandedItem,
        conn: Weak<Connection>,
    ) -> (Rc<OpenHanded>, bool) {
        // In order with plain records for `to` (see `enqueue`).
        self.open.borrow_mut().remove(&to);
        let mut open = self.open_handed.borrow_mut();
        let batch = open.entry(to).or_default();
        let mut items = batch.borrow_mut();
        let opened = items.is_empty();
        items.push((item, conn));
        drop(items);
        (Rc::clone(batch), opened)
    }

    /// The handed batches this shard sent.
    pub fn handed(&self) -> &Rc<HandedRegistry> {
        &self.handed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> HopItem {
        (
            BytesMut::new(),
            RecordSlots {
                store_timestamp_at: 0,
            },
            false,
        )
    }

    #[test]
    fn records_share_a_batch_until_it_is_sealed_then_a_new_one_opens() {
        let hop = PutHop::default();
        let (a, ia, opened_a) = hop.enqueue(1, item());
        let (b, ib, opened_b) = hop.enqueue(1, item());
        let (c, _, opened_c) = hop.enqueue(2, item());
        assert!(opened_a && !opened_b && opened_c);
        assert!(Rc::ptr_eq(&a, &b) && !Rc::ptr_eq(&a, &c));
        assert_eq!((ia, ib), (0, 1));
        assert_eq!(a.seal().len(), 2);
        let (d, id, opened_d) = hop.enqueue(1, item());
        assert!(opened_d && !Rc::ptr_eq(&a, &d));
        assert_eq!(id, 0);
    }

    fn ticket(link: &Arc<SocketLink>, opaque: i32) -> Ticket {
        let mut request = RemotingCommand::request(crate::remoting::request::SEND_MESSAGE_V2);
        request.opaque = opaque;
        Ticket {
            link: Arc::clone(link),
            peer: "127.0.0.1:1".parse().unwrap(),
            channel: ChannelId {
                shard: 0,
                connection: 7,
            },
            head: request.response_to(request.code, None),
            queue_id: 3,
            topic: "T".into(),
        }
    }

    fn handed(link: &Arc<SocketLink>, opaque: i32) -> HandedItem {
        (item(), ticket(link, opaque))
    }

    #[test]
    fn plain_and_handed_records_for_one_shard_never_overtake_each_other() {
        let hop = PutHop::default();
        let link = Arc::new(SocketLink::new(-1));
        let (first, opened_first) = hop.enqueue_handed(1, handed(&link, 1), Weak::new());
        let (plain, _, opened_plain) = hop.enqueue(1, item());
        // A handed record after the plain one opens a new handed batch, sent after it.
        let (second, opened_second) = hop.enqueue_handed(1, handed(&link, 2), Weak::new());
        assert!(opened_first && opened_plain && opened_second);
        assert!(!Rc::ptr_eq(&first, &second));
        assert_eq!(first.borrow().len(), 1);
        // And a plain record after that opens a new plain batch.
        let (later, _, opened_later) = hop.enqueue(1, item());
        assert!(opened_later && !Rc::ptr_eq(&plain, &later));
        // Another shard's batches are not closed by them.
        let (other, _) = hop.enqueue_handed(2, handed(&link, 3), Weak::new());
        hop.enqueue(1, item());
        let (same_other, opened) = hop.enqueue_handed(2, handed(&link, 4), Weak::new());
        assert!(!opened && Rc::ptr_eq(&other, &same_other));
    }

    fn read_answers(peer: &mut std::os::unix::net::UnixStream) -> Vec<RemotingCommand> {
        use std::io::Read;
        peer.set_nonblocking(true).unwrap();
        let mut bytes = Vec::new();
        let _ = peer.read_to_end(&mut bytes);
        let mut answers = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let frame = bytes::Bytes::copy_from_slice(&bytes[at..at + 4 + len]);
            answers.push(RemotingCommand::decode(frame).unwrap());
            at += 4 + len;
        }
        answers
    }

    #[test]
    fn the_owner_writes_each_connections_answers_and_hands_back_what_it_cannot() {
        use std::os::fd::AsRawFd;
        let (a, mut a_peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let (b, mut b_peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let (link_a, link_b) = (
            Arc::new(SocketLink::new(a.as_raw_fd())),
            Arc::new(SocketLink::new(b.as_raw_fd())),
        );
        for _ in 0..3 {
            assert!(link_a.claim_answer());
        }
        assert!(link_b.claim_answer());
        // Connection b's reader is writing: its answer goes back to it.
        assert_eq!(link_b.lock_for_reader(), Some(None));
        let tickets = vec![
            ticket(&link_a, 1),
            ticket(&link_a, 2),
            ticket(&link_b, 3),
            ticket(&link_a, 4),
        ];
        let ok = |q| {
            Ok(PutResult {
                status: crate::store::PutStatus::PutOk,
                physical_offset: 0,
                queue_offset: q,
                store_timestamp: 0,
                wrote_bytes: 0,
            })
        };
        let failed = Err(StoreError::Busy { unflushed_bytes: 1 });
        let results = vec![ok(10), failed, ok(11), ok(12)];
        let progress = HandedProgress::default();
        let respond = |t: &Ticket, r: StoreResult<PutResult>| {
            let code = if r.is_ok() { 0 } else { 1 };
            RemotingCommand {
                code,
                ..t.head.clone()
            }
        };
        let handbacks = answer_handed(tickets, results, &progress, respond);
        assert_eq!(progress.answered.load(Ordering::Acquire), 4);
        let opaques = |answers: &[RemotingCommand]| {
            answers
                .iter()
                .map(|c| (c.opaque, c.code))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            opaques(&read_answers(&mut a_peer)),
            [(1, 0), (2, 1), (4, 0)]
        );
        assert!(read_answers(&mut b_peer).is_empty());
        // a's answers were written (its places given back); b's is handed back, still owed.
        assert_eq!((link_a.owed(), link_b.owed()), (0, 1));
        match handbacks.as_slice() {
            [Handback::Answers { answers, channel }] => {
                assert_eq!(opaques(answers), [(3, 0)]);
                assert_eq!(channel.connection, 7);
            }
            _ => panic!("one hand-back expected"),
        }
        link_b.unlock_for_reader();
        drop((a, b));
    }

    #[test]
    fn sends_handed_to_a_shard_that_goes_away_are_failed_once_from_the_reader() {
        let hop = PutHop::default();
        let link = Arc::new(SocketLink::new(-1));
        let (batch, _) = hop.enqueue_handed(1, handed(&link, 1), Weak::new());
        hop.enqueue_handed(1, handed(&link, 2), Weak::new());
        let (items, progress) = hop.handed().seal(1, &batch);
        assert_eq!(items.len(), 2);
        assert_eq!(hop.handed().owed(), 2);
        // The owner answered the first before it went away.
        progress.answered.fetch_add(1, Ordering::AcqRel);
        assert_eq!(hop.handed().owed(), 1);
        // (The connection is gone here, so nothing is returned to queue; what matters is
        // that the registry forgets the batch and a second sweep finds nothing.)
        let failed = hop.handed().fail(1, |head| head.clone());
        assert!(failed.is_empty());
        assert_eq!(hop.handed().owed(), 0);
        assert!(hop.handed().fail(1, |head| head.clone()).is_empty());
    }

    #[test]
    fn each_put_takes_its_own_result_and_a_failed_hop_fails_them_all() {
        crate::store::test_support::run(async {
            let hop = PutHop::default();
            let (batch, _, _) = hop.enqueue(1, item());
            hop.enqueue(1, item());
            let ok = |q| PutResult {
                status: crate::store::PutStatus::PutOk,
                physical_offset: 0,
                queue_offset: q,
                store_timestamp: 0,
                wrote_bytes: 0,
            };
            batch.finish(vec![Ok(ok(7)), Ok(ok(8))]);
            assert_eq!(batch.result(1).await.unwrap().queue_offset, 8);
            assert_eq!(batch.result(0).await.unwrap().queue_offset, 7);
            let (failed, _, _) = hop.enqueue(1, item());
            let count = failed.seal().len();
            failed.fail("shard 1 is gone", count);
            assert!(matches!(
                failed.result(0).await,
                Err(StoreError::Unwritable { .. })
            ));
        });
    }
}
