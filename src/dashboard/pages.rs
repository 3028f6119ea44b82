//! The dashboard's pages, rendered on the server (maud escapes every value) from the same views
//! `/api/` serves. Tables are described once by column specs ([`Col`]) that render the first
//! page load here and, for live tables, every refresh in the browser (`assets/app.js` reads the
//! specs from `data-cols` and the rows from the table's `data-src` API). A page whose data
//! could not be read shows what failed, with the API's status.

use maud::{html, Markup, DOCTYPE};
use serde::Serialize;
use serde_json::Value;

use super::api;
use super::http::{ApiError, Reply, Request};
use super::State;
use crate::admin::output::date_time_millis;

/// A table column: its title and spec. A spec is a dotted field path, optionally followed by
/// `:num2` (two decimals), `:date` (ms since the epoch as local time) or `|/url/{field}` (a
/// link, `{field}` replaced by that field of the row, percent-encoded).
pub struct Col(pub &'static str, pub &'static str);

/// The value at a dotted path of `row`.
fn field<'a>(row: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(row, |v, k| &v[k])
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `{field}` of `template` replaced by the row's percent-encoded values.
fn fill(template: &str, row: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        let value = text(field(row, name));
        let encoded =
            percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC);
        out.push_str(&encoded.to_string());
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

fn cell(row: &Value, spec: &str) -> Markup {
    let (path, link) = match spec.split_once('|') {
        Some((p, l)) => (p, Some(l)),
        None => (spec, None),
    };
    let (path, format) = path.split_once(':').unwrap_or((path, ""));
    let v = field(row, path);
    let shown = match (format, v.as_f64()) {
        ("num2", Some(n)) => format!("{n:.2}"),
        ("date", Some(n)) if n > 0.0 => date_time_millis(n as i64),
        ("date", _) => String::new(),
        _ => text(v),
    };
    html! {
        td {
            @if let Some(link) = link {
                a href=(fill(link, row)) { (shown) }
            } @else {
                (shown)
            }
        }
    }
}

/// A table of `rows` (JSON of the views) with `cols`; live (re-read from `src`'s `rows_path`
/// every few seconds) when `src` is given.
fn table<T: Serialize>(id: &str, cols: &[Col], rows: &[T], src: Option<(&str, &str)>) -> Markup {
    let rows: Vec<Value> = rows
        .iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect();
    let specs: Vec<&str> = cols.iter().map(|c| c.1).collect();
    html! {
        table id=(id) data-src=[src.map(|s| s.0)] data-rows=[src.map(|s| s.1)]
            data-cols=(specs.join(";")) {
            thead { tr { @for c in cols { th { (c.0) } } } }
            tbody {
                @for row in &rows { tr { @for c in cols { (cell(row, c.1)) } } }
                @if rows.is_empty() { tr.empty { td colspan=(cols.len()) { "none" } } }
            }
        }
    }
}

const NAV: [(&str, &str); 5] = [
    ("/", "Cluster"),
    ("/topics", "Topics"),
    ("/groups", "Consumer groups"),
    ("/messages", "Messages"),
    ("/producer", "Producer"),
];

/// A whole page: navigation, title, the error (if any) and `body`.
fn page(state: &State, title: &str, error: Option<&ApiError>, body: Markup) -> Reply {
    let header = html! {
        nav { @for (href, name) in NAV { a href=(href) { (name) } } }
        span.namesrv { "nameserver " (state.namesrv) }
    };
    let main = html! {
        div #error .error hidden[error.is_none()] {
            @if let Some(e) = error { (e.status) ": " (e.error) }
        }
        (body)
    };
    let status = error.map_or(200, |e| e.status);
    Reply::Html(status, document(state, title, header, main))
}

/// The HTML document of every page: `header`'s parts after the brand, `main` after the title.
pub(super) fn document(state: &State, title: &str, header: Markup, main: Markup) -> String {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ringmq dashboard" }
                link rel="stylesheet" href="/assets/style.css";
            }
            body data-interval=(state.interval.as_millis()) {
                header {
                    span.brand { "ringmq" }
                    (header)
                    // Filled by app.js from /api/session: who is signed in, or why writes
                    // are off.
                    span #session {}
                }
                main {
                    h1 { (title) }
                    (main)
                }
                script src="/assets/app.js" {}
            }
        }
    };
    markup.into_string()
}

/// A form posting its fields as JSON to the API (see `app.js`); `then` is what follows
/// success: `reload`, `show` (the answer in the form's result box) or a URL to go to.
pub(super) fn api_form(
    method: &str,
    url: &str,
    then: &str,
    confirm: Option<&str>,
    fields: Markup,
) -> Markup {
    html! {
        form.api data-method=(method) data-url=(url) data-then=(then) data-confirm=[confirm] {
            (fields)
            div.result hidden {}
        }
    }
}

fn chart(kind: &str, name: &str, title: &str) -> Markup {
    html! {
        figure.chart {
            figcaption { (title) }
            svg data-chart=(kind) data-name=(name) viewBox="0 0 640 180" {}
        }
    }
}

pub fn cluster(state: &State) -> Reply {
    const COLS: [Col; 11] = [
        Col("Cluster", "clusterName"),
        Col("Broker", "brokerName"),
        Col("BID", "brokerId"),
        Col("Role", "role"),
        Col("Address", "addr"),
        Col("Version", "version"),
        Col("TPS in", "inTps:num2"),
        Col("TPS out", "outTps:num2"),
        Col("Slave lag", "slaveLag"),
        Col("Master epoch", "masterEpoch"),
        Col("SyncStateSet@epoch", "syncStateSet"),
    ];
    let (view, error) = match api::cluster(state) {
        Ok(v) => (v.brokers, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let failed: Vec<&api::BrokerView> = view.iter().filter(|b| b.error.is_some()).collect();
    let body = html! {
        (table("brokers", &COLS, &view, Some(("/api/cluster", "brokers"))))
        @for b in failed { p.warn { (b.addr) ": " (b.error.clone().unwrap_or_default()) } }
        (chart("brokers", "", "TPS in (solid) and out (dashed) per broker, last minutes"))
    };
    page(state, "Cluster", error.as_ref(), body)
}

pub fn topics(state: &State) -> Reply {
    const COLS: [Col; 2] = [Col("Topic", "name|/topics/{name}"), Col("Kind", "kind")];
    let (view, error) = match api::topics(state) {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    };
    let (rows, clusters) = view.map(|v| (v.topics, v.clusters)).unwrap_or_default();
    let body = html! {
        (table("topics", &COLS, &rows, None))
        h2 { "Create or update a topic" }
        (api_form("POST", "/api/topics", "reload", None, html! {
            label { "Topic " input name="topic" required; }
            label { "Cluster " select name="cluster" {
                @for c in &clusters { option value=(c) { (c) } }
            } }
            label { "Read queues " input name="readQueueNums" type="number" value="8" min="1"; }
            label { "Write queues " input name="writeQueueNums" type="number" value="8" min="1"; }
            label { "Permission " select name="perm" data-type="number" {
                option value="6" { "read and write" }
                option value="4" { "read only" }
                option value="2" { "write only" }
            } }
            label { input name="order" type="checkbox"; " ordered" }
            button type="submit" { "Save topic" }
        }))
    };
    page(state, "Topics", error.as_ref(), body)
}

pub fn topic(state: &State, name: &str) -> Reply {
    const QUEUES: [Col; 5] = [
        Col("Broker", "brokerName"),
        Col("Queue", "queueId"),
        Col("Min offset", "minOffset"),
        Col("Max offset", "maxOffset"),
        Col("Last updated", "lastUpdateTimestamp:date"),
    ];
    const ROUTE: [Col; 4] = [
        Col("Broker", "brokerName"),
        Col("Read queues", "readQueueNums"),
        Col("Write queues", "writeQueueNums"),
        Col("Perm", "perm"),
    ];
    let title = format!("Topic {name}");
    let view = match api::topic(state, name) {
        Ok(v) => v,
        Err(e) => return page(state, &title, Some(&e), html! {}),
    };
    let api_url = format!("/api/topics/{}", encode(name));
    let body = html! {
        h2 { "Queues" }
        (table("queues", &QUEUES, &view.queues, Some((&api_url, "queues"))))
        h2 { "Route" }
        (table("route", &ROUTE, &view.route.queue_datas, None))
        h2 { "Consumer groups" }
        ul.groups {
            @for g in &view.consumer_groups {
                li { a href={ "/groups/" (encode(g)) } { (g) } }
            }
            @if view.consumer_groups.is_empty() { li { "none" } }
        }
        p { a href={ "/producer?topic=" (encode(name)) } { "Send a test message to " (name) } }
        h2 { "Delete" }
        (api_form("DELETE", &api_url, "/topics",
            Some(&format!("Delete topic {name}? Its messages become unreachable.")), html! {
            label { "From cluster " select name="cluster" data-in="query" {
                @for c in &view.clusters { option value=(c) { (c) } }
            } }
            button.danger type="submit" { "Delete topic" }
        }))
    };
    page(state, &title, None, body)
}

const GROUP_COLS: [Col; 7] = [
    Col("Group", "group|/groups/{group}"),
    Col("Clients", "count"),
    Col("Version", "versionDesc"),
    Col("Type", "consumeType"),
    Col("Model", "messageModel"),
    Col("TPS", "consumeTps:num2"),
    Col("Lag", "diffTotal"),
];

pub fn groups(state: &State) -> Reply {
    let (rows, error) = match api::groups(state) {
        Ok(v) => (v, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let body = table("groups", &GROUP_COLS, &rows, Some(("/api/groups", "")));
    page(state, "Consumer groups", error.as_ref(), body)
}

pub fn group(state: &State, name: &str, client: Option<&str>) -> Reply {
    const PROGRESS: [Col; 7] = [
        Col("Topic", "topic|/topics/{topic}"),
        Col("Broker", "brokerName"),
        Col("Queue", "queueId"),
        Col("Broker offset", "brokerOffset"),
        Col("Consumer offset", "consumerOffset"),
        Col("Lag", "diff"),
        Col("Last consumed", "lastTimestamp:date"),
    ];
    const MEMBERS: [Col; 5] = [
        Col("Client id", "clientId|?client={clientId}"),
        Col("Address", "clientAddr"),
        Col("Language", "language"),
        Col("Version", "version"),
        Col("Refused requests", "refusedCount"),
    ];
    let title = format!("Consumer group {name}");
    let view = match api::group(state, name) {
        Ok(v) => v,
        Err(e) => return page(state, &title, Some(&e), html! {}),
    };
    let api_url = format!("/api/groups/{}", encode(name));
    let queues = view.progress.as_ref().map_or(&[][..], |p| &p.queues[..]);
    let members = view
        .connection
        .as_ref()
        .map_or(&[][..], |c| &c.connection_set[..]);
    let mut topics: Vec<&str> = queues.iter().map(|q| q.topic.as_str()).collect();
    if let Some(c) = &view.connection {
        topics.extend(c.subscription_table.keys().map(String::as_str));
    }
    topics.retain(|t| !t.starts_with("%RETRY%"));
    topics.sort();
    topics.dedup();
    let body = html! {
        (table("summary", &GROUP_COLS, &[&view.row], Some((&api_url, "row"))))
        (chart("group", name, "Total lag, last minutes"))
        h2 { "Progress" }
        (table("progress", &PROGRESS, queues, Some((&api_url, "progress.queues"))))
        h2 { "Members" }
        (table("members", &MEMBERS, members, Some((&api_url, "connection.connectionSet"))))
        @if let Some(id) = client { (client_detail(state, name, id)) }
        h2 { "Reset offsets by time" }
        (api_form("POST", &format!("{api_url}/reset"), "show",
            Some("Move the group's offsets? Its consumers will read from there."), html! {
            label { "Topic " select name="topic" {
                @for t in &topics { option value=(t) { (t) } }
            } }
            label { "Time " input name="timestamp" type="datetime-local" step="1"
                data-type="ms" data-empty="now"; }
            label { input name="force" type="checkbox" checked; " also forward" }
            button type="submit" { "Reset offsets" }
        }))
    };
    page(state, &title, None, body)
}

/// One member's own view of itself (GET_CONSUMER_RUNNING_INFO relayed by a broker): its
/// properties, subscriptions, the queues it holds and its pull and consume rates.
fn client_detail(state: &State, group: &str, id: &str) -> Markup {
    const QUEUES: [Col; 5] = [
        Col("Topic", "topic"),
        Col("Broker", "brokerName"),
        Col("Queue", "queueId"),
        Col("Committed offset", "processQueue.commitOffset"),
        Col("Cached messages", "processQueue.cachedMsgCount"),
    ];
    const SUBSCRIPTIONS: [Col; 2] = [Col("Topic", "topic"), Col("Expression", "subString")];
    let info = match api::client(state, group, id) {
        Ok(info) => info,
        Err(e) => return html! { h2 { "Client " (id) } p.error { (e.status) ": " (e.error) } },
    };
    let props: Vec<Value> = info
        .properties
        .iter()
        .map(|(k, v)| serde_json::json!({"name": k, "value": v}))
        .collect();
    let rates: Vec<Value> = info
        .status_table
        .iter()
        .map(|(topic, s)| {
            let mut row = s.clone();
            row["topic"] = Value::String(topic.clone());
            row
        })
        .collect();
    const RATES: [Col; 6] = [
        Col("Topic", "topic"),
        Col("Pull RT", "pullRT:num2"),
        Col("Pull TPS", "pullTPS:num2"),
        Col("Consume RT", "consumeRT:num2"),
        Col("Consume OK TPS", "consumeOKTPS:num2"),
        Col("Consume failed TPS", "consumeFailedTPS:num2"),
    ];
    const PROPS: [Col; 2] = [Col("Property", "name"), Col("Value", "value")];
    html! {
        h2 { "Client " (id) }
        (table("client-subscriptions", &SUBSCRIPTIONS, &info.subscription_set, None))
        (table("client-queues", &QUEUES, &info.mq_table, None))
        (table("client-rates", &RATES, &rates, None))
        (table("client-properties", &PROPS, &props, None))
    }
}

const MESSAGE_COLS: [Col; 8] = [
    Col("Message id", "msgId|/messages/{offsetMsgId}"),
    Col("Topic", "topic"),
    Col("Tags", "tags"),
    Col("Keys", "keys"),
    Col("Broker", "brokerName"),
    Col("Queue", "queueId"),
    Col("Offset", "queueOffset"),
    Col("Stored", "storeTimestamp:date"),
];

pub fn messages(state: &State, req: &Request) -> Reply {
    let topic = req.param("topic").unwrap_or_default();
    let search = |id: &str, title: &str, fields: Markup| {
        html! {
            form.api.search id=(id) data-method="GET" data-url="/api/messages"
                data-then="rows:results" {
                h2 { (title) }
                (fields)
                button type="submit" { "Search" }
                div.result hidden {}
            }
        }
    };
    let body = html! {
        div.searches {
            (search("by-key", "By topic and key", html! {
                label { "Topic " input name="topic" required value=(topic); }
                label { "Key " input name="key" required; }
            }))
            (search("by-id", "By message id", html! {
                label { "Message id " input name="id" required size="34"; }
            }))
            (search("by-time", "By topic and time", html! {
                label { "Topic " input name="topic" required value=(topic); }
                label { "From " input name="begin" type="datetime-local" step="1" data-type="ms"
                    required; }
                label { "To " input name="end" type="datetime-local" step="1" data-type="ms"
                    required; }
            }))
        }
        h2 { "Results" }
        (table("results", &MESSAGE_COLS, &[] as &[Value], None))
    };
    page(state, "Messages", None, body)
}

pub fn message(state: &State, id: &str) -> Reply {
    const TRACKS: [Col; 2] = [
        Col("Consumer group", "consumerGroup|/groups/{consumerGroup}"),
        Col("Status", "trackType"),
    ];
    const TRACE: [Col; 6] = [
        Col("Type", "traceType"),
        Col("Group", "group"),
        Col("Client host", "clientHost"),
        Col("Time", "timestamp:date"),
        Col("Cost (ms)", "costMs"),
        Col("Status", "status"),
    ];
    let title = format!("Message {id}");
    let view = match api::message(state, id) {
        Ok(v) => v,
        Err(e) => return page(state, &title, Some(&e), html! {}),
    };
    let m = &view.message;
    let facts: [(&str, String); 12] = [
        ("Topic", m.topic.clone()),
        ("Tags", m.tags.clone().unwrap_or_default()),
        ("Keys", m.keys.clone().unwrap_or_default()),
        ("Message id (UNIQ_KEY)", m.msg_id.clone()),
        ("Queue", m.queue_id.to_string()),
        ("Queue offset", m.queue_offset.to_string()),
        ("Commit log offset", m.commit_log_offset.to_string()),
        ("Reconsume times", m.reconsume_times.to_string()),
        (
            "Born",
            format!(
                "{} from {}",
                date_time_millis(m.born_timestamp),
                m.born_host
            ),
        ),
        (
            "Stored",
            format!(
                "{} on {}",
                date_time_millis(m.store_timestamp),
                m.store_host
            ),
        ),
        ("System flag", m.sys_flag.to_string()),
        ("Body", format!("{} bytes", view.body_size)),
    ];
    let groups: Vec<&str> = view
        .tracks
        .iter()
        .map(|t| t.consumer_group.as_str())
        .collect();
    let body = html! {
        table.facts { tbody { @for (k, v) in &facts { tr { th { (k) } td { (v) } } } } }
        h2 { "Properties" }
        table.facts { tbody {
            @for (k, v) in &m.properties { tr { th { (k) } td { (text(v)) } } }
        } }
        h2 { "Body" @if view.body_truncated { " (first 4096 characters)" } }
        pre.body { (m.body) }
        h2 { "Consumer groups" }
        @if let Some(e) = &view.tracks_error { p.warn { (e) } }
        (table("tracks", &TRACKS, &view.tracks, None))
        h2 { "Trace" }
        @if let Some(e) = &view.trace_error { p.warn { (e) } }
        (table("trace", &TRACE, &view.trace, None))
        @for t in view.trace.iter().filter(|t| t.invalid_text.is_some()) {
            p.warn { "Invalid trace record in trace message " (t.trace_message) ": " (t.status)
                ": " code { (t.invalid_text.as_deref().unwrap_or_default()) } }
        }
        h2 { "Resend to a consumer group" }
        (api_form("POST", &format!("/api/messages/{}/resend", encode(id)), "show",
            Some("Send this message to the group again?"), html! {
            label { "Group " input name="group" list="track-groups" required; }
            datalist #track-groups { @for g in &groups { option value=(g) {} } }
            button type="submit" { "Resend" }
        }))
    };
    page(state, &title, None, body)
}

pub fn producer(state: &State, req: &Request) -> Reply {
    let topic = req.param("topic").unwrap_or_default();
    let body = html! {
        (api_form("POST", "/api/messages", "show", None, html! {
            label { "Topic " input name="topic" required value=(topic); }
            label { "Tags " input name="tags"; }
            label { "Keys " input name="keys"; }
            label.wide { "Body " textarea name="body" rows="4" { "Hello from the ringmq dashboard" } }
            button type="submit" { "Send" }
        }))
    };
    page(state, "Send a test message", None, body)
}

pub fn not_found(state: &State, path: &str) -> Reply {
    let e = ApiError::not_found(format!("no page at {path}"));
    page(
        state,
        "Not found",
        Some(&e),
        html! { p { a href="/" { "To the cluster" } } },
    )
}

pub(super) fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_follow_their_specs() {
        let row = serde_json::json!({"a": {"b": 1.234}, "name": "%RETRY%g", "t": 0, "s": "x<y"});
        let render = |spec| cell(&row, spec).into_string();
        assert_eq!(render("a.b:num2"), "<td>1.23</td>");
        assert_eq!(render("t:date"), "<td></td>");
        assert_eq!(
            render("name|/groups/{name}"),
            "<td><a href=\"/groups/%25RETRY%25g\">%RETRY%g</a></td>"
        );
        assert_eq!(render("s"), "<td>x&lt;y</td>");
        assert_eq!(render("missing"), "<td></td>");
    }
}
