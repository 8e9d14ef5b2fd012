//! The front door: pimesh's own MQTT listeners in front of rumqttd's router.
//!
//! Every client connection ends here, not in rumqttd: [`session`] decodes each packet with a
//! codec that returns errors instead of panicking ([`wire`]), checks the client's credentials
//! once ([`auth`]) and every publish and subscription against its role ([`acl`]), enforces
//! limits (packet sizes, connection slots, keep-alive, commands per second), translates
//! between MQTT 3.1.1 and 5, and only then hands messages to the router through an
//! in-process link. rumqttd keeps what it is good at (routing, retained messages) and never
//! parses a byte from the network.
//!
//! Both plaintext listeners serve both protocol versions (the version is read from each
//! CONNECT); the MQTT 5 port is kept so existing clients and `agent.json` readers find what
//! they expect. The TLS listener does the TLS handshake first (in the connection's own task,
//! within the CONNECT timeout and holding a pending slot) and then serves the same session
//! over the encrypted stream; plaintext on it fails the handshake and is closed. A plaintext
//! listener also takes TLS when a connection's first byte starts a TLS handshake (no MQTT
//! packet starts with 0x16), so a peer configured with an instance's plaintext port still
//! links to it over TLS. The WebSocket listener ([`ws`]) does the same sniffing, then the
//! WebSocket handshake, and serves the same session over the client's binary messages.
//! The listeners run on a thread of their own, so a slow disk in the agent never delays a
//! client's CONNACK or PINGRESP.

pub mod acl;

/// The MQTT 5 user property the front door puts on every publish of a user or the local CLI
/// under the base topic, naming who sent it (`user NAME/CLIENT-ID`): the agent scopes command
/// ids by it. A client's own property of that name is replaced, and it is never passed on
/// to subscribers.
pub const SENDER_PROPERTY: &str = "pimesh-sender";

/// The MQTT 5 user property the front door puts on every publish it hands to the router, so
/// the session that delivers it knows what rumqttd's router does not keep: the QoS it was
/// published with (a subscriber gets the lower of that and its own), and `e` when its payload
/// was empty and it was not retained. rumqttd deletes a topic's retained message on any empty
/// publish; MQTT deletes it only on an empty *retained* one (MQTT-3.3.1-12), so such a publish
/// crosses the router with a one-byte placeholder payload, emptied again on delivery. A
/// client's own property of that name is dropped, and it is never passed on.
pub const DOOR_PROPERTY: &str = "pimesh-door";
pub mod auth;
pub mod mark;
pub mod retained;
pub mod session;
pub mod subscriptions;
pub mod sys;
pub mod wire;
pub mod ws;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The limits every connection is held to.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest packet a user may send.
    pub max_packet: usize,
    /// Largest packet a member or the local CLI may send (sync pages are large).
    pub max_packet_trusted: usize,
    /// Connections of users (and anonymous clients) at once.
    pub max_user_connections: usize,
    /// Connections of members and the local CLI at once, apart from the users' slots, so a
    /// flood of user connections locks out neither.
    pub max_trusted_connections: usize,
    /// Connections from one address that have not sent CONNECT yet.
    pub max_pending_per_address: usize,
    /// How long a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Commands (publishes under the base topic) per second per user connection.
    pub commands_per_s: f64,
    /// How many commands a user connection may send at once before the rate applies.
    pub command_burst: f64,
    /// Retained topics clients may leave on the broker, in all.
    pub max_retained_topics: usize,
    /// Payload bytes of those retained messages, in all.
    pub max_retained_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_packet: 256 * 1024,
            max_packet_trusted: crate::broker::MAX_PAYLOAD + 1024,
            max_user_connections: 200,
            max_trusted_connections: 48,
            max_pending_per_address: 16,
            connect_timeout: Duration::from_secs(5),
            commands_per_s: 50.0,
            command_burst: 100.0,
            max_retained_topics: 10_000,
            max_retained_bytes: 16 << 20,
        }
    }
}

/// A topic or filter as the router holds it. rumqttd refuses a filter that starts with `$`
/// (and drops the client that sent it), so `$` topics such as `$SYS/…` cross it with a NUL
/// in place of the `$`: no client can name a topic with a NUL.
pub fn router_name(name: &str) -> String {
    match name.strip_prefix('$') {
        Some(rest) => format!("\0{rest}"),
        None => name.to_string(),
    }
}

/// A topic from the router as clients know it (the inverse of [`router_name`]).
pub fn client_name(name: &str) -> String {
    match name.strip_prefix('\0') {
        Some(rest) => format!("${rest}"),
        None => name.to_string(),
    }
}

/// What every session shares.
pub struct Door {
    /// Base of the public topics (`pimesh`).
    pub base: String,
    /// Home Assistant's discovery prefix when discovery is on: configs of pimesh's devices
    /// there are the agent's alone.
    pub discovery_prefix: Option<String>,
    /// Credential checks.
    pub auth: auth::Auth,
    /// Limits.
    pub limits: Limits,
    /// Connection slot accounting.
    pub slots: Arc<Slots>,
    /// Rate limit of warning lines.
    pub log: LogGate,
    /// The TLS configuration for new connections (a join replaces it).
    pub tls: Arc<crate::tls::ServerSlot>,
    /// rumqttd, for a router link per session.
    pub router: Arc<rumqttd::Broker>,
    /// What clients keep retained on the broker.
    pub retained: retained::RetainedBudget,
    /// Packets and messages counted for `$SYS`.
    pub stats: sys::Stats,
    /// Ends every session.
    pub stop: CancellationToken,
}

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// MQTT in the clear (and TLS, recognised by its first byte).
    Plain,
    /// MQTT over TLS only.
    Tls,
    /// MQTT over WebSocket, for browsers: over TLS (`wss`, recognised by its first byte), and
    /// in the clear (`ws`) when `plaintext` is on.
    WebSocket { plaintext: bool },
}

/// How a session's bytes travel: the front door's rules differ for members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// In the clear.
    Plain,
    /// Over TLS; `client_cert` when the client presented a certificate the mesh CA issued.
    Tls { client_cert: bool },
}

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Counts connections by kind; each count is released when its guard drops.
#[derive(Debug, Default)]
pub struct Slots {
    limits: Limits,
    pending: Mutex<HashMap<IpAddr, usize>>,
    users: Arc<AtomicUsize>,
    trusted: Arc<AtomicUsize>,
}

/// Holds one slot until dropped.
pub struct SlotGuard {
    release: Box<dyn FnOnce() + Send>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let release = std::mem::replace(&mut self.release, Box::new(|| {}));
        release();
    }
}

impl Slots {
    /// Slots for `limits`.
    pub fn new(limits: Limits) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            ..Default::default()
        })
    }

    /// A slot for a connection from `ip` that has not sent CONNECT yet.
    pub fn pending(self: &Arc<Self>, ip: IpAddr) -> Option<SlotGuard> {
        let mut map = self.pending.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= self.limits.max_pending_per_address {
            return None;
        }
        *n += 1;
        let me = self.clone();
        Some(SlotGuard {
            release: Box::new(move || {
                if let Ok(mut map) = me.pending.lock() {
                    if let Some(n) = map.get_mut(&ip) {
                        *n -= 1;
                        if *n == 0 {
                            map.remove(&ip);
                        }
                    }
                }
            }),
        })
    }

    /// Authenticated connections now, of every kind.
    pub fn connected(&self) -> usize {
        self.users.load(Ordering::SeqCst) + self.trusted.load(Ordering::SeqCst)
    }

    /// A slot for an authenticated connection of `role`.
    pub fn admit(self: &Arc<Self>, role: &acl::Role) -> Option<SlotGuard> {
        let (counter, max) = if role.is_trusted() {
            (self.trusted.clone(), self.limits.max_trusted_connections)
        } else {
            (self.users.clone(), self.limits.max_user_connections)
        };
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(SlotGuard {
            release: Box::new(move || {
                counter.fetch_sub(1, Ordering::SeqCst);
            }),
        })
    }
}

/// At most [`LogGate::LINES`] warning lines per [`LogGate::WINDOW_MS`]; the next line that
/// passes says how many were left out, so a scanner cannot flood the journal.
#[derive(Debug, Default)]
pub struct LogGate {
    window_start: AtomicU64,
    lines: AtomicU64,
    suppressed: AtomicU64,
}

impl LogGate {
    /// Lines per window.
    pub const LINES: u64 = 20;
    /// Window length.
    pub const WINDOW_MS: u64 = 10_000;

    /// `Some(lines left out before this one)` if a line may be written now.
    pub fn admit(&self) -> Option<u64> {
        let now = crate::clock::now_ms();
        let start = self.window_start.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= Self::WINDOW_MS {
            self.window_start.store(now, Ordering::Relaxed);
            self.lines.store(0, Ordering::Relaxed);
        }
        if self.lines.fetch_add(1, Ordering::Relaxed) < Self::LINES {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Logs a refused client, unless too many lines were logged lately.
    pub fn refused(&self, peer: SocketAddr, client_id: &str, why: &str) {
        if let Some(suppressed) = self.admit() {
            let client: String = client_id.chars().take(session::MAX_CLIENT_ID).collect();
            tracing::warn!(%peer, %client, %why, suppressed, "client refused");
        }
    }

    /// Logs that a client is sending commands faster than allowed (rate limited too).
    pub fn throttled(&self, peer: SocketAddr, client_id: &str) {
        if let Some(suppressed) = self.admit() {
            tracing::warn!(%peer, client = %client_id, suppressed, "client sends commands faster than allowed; slowing it down");
        }
    }
}

/// Starts serving `listeners` on a thread of its own; returns at once. The thread ends when
/// `door.stop` fires.
pub fn serve(
    door: Arc<Door>,
    listeners: Vec<(std::net::TcpListener, Listener)>,
) -> std::io::Result<()> {
    for (l, _) in &listeners {
        l.set_nonblocking(true)?;
    }
    std::thread::Builder::new()
        .name("door".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the front door's runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                tasks.spawn(sys::publish(door.clone()));
                for (l, kind) in listeners {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => {
                            tasks.spawn(accept(door.clone(), l, kind));
                        }
                        Err(e) => tracing::error!(error = %e, "cannot serve a listener"),
                    }
                }
                door.stop.cancelled().await;
                tasks.shutdown().await;
            });
        })?;
    Ok(())
}

async fn accept(door: Arc<Door>, listener: tokio::net::TcpListener, kind: Listener) {
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Answers leave at once instead of waiting for the client's next ACK
                    // (Nagle against delayed ACK costs ~40 ms per message otherwise).
                    let _ = stream.set_nodelay(true);
                    sessions.spawn(connection(door.clone(), stream, peer, kind));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: wait a little instead of spinning.
                    if let Some(suppressed) = door.log.admit() {
                        tracing::warn!(error = %e, suppressed, "cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            _ = door.stop.cancelled() => break,
        }
    }
    sessions.shutdown().await;
}

/// One accepted connection: a pending slot, the TLS handshake where there is one, then the
/// session.
async fn connection(
    door: Arc<Door>,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    kind: Listener,
) {
    let Some(pending) = door.slots.pending(peer.ip()) else {
        door.log.refused(
            peer,
            "",
            "too many connections without CONNECT from this address",
        );
        return;
    };
    let deadline = tokio::time::Instant::now() + door.limits.connect_timeout;
    let tls = match kind {
        Listener::Tls => true,
        Listener::Plain | Listener::WebSocket { .. } => {
            let mut first = [0u8; 1];
            match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
                Ok(Ok(1)) => first[0] == TLS_HANDSHAKE,
                Ok(_) => return,
                Err(_) => {
                    door.log.refused(peer, "", "no CONNECT in time");
                    return;
                }
            }
        }
    };
    let websocket = matches!(kind, Listener::WebSocket { .. });
    if !tls {
        if kind == (Listener::WebSocket { plaintext: false }) {
            door.log
                .refused(peer, "", "this WebSocket port takes TLS (wss) only");
            return;
        }
        return serve_over(
            door,
            stream,
            peer,
            (pending, deadline),
            Channel::Plain,
            websocket,
        )
        .await;
    }
    let Some(config) = door.tls.get() else {
        door.log
            .refused(peer, "", "TLS is not set up on this instance");
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            door.log
                .refused(peer, "", &format!("TLS handshake failed: {e}"));
            return;
        }
        Err(_) => {
            door.log.refused(peer, "", "no TLS handshake in time");
            return;
        }
    };
    let client_cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .is_some_and(|c| !c.is_empty());
    let channel = Channel::Tls { client_cert };
    serve_over(door, stream, peer, (pending, deadline), channel, websocket).await
}

/// Runs the session on `stream`, after a WebSocket handshake (within the CONNECT deadline)
/// where the listener takes WebSocket.
async fn serve_over<S: session::Transport>(
    door: Arc<Door>,
    stream: S,
    peer: std::net::SocketAddr,
    (pending, deadline): (SlotGuard, tokio::time::Instant),
    channel: Channel,
    websocket: bool,
) {
    if !websocket {
        return session::serve(door, stream, peer, (pending, deadline), channel).await;
    }
    let handshake = ws::accept(stream, door.limits.max_packet);
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(ws)) => session::serve(door, ws, peer, (pending, deadline), channel).await,
        Ok(Err(why)) => door.log.refused(peer, "", &why),
        Err(_) => door.log.refused(peer, "", "no WebSocket handshake in time"),
    }
}
