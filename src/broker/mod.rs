//! The embedded MQTT broker: rumqttd inside the agent, on a fixed or first-free port.
//!
//! Two things rumqttd does not do for us are done here. It binds its listener inside its own
//! thread and only logs a bind failure, so we probe the port first and then find its listening
//! socket among our own file descriptors: an agent never runs without a broker. And it never
//! sets TCP_NODELAY on accepted sockets, which costs ~40 ms per QoS1 hop (Nagle + delayed ACK);
//! on Linux an accepted socket inherits TCP_NODELAY from its listener, so we set it on the
//! listener we found, before anyone is told the port.

pub mod local;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::BorrowedFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where the MQTT 5 port search starts, above the MQTT 3.1.1 port (below it near 65535): 2883
/// next to 1883, so instances sharing a host keep consecutive 3.1.1 ports.
pub const MQTT5_OFFSET: u16 = 1000;
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
/// Unacknowledged QoS1 packets per connection.
pub const MAX_INFLIGHT: usize = 256;
/// Packets queued towards one connection before the router pauses it.
pub const MAX_OUTGOING: u64 = 500;

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
    #[error("the embedded broker did not start listening on {bind}:{port} within {waited:?}")]
    NotListening {
        bind: IpAddr,
        port: u16,
        waited: Duration,
    },
    #[error("cannot join the embedded broker's router: {0}")]
    Link(String),
    #[error("cannot start the embedded broker thread: {0}")]
    Thread(std::io::Error),
}

/// A running embedded broker.
#[derive(Debug)]
pub struct Broker {
    /// The port it serves MQTT 3.1.1 on.
    pub port: u16,
    /// The port it serves MQTT 5 on.
    pub port5: u16,
    /// Receives one message if the broker's thread ever ends (it should not): the agent
    /// treats that as fatal rather than run on without a broker.
    pub died: tokio::sync::oneshot::Receiver<()>,
    /// The agent's in-process link to the router (taken by the agent).
    pub local: Option<(local::LocalLink, local::LocalRx)>,
}

/// Starts rumqttd on `bind`: MQTT 3.1.1 on the chosen port and MQTT 5 on `mqtt5` (or the
/// first free port from [`MQTT5_OFFSET`] above the 3.1.1 one), with `client_id` joined to its router in process
/// (see [`local`]). Returns once both listeners accept connections with TCP_NODELAY on.
pub fn start(
    bind: IpAddr,
    choice: PortChoice,
    mqtt5: Option<u16>,
    segments: (usize, usize),
    client_id: &str,
) -> Result<Broker, BrokerError> {
    let port = choose_port(bind, choice)?;
    let port5 = match mqtt5 {
        Some(p) if p == port => return Err(BrokerError::SamePorts { port }),
        Some(p) => choose_port(bind, PortChoice::Fixed(p)).map_err(|e| match e {
            BrokerError::PortInUse { bind, port } => BrokerError::Mqtt5PortInUse { bind, port },
            other => other,
        })?,
        None => {
            let base = port
                .checked_add(MQTT5_OFFSET)
                .unwrap_or(port - MQTT5_OFFSET);
            choose_port(bind, PortChoice::FirstFree(base))?
        }
    };
    let mut broker = rumqttd::Broker::new(config(bind, (port, port5), segments));
    let own = local::connect(&broker, client_id).map_err(BrokerError::Link)?;
    let (died_tx, died) = tokio::sync::oneshot::channel();
    let (ended_tx, ended_rx) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
            let _ = ended_tx.send(());
            let _ = died_tx.send(());
        })
        .map_err(BrokerError::Thread)?;
    let waited = Duration::from_secs(5);
    let deadline = Instant::now() + waited;
    let (mut ready, mut ready5) = (false, false);
    loop {
        ready = ready || set_nodelay_on_listener(port);
        ready5 = ready5 || set_nodelay_on_listener(port5);
        if ready && ready5 {
            tracing::info!(%bind, port, mqtt5_port = port5, "embedded broker listening");
            return Ok(Broker {
                port,
                port5,
                died,
                local: Some(own),
            });
        }
        // rumqttd logs a bind failure and ends its server thread; that is our signal.
        if ended_rx.try_recv().is_ok() {
            return Err(BrokerError::PortInUse { bind, port });
        }
        if Instant::now() > deadline {
            let port = if ready { port5 } else { port };
            return Err(BrokerError::NotListening { bind, port, waited });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Picks the port by binding it briefly: fixed ports must be free, otherwise count up.
fn choose_port(bind: IpAddr, choice: PortChoice) -> Result<u16, BrokerError> {
    let probe = |port: u16| TcpListener::bind(SocketAddr::new(bind, port)).map(drop);
    match choice {
        PortChoice::Fixed(port) => probe(port).map(|_| port).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AddrInUse {
                BrokerError::PortInUse { bind, port }
            } else {
                BrokerError::Bind { bind, port, source }
            }
        }),
        PortChoice::FirstFree(base) => {
            let last = base.saturating_add(PORT_SEARCH_SPAN - 1);
            (base..=last)
                .find(|&p| probe(p).is_ok())
                .ok_or(BrokerError::NoFreePort { bind, base, last })
        }
    }
}

/// The rumqttd configuration: an MQTT 3.1.1 and an MQTT 5 listener on `ports` (in that
/// order) and explicit limits; `segments` is (bytes per segment, segments per topic).
fn config(bind: IpAddr, ports: (u16, u16), segments: (usize, usize)) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 5000,
        max_payload_size: MAX_PAYLOAD,
        max_inflight_count: MAX_INFLIGHT,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = |name: &str, port: u16| rumqttd::ServerSettings {
        name: name.into(),
        listen: SocketAddr::new(bind, port),
        tls: None,
        next_connection_delay_ms: 0,
        connections: connections.clone(),
    };
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
        v4: Some(HashMap::from([(
            "pimesh".into(),
            server("pimesh", ports.0),
        )])),
        v5: Some(HashMap::from([(
            "pimesh-v5".into(),
            server("pimesh-v5", ports.1),
        )])),
        ..Default::default()
    }
}

/// Finds our own listening socket on `port` and turns TCP_NODELAY on for it (inherited by
/// every connection it accepts). Returns false while there is no such socket yet.
fn set_nodelay_on_listener(port: u16) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().starts_with("socket:"))
            .unwrap_or(false);
        if !is_socket {
            continue;
        }
        // SAFETY: the fd was listed in /proc/self/fd as an open socket of this process and is
        // only borrowed for the calls below; rumqttd's listener lives as long as the process
        // and the agent closes no sockets concurrently during start-up.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let listening = sock.peer_addr().is_err();
        if listening && local.map(|a| a.port()) == Some(port) && sock.set_nodelay(true).is_ok() {
            return true;
        }
    }
    false
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
        let err = choose_port(LOOPBACK, PortChoice::Fixed(port)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("broker port {port} on 127.0.0.1 is already in use; stop what uses it, or choose another with --port (or [broker] port), or leave the port unset to take the first free one")
        );
    }

    #[test]
    fn first_free_skips_a_taken_port() {
        let taken = TcpListener::bind((LOOPBACK, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let chosen = choose_port(LOOPBACK, PortChoice::FirstFree(port)).unwrap();
        assert!(chosen > port);
    }
}
