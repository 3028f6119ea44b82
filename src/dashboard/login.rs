//! The optional sign-in, the way rocketmq-dashboard does it: `--users-file` names a properties
//! file of `name=password[,role]` lines (its `users.properties`, which it reads when
//! `rocketmq.config.loginRequired=true`): role `1` is an admin, `0` or none a user. Here a user
//! reads everything and an admin also writes (create/delete topics, reset offsets, send,
//! resend). The file is re-read when it changes (checked on each signed-in request, no timer),
//! a file that does not parse or names nobody keeps the old users and is logged; a user removed
//! from it is signed out at their next request.
//!
//! Passwords are compared in constant time (HMAC tags under the start-up key, so the compare
//! does not even leak the length). Sessions are bounded in number ([`MAX_SESSIONS`], the least
//! recently seen one goes first), expire after [`IDLE`] without a request and after
//! [`LIFETIME`] in any case; a session id is replaced at sign-in. `/metrics` also takes the
//! users' credentials as HTTP Basic, for Prometheus.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use maud::html;
use serde::Deserialize;
use serde_json::json;

use super::guard::{session_id, Access, Secret, Visitor};
use super::http::{ApiError, Reply, Request};
use super::State;

/// Signed-in sessions kept at most.
pub const MAX_SESSIONS: usize = 256;
/// A session unused this long is over.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session is over this long after sign-in, used or not.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub admin: bool,
}

struct Account {
    /// HMAC of the password under the start-up key.
    tag: [u8; 32],
    admin: bool,
}

/// What identifies a version of the file.
type Stamp = (Option<SystemTime>, u64);

struct Table {
    stamp: Stamp,
    accounts: HashMap<String, Account>,
}

struct Session {
    user: String,
    created: Instant,
    last_seen: Instant,
}

pub struct Logins {
    path: PathBuf,
    secret: Arc<Secret>,
    table: Mutex<Table>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// What is wrong with the users file.
#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    #[error("cannot read the users file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the users file {}: {problem}", path.display())]
    Bad {
        path: PathBuf,
        problem: UserLineError,
    },
    #[error("the users file {} names no user", .0.display())]
    NoUser(PathBuf),
}

/// A line of the users file that is refused.
#[derive(Debug, thiserror::Error)]
pub enum UserLineError {
    #[error(transparent)]
    Syntax(#[from] crate::config::properties::ParseError),
    #[error("line {line}: user {user} has role {role:?}; the roles are 1 (admin) and 0 (user)")]
    Role {
        line: usize,
        user: String,
        role: String,
    },
    #[error("line {line}: user {user} has no password")]
    NoPassword { line: usize, user: String },
    #[error("line {line}: user {user} is also on line {first}")]
    Twice {
        line: usize,
        user: String,
        first: usize,
    },
}

impl Logins {
    /// Reads the users file; an error names the file and line.
    pub fn load(path: &Path, secret: Arc<Secret>) -> Result<Logins, UsersFileError> {
        let (stamp, accounts) = read(path, &secret)?;
        if accounts.is_empty() {
            return Err(UsersFileError::NoUser(path.to_path_buf()));
        }
        warn_if_readable_by_others(path);
        Ok(Logins {
            path: path.to_path_buf(),
            secret,
            table: Mutex::new(Table { stamp, accounts }),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    pub fn describe(&self) -> String {
        let table = self.table();
        let admins = table.accounts.values().filter(|a| a.admin).count();
        format!(
            "sign-in required: {} users ({admins} admins, who write) from {}",
            table.accounts.len(),
            self.path.display()
        )
    }

    /// The users, re-read first when the file changed.
    fn table(&self) -> MutexGuard<'_, Table> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        if now != table.stamp {
            table.stamp = now;
            match read(&self.path, &self.secret) {
                // Caught while an editor rewrites it, most likely: not a reason to sign
                // everyone out.
                Ok((_, accounts)) if accounts.is_empty() => tracing::warn!(
                    "dashboard: the users file {} names no user now; the users read before \
                     are kept",
                    self.path.display()
                ),
                Ok((stamp, accounts)) => {
                    tracing::info!(file = %self.path.display(), users = accounts.len(),
                        "dashboard: the users file changed; re-read");
                    *table = Table { stamp, accounts };
                }
                Err(e) => tracing::warn!("dashboard: {e}; the users read before are kept"),
            }
        }
        table
    }

    /// The user of a signed-in session.
    pub fn user_of(&self, session: &str) -> Option<User> {
        self.user_of_at(session, Instant::now())
    }

    fn user_of_at(&self, session: &str, now: Instant) -> Option<User> {
        let name = {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let s = sessions.get_mut(session)?;
            if expired(s, now) {
                sessions.remove(session);
                return None;
            }
            s.last_seen = now;
            s.user.clone()
        };
        let admin = self.table().accounts.get(&name).map(|a| a.admin);
        match admin {
            Some(admin) => Some(User { name, admin }),
            None => {
                self.end_session(session);
                None
            }
        }
    }

    /// The user whose password this is.
    pub fn check(&self, name: &str, password: &str) -> Option<User> {
        let table = self.table();
        let (tag, admin) = match table.accounts.get(name) {
            Some(a) => (a.tag, Some(a.admin)),
            // Compared all the same, so an unknown name takes as long as a wrong password.
            None => ([0u8; 32], None),
        };
        let matches = self.secret.verify("password", password.as_bytes(), &tag);
        match admin {
            Some(admin) if matches => Some(User {
                name: name.to_string(),
                admin,
            }),
            _ => None,
        }
    }

    pub fn start_session(&self, id: &str, user: &User) {
        self.start_session_at(id, user, Instant::now());
    }

    fn start_session_at(&self, id: &str, user: &User, now: Instant) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| !expired(s, now));
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => sessions.remove(&id),
                None => break,
            };
        }
        let session = Session {
            user: user.name.clone(),
            created: now,
            last_seen: now,
        };
        sessions.insert(id.to_string(), session);
    }

    pub fn end_session(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.remove(id);
    }

    /// `Authorization: Basic` credentials of a user of the file.
    pub fn basic_auth(&self, req: &Request) -> bool {
        let Some(value) = req.header("authorization") else {
            return false;
        };
        let Some((scheme, encoded)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let text = String::from_utf8_lossy(&decoded);
        let Some((name, password)) = text.split_once(':') else {
            return false;
        };
        self.check(name, password).is_some()
    }
}

fn expired(s: &Session, now: Instant) -> bool {
    now.saturating_duration_since(s.last_seen) >= IDLE
        || now.saturating_duration_since(s.created) >= LIFETIME
}

fn stamp(path: &Path) -> Stamp {
    match std::fs::metadata(path) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    }
}

fn read(path: &Path, secret: &Secret) -> Result<(Stamp, HashMap<String, Account>), UsersFileError> {
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|source| UsersFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let accounts = parse(&text, secret).map_err(|problem| UsersFileError::Bad {
        path: path.to_path_buf(),
        problem,
    })?;
    Ok((stamp, accounts))
}

/// `name=password[,role]` lines, as rocketmq-dashboard reads them (the password trimmed; role
/// 1 admin, 0 or none a user); a name given twice, an empty password or another role is an
/// error naming the line.
fn parse(text: &str, secret: &Secret) -> Result<HashMap<String, Account>, UserLineError> {
    let entries = crate::config::properties::parse(text)?;
    let mut accounts = HashMap::new();
    let mut lines = HashMap::new();
    for e in entries {
        let (password, role) = match e.value.split_once(',') {
            Some((p, r)) => (p.trim(), r.trim()),
            None => (e.value.trim(), "0"),
        };
        let admin = match role {
            "1" => true,
            "0" => false,
            other => {
                return Err(UserLineError::Role {
                    line: e.line,
                    user: e.key,
                    role: other.to_string(),
                })
            }
        };
        if password.is_empty() {
            return Err(UserLineError::NoPassword {
                line: e.line,
                user: e.key,
            });
        }
        if let Some(first) = lines.insert(e.key.clone(), e.line) {
            return Err(UserLineError::Twice {
                line: e.line,
                user: e.key,
                first,
            });
        }
        let tag = secret.tag("password", password.as_bytes());
        accounts.insert(e.key, Account { tag, admin });
    }
    Ok(accounts)
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "the users file {} holds passwords and is readable by other users (mode {mode:o}); \
                 chmod 600 it",
                path.display()
            );
        }
    }
}

/// The sign-in routes, open to anyone past the guard; `None` for every other request.
pub fn route(state: &State, req: &Request, visitor: &mut Visitor) -> Option<Reply> {
    let path: Vec<&str> = req.path.iter().map(String::as_str).collect();
    let reply = match (req.method.as_str(), path.as_slice()) {
        ("GET", ["api", "session"]) => session(state, visitor),
        ("GET", ["login"]) => page(state, req),
        ("POST", ["api", "login"]) => sign_in(state, req, visitor),
        ("POST", ["api", "logout"]) => sign_out(state, visitor),
        _ => return None,
    };
    Some(reply)
}

/// What the pages' script needs: the session's anti-CSRF token, who is signed in, and whether
/// writes are possible (and why not).
fn session(state: &State, visitor: &Visitor) -> Reply {
    let guard = &state.guard;
    let read_only = guard.access.write_refusal(visitor.user.as_ref());
    Reply::json(&json!({
        "csrfToken": guard.csrf_token(&visitor.session),
        "login": matches!(guard.access, Access::Login(_)),
        "user": visitor.user.as_ref().map(|u| &u.name),
        "admin": visitor.user.as_ref().is_some_and(|u| u.admin),
        "readOnly": read_only,
    }))
}

#[derive(Deserialize)]
struct SignIn {
    username: String,
    password: String,
}

fn sign_in(state: &State, req: &Request, visitor: &mut Visitor) -> Reply {
    let Access::Login(logins) = &state.guard.access else {
        return Reply::from_api_error(&ApiError::not_found(
            "this dashboard has no sign-in (it was started without --users-file)",
        ));
    };
    let form: SignIn = match req.json() {
        Ok(f) => f,
        Err(e) => return Reply::from_api_error(&e),
    };
    let Some(user) = logins.check(form.username.trim(), &form.password) else {
        state.guard.warn(
            "sign-in",
            req,
            "a sign-in with a wrong user name or password",
        );
        return Reply::from_api_error(&ApiError {
            status: 401,
            error: "wrong user name or password".into(),
        });
    };
    let token = match replace_session(state, visitor, Some(&user)) {
        Ok(token) => token,
        Err(e) => return Reply::from_api_error(&e),
    };
    tracing::info!(user = %user.name, admin = user.admin, "dashboard: signed in");
    Reply::json(&json!({"user": user.name, "admin": user.admin, "csrfToken": token}))
}

/// Ends the visitor's session and gives them a fresh id (signed in as `user`, if any): a
/// session id known before sign-in (set by anyone) is worth nothing after. The new token.
fn replace_session(
    state: &State,
    visitor: &mut Visitor,
    user: Option<&User>,
) -> Result<String, ApiError> {
    let id = session_id().map_err(|e| ApiError {
        status: 500,
        error: e.to_string(),
    })?;
    let mut max_age = None;
    if let Access::Login(logins) = &state.guard.access {
        logins.end_session(&visitor.session);
        if let Some(user) = user {
            logins.start_session(&id, user);
            max_age = Some(LIFETIME);
        }
    }
    visitor.set_cookie = Some(state.guard.cookie_for(&id, max_age, visitor.secure));
    Ok(state.guard.csrf_token(&id))
}

fn sign_out(state: &State, visitor: &mut Visitor) -> Reply {
    match replace_session(state, visitor, None) {
        Ok(token) => Reply::json(&json!({"signedOut": true, "csrfToken": token})),
        Err(e) => Reply::from_api_error(&e),
    }
}

/// The sign-in page; `next` (a path of the dashboard) is where it goes afterwards.
fn page(state: &State, req: &Request) -> Reply {
    if !matches!(state.guard.access, Access::Login(_)) {
        return Reply::Redirect("/".into());
    }
    let next = req
        .param("next")
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\"))
        .unwrap_or("/");
    let main = html! {
        div #error .error hidden {}
        (super::pages::api_form("POST", "/api/login", next, None, html! {
            label { "User " input name="username" required autocomplete="username"; }
            label { "Password " input name="password" type="password" required
                autocomplete="current-password"; }
            button type="submit" { "Sign in" }
        }))
    };
    Reply::Html(
        200,
        super::pages::document(state, "Sign in", html! {}, main),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logins from `text`, with the directory holding its file.
    fn logins(text: &str) -> (Logins, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.properties");
        std::fs::write(&path, text).unwrap();
        let l = Logins::load(&path, Arc::new(Secret::random().unwrap())).unwrap();
        (l, dir)
    }

    #[test]
    fn users_files_read_as_rocketmq_dashboard_writes_them() {
        let (l, _dir) =
            logins("# Format: username=password[,N]\nsuper=admin,1\nuser1=user\nuser2 = pw2 , 0\n");
        let admin = User {
            name: "super".into(),
            admin: true,
        };
        assert_eq!(l.check("super", "admin"), Some(admin));
        assert_eq!(l.check("user1", "user").map(|u| u.admin), Some(false));
        assert_eq!(l.check("user2", "pw2").map(|u| u.admin), Some(false));
        assert_eq!(l.check("super", "admin "), None);
        assert_eq!(l.check("super", "Admin"), None);
        assert_eq!(l.check("nobody", "admin"), None);
        // Edited in place: re-read at the next look-up.
        std::fs::write(&l.path, "super=admin,0\nuser3=pw3,1\n").unwrap();
        assert_eq!(l.check("super", "admin").map(|u| u.admin), Some(false));
        assert_eq!(l.check("user3", "pw3").map(|u| u.admin), Some(true));
        assert_eq!(l.check("user1", "user"), None);
        // A file that does not parse, or names nobody, keeps the users read before.
        std::fs::write(&l.path, "user3=pw3,7\n").unwrap();
        assert_eq!(l.check("user3", "pw3").map(|u| u.admin), Some(true));
        std::fs::write(&l.path, "").unwrap();
        assert_eq!(l.check("user3", "pw3").map(|u| u.admin), Some(true));

        let secret = Secret::random().unwrap();
        let e = parse("a=x,2\n", &secret).err().unwrap();
        assert!(
            matches!(&e, UserLineError::Role { line: 1, role, .. } if role == "2"),
            "{e}"
        );
        let e = parse("a=x\n\na=y\n", &secret).err().unwrap();
        assert!(
            matches!(
                e,
                UserLineError::Twice {
                    line: 3,
                    first: 1,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("also on line 1"), "{e}");
        let e = parse("a= ,1\n", &secret).err().unwrap();
        assert!(
            matches!(e, UserLineError::NoPassword { line: 1, .. }),
            "{e}"
        );
    }

    #[test]
    fn sessions_expire_and_are_bounded() {
        let (l, _dir) = logins("super=admin,1\n");
        let user = l.check("super", "admin").unwrap();
        let t0 = Instant::now();
        l.start_session_at("a", &user, t0);
        assert_eq!(l.user_of_at("a", t0 + IDLE / 2), Some(user.clone()));
        // Used within IDLE, it lives on; idle for IDLE, it is over.
        assert!(l.user_of_at("a", t0 + IDLE).is_some());
        assert!(l.user_of_at("a", t0 + IDLE / 2 + IDLE * 2).is_none());
        l.start_session_at("b", &user, t0);
        let mut t = t0;
        while t < t0 + LIFETIME {
            t += IDLE / 2;
            if t < t0 + LIFETIME {
                assert!(l.user_of_at("b", t).is_some());
            }
        }
        assert!(
            l.user_of_at("b", t).is_none(),
            "over after LIFETIME, however used"
        );

        for i in 0..MAX_SESSIONS + 10 {
            l.start_session_at(
                &format!("s{i}"),
                &user,
                t0 + Duration::from_millis(i as u64),
            );
        }
        let kept = l.sessions.lock().unwrap().len();
        assert_eq!(kept, MAX_SESSIONS);
        assert!(
            l.user_of_at("s0", t0 + Duration::from_secs(1)).is_none(),
            "oldest gone"
        );
        let last = format!("s{}", MAX_SESSIONS + 9);
        assert!(l.user_of_at(&last, t0 + Duration::from_secs(1)).is_some());
        // A user taken out of the file is signed out at their next request.
        std::fs::write(&l.path, "other=pw\n").unwrap();
        assert!(l.user_of_at(&last, t0 + Duration::from_secs(2)).is_none());
    }
}
