//! Timer messages (RocketMQ 5's "any delay"): a send with `TIMER_DELIVER_MS` (epoch ms),
//! `TIMER_DELAY_SEC` or `TIMER_DELAY_MS` is delivered to its topic and queue at that time,
//! up to `timerMaxDelaySec` ahead, with Java's rules (`HookUtils.transformTimerMessage`):
//!
//! * a delay level (`DELAY`) wins: the timer properties are dropped;
//! * a value that is no whole number is refused (MESSAGE_ILLEGAL), as is a time more than
//!   `timerMaxDelaySec` ahead;
//! * a time not in the future (a zero or negative delay) is an ordinary message, stored at once;
//! * otherwise the time is rounded to `timerPrecisionMs` (`TIMER_OUT_MS` = the slot start,
//!   Java's value), `REAL_TOPIC`/`REAL_QID` are set and the message is stored in
//!   `rmq_sys_wheel_timer`, in the queue of that topic owned by the shard that owns the
//!   target queue. It is delivered at `TIMER_OUT_MS + timerPrecisionMs`, the first slot
//!   boundary at or after the asked time (as Java), with `TIMER_ENQUEUE_MS`,
//!   `TIMER_DEQUEUE_MS` and ringmq's `RINGMQ_TIMER_QO` added.
//!
//! Each shard's timers wait in its own files ([`files`]) and are delivered by one task per
//! shard ([`service`]) into the same shard's commitlog; [`wheel`] says why that makes
//! delivery exactly-once across kill -9 and restarts. Not supported (refused with a remark):
//! cancelling a timer (`TIMER_DEL_UNIQKEY`), timers on batch or transactional sends.

pub mod files;
pub mod service;
pub mod wheel;

use crate::broker::context::BrokerContext;
use crate::broker::placement::owner_shard;
use crate::broker::processor::Failure;
use crate::message::properties::{self, Properties};
use crate::remoting::response as resp;
use crate::store::{Clock, SystemClock};

/// Java's `TimerMessageStore.TIMER_TOPIC`.
pub const TIMER_TOPIC: &str = "rmq_sys_wheel_timer";
pub const TIMER_DELIVER_MS: &str = "TIMER_DELIVER_MS";
pub const TIMER_DELAY_SEC: &str = "TIMER_DELAY_SEC";
pub const TIMER_DELAY_MS: &str = "TIMER_DELAY_MS";
pub const TIMER_OUT_MS: &str = "TIMER_OUT_MS";
pub const TIMER_ENQUEUE_MS: &str = "TIMER_ENQUEUE_MS";
pub const TIMER_DEQUEUE_MS: &str = "TIMER_DEQUEUE_MS";
pub const TIMER_DEL_UNIQKEY: &str = "TIMER_DEL_UNIQKEY";
/// ringmq's: on a delivered copy, `<shard>:<offset in the shard's timer queue>` (what a
/// restart looks for to tell a delivered timer; see [`wheel`]).
pub const TIMER_QO: &str = "RINGMQ_TIMER_QO";

/// What a send asks of the timer store.
pub struct SendKind {
    pub batch: bool,
    pub prepared: bool,
}

/// The queue of [`TIMER_TOPIC`] that `shard` owns.
pub fn timer_queue(shard: usize, shards: usize) -> i32 {
    let q = (0..shards as i32)
        .find(|q| owner_shard(TIMER_TOPIC, *q, shards) == shard)
        .expect("every shard owns one queue of a topic with one queue per shard");
    debug_assert_eq!(owner_shard(TIMER_TOPIC, q, shards), shard);
    q
}

/// The send hook: where a message with timer properties is stored instead of
/// (`topic`, `queue`), with its properties rewritten; `None` for an ordinary message.
pub fn on_send(
    ctx: &BrokerContext,
    props: &mut Properties,
    topic: &str,
    queue: i32,
    kind: SendKind,
) -> Result<Option<(String, i32)>, Failure> {
    // Only the broker sets the marker: a producer's copy would fool a restart.
    props.remove(TIMER_QO);
    if topic == TIMER_TOPIC {
        return Err((
            resp::SYSTEM_ERROR,
            format!("sending message to topic[{TIMER_TOPIC}] is forbidden"),
        ));
    }
    let asked = [TIMER_DELAY_SEC, TIMER_DELAY_MS, TIMER_DELIVER_MS]
        .iter()
        .any(|k| props.get(k).is_some());
    if !asked {
        return Ok(None);
    }
    let level = props
        .get(properties::DELAY)
        .and_then(|d| d.trim().parse::<i64>().ok());
    if level.is_some_and(|l| l > 0) {
        // Java: a delay level wins and the timer properties go.
        for k in [TIMER_DELAY_SEC, TIMER_DELAY_MS, TIMER_DELIVER_MS] {
            props.remove(k);
        }
        return Ok(None);
    }
    // Java's double check: a message that already went through a timer is an ordinary one.
    if props.get(TIMER_OUT_MS).is_some() {
        return Ok(None);
    }
    let cfg = &ctx.cfg;
    let illegal = |why: String| (resp::MESSAGE_ILLEGAL, why);
    if props.get(TIMER_DEL_UNIQKEY).is_some() {
        return Err(illegal(format!(
            "timer message illegal: cancelling a timer ({TIMER_DEL_UNIQKEY}) is not supported by ringmq"
        )));
    }
    if kind.batch || kind.prepared {
        let what = if kind.batch {
            "a batch"
        } else {
            "a transactional"
        };
        return Err(illegal(format!(
            "timer message illegal: {what} message may not carry {TIMER_DELIVER_MS}, \
             {TIMER_DELAY_SEC} or {TIMER_DELAY_MS} in ringmq"
        )));
    }
    if !cfg.timer_wheel_enable {
        return Err((
            resp::SYSTEM_ERROR,
            "accurate timer message is not enabled, timerWheelEnable is false".into(),
        ));
    }
    let now_ms = SystemClock.now_ms();
    let max_ms = cfg.timer_max_delay_sec as i64 * 1_000;
    let deliver_ms = deliver_ms(props, now_ms).map_err(|e| illegal(e.to_string()))?;
    if deliver_ms <= now_ms {
        return Ok(None);
    }
    if deliver_ms - now_ms > max_ms {
        return Err(illegal(format!(
            "timer message illegal, the delay time should not be bigger than the max delay \
             {max_ms}ms; or if set del msg, the delay time should be bigger than the current \
             time (asked {} ms ahead; timerMaxDelaySec={})",
            deliver_ms - now_ms,
            cfg.timer_max_delay_sec
        )));
    }
    let out = slot_of(deliver_ms, cfg.timer_precision_ms as i64);
    props.set(TIMER_OUT_MS, &out.to_string());
    props.set(properties::REAL_TOPIC, topic);
    props.set(properties::REAL_QID, &queue.to_string());
    let shard = owner_shard(topic, queue, ctx.shards);
    Ok(Some((
        TIMER_TOPIC.to_string(),
        timer_queue(shard, ctx.shards),
    )))
}

/// A timer property that is no usable number.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum TimerValueError {
    #[error("timer message illegal: {key}={value:?} is not a whole number")]
    NotWhole { key: String, value: String },
    #[error("timer message illegal: {key}={value:?} is out of range")]
    OutOfRange { key: String, value: String },
}

/// The asked delivery time (Java's order: `TIMER_DELAY_SEC`, `TIMER_DELAY_MS`,
/// `TIMER_DELIVER_MS`); `Err` says which value is no whole number. A sum past `i64` counts as
/// the far future (refused as beyond the maximum).
fn deliver_ms(props: &Properties, now_ms: i64) -> Result<i64, TimerValueError> {
    let number = |key: &str| -> Result<Option<i64>, TimerValueError> {
        props
            .get(key)
            .map(|v| {
                // Java's Long.parseLong: an optional sign and decimal digits, nothing else.
                let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(TimerValueError::NotWhole {
                        key: key.to_string(),
                        value: v.to_string(),
                    });
                }
                v.parse::<i64>().map_err(|_| TimerValueError::OutOfRange {
                    key: key.to_string(),
                    value: v.to_string(),
                })
            })
            .transpose()
    };
    if let Some(sec) = number(TIMER_DELAY_SEC)? {
        return Ok(now_ms.saturating_add(sec.saturating_mul(1_000)));
    }
    if let Some(ms) = number(TIMER_DELAY_MS)? {
        return Ok(now_ms.saturating_add(ms));
    }
    Ok(number(TIMER_DELIVER_MS)?.unwrap_or(now_ms))
}

/// Java's `TIMER_OUT_MS`: the start of the slot before the first boundary at or after
/// `deliver_ms` (delivery happens at `slot + precision`).
pub fn slot_of(deliver_ms: i64, precision_ms: i64) -> i64 {
    if deliver_ms % precision_ms == 0 {
        deliver_ms - precision_ms
    } else {
        deliver_ms.div_euclid(precision_ms) * precision_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        let mut p = Properties::parse("");
        for (k, v) in pairs {
            p.set(k, v);
        }
        p
    }

    #[test]
    fn the_delivery_time_follows_javas_order_and_number_rules() {
        let now = 1_000_000;
        let t = |pairs: &[(&str, &str)]| deliver_ms(&props(pairs), now);
        assert_eq!(t(&[(TIMER_DELAY_SEC, "3")]), Ok(now + 3_000));
        assert_eq!(t(&[(TIMER_DELAY_MS, "+250")]), Ok(now + 250));
        assert_eq!(t(&[(TIMER_DELIVER_MS, "1234567")]), Ok(1_234_567));
        assert_eq!(t(&[(TIMER_DELAY_SEC, "-5")]), Ok(now - 5_000));
        assert_eq!(
            t(&[(TIMER_DELAY_SEC, "2"), (TIMER_DELAY_MS, "x")]),
            Ok(now + 2_000),
            "seconds first"
        );
        assert_eq!(t(&[(TIMER_DELAY_SEC, "9223372036854775807")]), Ok(i64::MAX));
        for bad in ["", "abc", "1.5", " 5", "5s", "-", "0x10"] {
            let err = t(&[(TIMER_DELAY_MS, bad)]).expect_err(bad);
            assert!(err.to_string().contains("TIMER_DELAY_MS"), "{err}");
        }
        assert!(t(&[(TIMER_DELIVER_MS, "99999999999999999999")]).is_err());
    }

    #[test]
    fn slots_are_javas() {
        assert_eq!(slot_of(5_000, 1_000), 4_000);
        assert_eq!(slot_of(5_001, 1_000), 5_000);
        assert_eq!(slot_of(5_999, 1_000), 5_000);
        assert_eq!(slot_of(5_050, 100), 5_000);
    }

    #[test]
    fn each_shard_owns_one_timer_queue() {
        for shards in 1..=8 {
            let mut qs: Vec<i32> = (0..shards).map(|s| timer_queue(s, shards)).collect();
            qs.sort();
            assert_eq!(qs, (0..shards as i32).collect::<Vec<_>>());
        }
    }
}
