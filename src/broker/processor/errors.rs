//! The error types of the processors' own steps (a reply's push, a transaction's commit), kept
//! below [`super::failure`]'s table that maps them to response codes, so the processors that
//! raise them and the table import them one way.

use crate::broker::services::puts::PutError;
use crate::message::record::RecordError;
use crate::net::invoke::InvokeError;
use crate::store::StoreError;

/// Why a reply was not pushed to its requester; the texts are Java's remarks.
#[derive(Debug, thiserror::Error)]
pub enum PushReplyError {
    #[error("reply message properties[REPLY_TO_CLIENT] is null")]
    NoRequester,
    #[error("push reply message fail, channel of <{0}> not found.")]
    NoChannel(String),
    /// The requester's connection failed or refused the push (why: logged, not answered).
    #[error("push reply message to {requester}fail.")]
    Failed { requester: String, why: PushFailure },
}

/// What went wrong with a push the requester's connection was given.
#[derive(Debug, thiserror::Error)]
pub enum PushFailure {
    #[error(transparent)]
    Invoke(InvokeError),
    #[error("answered {0}: {1}")]
    Answered(i32, String),
}

/// Why a transaction's step (a commit, its op record, a check pass) failed.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    #[error("the half message has no REAL_TOPIC")]
    NoRealTopic,
    #[error(transparent)]
    Put(#[from] PutError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored record does not parse: {0}")]
    Record(#[from] RecordError),
}
