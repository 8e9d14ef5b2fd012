//! One client connection, from its first byte to its close.
//!
//! The session reads packets through [`wire`], checks each against the client's [`Role`]
//! ([`acl`]) and limits, and hands what passes to rumqttd's router through an in-process link
//! of its own; messages the router forwards come back here, are filtered again by role and
//! written in the client's protocol version. rumqttd never sees a byte from the network.
//!
//! What rumqttd's router does not keep (the QoS a message was published with, an empty
//! publish that must not delete a retained message) crosses it in [`super::DOOR_PROPERTY`].
//! What a client publishes is handled in [`publish`], what it subscribes to in
//! [`subscribe`]; which of the router's copies of a message it gets (one per matching
//! filter for MQTT 5, one in all for MQTT 3.1.1) is decided by [`super::subscriptions`].
//!
//! Simplifications, all allowed by MQTT: sessions are not kept after a disconnect (CONNACK
//! says session-present 0), and topic aliases are not offered.

use super::acl::{self, Role};
use super::mark::DoorMark;
use super::subscriptions::Subscriptions;
use super::wire::{self, Granted, Inbound, Message, Outbound, Refusal, Version};
use super::{Channel, Door, SlotGuard};
use bytes::{Bytes, BytesMut};
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::Packet;
use rumqttd::Notification;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

mod publish;
mod subscribe;

/// Longest client id accepted (MQTT allows 65535 bytes; nothing needs more than this).
pub const MAX_CLIENT_ID: usize = 128;
/// Publishes sent to a client and not yet acknowledged; past this no more are sent to it
/// until it acknowledges some.
pub const MAX_UNACKED: usize = 1024;
/// Largest CONNECT read before the client is known.
pub const MAX_CONNECT: usize = 64 * 1024;

/// Why a session ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client: no will.
    Clean,
    /// Anything else: the will is published.
    Abnormal(String),
}

/// A connected, authenticated client.
struct Session {
    door: Arc<Door>,
    version: Version,
    role: Role,
    client_id: String,
    peer: SocketAddr,
    /// The router's side of this client.
    tx: LinkTx,
    /// Filters, the QoS granted for each and which of the router's copies the client gets.
    subscriptions: Subscriptions,
    /// Client SUBSCRIBEs waiting for the router's SUBACKs: their codes, and how many of the
    /// router's SUBACKs (one per filter) are still to come.
    pending_subacks: HashMap<u16, (Vec<Granted>, usize)>,
    /// QoS 2 publishes received, waiting for PUBREL.
    awaiting_rel: HashSet<u16>,
    /// Publishes we sent at QoS 1, not yet acknowledged.
    unacked: HashSet<u16>,
    /// Our last packet id towards the client.
    last_pkid: u16,
    /// Bytes waiting to be written to the client.
    out: BytesMut,
    /// Largest packet the client may send.
    max_packet: usize,
    /// Command publishes the client may still send now (token bucket), and when it was filled.
    tokens: f64,
    refilled: Instant,
    /// Whether this connection's retained commands were logged already (once per connection).
    warned_retained_command: bool,
}

/// A client's byte stream.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Asks the kernel to acknowledge what was just read at once. A client that does not set
    /// TCP_NODELAY (paho-mqtt, so Home Assistant) may hold the rest of a packet until its
    /// first bytes are acknowledged, and Linux would delay that acknowledgement by up to
    /// 40 ms; quick-ack mode lapses by itself, so it is asked for after every read.
    fn quickack(&self) {}
}

impl Transport for tokio::net::TcpStream {
    fn quickack(&self) {
        let _ = socket2::SockRef::from(self).set_quickack(true);
    }
}

impl Transport for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn quickack(&self) {
        <tokio::net::TcpStream as Transport>::quickack(self.get_ref().0);
    }
}

/// Serves one accepted connection until it closes; `pending` is its slot until CONNECT, which
/// must arrive before `connect_deadline`.
pub async fn serve<S: Transport>(
    door: Arc<Door>,
    mut stream: S,
    peer: SocketAddr,
    (pending, connect_deadline): (SlotGuard, Instant),
    channel: Channel,
) {
    let mut buf = BytesMut::with_capacity(1024);
    let read_connect = async {
        loop {
            match wire::sniff_version(&buf) {
                Ok(Some(v)) => match wire::decode(v, &mut buf, MAX_CONNECT) {
                    Ok(Some(p)) => return Ok((v, p)),
                    Ok(None) => {}
                    Err(e) => return Err(e.to_string()),
                },
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => return Err("closed before CONNECT".to_string()),
                Ok(_) => stream.quickack(),
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let (version, connect) = match tokio::time::timeout_at(connect_deadline, read_connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(why)) => {
            door.log.refused(peer, "", &why);
            return;
        }
        Err(_) => {
            door.log.refused(peer, "", "no CONNECT in time");
            return;
        }
    };
    let Inbound::Connect {
        client_id,
        clean,
        keep_alive,
        login,
        will,
    } = connect
    else {
        return;
    };
    // MQTT-3.1.3-8: a 3.1.1 client without an id must ask for a clean session (MQTT 5 gets
    // an assigned id either way).
    let persistent_without_id = client_id.is_empty() && !clean && version == Version::V4;
    if client_id.len() > MAX_CLIENT_ID || client_id.contains('\0') || persistent_without_id {
        door.log
            .refused(peer, &client_id, "client id too long or invalid");
        refuse(&mut stream, version, Refusal::BadClientId).await;
        return;
    }
    let role = match door.auth.check(login, crate::clock::now_ms()).await {
        Ok(r) => r,
        Err(d) => {
            door.log.refused(peer, &client_id, &d.why);
            refuse(&mut stream, version, d.refusal).await;
            return;
        }
    };
    if let Err(why) = acl::may_connect_over(&role, channel) {
        door.log.refused(peer, &client_id, why);
        refuse(&mut stream, version, Refusal::NotAuthorized).await;
        return;
    }
    if let Some(w) = &will {
        if !acl::may_publish(&door.base, &role, &w.topic)
            || !acl::may_publish_discovery(door.discovery_prefix.as_deref(), &w.topic)
        {
            door.log.refused(
                peer,
                &client_id,
                &format!(
                    "{} may not publish its will on {:?}",
                    role.describe(),
                    w.topic
                ),
            );
            refuse(&mut stream, version, Refusal::NotAuthorized).await;
            return;
        }
    }
    let Some(_slot) = door.slots.admit(&role) else {
        door.log.refused(
            peer,
            &client_id,
            "all connection slots for its kind of client are taken",
        );
        refuse(&mut stream, version, Refusal::Busy).await;
        return;
    };
    drop(pending);
    let (client_id, assigned_id) = if client_id.is_empty() {
        let id = format!(
            "pimesh-{}",
            crate::secret::to_hex(&crate::secret::random::<8>())
        );
        (id.clone(), Some(id))
    } else {
        (client_id, None)
    };
    let router_id = router_id(&role, &client_id);
    let Ok((tx, rx)) = door.router.link(&router_id) else {
        door.log
            .refused(peer, &client_id, "the router refused the connection");
        refuse(&mut stream, version, Refusal::Busy).await;
        return;
    };
    tracing::debug!(%peer, client = %client_id, role = %role.describe(), ?version, "client connected");
    let trusted = role.is_trusted();
    let mut session = Session {
        max_packet: if trusted {
            door.limits.max_packet_trusted
        } else {
            door.limits.max_packet
        },
        tokens: door.limits.command_burst,
        refilled: Instant::now(),
        warned_retained_command: false,
        door,
        version,
        role,
        client_id,
        peer,
        tx,
        subscriptions: Subscriptions::default(),
        pending_subacks: HashMap::new(),
        awaiting_rel: HashSet::new(),
        unacked: HashSet::new(),
        last_pkid: 0,
        out: BytesMut::new(),
    };
    session.send(Outbound::ConnAck {
        refusal: None,
        assigned_id,
    });
    let end = session.run(&mut stream, buf, rx, keep_alive).await;
    match end {
        End::Clean => {}
        End::Abnormal(why) => {
            tracing::debug!(peer = %session.peer, client = %session.client_id, %why, "client connection ended");
            if let Some(w) = will {
                session.publish_will(w);
            }
        }
    }
    let _ = send_now(
        &mut session.tx,
        Packet::Disconnect(
            rumqttd::protocol::Disconnect {
                reason_code: rumqttd::protocol::DisconnectReasonCode::NormalDisconnection,
            },
            None,
        ),
    );
}

/// Tells a client why it may not connect, then the caller closes the connection.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, version: Version, refusal: Refusal) {
    let mut out = BytesMut::new();
    let ack = Outbound::ConnAck {
        refusal: Some(refusal),
        assigned_id: None,
    };
    if wire::encode(version, &ack, &mut out).is_ok() {
        let _ = stream.write_all(&out).await;
        let _ = stream.flush().await;
    }
}

/// The router's client id: namespaced by role, so a user can never take over the session of
/// a member (or of the agent, whose id has no dot).
fn router_id(role: &Role, client_id: &str) -> String {
    let hex = crate::secret::to_hex(client_id.as_bytes());
    match role {
        Role::Member(u) => format!("m.{u}.{hex}"),
        Role::Local => format!("l.{hex}"),
        Role::User(n) => format!("u.{}.{hex}", crate::secret::to_hex(n.as_bytes())),
        Role::Joiner(i) => format!("j.{i}.{hex}"),
    }
}

/// Queues `packet` on the router now: rumqttd's `LinkTx::send` is `async` but never waits.
pub(crate) fn send_now(tx: &mut LinkTx, packet: Packet) -> Result<(), String> {
    match ready_now(tx.send(packet)) {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the router queue is not ready".into()),
    }
}

/// The output of `fut` if it is ready at its first poll (dropped otherwise).
fn ready_now<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

impl Session {
    async fn run<S>(
        &mut self,
        stream: &mut S,
        mut buf: BytesMut,
        mut rx: LinkRx,
        keep_alive: u16,
    ) -> End
    where
        S: Transport,
    {
        // MQTT: the server may close a connection silent for 1.5 × keep-alive; 0 means never.
        let idle = (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500));
        let mut last_heard = Instant::now();
        loop {
            // Every whole packet already read is handled before reading more.
            loop {
                match wire::decode(self.version, &mut buf, self.max_packet) {
                    Ok(Some(packet)) => {
                        last_heard = Instant::now();
                        self.door
                            .stats
                            .received(matches!(packet, Inbound::Publish(_)));
                        if let Some(end) = self.on_packet(packet).await {
                            let _ = stream.write_all(&self.out).await;
                            let _ = stream.flush().await;
                            return end;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.door
                            .log
                            .refused(self.peer, &self.client_id, &e.to_string());
                        return End::Abnormal(e.to_string());
                    }
                }
            }
            if !self.out.is_empty() {
                // A flush too: TLS and WebSocket streams may hold what was written.
                if let Err(e) = async {
                    stream.write_all(&self.out).await?;
                    stream.flush().await
                }
                .await
                {
                    return End::Abnormal(e.to_string());
                }
                self.out.clear();
            }
            let silent_until = idle.map(|d| last_heard + d);
            let timeout = async {
                match silent_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) => return End::Abnormal("closed by the client".into()),
                    Ok(_) => stream.quickack(),
                    Err(e) => return End::Abnormal(e.to_string()),
                },
                // At most MAX_UNACKED QoS 1 publishes wait for the client's PUBACK: past that
                // the router holds the rest until the client catches up.
                notification = rx.next(), if self.unacked.len() < MAX_UNACKED => match notification {
                    Ok(Some(n)) => {
                        if let Some(end) = self.on_router(n, &rx) {
                            return end;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => return End::Abnormal("the router closed the session (taken over by the same client id?)".into()),
                },
                _ = timeout => return End::Abnormal(format!("silent for 1.5 × its keep-alive of {keep_alive} s")),
                _ = self.door.stop.cancelled() => return End::Abnormal("the agent is stopping".into()),
            }
        }
    }

    fn send(&mut self, packet: Outbound) {
        self.door.stats.sent(matches!(packet, Outbound::Publish(_)));
        if let Err(e) = wire::encode(self.version, &packet, &mut self.out) {
            tracing::warn!(client = %self.client_id, error = %e, "cannot encode a packet for the client");
        }
    }

    /// Handles one packet from the client; `Some` ends the session.
    async fn on_packet(&mut self, packet: Inbound) -> Option<End> {
        match packet {
            Inbound::Publish(m) => return self.on_publish(m).await,
            Inbound::PubAck(pkid) | Inbound::PubComp(pkid) => {
                self.unacked.remove(&pkid);
            }
            Inbound::PubRec(pkid) => self.send(Outbound::PubRel(pkid)),
            Inbound::PubRel(pkid) => {
                self.awaiting_rel.remove(&pkid);
                self.send(Outbound::PubComp(pkid));
            }
            Inbound::Subscribe { pkid, filters } => return self.on_subscribe(pkid, filters),
            Inbound::Unsubscribe { pkid, filters } => return self.on_unsubscribe(pkid, filters),
            Inbound::PingReq => self.send(Outbound::PingResp),
            Inbound::Disconnect { with_will: false } => return Some(End::Clean),
            Inbound::Disconnect { with_will: true } => {
                return Some(End::Abnormal("DISCONNECT asking for its will".into()))
            }
            Inbound::Connect { .. } => return Some(End::Abnormal("a second CONNECT".into())),
            Inbound::Unexpected(what) => {
                return Some(End::Abnormal(format!("a client may not send {what}")))
            }
        }
        None
    }

    /// Handles what the router sends this client; `Some` ends the session.
    fn on_router(&mut self, notification: Notification, rx: &LinkRx) -> Option<End> {
        match notification {
            Notification::Forward(forward) => {
                let topic = super::client_name(&String::from_utf8_lossy(&forward.publish.topic));
                if !acl::may_read(&self.door.base, &self.role, &topic) {
                    return None;
                }
                let via = forward
                    .properties
                    .as_ref()
                    .and_then(|p| p.subscription_identifiers.last().copied());
                let granted = self.subscriptions.copy_qos(
                    self.version,
                    &topic,
                    via,
                    forward.publish.retain,
                )?;
                let (properties, mark) = DoorMark::take(forward.properties);
                // The agent's own publishes carry no mark: they reach each subscriber at the
                // QoS it asked for.
                let qos = mark.map_or(granted, |m| m.qos.min(granted));
                let payload = match mark {
                    Some(m) if m.empty => Bytes::new(),
                    _ => forward.publish.payload,
                };
                let pkid = if qos > 0 {
                    self.last_pkid = self.last_pkid.checked_add(1).unwrap_or(1);
                    self.unacked.insert(self.last_pkid);
                    self.last_pkid
                } else {
                    0
                };
                self.send(Outbound::Publish(Message {
                    topic,
                    payload,
                    qos,
                    retain: forward.publish.retain,
                    pkid,
                    properties,
                }));
            }
            ack @ Notification::DeviceAck(_) => {
                let packet: Option<Packet> = ack.into();
                if let Some(Packet::SubAck(suback, _)) = packet {
                    self.on_router_suback(suback.pkid);
                }
            }
            // The router paused us because our buffer filled and we have taken all of it.
            Notification::Unschedule if rx.ready().is_err() => {
                return Some(End::Abnormal("the router is gone".into()));
            }
            Notification::Disconnect(..) => {
                return Some(End::Abnormal(
                    "taken over by a new connection with the same client id".into(),
                ))
            }
            _ => {}
        }
        None
    }
}
