//! The errors of replication: [`ProtoError`] (a HELLO, WELCOME or FRAME that does not
//! decode), [`HaError`] (why a link ended or a handshake failed), [`StaleMaster`] (controller
//! mode's epoch check) and [`AuthRefusal`] (why a master with ACL on refuses a slave). Their
//! texts are what the logs and the WELCOME refusals carry.

use std::io;

use super::proto::VERSION;
use crate::store::StoreError;

/// A handshake or frame that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("message ends early")]
    EndsEarly,
    #[error("text is not UTF-8")]
    NotUtf8,
    #[error(
        "not a ringmq HA peer (magic {0:#010x}); is this the master's HA port (listenPort + 1)?"
    )]
    Magic(u32),
    #[error(
        "the slave is a ringmq from before the 53-bit offset layout (HA protocol version \
         {0}: its records carry the shard in bits 56-63 of their physical offsets, this \
         master's in bits 45-52); a master and a slave of different offset layouts cannot \
         replicate: upgrade the slave (its store must be migrated as the broker's start-up \
         message explains)"
    )]
    OldOffsetLayout(u16),
    #[error("HA protocol version {0}, this broker speaks {VERSION}")]
    Version(u16),
    #[error("unknown action {0}")]
    Action(u8),
    #[error("unknown verdict {0}")]
    Verdict(u8),
    #[error("unknown frame kind {0}")]
    FrameKind(u8),
    #[error(
        "handshake of {len} bytes refused (limit {limit}); is this the master's HA port \
         (listenPort + 1)?"
    )]
    HandshakeTooLarge { len: usize, limit: usize },
}

/// A master elected before the newest master epoch the slave knows (controller mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the master was elected at master epoch {master_epoch} but the slave knows epoch \
     {slave_known}: another master has been elected since, this one is stale"
)]
pub struct StaleMaster {
    pub master_epoch: u32,
    pub slave_known: u32,
}

/// Why a master with `aclEnable=true` refuses a slave's HELLO (sent back as the refusal).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthRefusal {
    #[error(
        "the master runs with aclEnable=true: set aclAccessKey/aclSecretKey on the slave to \
         an admin account of the master's plain_acl.yml"
    )]
    Unsigned,
    #[error("No acl config for {0}")]
    UnknownAccount(String),
    #[error("Check signature failed for accessKey={0}")]
    BadSignature(String),
    #[error("the HELLO was signed {skew_s} s away from the master's clock (at most {max_s} s)")]
    ClockSkew { skew_s: u64, max_s: u64 },
    #[error("accessKey={0} is not an admin account: a slave receives every topic")]
    NotAdmin(String),
}

/// Which side stopped hearing from the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Master,
    Slave,
}

/// Why a replication link (or its handshake) ended.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("the peer closed the link: {0}")]
    Closed(io::Error),
    #[error("read failed: {0}")]
    Read(io::Error),
    #[error("write failed: {0}")]
    Write(io::Error),
    #[error("no handshake in time")]
    NoHandshake,
    #[error("{}", match .peer {
        Peer::Slave => format!("no report from the slave for {} ms", .ms),
        Peer::Master => format!("nothing from the master for {} ms", .ms),
    })]
    Silent { peer: Peer, ms: u128 },
    #[error("reading the commitlog at {pos}: {source}")]
    Commitlog { pos: u64, source: StoreError },
    #[error("the store closed")]
    StoreClosed,
    #[error("the slave reports offset {offset}, past this master's end {end}")]
    ReportPastEnd { offset: u64, end: u64 },
    #[error("cannot resolve {addr}: {source}")]
    Resolve { addr: String, source: io::Error },
    #[error("{0} resolves to nothing")]
    NoAddress(String),
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("{0}")]
    LoadHistory(io::Error),
    #[error("saving the replication history: {0}")]
    SaveHistory(io::Error),
    /// The master's refusal, explained ([`super::proto::explain_refusal`]).
    #[error("refused: {0}")]
    Refused(String),
    #[error("not following a stale master: {0}")]
    StaleMaster(StaleMaster),
    #[error("the master streams from {start} but this log ends at {end}")]
    StartMismatch { start: u64, end: u64 },
    #[error("a frame of {0} bytes")]
    FrameTooLarge(u32),
    /// The store refuses room for replicated bytes (full, or a disk that cannot keep up).
    #[error("{0}")]
    NoRoom(StoreError),
    #[error("cannot append replicated bytes: {0}")]
    Append(StoreError),
    #[error("fenced by the controller for an election: the link ends")]
    Fenced,
    #[error("closing the store: {0}")]
    CloseStore(StoreError),
    #[error("emptying the shard's store: {0}")]
    WipeStore(io::Error),
    #[error("reopening the store: {0}")]
    ReopenStore(StoreError),
    /// The peer's address could not be read (the ACL check needs it).
    #[error("{0}")]
    PeerAddr(io::Error),
    #[error(transparent)]
    Auth(#[from] AuthRefusal),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_stay_as_informative_as_the_strings_they_replace() {
        let silent = HaError::Silent {
            peer: Peer::Slave,
            ms: 20_000,
        };
        assert_eq!(silent.to_string(), "no report from the slave for 20000 ms");
        let silent = HaError::Silent {
            peer: Peer::Master,
            ms: 5,
        };
        assert_eq!(silent.to_string(), "nothing from the master for 5 ms");
        let e = HaError::from(ProtoError::Version(9));
        assert_eq!(
            e.to_string(),
            format!("HA protocol version 9, this broker speaks {VERSION}")
        );
        let stale = StaleMaster {
            master_epoch: 3,
            slave_known: 4,
        };
        let e = HaError::StaleMaster(stale);
        assert!(e
            .to_string()
            .starts_with("not following a stale master: the master was"));
    }
}
