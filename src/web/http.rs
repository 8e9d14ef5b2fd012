//! One HTTP request: who is asking, and what they get.
//!
//! Nothing about the house is answered before a login: without a valid session cookie (or
//! an `Authorization: Basic` header of a user) `/` is the login form and every `/api/` path
//! is 401. Only the page's code and style are public. Bodies are read only up to
//! [`MAX_BODY`] (413 beyond), within [`BODY_TIMEOUT`]; a POST from another origin is 403.

use super::body::Body;
use super::house::{self, CommandError, House};
use super::sessions::{self, Sessions};
use crate::api::{SetRequest, Switch};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The largest request body read (a login form, a command): anything larger is 413.
pub const MAX_BODY: usize = 16 * 1024;
/// A body declared larger than [`MAX_BODY`] but at most this is read and dropped before the
/// 413, so the client reads the answer; a larger one is cut off.
const DRAIN_MAX: usize = 1 << 20;
/// How long a request body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// A comment on an idle event stream, so proxies and the browser keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// What every request handler shares.
pub struct Site {
    /// The house and the command path.
    pub house: Arc<House>,
    /// Logged-in browsers.
    pub sessions: Sessions,
    /// The session cookie's name (per instance: browsers share cookies across ports).
    pub cookie: String,
    /// How long a session lasts, for the cookie's Max-Age.
    pub session_s: u64,
    /// Stops event streams on shutdown.
    pub stop: CancellationToken,
    /// Failed logins per address (`login_limit.rs`).
    pub logins: super::login_limit::LoginLimit,
}

/// A response with a body and the headers every response carries.
fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Body::full(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("text/plain")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    );
    r
}

/// A JSON error `{"error": why}`.
fn error(status: StatusCode, why: impl std::fmt::Display) -> Response<Body> {
    respond(
        status,
        "application/json",
        json!({"error": why.to_string()}).to_string(),
    )
}

fn json_ok(status: u16, v: &Value) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    respond(status, "application/json", v.to_string())
}

fn redirect(to: &str, cookie: Option<String>) -> Response<Body> {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "");
    r.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
    );
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// The login form, with a message when a login failed.
fn login_page(status: StatusCode, message: &str) -> Response<Body> {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    respond(
        status,
        "text/html; charset=utf-8",
        LOGIN.replace("{{message}}", &escaped),
    )
}

/// Why a login did not go through.
enum LoginError {
    /// Too many failures from this address: try again in this many seconds.
    Wait(u64),
    /// A wrong user name or password.
    Refused(sessions::Refused),
}

/// `429`: too many failed logins from this address; try again in `wait_s` seconds.
fn too_many(wait_s: u64) -> Response<Body> {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed logins from this address; try again in {wait_s} s"),
    );
    if let Ok(v) = HeaderValue::from_str(&wait_s.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Answers a plain-HTTP request when the page is served over HTTPS: a redirect.
pub fn to_https(req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return error(
            StatusCode::BAD_REQUEST,
            "this page is served over HTTPS; open https://<this Pi>:<port>/",
        );
    }
    let mut r = respond(
        StatusCode::PERMANENT_REDIRECT,
        "text/plain",
        "this page is served over HTTPS\n",
    );
    if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{path}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

impl Site {
    /// Handles one request over a connection that is TLS when `secure`.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
        secure: bool,
        peer: std::net::IpAddr,
    ) -> Response<Body> {
        let now = crate::clock::now_ms();
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/app.js") => {
                return respond(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS)
            }
            (&Method::GET, "/app.css") => {
                return respond(StatusCode::OK, "text/css; charset=utf-8", APP_CSS)
            }
            (&Method::GET, "/favicon.ico") => {
                return respond(StatusCode::NOT_FOUND, "text/plain", "")
            }
            _ => {}
        }
        if method == Method::POST && !same_origin(&req) {
            return error(
                StatusCode::FORBIDDEN,
                "a request from another site is refused",
            );
        }
        if (&method, path.as_str()) == (&Method::POST, "/login") {
            return self.login(req, now, secure, peer).await;
        }
        let token = self.token(&req);
        let mut user = token.as_deref().and_then(|t| self.sessions.user(t, now));
        if user.is_none() {
            if let Some((u, p)) = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok())
                .and_then(sessions::basic)
            {
                match self.check_login(&u, &p, now, peer).await {
                    Ok(()) => user = Some(u),
                    Err(LoginError::Wait(wait)) => return too_many(wait),
                    Err(LoginError::Refused(why)) => {
                        return error(StatusCode::UNAUTHORIZED, format!("login refused: {why}"))
                    }
                }
            }
        }
        let Some(user) = user else {
            return match (&method, path.as_str()) {
                (&Method::GET, "/") => login_page(StatusCode::OK, ""),
                (_, p) if p.starts_with("/api/") => error(
                    StatusCode::UNAUTHORIZED,
                    "log in first: POST /login, or HTTP Basic with a pimesh user",
                ),
                (_, "/logout") => redirect("/", None),
                _ => error(StatusCode::NOT_FOUND, "no such page"),
            };
        };
        match (&method, path.as_str()) {
            (&Method::GET, "/") => respond(StatusCode::OK, "text/html; charset=utf-8", INDEX),
            (&Method::POST, "/logout") => {
                if let Some(t) = &token {
                    self.sessions.end(t);
                }
                redirect("/", Some(sessions::set_cookie(&self.cookie, "", 0, secure)))
            }
            (&Method::GET, "/api/house") => json_ok(200, &self.house.snapshot(&user)),
            (&Method::GET, "/api/events") => self.events(user, token),
            (&Method::POST, p) if p.starts_with("/api/objects/") => self.object(req, &user).await,
            (_, "/" | "/logout" | "/api/house" | "/api/events") => error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}"),
            ),
            _ => error(StatusCode::NOT_FOUND, "no such page"),
        }
    }

    /// The session token of the request's cookie.
    fn token(&self, req: &Request<hyper::body::Incoming>) -> Option<String> {
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|h| h.to_str().ok())
            .find_map(|h| sessions::cookie(h, &self.cookie))
            .map(str::to_string)
    }

    /// Checks a login (form or HTTP Basic) from `peer`, which may have to wait after too many
    /// failures; a failure counts against it, a success clears its count.
    async fn check_login(
        &self,
        user: &str,
        password: &str,
        now: u64,
        peer: std::net::IpAddr,
    ) -> Result<(), LoginError> {
        if let Some(wait) = self.logins.blocked(peer, now) {
            return Err(LoginError::Wait(wait));
        }
        match self.sessions.check_password(user, password, now).await {
            Ok(()) => {
                self.logins.succeeded(peer);
                Ok(())
            }
            Err(why) => {
                self.logins.failed(peer, now);
                Err(LoginError::Refused(why))
            }
        }
    }

    /// `POST /login` with a form: a session cookie and the page, or the form again.
    async fn login(
        &self,
        req: Request<hyper::body::Incoming>,
        now: u64,
        secure: bool,
        peer: std::net::IpAddr,
    ) -> Response<Body> {
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let mut user = String::new();
        let mut password = String::new();
        for (k, v) in sessions::form_pairs(&body) {
            match k.as_str() {
                "user" => user = v,
                "password" => password = v,
                _ => {}
            }
        }
        match self.check_login(&user, &password, now, peer).await {
            Ok(()) => {}
            Err(LoginError::Wait(wait)) => return too_many(wait),
            Err(LoginError::Refused(why)) => {
                tracing::info!(user = %user.chars().take(64).collect::<String>(), %why, %peer, "web login refused");
                return login_page(StatusCode::UNAUTHORIZED, "Wrong user name or password.");
            }
        }
        match self.sessions.create(&user, now) {
            Ok(token) => {
                tracing::info!(%user, "web login");
                redirect(
                    "/",
                    Some(sessions::set_cookie(
                        &self.cookie,
                        &token,
                        self.session_s,
                        secure,
                    )),
                )
            }
            Err(why) => login_page(StatusCode::UNAUTHORIZED, &why.to_string()),
        }
    }

    /// `GET /api/events`: the house now, then every change, as Server-Sent Events.
    fn events(self: &Arc<Self>, user: String, token: Option<String>) -> Response<Body> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
        let mut changes = self.house.subscribe();
        let site = self.clone();
        tokio::spawn(async move {
            let snapshot = |site: &Site| {
                Bytes::from(
                    house::frame("house", &site.house.snapshot(&user))
                        .as_bytes()
                        .to_vec(),
                )
            };
            if tx
                .send(Bytes::from_static(b"retry: 1000\n\n"))
                .await
                .is_err()
                || tx.send(snapshot(&site)).await.is_err()
            {
                return;
            }
            let mut keepalive = tokio::time::interval(KEEPALIVE);
            keepalive.tick().await;
            loop {
                let next = tokio::select! {
                    _ = site.stop.cancelled() => return,
                    _ = tx.closed() => return,
                    _ = keepalive.tick() => {
                        // A logout, a new password or a removed user ends the stream.
                        if token.as_deref().is_some_and(|t| site.sessions.user(t, crate::clock::now_ms()).is_none()) {
                            return;
                        }
                        Bytes::from_static(b": keep-alive\n\n")
                    }
                    change = changes.recv() => match change {
                        Ok(f) => Bytes::from(f.as_bytes().to_vec()),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => snapshot(&site),
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                };
                if tx.send(next).await.is_err() {
                    return;
                }
            }
        });
        let mut r = respond(StatusCode::OK, "text/event-stream", "");
        *r.body_mut() = Body::stream(rx);
        r
    }

    /// `POST /api/objects/<id>/set` (`{"state": "ON"|"OFF"|"TOGGLE"}`) and
    /// `POST /api/objects/<id>/move` (`{"x": …, "y": …}`).
    async fn object(&self, req: Request<hyper::body::Incoming>, user: &str) -> Response<Body> {
        let path = req.uri().path().to_string();
        let rest = path.trim_start_matches("/api/objects/");
        let Some((id, verb)) = rest.split_once('/') else {
            return error(StatusCode::NOT_FOUND, "no such page");
        };
        let id = id.to_string();
        let verb = verb.to_string();
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
        };
        let result = match verb.as_str() {
            "set" => match v["state"].as_str().and_then(Switch::parse) {
                Some(s) => {
                    let req = SetRequest {
                        state: Some(s),
                        ..Default::default()
                    };
                    self.house.command(user, &id, req).await
                }
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "give {\"state\": \"ON\", \"OFF\" or \"TOGGLE\"}",
                    )
                }
            },
            "move" => match (v["x"].as_f64(), v["y"].as_f64()) {
                (Some(x), Some(y))
                    if x.is_finite() && y.is_finite() && x.abs() < 1e6 && y.abs() < 1e6 =>
                {
                    self.house.move_to(user, &id, x, y).await
                }
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "give {\"x\": number, \"y\": number}, each within ±1000000",
                    )
                }
            },
            _ => return error(StatusCode::NOT_FOUND, "no such page"),
        };
        match result {
            Ok(reply) => json_ok(house::status_of(&reply), &json!(reply)),
            Err(e @ CommandError::Forbidden(..)) => error(StatusCode::FORBIDDEN, e),
            Err(e @ CommandError::BadId(_)) => error(StatusCode::BAD_REQUEST, e),
            Err(e @ CommandError::Busy) => error(StatusCode::SERVICE_UNAVAILABLE, e),
            Err(e @ CommandError::Timeout) => error(StatusCode::GATEWAY_TIMEOUT, e),
            Err(e @ CommandError::Link(_)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
}

/// Whether a request's `Origin` (when it has one) is the host it was sent to.
fn same_origin(req: &Request<hyper::body::Incoming>) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
    else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let bare = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    bare == Some(host)
}

/// The request body, at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`], or the error answer.
async fn read_body(req: Request<hyper::body::Incoming>) -> Result<Bytes, Response<Body>> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {MAX_BODY} bytes"),
        )
    };
    if let Some(n) = declared.filter(|n| *n > MAX_BODY as u64) {
        if n <= DRAIN_MAX as u64 {
            // Read and drop it, so the client is not cut off while still sending and gets
            // the answer (a reset would lose it).
            let drain = http_body_util::Limited::new(req.into_body(), DRAIN_MAX).collect();
            let _ = tokio::time::timeout(BODY_TIMEOUT, drain).await;
        }
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {e}"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        )),
    }
}
