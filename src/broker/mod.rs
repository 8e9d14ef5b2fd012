//! The embedded MQTT broker: rumqttd's router inside the agent, behind pimesh's own front
//! door ([`crate::door`]) on fixed or first-free ports: MQTT over TLS, (unless turned off)
//! MQTT 3.1.1 and MQTT 5 in the clear, and (unless turned off) MQTT over WebSocket.
//!
//! rumqttd runs only as a router here: it serves no socket. The ports are bound by us, before
//! anything else starts, so a port problem stops the agent before any relay moves and there
//! is no window between choosing a port and listening on it.

pub mod local;

use crate::door;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Where the MQTT 5 port search starts, above the MQTT 3.1.1 port (below it near 65535): 2883
/// next to 1883, so instances sharing a host keep consecutive 3.1.1 ports.
pub const MQTT5_OFFSET: u16 = 1000;
/// Where the WebSocket port search starts when `[broker] ws-port` is not set: the port
/// Mosquitto's and most brokers' examples give WebSocket.
pub const DEFAULT_WS_PORT: u16 = 9001;
/// How many ports past the base the first-free search tries.
pub const PORT_SEARCH_SPAN: u16 = 100;

/// Router limits, set explicitly because rumqttd's defaults are either unusable (zero) or
/// huge. Memory is bounded by connections × inflight and by topics × segment size × count.
pub const MAX_CONNECTIONS: usize = 256;
/// Largest MQTT payload accepted (a full-house `get` reply or snapshot chunk must fit).
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024;
/// Per-topic log segment size in bytes (default of `[broker] segment-bytes`). rumqttd keeps
/// every topic's log, up to (count + 1) segments, for as long as it runs: at 1 MiB an
/// agent's memory kept growing with every busy topic (21 MiB after 20,000 commands and
/// still rising); at 128 KiB it levels off at about 9 MiB. A subscriber that falls further
/// behind loses messages, which the mesh repairs by sync and retained state covers for
/// clients.
pub const SEGMENT_SIZE: usize = 128 * 1024;
/// Per-topic number of segments kept (default of `[broker] segment-count`).
pub const SEGMENT_COUNT: usize = 2;
/// Packets queued towards one connection before the router pauses it. rumqttd also hands a
/// new subscription at most this many retained messages (it drops the rest), so it bounds
/// how many objects a client subscribed to `pimesh/#` learns at once: 4096, not 500, so a
/// big house reaches Home Assistant whole.
pub const MAX_OUTGOING: u64 = 4096;

/// Which port the broker listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortChoice {
    /// This port or fail.
    Fixed(u16),
    /// The first free port counting up from this one.
    FirstFree(u16),
}

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker port {port} on {bind} is already in use; stop what uses it, or choose another with --port (or [broker] port), or leave the port unset to take the first free one")]
    PortInUse { bind: IpAddr, port: u16 },
    #[error("MQTT 5 port {port} on {bind} is already in use; choose another with --mqtt5-port (or [broker] mqtt5-port), or leave it unset to take the first free port from 1000 above the MQTT 3.1.1 one")]
    Mqtt5PortInUse { bind: IpAddr, port: u16 },
    #[error("TLS port {port} on {bind} is already in use; choose another with --tls-port (or [broker] tls-port), or leave it unset to take the first free one from 8883")]
    TlsPortInUse { bind: IpAddr, port: u16 },
    #[error("WebSocket port {port} on {bind} is already in use; choose another with --ws-port (or [broker] ws-port), or leave it unset to take the first free one from 9001")]
    WsPortInUse { bind: IpAddr, port: u16 },
    #[error("the MQTT 5 port and the MQTT 3.1.1 port are both {port}; each needs its own")]
    SamePorts { port: u16 },
    #[error("no free broker port on {bind} from {base} to {last}; set one with --port")]
    NoFreePort { bind: IpAddr, base: u16, last: u16 },
    #[error("cannot listen on {bind}:{port}: {source}")]
    Bind {
        bind: IpAddr,
        port: u16,
        source: std::io::Error,
    },
    #[error("cannot join the embedded broker's router: {0}")]
    Link(String),
    #[error("cannot start the front door thread: {0}")]
    Thread(std::io::Error),
}

/// A running embedded broker.
pub struct Broker {
    /// The port it serves MQTT 3.1.1 on in the clear (none when plaintext is off).
    pub port: Option<u16>,
    /// The port it serves MQTT 5 on in the clear (none when plaintext is off).
    pub port5: Option<u16>,
    /// The port it serves MQTT over TLS on (both versions).
    pub tls_port: u16,
    /// The port it serves MQTT over WebSocket on (none when that is off).
    pub ws_port: Option<u16>,
    /// The agent's in-process link to the router (taken by the agent).
    pub local: Option<(local::LocalLink, local::LocalRx)>,
    /// The front door's shared state: the agent updates its credentials through it.
    pub door: Arc<door::Door>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Broker({:?}, {:?}, {})",
            self.port, self.port5, self.tls_port
        )
    }
}

/// How the broker listens and whom it lets in.
pub struct BrokerOptions {
    /// Address to listen on.
    pub bind: IpAddr,
    /// The MQTT 3.1.1 port policy.
    pub choice: PortChoice,
    /// A fixed MQTT 5 port, or the first free one from [`MQTT5_OFFSET`] above the other.
    pub mqtt5: Option<u16>,
    /// Whether the plaintext ports listen at all.
    pub plaintext: bool,
    /// The TLS port policy.
    pub tls_port: PortChoice,
    /// The WebSocket port policy; none: no WebSocket listener.
    pub websocket: Option<PortChoice>,
    /// The TLS configuration of the front door (a join replaces it through the door).
    pub tls: Arc<rustls::ServerConfig>,
    /// (bytes per segment, segments per topic) of rumqttd's topic logs.
    pub segments: (usize, usize),
    /// The agent's own client id on the router.
    pub client_id: String,
    /// Base of the public topics.
    pub base: String,
    /// Home Assistant's discovery prefix when discovery is on (see [`door::Door`]).
    pub discovery_prefix: Option<String>,
    /// Credentials the front door checks.
    pub auth: door::auth::Auth,
    /// Limits of the front door.
    pub limits: door::Limits,
    /// Stops the front door.
    pub stop: CancellationToken,
}

/// Starts rumqttd's router with the agent joined to it in process (see [`local`]), binds the
/// TLS port, (unless plaintext is off) the MQTT 3.1.1 and MQTT 5 ports and (when asked) the
/// WebSocket port, and serves them through the front door. Returns once all listen.
pub fn start(opts: BrokerOptions) -> Result<Broker, BrokerError> {
    let bind = opts.bind;
    let mut listeners = Vec::new();
    let (mut port, mut port5) = (None, None);
    if opts.plaintext {
        let (l, p, l5, p5) = listen_plain(bind, opts.choice, opts.mqtt5)?;
        listeners.push((l, door::Listener::Plain));
        listeners.push((l5, door::Listener::Plain));
        (port, port5) = (Some(p), Some(p5));
    }
    let (tls_listener, tls_port) = listen(bind, opts.tls_port).map_err(|e| match e {
        BrokerError::PortInUse { bind, port } => BrokerError::TlsPortInUse { bind, port },
        other => other,
    })?;
    listeners.push((tls_listener, door::Listener::Tls));
    let mut ws_port = None;
    if let Some(choice) = opts.websocket {
        let (l, p) = listen(bind, choice).map_err(|e| match e {
            BrokerError::PortInUse { bind, port } => BrokerError::WsPortInUse { bind, port },
            other => other,
        })?;
        let plaintext = opts.plaintext;
        listeners.push((l, door::Listener::WebSocket { plaintext }));
        ws_port = Some(p);
    }
    let router = rumqttd::Broker::new(config(opts.segments));
    let own = local::connect(&router, &opts.client_id).map_err(BrokerError::Link)?;
    let door = Arc::new(door::Door {
        base: opts.base,
        discovery_prefix: opts.discovery_prefix,
        auth: opts.auth,
        slots: door::Slots::new(opts.limits.clone()),
        retained: door::retained::RetainedBudget::new(
            opts.limits.max_retained_topics,
            opts.limits.max_retained_bytes,
        ),
        limits: opts.limits,
        stats: Default::default(),
        log: Default::default(),
        tls: Arc::new(crate::tls::ServerSlot::new(opts.tls)),
        router: Arc::new(router),
        stop: opts.stop,
    });
    door::serve(door.clone(), listeners).map_err(BrokerError::Thread)?;
    tracing::info!(%bind, port, mqtt5_port = port5, tls_port, ws_port, "embedded broker listening");
    Ok(Broker {
        port,
        port5,
        tls_port,
        ws_port,
        local: Some(own),
        door,
    })
}

/// Binds the MQTT 3.1.1 port and the MQTT 5 port.
fn listen_plain(
    bind: IpAddr,
    choice: PortChoice,
    mqtt5: Option<u16>,
) -> Result<(TcpListener, u16, TcpListener, u16), BrokerError> {
    let (listener, port) = listen(bind, choice)?;
    let (listener5, port5) = match mqtt5 {
        Some(p) if p == port => return Err(BrokerError::SamePorts { port }),
        Some(p) => listen(bind, PortChoice::Fixed(p)).map_err(|e| match e {
            BrokerError::PortInUse { bind, port } => BrokerError::Mqtt5PortInUse { bind, port },
            other => other,
        })?,
        None => {
            let base = port
                .checked_add(MQTT5_OFFSET)
                .unwrap_or(port - MQTT5_OFFSET);
            listen(bind, PortChoice::FirstFree(base))?
        }
    };
    Ok((listener, port, listener5, port5))
}

/// Binds the port: fixed ports must be free, otherwise count up to the first free one.
fn listen(bind: IpAddr, choice: PortChoice) -> Result<(TcpListener, u16), BrokerError> {
    let try_bind = |port: u16| TcpListener::bind(SocketAddr::new(bind, port));
    match choice {
        PortChoice::Fixed(port) => try_bind(port).map(|l| (l, port)).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                BrokerError::PortInUse { bind, port }
            } else {
                BrokerError::Bind { bind, port, source }
            }
        }),
        PortChoice::FirstFree(base) => {
            let last = base.saturating_add(PORT_SEARCH_SPAN - 1);
            (base..=last)
                .find_map(|p| try_bind(p).ok().map(|l| (l, p)))
                .ok_or(BrokerError::NoFreePort { bind, base, last })
        }
    }
}

/// rumqttd's configuration: a router with explicit limits and no listener of its own;
/// `segments` is (bytes per segment, segments per topic).
fn config(segments: (usize, usize)) -> rumqttd::Config {
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: MAX_CONNECTIONS,
            max_outgoing_packet_count: MAX_OUTGOING,
            max_segment_size: segments.0,
            max_segment_count: segments.1,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn fixed_port_in_use_is_reported_by_number() {
        let taken = TcpListener::bind((LOOPBACK, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = listen(LOOPBACK, PortChoice::Fixed(port)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("broker port {port} on 127.0.0.1 is already in use; stop what uses it, or choose another with --port (or [broker] port), or leave the port unset to take the first free one")
        );
    }

    #[test]
    fn first_free_skips_a_taken_port() {
        let taken = TcpListener::bind((LOOPBACK, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let (_l, chosen) = listen(LOOPBACK, PortChoice::FirstFree(port)).unwrap();
        assert!(chosen > port);
    }
}
