//! The house on a page, served by every instance.
//!
//! A small web app on its own port (fixed, or the first free one from 8080; `agent.json`
//! names it as `http-port`): a floor plan with every object at its x/y, its state, its holder
//! and whether it is available; a click switches an object, a drag moves it, a panel lists
//! the peers. The page is live through Server-Sent Events and its assets are compiled into
//! the binary (`assets/`).
//!
//! Like the front door, the server runs on a thread and runtime of its own, so a slow
//! browser never delays the agent. It reads the house from the embedded broker's router and
//! sends commands there as the logged-in user ([`house`]), so a click takes exactly the path
//! of an MQTT `…/set` from that user. Logins are the MQTT users' ([`sessions`]). With `[web]
//! tls` (the default) it speaks HTTPS with the instance's certificate from the mesh CA
//! (`tls::Material::web_server_config`: no client certificate asked for; a join replaces
//! it), and answers plain HTTP on the same port with a
//! redirect. hyper parses every request; heads are bounded ([`MAX_HEAD`], hyper answers 431
//! beyond), bodies too ([`http::MAX_BODY`], 413), connections as well ([`MAX_CONNECTIONS`]).

mod body;
mod house;
mod http;
pub mod layout;
pub mod login_limit;
pub mod sessions;

use crate::config::WebConfig;
use crate::door::auth::Auth;
use crate::tls::ServerSlot;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Largest request head (request line and headers) read; hyper answers 431 beyond.
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers a request may carry.
pub const MAX_HEADERS: usize = 64;
/// Connections served at once (each browser keeps a few, one of them the event stream);
/// more are closed at once.
pub const MAX_CONNECTIONS: usize = 128;
/// How long a connection may take for its TLS handshake and each request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports tried past the base when none is fixed.
pub const PORT_SEARCH_SPAN: u16 = 100;

/// Why the page could not be served.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("web port {port} on {bind} is already in use; choose another with [web] port, or leave it out to take the first free one from [web] base-port")]
    PortInUse { bind: IpAddr, port: u16 },
    #[error("no free web port on {bind} from {base} to {last}; set one with [web] port")]
    NoFreePort { bind: IpAddr, base: u16, last: u16 },
    #[error("cannot listen for the web page on {bind}:{port}: {source}")]
    Bind {
        bind: IpAddr,
        port: u16,
        source: std::io::Error,
    },
    #[error("the web page cannot join the embedded broker's router: {0}")]
    Link(String),
    #[error("cannot start the web thread: {0}")]
    Thread(std::io::Error),
}

/// What the web server needs from the agent.
pub struct WebOptions {
    /// The `[web]` table.
    pub config: WebConfig,
    /// Address to listen on (the broker's).
    pub bind: IpAddr,
    /// Base of the public topics.
    pub base: String,
    /// This instance.
    pub uuid: Uuid,
    /// Its name.
    pub name: String,
    /// Where the sessions are kept.
    pub data_dir: PathBuf,
    /// The front door's credential checker: the same users.
    pub auth: Auth,
    /// The embedded broker's router.
    pub router: Arc<rumqttd::Broker>,
    /// The page's TLS configuration (used when `[web] tls` is on; a join replaces it).
    pub tls: Arc<ServerSlot>,
    /// Stops the server.
    pub stop: CancellationToken,
}

/// Binds the port and serves the page on a thread of its own; returns the port.
pub fn start(opts: WebOptions) -> Result<u16, WebError> {
    let (listener, port) = listen(opts.bind, opts.config.port, opts.config.base_port)?;
    listener
        .set_nonblocking(true)
        .map_err(|source| WebError::Bind {
            bind: opts.bind,
            port,
            source,
        })?;
    let client = format!("pimesh-web-{}", opts.uuid);
    let (link, rx) =
        crate::broker::local::connect(&opts.router, &client).map_err(WebError::Link)?;
    let house = Arc::new(house::House::new(
        &opts.base,
        opts.uuid,
        &opts.name,
        link,
        opts.config.rooms.clone(),
    ));
    let session_ms = u64::from(opts.config.session_hours) * 3_600_000;
    let site = Arc::new(http::Site {
        house: house.clone(),
        sessions: sessions::Sessions::load(
            Some(&opts.data_dir),
            session_ms,
            opts.auth,
            crate::clock::now_ms(),
        ),
        cookie: format!("pimesh-{}", &opts.uuid.simple().to_string()[..8]),
        session_s: session_ms / 1000,
        stop: opts.stop.clone(),
        logins: Default::default(),
    });
    let https = opts.config.tls;
    let tls = https.then_some(opts.tls);
    let stop = opts.stop;
    std::thread::Builder::new()
        .name("pimesh-web".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the web page's runtime");
                    return;
                }
            };
            rt.block_on(async move {
                tokio::spawn(house.run(rx, stop.clone()));
                serve(listener, site, tls, stop).await;
            });
        })
        .map_err(WebError::Thread)?;
    tracing::info!(port, https, "web page listening");
    Ok(port)
}

/// Binds the fixed port, or the first free one from `base`.
fn listen(bind: IpAddr, fixed: Option<u16>, base: u16) -> Result<(TcpListener, u16), WebError> {
    let try_bind = |port: u16| TcpListener::bind(SocketAddr::new(bind, port));
    match fixed {
        Some(port) => try_bind(port).map(|l| (l, port)).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                WebError::PortInUse { bind, port }
            } else {
                WebError::Bind { bind, port, source }
            }
        }),
        None => {
            let last = base.saturating_add(PORT_SEARCH_SPAN - 1);
            (base..=last)
                .find_map(|p| try_bind(p).ok().map(|l| (l, p)))
                .ok_or(WebError::NoFreePort { bind, base, last })
        }
    }
}

/// Accepts connections until `stop`.
async fn serve(
    listener: TcpListener,
    site: Arc<http::Site>,
    tls: Option<Arc<ServerSlot>>,
    stop: CancellationToken,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the web page cannot listen");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok((s, peer)) => (s, peer.ip()),
            Err(e) => {
                // Out of file descriptors, most likely: wait instead of spinning.
                tracing::warn!(error = %e, "the web page cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (site, tls) = (site.clone(), tls.clone());
        tokio::spawn(async move {
            connection(stream, peer, site, tls).await;
            drop(permit);
        });
    }
}

/// Serves one connection: HTTPS, a redirect to it, or plain HTTP without TLS.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: IpAddr,
    site: Arc<http::Site>,
    tls: Option<Arc<ServerSlot>>,
) {
    let _ = stream.set_nodelay(true);
    let Some(config) = tls.and_then(|slot| slot.get()) else {
        return serve_http(TokioIo::new(stream), peer, site, false).await;
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(HEAD_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == 0x16 => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            if let Ok(Ok(tls)) = tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
                serve_http(TokioIo::new(tls), peer, site, true).await;
            }
        }
        Ok(Ok(1)) => {
            let svc = hyper::service::service_fn(|req| async move {
                Ok::<_, Infallible>(http::to_https(&req))
            });
            let _ = builder().serve_connection(TokioIo::new(stream), svc).await;
        }
        _ => {}
    }
}

/// hyper's HTTP/1 server with our bounds.
fn builder() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS);
    b
}

async fn serve_http<I>(io: TokioIo<I>, peer: IpAddr, site: Arc<http::Site>, secure: bool)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let site = site.clone();
        async move { Ok::<_, Infallible>(site.handle(req, secure, peer).await) }
    });
    let _ = builder().serve_connection(io, svc).await;
}
