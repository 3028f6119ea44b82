//! The dashboard's HTTP layer on tiny_http: requests decoded into [`Request`] (method, path
//! segments percent-decoded, query pairs, body), answers built as [`Reply`], and the mapping of
//! failures onto statuses ([`ApiError`]): 400 for input that does not parse, 404 for what does
//! not exist (a topic the nameserver does not know, a message not found), 502 when a
//! nameserver or broker is unreachable or answers an error. Errors are JSON bodies under
//! `/api/` and pages with the error shown elsewhere.

use std::collections::BTreeMap;
use std::io::Read;

use serde::Serialize;

use crate::admin::AdminError;
use crate::client::ClientError;
use crate::remoting::response;

/// Request bodies larger than this are refused (the API's bodies are small forms).
const BODY_MAX_BYTES: u64 = 1 << 20;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// Path segments, percent-decoded (`/topics/%25RETRY%25g` → `["topics", "%RETRY%g"]`).
    pub path: Vec<String>,
    pub query: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Who sent it (for the log of refused logins).
    pub peer: Option<std::net::SocketAddr>,
}

impl Request {
    pub fn from_tiny(req: &mut tiny_http::Request) -> Result<Request, ApiError> {
        let url = req.url().to_string();
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        let path = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let query: BTreeMap<String, String> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::bad_request(format!("the query string does not parse: {e}")))?;
        let mut body = Vec::new();
        req.as_reader()
            .take(BODY_MAX_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| ApiError::bad_request(format!("the request body is unreadable: {e}")))?;
        if body.len() as u64 > BODY_MAX_BYTES {
            return Err(ApiError::bad_request(format!(
                "the request body is larger than {BODY_MAX_BYTES} bytes"
            )));
        }
        let headers = req
            .headers()
            .iter()
            .map(|h| {
                let name = h.field.as_str().as_str().to_ascii_lowercase();
                (name, h.value.as_str().to_string())
            })
            .collect();
        Ok(Request {
            method: req.method().as_str().to_ascii_uppercase(),
            path,
            query,
            body,
            headers,
            peer: req.remote_addr().copied(),
        })
    }

    /// Every value of the header `name` (lower case).
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The header `name` (lower case) when it was sent exactly once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|(n, _)| n == name);
        let first = values.next()?;
        values.next().is_none().then_some(first.1.as_str())
    }

    /// A query parameter, trimmed; `None` when absent or blank.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A required query parameter.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.param(name)
            .ok_or_else(|| ApiError::bad_request(format!("the query parameter {name} is missing")))
    }

    /// The body as JSON of `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("the JSON body does not parse: {e}")))
    }
}

/// A failure with the status it answers.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    pub status: u16,
    pub error: String,
}

impl ApiError {
    pub fn bad_request(error: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            error: error.into(),
        }
    }

    pub fn not_found(error: impl Into<String>) -> ApiError {
        ApiError {
            status: 404,
            error: error.into(),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> ApiError {
        let status = match &e {
            AdminError::Invalid(_) => 400,
            AdminError::NotFound(_) => 404,
            AdminError::Call {
                source: ClientError::Server { code, .. },
                ..
            } if *code == response::TOPIC_NOT_EXIST || *code == response::QUERY_NOT_FOUND => 404,
            AdminError::Call { .. } | AdminError::Failed(_) => 502,
        };
        ApiError {
            status,
            error: e.to_string(),
        }
    }
}

/// An answer.
pub enum Reply {
    Html(u16, String),
    Json(u16, String),
    Text(u16, &'static str, String),
    Static(&'static str, &'static str),
    /// 303 See Other to a path of the dashboard.
    Redirect(String),
}

impl Reply {
    /// `value` as a 200 JSON answer.
    pub fn json<T: Serialize>(value: &T) -> Reply {
        match serde_json::to_string(value) {
            Ok(text) => Reply::Json(200, text),
            Err(e) => Reply::from_api_error(&ApiError {
                status: 500,
                error: format!("the answer does not encode as JSON: {e}"),
            }),
        }
    }

    pub fn from_api_error(e: &ApiError) -> Reply {
        let body = serde_json::json!({"status": e.status, "error": e.error});
        Reply::Json(e.status, body.to_string())
    }

    pub fn into_response(self) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
        let mut location = None;
        let (status, content_type, body) = match self {
            Reply::Html(s, b) => (s, "text/html; charset=utf-8", b),
            Reply::Json(s, b) => (s, "application/json", b),
            Reply::Text(s, t, b) => (s, t, b),
            Reply::Static(t, b) => (200, t, b.to_string()),
            Reply::Redirect(to) => {
                let body = format!("See {to}");
                location = Some(to);
                (303, "text/plain; charset=utf-8", body)
            }
        };
        let mut response = tiny_http::Response::from_data(body.into_bytes())
            .with_status_code(status)
            .with_header(header("Content-Type", content_type))
            .with_header(header("Cache-Control", "no-store"));
        if let Some(h) = location.and_then(|to| tiny_http::Header::from_bytes("Location", to).ok())
        {
            response.add_header(h);
        }
        response
    }
}

/// A response header of the dashboard's own constants (or values built from checked parts:
/// hex, decimal, percent-encoded).
pub fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name, value).expect("a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_errors_map_to_statuses() {
        let server = |code| AdminError::Call {
            what: "x".into(),
            source: ClientError::Server {
                addr: "a".into(),
                code,
                name: "N",
                remark: None,
            },
        };
        assert_eq!(
            ApiError::from(server(response::TOPIC_NOT_EXIST)).status,
            404
        );
        assert_eq!(ApiError::from(server(response::SYSTEM_ERROR)).status, 502);
        let unreachable = AdminError::Call {
            what: "connecting".into(),
            source: ClientError::Closed { addr: "a".into() },
        };
        assert_eq!(ApiError::from(unreachable).status, 502);
        assert_eq!(ApiError::from(AdminError::Invalid("x".into())).status, 400);
        assert_eq!(ApiError::from(AdminError::NotFound("x".into())).status, 404);
    }
}
