//! The request, response and language code tables of RocketMQ 4.x
//! (`RequestCode.java`, `ResponseCode.java`, `LanguageCode.java`), plus 5.x's controller codes
//! (RIP-44: 904, 1001..=1013 and 2000..=2014). Codes are plain `i32`s so that
//! an unknown code stays representable and can be answered REQUEST_CODE_NOT_SUPPORTED.

macro_rules! code_table {
    ($(#[$meta:meta])* $vis:vis mod $module:ident { $($name:ident = $value:expr,)* }) => {
        $(#[$meta])*
        $vis mod $module {
            $(pub const $name: i32 = $value;)*

            /// The Java name of a code, or `None` for a code this table does not know.
            pub fn name(code: i32) -> Option<&'static str> {
                match code {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

code_table! {
    /// Request codes (`common/protocol/RequestCode.java`).
    pub mod request {
        SEND_MESSAGE = 10,
        PULL_MESSAGE = 11,
        QUERY_MESSAGE = 12,
        QUERY_BROKER_OFFSET = 13,
        QUERY_CONSUMER_OFFSET = 14,
        UPDATE_CONSUMER_OFFSET = 15,
        UPDATE_AND_CREATE_TOPIC = 17,
        GET_ALL_TOPIC_CONFIG = 21,
        GET_TOPIC_CONFIG_LIST = 22,
        GET_TOPIC_NAME_LIST = 23,
        UPDATE_BROKER_CONFIG = 25,
        GET_BROKER_CONFIG = 26,
        TRIGGER_DELETE_FILES = 27,
        GET_BROKER_RUNTIME_INFO = 28,
        SEARCH_OFFSET_BY_TIMESTAMP = 29,
        GET_MAX_OFFSET = 30,
        GET_MIN_OFFSET = 31,
        GET_EARLIEST_MSG_STORETIME = 32,
        VIEW_MESSAGE_BY_ID = 33,
        HEART_BEAT = 34,
        UNREGISTER_CLIENT = 35,
        CONSUMER_SEND_MSG_BACK = 36,
        END_TRANSACTION = 37,
        GET_CONSUMER_LIST_BY_GROUP = 38,
        CHECK_TRANSACTION_STATE = 39,
        NOTIFY_CONSUMER_IDS_CHANGED = 40,
        LOCK_BATCH_MQ = 41,
        UNLOCK_BATCH_MQ = 42,
        GET_ALL_CONSUMER_OFFSET = 43,
        GET_ALL_DELAY_OFFSET = 45,
        CHECK_CLIENT_CONFIG = 46,
        UPDATE_AND_CREATE_ACL_CONFIG = 50,
        DELETE_ACL_CONFIG = 51,
        GET_BROKER_CLUSTER_ACL_INFO = 52,
        UPDATE_GLOBAL_WHITE_ADDRS_CONFIG = 53,
        GET_BROKER_CLUSTER_ACL_CONFIG = 54,
        PUT_KV_CONFIG = 100,
        GET_KV_CONFIG = 101,
        DELETE_KV_CONFIG = 102,
        REGISTER_BROKER = 103,
        UNREGISTER_BROKER = 104,
        GET_ROUTEINFO_BY_TOPIC = 105,
        GET_BROKER_CLUSTER_INFO = 106,
        UPDATE_AND_CREATE_SUBSCRIPTIONGROUP = 200,
        GET_ALL_SUBSCRIPTIONGROUP_CONFIG = 201,
        GET_TOPIC_STATS_INFO = 202,
        GET_CONSUMER_CONNECTION_LIST = 203,
        GET_PRODUCER_CONNECTION_LIST = 204,
        WIPE_WRITE_PERM_OF_BROKER = 205,
        GET_ALL_TOPIC_LIST_FROM_NAMESERVER = 206,
        DELETE_SUBSCRIPTIONGROUP = 207,
        GET_CONSUME_STATS = 208,
        DELETE_TOPIC_IN_BROKER = 215,
        DELETE_TOPIC_IN_NAMESRV = 216,
        GET_KVLIST_BY_NAMESPACE = 219,
        RESET_CONSUMER_CLIENT_OFFSET = 220,
        GET_CONSUMER_STATUS_FROM_CLIENT = 221,
        INVOKE_BROKER_TO_RESET_OFFSET = 222,
        INVOKE_BROKER_TO_GET_CONSUMER_STATUS = 223,
        GET_TOPICS_BY_CLUSTER = 224,
        QUERY_TOPIC_CONSUME_BY_WHO = 300,
        GET_CONSUMER_RUNNING_INFO = 307,
        CONSUME_MESSAGE_DIRECTLY = 309,
        SEND_MESSAGE_V2 = 310,
        GET_SYSTEM_TOPIC_LIST_FROM_NS = 311,
        VIEW_BROKER_STATS_DATA = 315,
        GET_BROKER_CONSUME_STATS = 317,
        UPDATE_NAMESRV_CONFIG = 318,
        GET_NAMESRV_CONFIG = 319,
        SEND_BATCH_MESSAGE = 320,
        QUERY_CONSUME_QUEUE = 321,
        QUERY_DATA_VERSION = 322,
        SEND_REPLY_MESSAGE = 324,
        SEND_REPLY_MESSAGE_V2 = 325,
        PUSH_REPLY_MESSAGE_TO_CLIENT = 326,
        ADD_WRITE_PERM_OF_BROKER = 327,
        BROKER_HEARTBEAT = 904,
        CONTROLLER_ALTER_SYNC_STATE_SET = 1001,
        CONTROLLER_ELECT_MASTER = 1002,
        CONTROLLER_REGISTER_BROKER = 1003,
        CONTROLLER_GET_REPLICA_INFO = 1004,
        CONTROLLER_GET_METADATA_INFO = 1005,
        CONTROLLER_GET_SYNC_STATE_DATA = 1006,
        GET_BROKER_EPOCH_CACHE = 1007,
        NOTIFY_BROKER_ROLE_CHANGED = 1008,
        UPDATE_CONTROLLER_CONFIG = 1009,
        GET_CONTROLLER_CONFIG = 1010,
        CLEAN_BROKER_DATA = 1011,
        CONTROLLER_GET_NEXT_BROKER_ID = 1012,
        CONTROLLER_APPLY_BROKER_ID = 1013,
        // ringmq's own (no Java code): the controller leader fences the replica it is about to
        // elect (crate::controller::node), so that the old master acknowledges nothing once
        // the election can commit.
        RINGMQ_FENCE_REPLICA = 30001,
    }
}

code_table! {
    /// Response codes (`ResponseCode.java` and `RemotingSysResponseCode.java`).
    pub mod response {
        SUCCESS = 0,
        SYSTEM_ERROR = 1,
        SYSTEM_BUSY = 2,
        REQUEST_CODE_NOT_SUPPORTED = 3,
        TRANSACTION_FAILED = 4,
        FLUSH_DISK_TIMEOUT = 10,
        SLAVE_NOT_AVAILABLE = 11,
        FLUSH_SLAVE_TIMEOUT = 12,
        MESSAGE_ILLEGAL = 13,
        SERVICE_NOT_AVAILABLE = 14,
        VERSION_NOT_SUPPORTED = 15,
        NO_PERMISSION = 16,
        TOPIC_NOT_EXIST = 17,
        TOPIC_EXIST_ALREADY = 18,
        PULL_NOT_FOUND = 19,
        PULL_RETRY_IMMEDIATELY = 20,
        PULL_OFFSET_MOVED = 21,
        QUERY_NOT_FOUND = 22,
        SUBSCRIPTION_PARSE_FAILED = 23,
        SUBSCRIPTION_NOT_EXIST = 24,
        SUBSCRIPTION_NOT_LATEST = 25,
        SUBSCRIPTION_GROUP_NOT_EXIST = 26,
        FILTER_DATA_NOT_EXIST = 27,
        FILTER_DATA_NOT_LATEST = 28,
        TRANSACTION_SHOULD_COMMIT = 200,
        TRANSACTION_SHOULD_ROLLBACK = 201,
        TRANSACTION_STATE_UNKNOW = 202,
        TRANSACTION_STATE_GROUP_WRONG = 203,
        NO_BUYER_ID = 204,
        NOT_IN_CURRENT_UNIT = 205,
        CONSUMER_NOT_ONLINE = 206,
        CONSUME_MSG_TIMEOUT = 207,
        NO_MESSAGE = 208,
        UPDATE_AND_CREATE_ACL_CONFIG_FAILED = 209,
        DELETE_ACL_CONFIG_FAILED = 210,
        UPDATE_GLOBAL_WHITE_ADDRS_CONFIG_FAILED = 211,
        FLOW_CONTROL = 215,
        CONTROLLER_FENCED_MASTER_EPOCH = 2000,
        CONTROLLER_FENCED_SYNC_STATE_SET_EPOCH = 2001,
        CONTROLLER_INVALID_MASTER = 2002,
        CONTROLLER_INVALID_REPLICAS = 2003,
        CONTROLLER_MASTER_NOT_AVAILABLE = 2004,
        CONTROLLER_INVALID_REQUEST = 2005,
        CONTROLLER_BROKER_NOT_ALIVE = 2006,
        CONTROLLER_NOT_LEADER = 2007,
        CONTROLLER_BROKER_METADATA_NOT_EXIST = 2008,
        CONTROLLER_INVALID_CLEAN_BROKER_METADATA = 2009,
        CONTROLLER_BROKER_NEED_TO_BE_REGISTERED = 2010,
        CONTROLLER_MASTER_STILL_EXIST = 2011,
        CONTROLLER_ELECT_MASTER_FAILED = 2012,
        CONTROLLER_ALTER_SYNC_STATE_SET_FAILED = 2013,
        CONTROLLER_BROKER_ID_INVALID = 2014,
    }
}

/// The `MQVersion` ordinal ringmq puts in every frame it sends: V4_9_8 (Java clients store the
/// broker's heartbeat-response version and refuse SQL92 pulls below V4_1_0).
pub const VERSION_CURRENT: i32 = 409;
/// The release name of [`VERSION_CURRENT`], as `GET_BROKER_RUNTIME_INFO` reports it.
pub const VERSION_CURRENT_DESC: &str = "V4_9_8";
/// Requests at or above this version get standard-JSON routes from a Java namesrv (V4_9_4).
pub const VERSION_STANDARD_JSON_ROUTE: i32 = 401;

/// The sender's language (`LanguageCode.java`). JSON headers carry the name, binary headers the
/// ordinal byte. An unknown name or ordinal decodes to `Other` (lenient).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LanguageCode {
    #[default]
    Java,
    Cpp,
    Dotnet,
    Python,
    Delphi,
    Erlang,
    Ruby,
    Other,
    Http,
    Go,
    Php,
    Oms,
    Rust,
    NodeJs,
}

const LANGUAGES: [(LanguageCode, &str); 14] = [
    (LanguageCode::Java, "JAVA"),
    (LanguageCode::Cpp, "CPP"),
    (LanguageCode::Dotnet, "DOTNET"),
    (LanguageCode::Python, "PYTHON"),
    (LanguageCode::Delphi, "DELPHI"),
    (LanguageCode::Erlang, "ERLANG"),
    (LanguageCode::Ruby, "RUBY"),
    (LanguageCode::Other, "OTHER"),
    (LanguageCode::Http, "HTTP"),
    (LanguageCode::Go, "GO"),
    (LanguageCode::Php, "PHP"),
    (LanguageCode::Oms, "OMS"),
    (LanguageCode::Rust, "RUST"),
    (LanguageCode::NodeJs, "NODE_JS"),
];

impl LanguageCode {
    /// The ordinal byte of the binary header.
    pub fn ordinal(self) -> u8 {
        self as u8
    }

    /// The name JSON headers carry.
    pub fn name(self) -> &'static str {
        LANGUAGES[self as usize].1
    }

    /// Decodes an ordinal; unknown ordinals are `Other`.
    pub fn from_ordinal(ordinal: i64) -> LanguageCode {
        usize::try_from(ordinal)
            .ok()
            .and_then(|i| LANGUAGES.get(i))
            .map_or(LanguageCode::Other, |entry| entry.0)
    }

    /// Decodes a name (case-insensitive); unknown names are `Other`.
    pub fn from_name(name: &str) -> LanguageCode {
        LANGUAGES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map_or(LanguageCode::Other, |entry| entry.0)
    }
}

/// How a frame's header is encoded: the high byte of the header word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerializeType {
    /// 0: a JSON object, as fastjson writes `RemotingCommand`.
    #[default]
    Json,
    /// 1: RocketMQ's own binary header (`RocketMQSerializable`).
    RocketMq,
}

impl SerializeType {
    /// The header word's high byte.
    pub fn byte(self) -> u8 {
        match self {
            SerializeType::Json => 0,
            SerializeType::RocketMq => 1,
        }
    }

    /// The name `serializeTypeCurrentRPC` carries.
    pub fn name(self) -> &'static str {
        match self {
            SerializeType::Json => "JSON",
            SerializeType::RocketMq => "ROCKETMQ",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_ordinals_match_java() {
        for (i, (lang, name)) in LANGUAGES.iter().enumerate() {
            assert_eq!(lang.ordinal() as usize, i);
            assert_eq!(lang.name(), *name);
            assert_eq!(LanguageCode::from_ordinal(i as i64), *lang);
            assert_eq!(LanguageCode::from_name(name), *lang);
        }
        assert_eq!(LanguageCode::Go.ordinal(), 9);
        assert_eq!(LanguageCode::Rust.ordinal(), 12);
        assert_eq!(LanguageCode::from_name("KLINGON"), LanguageCode::Other);
        assert_eq!(LanguageCode::from_ordinal(99), LanguageCode::Other);
        assert_eq!(LanguageCode::from_ordinal(-1), LanguageCode::Other);
    }

    #[test]
    fn code_names() {
        assert_eq!(request::name(105), Some("GET_ROUTEINFO_BY_TOPIC"));
        assert_eq!(response::name(17), Some("TOPIC_NOT_EXIST"));
        assert_eq!(request::name(9999), None);
    }
}
