//! The request signature of RocketMQ's ACL 1.0, as the Java client's `AclClientRPCHook` and the
//! broker's `PlainAccessResource.parse` / `AclUtils` compute it: HMAC-SHA1 keyed with the
//! secret key over the values of the request's ext fields ordered by key (Java's `TreeMap`,
//! i.e. UTF-16 code-unit order), every field but `Signature` itself, followed by the body;
//! base64 (standard alphabet, padded). The access key travels as the `AccessKey` ext field and
//! is itself one of the signed values. Pure: no I/O.

use std::cmp::Ordering;
use std::fmt;

use base64::Engine as _;
use hmac::{KeyInit, Mac};

use super::error::AclError;
use crate::remoting::{ExtFields, RemotingCommand};

/// Ext field carrying the account (`SessionCredentials.ACCESS_KEY`).
pub const ACCESS_KEY: &str = "AccessKey";
/// Ext field carrying the signature (`SessionCredentials.SIGNATURE`).
pub const SIGNATURE: &str = "Signature";
/// Optional ext field (`SessionCredentials.SECURITY_TOKEN`), signed like any other.
pub const SECURITY_TOKEN: &str = "SecurityToken";
/// `MixAll.UNIQUE_MSG_QUERY_FLAG`: the Java client adds it to QUERY_MESSAGE after signing, so
/// the broker leaves it out of the signed content.
pub const UNIQUE_MSG_QUERY_FLAG: &str = "_UNIQUE_KEY_QUERY";

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// An account's access key and secret key (and the optional security token), as the clients'
/// `SessionCredentials`. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub security_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Credentials {
    /// An access key and its secret.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Credentials {
        Credentials {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            security_token: None,
        }
    }

    /// Both given (non-blank) → credentials; neither → `None`; one without the other is an
    /// error naming the missing one (a tool must not silently run unsigned).
    pub fn from_pair(
        access_key: Option<&str>,
        secret_key: Option<&str>,
    ) -> Result<Option<Credentials>, AclError> {
        fn blank_is_none(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        match (blank_is_none(access_key), blank_is_none(secret_key)) {
            (Some(ak), Some(sk)) => Ok(Some(Credentials::new(ak, sk))),
            (None, None) => Ok(None),
            (Some(_), None) => Err(AclError::KeyWithoutSecret),
            (None, Some(_)) => Err(AclError::SecretWithoutKey),
        }
    }
}

/// Credentials from flags or the environment (`access_key`/`secret_key`), else from mqadmin's
/// `$ROCKETMQ_HOME/conf/tools.yml` (`accessKey:` and `secretKey:` lines), else none. The error
/// says what is incomplete or unreadable.
pub fn tool_credentials(
    access_key: Option<&str>,
    secret_key: Option<&str>,
    rocketmq_home: Option<&std::path::Path>,
) -> Result<Option<Credentials>, AclError> {
    if let Some(given) = Credentials::from_pair(access_key, secret_key)? {
        return Ok(Some(given));
    }
    let Some(path) = rocketmq_home.map(|h| h.join("conf/tools.yml")) else {
        return Ok(None);
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let docs = yaml_rust2::YamlLoader::load_from_str(&text)
        .map_err(|e| AclError::yaml(&e).in_file(&path))?;
    let doc = docs.first();
    let field = |k: &str| -> Option<String> {
        match doc.map(|d| &d[k]) {
            Some(yaml_rust2::Yaml::String(s)) => Some(s.clone()),
            Some(yaml_rust2::Yaml::Integer(i)) => Some(i.to_string()),
            _ => None,
        }
    };
    let (ak, sk) = (field("accessKey"), field("secretKey"));
    Credentials::from_pair(ak.as_deref(), sk.as_deref()).map_err(|e| e.in_file(&path))
}

/// Java's `String.compareTo`: UTF-16 code units (differs from byte order only outside the BMP).
fn java_order(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// The values the signature covers, in key order: every ext field but `Signature`, and without
/// `_UNIQUE_KEY_QUERY` unless `with_unique_flag`.
fn signed_values(ext: Option<&ExtFields>, with_unique_flag: bool) -> Vec<&str> {
    let Some(ext) = ext else {
        return Vec::new();
    };
    let mut fields: Vec<(&str, &str)> = ext
        .iter()
        .filter(|(k, _)| *k != SIGNATURE && (with_unique_flag || *k != UNIQUE_MSG_QUERY_FLAG))
        .collect();
    fields.sort_by(|a, b| java_order(a.0, b.0));
    fields.into_iter().map(|(_, v)| v).collect()
}

/// HMAC-SHA1 of the concatenated `parts` keyed with `secret`, base64 (`AclUtils.calSignature`).
pub fn signature<'a>(secret: &str, parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut mac = <HmacSha1 as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for part in parts {
        mac.update(part);
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The signature of `cmd` as it stands (its `Signature` field, if any, left out).
fn signature_of(cmd: &RemotingCommand, secret: &str, with_unique_flag: bool) -> String {
    let values = signed_values(cmd.ext_fields.as_ref(), with_unique_flag);
    let body = std::iter::once(&cmd.body[..]);
    signature(secret, values.iter().map(|v| v.as_bytes()).chain(body))
}

/// Signs `cmd` as the clients' ACL hook does: sets `AccessKey` (and `SecurityToken`), then
/// `Signature` over every other field and the body. Call it last, once every field is set.
pub fn sign(cmd: &mut RemotingCommand, credentials: &Credentials) {
    let ext = cmd.ext_fields.get_or_insert_with(ExtFields::new);
    ext.remove(SIGNATURE);
    ext.insert(ACCESS_KEY, credentials.access_key.as_str());
    if let Some(token) = &credentials.security_token {
        ext.insert(SECURITY_TOKEN, token.as_str());
    }
    let sig = signature_of(cmd, &credentials.secret_key, true);
    cmd.set_ext(SIGNATURE, sig);
}

/// True when `cmd`'s `Signature` is the one `secret` gives. Like Java's broker the
/// `_UNIQUE_KEY_QUERY` flag is left out of the content; a client that signed it too (some
/// non-Java clients sign every field) is accepted as well. Compared in constant time.
pub fn verify(cmd: &RemotingCommand, secret: &str) -> bool {
    let Some(given) = cmd.ext(SIGNATURE) else {
        return false;
    };
    if constant_time_eq(given, &signature_of(cmd, secret, false)) {
        return true;
    }
    cmd.ext(UNIQUE_MSG_QUERY_FLAG).is_some()
        && constant_time_eq(given, &signature_of(cmd, secret, true))
}

/// Equality whose time does not depend on where the strings differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values computed independently of this code (Python's `hmac` and `hashlib`, the
    /// Java algorithm written out: values by key, then the body); the first is also
    /// rocketmq-client-rust's own test vector for its Java-compatible hook.
    #[test]
    fn signature_matches_the_java_algorithm_byte_for_byte() {
        let mut cmd = RemotingCommand::request(10)
            .with_ext("z", "last")
            .with_ext("a", "first")
            .with_body(&b"body"[..]);
        let creds = Credentials {
            access_key: "ak".into(),
            secret_key: "secret".into(),
            security_token: Some("token".into()),
        };
        sign(&mut cmd, &creds);
        assert_eq!(cmd.ext(SIGNATURE), Some("wuJkFDNRMKY6aFXTDwT/vg0UC8M="));
        assert_eq!(cmd.ext(ACCESS_KEY), Some("ak"));
        assert!(verify(&cmd, "secret"));
        assert!(!verify(&cmd, "secret2"));
    }

    #[test]
    fn a_send_v2_header_signs_like_java() {
        // SEND_MESSAGE_V2's one-letter header, AccessKey sorted before the lowercase keys.
        let fields = [
            ("a", "PG"),
            ("b", "TopicA"),
            ("c", "TBW102"),
            ("d", "4"),
            ("e", "0"),
            ("f", "0"),
            ("g", "1700000000000"),
            ("h", "0"),
            ("i", "KEYS\u{1}k1\u{2}"),
            ("j", "0"),
            ("k", "false"),
            ("m", "false"),
        ];
        let mut cmd = RemotingCommand::request(310).with_body(&b"hello"[..]);
        for (k, v) in fields {
            cmd.set_ext(k, v);
        }
        sign(&mut cmd, &Credentials::new("RocketMQ", "12345678"));
        assert_eq!(cmd.ext(SIGNATURE), Some("6bTYT39Jnv18o9aoiU6ZFySDuR4="));
        // Any change to a signed value or the body breaks it.
        let mut tampered = cmd.clone();
        tampered.set_ext("b", "TopicB");
        assert!(!verify(&tampered, "12345678"));
        let tampered = cmd.clone().with_body(&b"hellO"[..]);
        assert!(!verify(&tampered, "12345678"));
        assert!(verify(&cmd, "12345678"));
    }

    #[test]
    fn resigning_replaces_the_old_signature_and_the_query_flag_is_optional() {
        let mut cmd = RemotingCommand::request(12).with_ext("topic", "T");
        cmd.set_ext(SIGNATURE, "stale");
        let creds = Credentials::new("ak", "sk");
        sign(&mut cmd, &creds);
        assert!(verify(&cmd, "sk"));
        // Java adds the flag after signing: still valid.
        let mut java_style = cmd.clone();
        java_style.set_ext(UNIQUE_MSG_QUERY_FLAG, "true");
        assert!(verify(&java_style, "sk"));
        // A client that signed with the flag: valid too.
        let mut signed_with_flag = RemotingCommand::request(12).with_ext("topic", "T");
        signed_with_flag.set_ext(UNIQUE_MSG_QUERY_FLAG, "true");
        sign(&mut signed_with_flag, &creds);
        assert!(verify(&signed_with_flag, "sk"));
        // No signature at all.
        assert!(!verify(&RemotingCommand::request(12), "sk"));
    }

    #[test]
    fn credentials_come_in_pairs() {
        assert_eq!(Credentials::from_pair(None, None).unwrap(), None);
        assert_eq!(Credentials::from_pair(Some(" "), Some("")).unwrap(), None);
        let both = Credentials::from_pair(Some("ak"), Some("sk")).expect("pair");
        assert_eq!(both, Some(Credentials::new("ak", "sk")));
        assert!(matches!(
            Credentials::from_pair(Some("ak"), None),
            Err(AclError::KeyWithoutSecret)
        ));
        assert!(matches!(
            Credentials::from_pair(None, Some("sk")),
            Err(AclError::SecretWithoutKey)
        ));
        assert!(!format!("{:?}", Credentials::new("ak", "sk")).contains("sk\""));
    }

    #[test]
    fn tools_take_flags_then_tools_yml() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            tool_credentials(None, None, Some(dir.path())).unwrap(),
            None
        );
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::write(
            dir.path().join("conf/tools.yml"),
            "accessKey: rocketmq2\nsecretKey: 12345678\n",
        )
        .unwrap();
        let from_file = tool_credentials(None, None, Some(dir.path())).unwrap();
        assert_eq!(from_file, Some(Credentials::new("rocketmq2", "12345678")));
        let flags = tool_credentials(Some("ak1234"), Some("sk1234"), Some(dir.path())).unwrap();
        assert_eq!(flags, Some(Credentials::new("ak1234", "sk1234")));
        assert!(tool_credentials(Some("ak1234"), None, None).is_err());
    }

    #[test]
    fn keys_sort_in_java_string_order() {
        assert_eq!(java_order("AccessKey", "a"), Ordering::Less);
        // U+FF5E (one UTF-16 unit) sorts after U+1F600 (a surrogate pair, 0xD83D…) in Java.
        assert_eq!(java_order("\u{FF5E}", "\u{1F600}"), Ordering::Greater);
    }
}
