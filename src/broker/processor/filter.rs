//! SQL92 subscriptions (`enablePropertyFilter`): which expression types a subscription may use
//! and its compiled selector, for HEART_BEAT (compiled and checked as it registers),
//! CHECK_CLIENT_CONFIG (refused with the reason) and PULL_MESSAGE (the filter itself). Runs
//! on any shard; each shard keeps its own compiled selectors ([`sql::compile_cached`]).
//!
//! TAG subscriptions never come here: their pulls filter on the consume queue's tag codes as
//! before, so property filtering costs them nothing.

use std::rc::Rc;
use std::time::Duration;

use super::Failure;
use crate::filter::sql::{self, Selector};
use crate::log_limit::{LogLimiter, Verdict};
use crate::protocol::heartbeat::SubscriptionData;
use crate::remoting::response as resp;

/// Java's `ExpressionType.isTagType`: no type, an empty one or TAG.
pub(crate) fn is_tag_type(expression_type: &str) -> bool {
    expression_type.is_empty() || expression_type.eq_ignore_ascii_case("TAG")
}

/// The compiled selector of a subscription that is not TAG, or why it is refused: SYSTEM_ERROR
/// without `enablePropertyFilter` (as Java), SUBSCRIPTION_PARSE_FAILED for a type other than
/// SQL92 or an expression that does not compile (the remark says what is wrong and where).
pub(crate) fn sql_selector(
    property_filter_enabled: bool,
    expression_type: &str,
    expression: &str,
) -> Result<Rc<Selector>, Failure> {
    let unsupported =
        format!("The broker does not support consumer to filter message by {expression_type}");
    if !property_filter_enabled {
        return Err((resp::SYSTEM_ERROR, unsupported));
    }
    if !expression_type.eq_ignore_ascii_case("SQL92") {
        return Err((
            resp::SUBSCRIPTION_PARSE_FAILED,
            format!("{unsupported} (only TAG and SQL92)"),
        ));
    }
    sql::compile_cached(expression).map_err(|e| {
        let remark = format!("the SQL92 expression \"{expression}\" does not parse: {e}");
        (resp::SUBSCRIPTION_PARSE_FAILED, remark)
    })
}

thread_local! {
    static HEARTBEAT_LOG: LogLimiter<(String, String)> =
        LogLimiter::new(Duration::from_secs(60), 256);
}

/// Compiles a heartbeat's property-filter subscriptions (so that pulls find them compiled)
/// and warns of those pulls will refuse. The heartbeat itself is answered SUCCESS, as Java
/// does: a failed heartbeat makes Java clients forget the broker's version, and then they
/// refuse every SQL92 pull to it, the good subscriptions' too. Clients learn the reason from
/// CHECK_CLIENT_CONFIG (sent when a consumer starts) and from each refused pull.
pub(crate) fn check_heartbeat(
    property_filter_enabled: bool,
    group: &str,
    subscriptions: &[SubscriptionData],
) {
    for sub in subscriptions
        .iter()
        .filter(|s| !is_tag_type(&s.expression_type))
    {
        let selector = sql_selector(
            property_filter_enabled,
            &sub.expression_type,
            &sub.sub_string,
        );
        let Err((_, reason)) = selector else { continue };
        let key = (group.to_string(), sub.topic.clone());
        if let Verdict::Log { suppressed } = HEARTBEAT_LOG.with(|l| l.check(key)) {
            tracing::warn!(group, topic = %sub.topic, %reason, suppressed,
                "a subscription's pulls will be refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_reason_with_javas_codes() {
        let (code, remark) = sql_selector(false, "SQL92", "a > 1").unwrap_err();
        assert_eq!(code, resp::SYSTEM_ERROR);
        assert!(
            remark.starts_with("The broker does not support consumer to filter message by SQL92")
        );
        let (code, remark) = sql_selector(true, "CLASS", "x").unwrap_err();
        assert_eq!(code, resp::SUBSCRIPTION_PARSE_FAILED);
        assert!(remark.contains("only TAG and SQL92"), "{remark}");
        let (code, remark) = sql_selector(true, "SQL92", "a >").unwrap_err();
        assert_eq!(code, resp::SUBSCRIPTION_PARSE_FAILED);
        assert!(
            remark.contains("\"a >\" does not parse: expected a value"),
            "{remark}"
        );
        assert!(sql_selector(true, "SQL92", "a > 1").is_ok());
        assert!(is_tag_type("") && is_tag_type("TAG") && !is_tag_type("SQL92"));
    }
}
