//! What makes the dashboard safe to keep open in a browser. Every request passes [`Guard::admit`]
//! before it is routed:
//!
//! * **Host**: only the listen address, `localhost` or an `--allowed-host` name (any IP literal
//!   when listening on 0.0.0.0/::, since a DNS-rebinding page always comes under its own name);
//!   anything else is 421, pages and API alike, so a rebound name can read nothing.
//! * **Writes** (every method but GET/HEAD): `Content-Type: application/json` (a cross-site
//!   form or `text/plain` fetch cannot send it without a CORS preflight, which is never
//!   granted), an `Origin` — or without one a `Referer` — of this dashboard, and the session's
//!   anti-CSRF token in `X-CSRF-Token`; anything else is 403 with a JSON error, before any
//!   handler runs. Then the write must be allowed at all ([`Access`]).
//! * **Session**: a random id in an HttpOnly, SameSite=Strict cookie (Secure when the request
//!   came over TLS through a proxy), named after the port (cookies do not keep ports apart).
//!   The CSRF token is an HMAC of the id under a key drawn at start, so an anonymous session
//!   costs no memory; signed-in sessions live in [`super::login`].
//! * [`SECURITY_HEADERS`] go on every answer: no framing, scripts and styles only from the
//!   dashboard, no sniffing, no Referer to other origins.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::http::{ApiError, Reply, Request};
use super::login::{Logins, User};
use crate::log_limit::{LogLimiter, Verdict};

/// Why a write (or a sign-in/out) is refused before it reaches its handler.
#[derive(Debug, thiserror::Error)]
enum WriteRefusal {
    #[error("refused: a {method} needs Content-Type: application/json (got {got})")]
    ContentType { method: String, got: String },
    #[error(
        "refused: a {method} needs an Origin (or Referer) header naming this dashboard \
         (http://{host})"
    )]
    NoOrigin { method: String, host: String },
    #[error(
        "refused: the request comes from {from}, not from this dashboard's pages (http://{host})"
    )]
    OtherOrigin { from: String, host: String },
    #[error(
        "refused: the {CSRF_HEADER} header is missing or not this session's (reload the page; a \
         script gets its token from GET /api/session)"
    )]
    Csrf,
}

type HmacSha256 = Hmac<Sha256>;

/// Headers on every answer of the dashboard.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    (
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
         object-src 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
];

/// The request header carrying the session's anti-CSRF token.
pub const CSRF_HEADER: &str = "X-CSRF-Token";

/// Bytes of a session id (shown as hex in the cookie).
const SESSION_ID_BYTES: usize = 32;

/// A key drawn from the OS at start; tokens and password digests are HMAC-SHA256 under it.
pub struct Secret([u8; 32]);

impl Secret {
    pub fn random() -> io::Result<Secret> {
        let mut key = [0u8; 32];
        fill_random(&mut key)?;
        Ok(Secret(key))
    }

    fn mac(&self, label: &str, data: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac
    }

    /// The tag of `data` under `label`.
    pub fn tag(&self, label: &str, data: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.mac(label, data).finalize().into_bytes());
        out
    }

    /// Whether `tag` is `data`'s, compared in constant time.
    pub fn verify(&self, label: &str, data: &[u8], tag: &[u8]) -> bool {
        self.mac(label, data).verify_slice(tag).is_ok()
    }
}

fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    getrandom::fill(buf).map_err(|e| io::Error::other(format!("no randomness from the OS: {e}")))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A fresh random session id.
pub fn session_id() -> io::Result<String> {
    let mut id = [0u8; SESSION_ID_BYTES];
    fill_random(&mut id)?;
    Ok(hex(&id))
}

fn is_session_id(s: &str) -> bool {
    s.len() == SESSION_ID_BYTES * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Who may change the cluster through this dashboard.
pub enum Access {
    /// Anyone who reaches the port, which is on loopback.
    Loopback,
    /// Anyone who reaches the port: `--allow-anonymous-writes`.
    Anonymous,
    /// Nobody: the reason every write is refused with.
    ReadOnly(String),
    /// Signed-in users; writes need an admin.
    Login(Logins),
}

impl Access {
    /// Listening beyond loopback without a users file starts read-only unless anonymous writes
    /// were asked for.
    pub fn choose(listen: SocketAddr, logins: Option<Logins>, anonymous_writes: bool) -> Access {
        match logins {
            Some(l) => Access::Login(l),
            None if listen.ip().is_loopback() => Access::Loopback,
            None if anonymous_writes => Access::Anonymous,
            None => Access::ReadOnly(format!(
                "the dashboard is read-only: it listens on {listen}, beyond this machine, \
                 without --users-file; restart it with --users-file (admins write) or \
                 --allow-anonymous-writes"
            )),
        }
    }

    /// For the start-up line.
    pub fn describe(&self) -> String {
        match self {
            Access::Loopback => "writes open, loopback only".into(),
            Access::Anonymous => {
                "writes open to anyone who reaches the port (--allow-anonymous-writes)".into()
            }
            Access::ReadOnly(_) => "read-only: beyond loopback without --users-file".into(),
            Access::Login(l) => l.describe(),
        }
    }

    /// Why `user` (signed in or not) may not write; `None` when they may.
    pub fn write_refusal(&self, user: Option<&User>) -> Option<String> {
        match (self, user) {
            (Access::Loopback | Access::Anonymous, _) => None,
            (Access::ReadOnly(why), _) => Some(why.clone()),
            (Access::Login(_), Some(u)) if u.admin => None,
            (Access::Login(_), Some(u)) => Some(format!(
                "user {} may only read: writes need an admin (role 1 in the users file)",
                u.name
            )),
            (Access::Login(_), None) => Some("sign in first".into()),
        }
    }
}

/// What kind of request this is, for the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Assets, the sign-in page and the session's token: open to anyone past the Host check.
    Public,
    Page,
    Api,
    Metrics,
    /// Sign in and out: a write for the CSRF checks, open to anyone past them.
    SignInOut,
    /// A change to the cluster.
    Write,
}

fn classify(req: &Request) -> Class {
    let path: Vec<&str> = req.path.iter().map(String::as_str).collect();
    if req.method == "GET" || req.method == "HEAD" {
        return match path.as_slice() {
            ["assets", ..] | ["login"] | ["api", "session"] => Class::Public,
            ["metrics"] => Class::Metrics,
            ["api", ..] => Class::Api,
            _ => Class::Page,
        };
    }
    match path.as_slice() {
        ["api", "login"] | ["api", "logout"] => Class::SignInOut,
        _ => Class::Write,
    }
}

/// A request let through.
pub struct Visitor {
    /// The session id (from the cookie, or fresh).
    pub session: String,
    /// Signed in as (with a users file).
    pub user: Option<User>,
    /// The request came over TLS (through a proxy that says so, or an https Origin).
    pub secure: bool,
    /// A `Set-Cookie` value for the answer.
    pub set_cookie: Option<String>,
}

/// A refused request: its answer and an extra header.
pub struct Refusal {
    pub reply: Reply,
    pub header: Option<(&'static str, String)>,
}

impl Refusal {
    fn json(status: u16, error: String) -> Refusal {
        Refusal {
            reply: Reply::from_api_error(&ApiError { status, error }),
            header: None,
        }
    }
}

pub struct Guard {
    pub secret: std::sync::Arc<Secret>,
    /// Where the dashboard listens (the bound port).
    listen: SocketAddr,
    /// `--allowed-host` names, lower case.
    allowed_hosts: Vec<String>,
    cookie: String,
    pub access: Access,
    log: Mutex<LogLimiter<&'static str>>,
}

impl Guard {
    pub fn new(
        secret: std::sync::Arc<Secret>,
        listen: SocketAddr,
        allowed_hosts: &[String],
        access: Access,
    ) -> Guard {
        let allowed_hosts = allowed_hosts
            .iter()
            .map(|h| bare_host(h.trim()).to_ascii_lowercase())
            .collect();
        Guard {
            secret,
            listen,
            allowed_hosts,
            cookie: format!("ringmq_dashboard_{}", listen.port()),
            access,
            log: Mutex::new(LogLimiter::new(Duration::from_secs(60), 16)),
        }
    }

    /// Lets `req` through or says why not.
    pub fn admit(&self, req: &Request) -> Result<Visitor, Refusal> {
        let host = match req.header("host") {
            Some(h) if self.host_allowed(h) => h,
            other => return Err(self.misdirected(req, other)),
        };
        let secure = over_tls(req);
        let class = classify(req);
        let (session, set_cookie) = match self.session_cookie(req) {
            Some(id) => (id, None),
            None => {
                let id = session_id().map_err(|e| Refusal::json(500, e.to_string()))?;
                // Given to browsers (pages, the session); scrapers and scripts' reads need none.
                let wanted = matches!(class, Class::Page | Class::Public);
                (
                    id.clone(),
                    wanted.then(|| self.cookie_for(&id, None, secure)),
                )
            }
        };
        if matches!(class, Class::SignInOut | Class::Write) {
            if let Err(why) = self.same_origin_json(req, host, &session) {
                let why = why.to_string();
                self.warn("write", req, &why);
                return Err(Refusal::json(403, why));
            }
        }
        let user = match &self.access {
            Access::Login(logins) => logins.user_of(&session),
            _ => None,
        };
        if let (Access::Login(logins), None) = (&self.access, &user) {
            match class {
                Class::Page => return Err(to_sign_in(req)),
                Class::Api | Class::Write => {
                    let why = "sign in first: this dashboard has a users file (POST /api/login)";
                    return Err(Refusal::json(401, why.into()));
                }
                Class::Metrics if !logins.basic_auth(req) => {
                    return Err(Refusal {
                        header: Some((
                            "WWW-Authenticate",
                            "Basic realm=\"ringmq dashboard\"".into(),
                        )),
                        ..Refusal::json(
                            401,
                            "/metrics needs a user of the users file (Basic)".into(),
                        )
                    });
                }
                Class::Metrics | Class::Public | Class::SignInOut => {}
            }
        }
        if class == Class::Write {
            if let Some(why) = self.access.write_refusal(user.as_ref()) {
                return Err(Refusal::json(403, why));
            }
        }
        Ok(Visitor {
            session,
            user,
            secure,
            set_cookie,
        })
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = bare_host(host).trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || self.allowed_hosts.contains(&name) {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => ip == self.listen.ip() || self.listen.ip().is_unspecified(),
            Err(_) => false,
        }
    }

    fn misdirected(&self, req: &Request, host: Option<&str>) -> Refusal {
        let why = match host {
            Some(h) => format!(
                "Host {h} is not this dashboard's name: it answers to {}, localhost and the \
                 --allowed-host names",
                self.listen.ip()
            ),
            None => "a request needs exactly one Host header".to_string(),
        };
        self.warn("host", req, &why);
        if req.path.first().map(String::as_str) == Some("api") {
            Refusal::json(421, why)
        } else {
            Refusal {
                reply: Reply::Text(421, "text/plain; charset=utf-8", why),
                header: None,
            }
        }
    }

    /// The Content-Type, origin and CSRF checks of a write.
    fn same_origin_json(
        &self,
        req: &Request,
        host: &str,
        session: &str,
    ) -> Result<(), WriteRefusal> {
        let content_type = req.header("content-type").unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            let got = if content_type.is_empty() {
                "none"
            } else {
                content_type
            };
            return Err(WriteRefusal::ContentType {
                method: req.method.clone(),
                got: got.to_string(),
            });
        }
        let from = match (req.header("origin"), req.header("referer")) {
            (Some(origin), _) => origin,
            (None, Some(referer)) => origin_of(referer),
            (None, None) => {
                return Err(WriteRefusal::NoOrigin {
                    method: req.method.clone(),
                    host: host.to_string(),
                })
            }
        };
        if !self.is_own_origin(from, host) {
            return Err(WriteRefusal::OtherOrigin {
                from: from.to_string(),
                host: host.to_string(),
            });
        }
        let token = req
            .header(&CSRF_HEADER.to_ascii_lowercase())
            .and_then(unhex);
        match token {
            Some(t) if self.secret.verify("csrf", session.as_bytes(), &t) => Ok(()),
            _ => Err(WriteRefusal::Csrf),
        }
    }

    /// Whether `origin` (`scheme://host[:port]`) is the dashboard's: http or https of the
    /// request's Host, or of an `--allowed-host` name (behind a proxy that passes another Host).
    fn is_own_origin(&self, origin: &str, host: &str) -> bool {
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return false;
        }
        let name = bare_host(authority)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        authority.eq_ignore_ascii_case(host) || self.allowed_hosts.contains(&name)
    }

    /// The anti-CSRF token of a session.
    pub fn csrf_token(&self, session: &str) -> String {
        hex(&self.secret.tag("csrf", session.as_bytes()))
    }

    fn session_cookie(&self, req: &Request) -> Option<String> {
        req.headers_named("cookie")
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, value)| *name == self.cookie && is_session_id(value))
            .map(|(_, value)| value.to_string())
    }

    /// The `Set-Cookie` value of session `id`; `max_age` bounds a signed-in session.
    pub fn cookie_for(&self, id: &str, max_age: Option<Duration>, secure: bool) -> String {
        let mut cookie = format!("{}={id}; Path=/; HttpOnly; SameSite=Strict", self.cookie);
        if let Some(age) = max_age {
            cookie.push_str(&format!("; Max-Age={}", age.as_secs()));
        }
        if secure {
            cookie.push_str("; Secure");
        }
        cookie
    }

    pub fn warn(&self, kind: &'static str, req: &Request, why: &str) {
        let verdict = self
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(kind);
        if let Verdict::Log { suppressed } = verdict {
            let peer = req.peer.map(|p| p.to_string()).unwrap_or_default();
            let path = format!("/{}", req.path.join("/"));
            tracing::warn!(%peer, method = %req.method, %path, suppressed, "dashboard: {why}");
        }
    }
}

/// `host` without its port (and without the brackets of an IPv6 literal).
fn bare_host(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// `scheme://authority` of a URL.
fn origin_of(url: &str) -> &str {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url;
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    &url[..end]
}

fn over_tls(req: &Request) -> bool {
    let forwarded = req
        .header("x-forwarded-proto")
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let origin = req.header("origin").or_else(|| req.header("referer"));
    forwarded
        || origin.is_some_and(|o| {
            o.get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        })
}

/// A page asked for without signing in: to the sign-in page, coming back afterwards.
fn to_sign_in(req: &Request) -> Refusal {
    let mut next: String = req
        .path
        .iter()
        .map(|s| format!("/{}", super::pages::encode(s)))
        .collect();
    if next.is_empty() {
        next.push('/');
    }
    if !req.query.is_empty() {
        let query = serde_urlencoded::to_string(&req.query).unwrap_or_default();
        next = format!("{next}?{query}");
    }
    Refusal {
        reply: Reply::Redirect(format!("/login?next={}", super::pages::encode(&next))),
        header: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(listen: &str, allowed: &[&str]) -> Guard {
        let listen: SocketAddr = listen.parse().unwrap();
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        let access = Access::choose(listen, None, false);
        Guard::new(
            std::sync::Arc::new(Secret::random().unwrap()),
            listen,
            &allowed,
            access,
        )
    }

    #[test]
    fn hosts_are_the_listen_address_localhost_and_the_allowed_names() {
        let g = guard("127.0.0.1:8080", &["Dash.Example:443"]);
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:8080",
            "LOCALHOST",
            "dash.example",
            "dash.example.:8080",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "10.0.0.1:8080",
            "[::1]:8080",
            "127.0.0.1.evil",
            "",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
        // Listening on every address: any IP literal (a rebinding page comes under a name).
        let any = guard("0.0.0.0:8080", &[]);
        assert!(any.host_allowed("10.1.2.3:8080") && any.host_allowed("[::1]:8080"));
        assert!(!any.host_allowed("evil.example:8080"));
    }

    #[test]
    fn the_mode_follows_the_listen_address_and_the_flags() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(matches!(
            Access::choose(loopback, None, false),
            Access::Loopback
        ));
        assert!(matches!(Access::choose(any, None, true), Access::Anonymous));
        let Access::ReadOnly(why) = Access::choose(any, None, false) else {
            panic!("not read-only")
        };
        assert!(
            why.contains("0.0.0.0:8080") && why.contains("--users-file"),
            "{why}"
        );
    }

    #[test]
    fn tokens_are_per_session_and_ids_are_checked() {
        let g = guard("127.0.0.1:8080", &[]);
        let (a, b) = (session_id().unwrap(), session_id().unwrap());
        assert!(is_session_id(&a) && a != b);
        let token = g.csrf_token(&a);
        assert!(g
            .secret
            .verify("csrf", a.as_bytes(), &unhex(&token).unwrap()));
        assert!(!g
            .secret
            .verify("csrf", b.as_bytes(), &unhex(&token).unwrap()));
        assert!(!is_session_id("../etc") && !is_session_id(&a.to_uppercase()));
        assert_eq!(origin_of("https://h:1/x?y#z"), "https://h:1");
        let proxied = guard("127.0.0.1:8080", &["dash.example"]);
        for (origin, own) in [
            ("http://127.0.0.1:8080", true),
            ("HTTPS://127.0.0.1:8080", true),
            ("https://dash.example", true),
            ("https://dash.example:8443", true),
            ("http://127.0.0.1:8081", false),
            ("http://127.0.0.1", false),
            ("null", false),
            ("ftp://127.0.0.1:8080", false),
            ("https://dash.example.evil.example", false),
            ("https://evil.example/https://dash.example", false),
        ] {
            assert_eq!(
                proxied.is_own_origin(origin, "127.0.0.1:8080"),
                own,
                "{origin}"
            );
        }
        assert_eq!(bare_host("[::1]:80"), "::1");
        assert_eq!(
            g.cookie_for(&a, Some(Duration::from_secs(60)), true),
            format!(
                "ringmq_dashboard_8080={a}; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
            )
        );
    }
}
