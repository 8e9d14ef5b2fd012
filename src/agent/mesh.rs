//! The agent's side of the mesh: links to peer brokers, introductions, heartbeats, the live
//! stream and syncs. The message formats are in `crate::mesh::proto`, liveness bookkeeping in
//! `crate::mesh::peers`; this file does the I/O and feeds the replica.

use super::{Agent, PeerLink};
use crate::clock;
use crate::mesh::node::{Msg, Now};
use crate::mesh::peers::{Change, Identified};
use crate::mesh::proto::{Batch, Beat, Hello, Kind, SyncPage, SyncReq};
use crate::mqtt::{Link, LinkEvent, LinkOptions, Qos};
use crate::ratelimit::warn_limited;
use rumqttc::LastWill;
use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

impl Agent {
    /// Opens a link to the seed broker at `addr` (`HOST:PORT`) unless we have one or it is ours.
    pub(super) fn connect_peer(&mut self, addr: &str) {
        self.dial(addr, None);
    }

    /// Opens a link to `addr`, where a peer answered in an earlier run: like an address
    /// learnt from a hello, it ages out if nobody answers there any more.
    pub(super) fn dial_known(&mut self, addr: &str) {
        self.dial(addr, Some(Instant::now()));
    }

    /// Opens a link to `addr`, learnt from a hello at `learnt` or a seed (none).
    fn dial(&mut self, addr: &str, learnt: Option<Instant>) {
        let addr = addr.trim();
        if !self.peers.want_link(addr) {
            return;
        }
        let Some((host, port)) = split_addr(addr) else {
            let shown: String = addr.chars().take(80).collect();
            warn_limited!(self.warns, "bad-peer-addr", peer = %shown, "ignoring a peer address that is not HOST:PORT");
            return;
        };
        if host.parse::<IpAddr>().is_err() && !self.resolved.contains_key(&host) {
            // Our address towards a host name, for our hello: looked up on the side.
            let (tx, name) = (self.internal.clone(), host.clone());
            tokio::spawn(async move {
                let found = tokio::net::lookup_host((name.as_str(), port)).await;
                let target = found.ok().and_then(|mut a| a.next());
                // Only the lookup can take long; this is a local socket call.
                if let Some(ip) = target.and_then(|t| local_ip_towards(t.ip(), t.port())) {
                    let _ = tx.send(super::Internal::Resolved(name, ip));
                }
            });
        }
        let mut opts = LinkOptions::new(
            host,
            port,
            // A fresh suffix per link: a link made again after another was dropped must not
            // reuse a live link's client id (the broker would drop the older one).
            format!(
                "pimesh-peer-{}-{}",
                self.uuid.simple(),
                crate::secret::to_hex(&crate::secret::random::<4>())
            ),
        );
        opts.credentials = Some(super::admin::member_credentials(
            self.members.key.clone(),
            self.members.mesh.clone(),
            self.uuid,
        ));
        opts.keep_alive = Duration::from_secs(2);
        opts.tls = self.tls.mesh.clone();
        opts.last_will = Some(LastWill::new(
            self.topics.status(self.uuid),
            "offline",
            Qos::AtLeastOnce,
            true,
        ));
        let stop = CancellationToken::new();
        let (link, mut rx) = Link::spawn(opts, stop.clone());
        let tx = self.mesh_tx.clone();
        let tag = addr.to_string();
        let until = stop.clone();
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = until.cancelled() => return,
                    ev = rx.recv() => ev,
                };
                let Some(ev) = ev else { return };
                if tx.send((tag.clone(), ev)).await.is_err() {
                    return;
                }
            }
        });
        tracing::info!(peer = %addr, "linking to peer");
        match learnt {
            Some(at) => self.peers.add_learnt_link(addr, at),
            None => self.peers.add_link(addr),
        }
        self.links.insert(
            addr.to_string(),
            PeerLink {
                link,
                stop,
                sync_on_suback: false,
                refused: false,
            },
        );
    }

    /// Closes and forgets the link to `addr`.
    pub(super) fn drop_link(&mut self, addr: &str) {
        if let Some(pl) = self.links.remove(addr) {
            pl.stop.cancel();
        }
        self.peers.remove_link(addr);
    }

    /// Handles an event of a peer link.
    pub(super) async fn on_peer_link(&mut self, addr: &str, ev: LinkEvent) {
        let Some(pl) = self.links.get_mut(addr) else {
            return;
        };
        match ev {
            LinkEvent::Connected => {
                self.peers.link_up(addr);
                let link = pl.link.clone();
                let filters = [self.topics.owner(), self.topics.hello_filter()];
                if let Err(e) = link.subscribe_many(&filters, Qos::AtLeastOnce) {
                    tracing::warn!(peer = %addr, error = %e, "cannot subscribe on peer");
                }
                let hello = serde_json::to_vec(&self.hello()).unwrap_or_default();
                let topic = self.topics.hello(self.uuid);
                let _ = link.publish(&topic, Qos::AtLeastOnce, true, hello).await;
                let status = self.topics.status(self.uuid);
                let _ = link
                    .publish(&status, Qos::AtLeastOnce, true, "online")
                    .await;
            }
            LinkEvent::Subscribed => {
                if std::mem::take(&mut pl.sync_on_suback) {
                    if let Some(uuid) = self.peers.uuid_at(addr) {
                        self.node.link_ready(uuid, Now::real());
                    }
                }
            }
            LinkEvent::Refused(reason) => {
                if !std::mem::replace(&mut pl.refused, true) {
                    tracing::warn!(peer = %addr, %reason, "the peer refused this instance: it is not (yet) a member of that mesh. If it should be, run `pimesh invite` on a member and start this instance with --join TOKEN");
                }
                let changes = self.peers.link_down(addr);
                self.on_changes(changes).await;
            }
            LinkEvent::Disconnected(reason) => {
                tracing::debug!(peer = %addr, %reason, "peer link down");
                let changes = self.peers.link_down(addr);
                self.on_changes(changes).await;
            }
            LinkEvent::Message { topic, payload, .. } => {
                self.on_peer_message(addr, &topic, &payload).await
            }
        }
    }

    /// Handles a message from a peer's broker. A peer that speaks garbage gets a log line
    /// naming it, never a crash.
    async fn on_peer_message(&mut self, addr: &str, topic: &str, payload: &[u8]) {
        let Some((uuid, kind)) = self.topics.classify(topic) else {
            return;
        };
        let mut bad = |what: &str, e: &dyn std::fmt::Display| {
            warn_limited!(self.warns, "malformed-peer-message", peer = %addr, %topic, error = %e, "ignoring a malformed {what} from a peer");
        };
        match kind {
            Kind::Owner => match serde_json::from_slice::<Hello>(payload) {
                Ok(hello) => self.on_owner_hello(addr, hello).await,
                Err(e) => bad("hello", &e),
            },
            Kind::Hello if uuid != self.uuid => match serde_json::from_slice::<Hello>(payload) {
                Ok(hello) if hello.uuid == uuid => self.learn(&hello),
                Ok(hello) => {
                    warn_limited!(self.warns, "hello-for-another", peer = %addr, %topic, claimed = %hello.uuid, "ignoring an introduction that speaks for another instance");
                }
                Err(e) => bad("hello", &e),
            },
            Kind::Beat => match serde_json::from_slice::<Beat>(payload) {
                Ok(beat) => {
                    self.peers.set_shared(uuid, beat.shared);
                    let changes =
                        self.peers
                            .heard(uuid, Some(&beat.name), Instant::now(), clock::now_ms());
                    self.on_changes(changes).await;
                    self.node.receive(uuid, Msg::Beat(beat), Now::real());
                }
                Err(e) => bad("heartbeat", &e),
            },
            Kind::Updates => match serde_json::from_slice::<Batch>(payload) {
                Ok(batch) => {
                    let changes = self
                        .peers
                        .heard(uuid, None, Instant::now(), clock::now_ms());
                    self.on_changes(changes).await;
                    self.node.receive(uuid, Msg::Updates(batch), Now::real());
                }
                Err(e) => bad("update batch", &e),
            },
            Kind::Answer(to) if to == self.uuid => {
                match serde_json::from_slice::<crate::mesh::proto::ForwardReply>(payload) {
                    Ok(answer) => {
                        self.node.receive_answer(uuid, answer.updates, Now::real());
                        self.persist();
                        self.on_forward_reply(uuid, answer.reply)
                    }
                    Err(e) => bad("answer", &e),
                }
            }
            Kind::SyncPage(requester) if requester == self.uuid => {
                match serde_json::from_slice::<SyncPage>(payload) {
                    Ok(page) => self.node.receive(uuid, Msg::SyncPage(page), Now::real()),
                    Err(e) => bad("sync page", &e),
                }
            }
            _ => {}
        }
    }

    /// Messages peers left on our own broker: introductions (retained) and sync requests.
    /// A sync request comes this way so that it reaches us as soon as the requester's link
    /// to us is up, whatever the state of our link back to it.
    pub(super) async fn on_own_mesh_message(&mut self, topic: &str, payload: &[u8]) {
        let Some((uuid, kind)) = self.topics.classify(topic) else {
            return;
        };
        if uuid == self.uuid || payload.is_empty() {
            return;
        }
        match kind {
            Kind::Hello => match serde_json::from_slice::<Hello>(payload) {
                // The topic's UUID is the member that wrote it (the front door's rules); an
                // introduction may only speak for that member.
                Ok(hello) if hello.uuid == uuid => self.learn(&hello),
                Ok(hello) => {
                    warn_limited!(self.warns, "hello-for-another", %topic, claimed = %hello.uuid, "ignoring an introduction that speaks for another instance");
                }
                Err(e) => {
                    warn_limited!(self.warns, "malformed-own-mesh-message", %topic, error = %e, "ignoring a malformed introduction")
                }
            },
            Kind::SyncReq => match serde_json::from_slice::<SyncReq>(payload) {
                Ok(req) => self.node.receive(uuid, Msg::SyncReq(req), Now::real()),
                Err(e) => {
                    warn_limited!(self.warns, "malformed-own-mesh-message", %topic, error = %e, "ignoring a malformed sync request")
                }
            },
            Kind::Cmd => match serde_json::from_slice::<crate::mesh::proto::Forward>(payload) {
                Ok(fwd) => self.on_forward(uuid, fwd),
                Err(e) => {
                    warn_limited!(self.warns, "malformed-own-mesh-message", %topic, error = %e, "ignoring a malformed forwarded command")
                }
            },
            _ => {}
        }
    }

    /// The broker at `addr` told us whose it is.
    async fn on_owner_hello(&mut self, addr: &str, hello: Hello) {
        if self.peers.uuid_at(addr) == Some(hello.uuid) {
            // Already identified: a newer hello only tells us of more peers.
            self.learn(&hello);
            self.publish_owner_hello().await;
            return;
        }
        if self.replica().is_retired(hello.uuid) {
            warn_limited!(self.warns, "retired-peer", peer = %addr, uuid = %hello.uuid, "that broker belongs to an instance that was forgotten; not linking to it");
            self.drop_link(addr);
            return;
        }
        match self.peers.identify(addr, &hello) {
            Identified::Myself => {
                tracing::debug!(peer = %addr, "that address is our own broker");
                self.drop_link(addr);
            }
            Identified::Duplicate => {
                tracing::debug!(peer = %addr, uuid = %hello.uuid, "already linked to that instance");
                self.drop_link(addr);
            }
            Identified::Moved { uuid, from } => {
                tracing::info!(peer = %hello.name, %from, to = %addr, "a peer moved to a new address; following it");
                self.drop_link(&from);
                self.subscribe_peer(addr, uuid, &hello).await;
            }
            Identified::Peer(uuid) => self.subscribe_peer(addr, uuid, &hello).await,
        }
    }

    /// Subscribes to the topics of `uuid` on its broker at `addr`, just identified.
    async fn subscribe_peer(&mut self, addr: &str, uuid: uuid::Uuid, hello: &Hello) {
        if hello.name == self.name {
            tracing::error!(peer = %addr, other = %uuid, "name conflict: instance {uuid} at {addr} is also called {:?}; give one of them another name", self.name);
        }
        if let Some(pl) = self.links.get_mut(addr) {
            let filters = [
                self.topics.beat(uuid),
                self.topics.updates(uuid),
                self.topics.sync_page(uuid, self.uuid),
                self.topics.answer(uuid, self.uuid),
            ];
            pl.sync_on_suback = true;
            if let Err(e) = pl.link.subscribe_many(&filters, Qos::AtLeastOnce) {
                tracing::warn!(peer = %addr, error = %e, "cannot subscribe on peer");
            }
        }
        tracing::info!(peer = %addr, name = %hello.name, %uuid, "peer identified");
        self.remember_peer(uuid, addr);
        // Its broker answered with its retained hello: its process is alive.
        let changes = self
            .peers
            .heard(uuid, None, Instant::now(), clock::now_ms());
        self.on_changes(changes).await;
        self.learn(hello);
        self.publish_owner_hello().await;
    }

    /// Links to the brokers a hello mentions (peer exchange), at most
    /// [`MAX_HELLO_ADDRS`](crate::mesh::proto::MAX_HELLO_ADDRS) of them.
    fn learn(&mut self, hello: &Hello) {
        let (addrs, extra) = hello.addresses();
        if extra > 0 {
            warn_limited!(self.warns, "long-hello", uuid = %hello.uuid, extra, "a hello lists more than {} addresses; ignoring the rest", crate::mesh::proto::MAX_HELLO_ADDRS);
        }
        let now = Instant::now();
        for addr in addrs {
            self.dial(&addr, Some(now));
        }
    }

    /// Our hello: who we are, where our broker is, whom we know.
    fn hello(&self) -> Hello {
        Hello {
            uuid: self.uuid,
            name: self.name.clone(),
            addrs: self.my_addrs(),
            peers: self.peers.known(),
        }
    }

    /// Publishes our hello, retained, on our own broker, when it says something new.
    pub(super) async fn publish_owner_hello(&mut self) {
        let hello = self.hello();
        if self.last_hello.as_ref() == Some(&hello) {
            return;
        }
        let payload = serde_json::to_vec(&hello).unwrap_or_default();
        self.last_hello = Some(hello);
        let topic = self.topics.owner();
        if let Err(e) = self
            .link
            .publish(&topic, Qos::AtLeastOnce, true, payload)
            .await
        {
            tracing::warn!(error = %e, "cannot publish our hello");
        }
    }

    /// Addresses for an invitation token: those peers know us by, this host's address on its
    /// default route, and loopback (for instances on the same host), in that order.
    pub(super) fn own_addresses(&self) -> Vec<String> {
        let mut addrs = self.my_addrs();
        if self.bind.is_unspecified() {
            // A UDP "connect" only picks a route; no packet is sent (192.0.2.1 is TEST-NET-1).
            if let Some(ip) = local_ip_towards(IpAddr::from([192, 0, 2, 1]), 9) {
                addrs.push(format!("{}:{}", fmt_ip(ip), self.port));
            }
            addrs.push(format!("127.0.0.1:{}", self.port));
        }
        let mut seen = std::collections::HashSet::new();
        addrs.retain(|a| seen.insert(a.clone()));
        addrs
    }

    /// `HOST:PORT` addresses our broker is reachable at: the bound address, or for each peer
    /// host the local address the kernel would use to reach it.
    pub(super) fn my_addrs(&self) -> Vec<String> {
        if !self.bind.is_unspecified() {
            return vec![format!("{}:{}", fmt_ip(self.bind), self.port)];
        }
        let mut addrs: Vec<String> = Vec::new();
        for addr in self.links.keys() {
            let towards = split_addr(addr).and_then(|(host, port)| match host.parse::<IpAddr>() {
                Ok(ip) => local_ip_towards(ip, port),
                Err(_) => self.resolved.get(&host).copied(),
            });
            if let Some(ip) = towards {
                let mine = format!("{}:{}", fmt_ip(ip), self.port);
                if !addrs.contains(&mine) {
                    addrs.push(mine);
                }
            }
        }
        addrs
    }

    /// Every heartbeat: tell peers we are alive and what we hold; notice silent peers.
    pub(super) async fn on_beat(&mut self) {
        self.node.beat(Now::real());
        let now = Instant::now();
        let changes = self.peers.expire(now);
        self.on_changes(changes).await;
        for addr in self.peers.give_up_links(now) {
            tracing::info!(peer = %addr, "giving up a learnt address that never answered");
            if let Some(pl) = self.links.remove(&addr) {
                pl.stop.cancel();
            }
        }
        for (site, suppressed) in self.warns.flush(now) {
            tracing::warn!(site, suppressed, "similar warnings were suppressed");
        }
        self.expire_pending();
        if self.node.has_unsaved() || self.store.pending() > 0 {
            self.start_sync();
        }
        self.maybe_compact();
        let f = self.node.footprint();
        if self.trim.beat(f.syncs + f.serving > 0) {
            tracing::debug!("a sync ended: free memory given back");
        }
    }

    /// Acts on peers coming and going: their status and their objects' availability.
    pub(super) async fn on_changes(&mut self, changes: Vec<Change>) {
        for change in changes {
            let (uuid, online) = match change {
                Change::Online(u) => (u, true),
                Change::Offline(u) => (u, false),
            };
            let name = self.peers.name_of(uuid).unwrap_or("?").to_string();
            if online {
                tracing::info!(peer = %name, %uuid, "peer online");
            } else {
                tracing::warn!(peer = %name, %uuid, "peer offline");
                self.node.peer_offline(uuid);
                self.executor_gone(uuid);
            }
            self.publish_status(uuid, online).await;
            let held: Vec<_> = self
                .replica()
                .objects()
                .filter(|(_, o)| super::state::claimants(self.replica(), o).contains(&uuid))
                .map(|(id, _)| id.clone())
                .collect();
            self.node.mark_dirty(held);
        }
    }

    /// On a clean stop: tell every peer broker we are offline and close the links.
    pub(super) async fn leave_mesh(&mut self) {
        let topic = self.topics.status(self.uuid);
        for pl in self.links.values() {
            let _ = pl
                .link
                .publish(&topic, Qos::AtLeastOnce, true, "offline")
                .await;
            pl.link.disconnect().await;
        }
        for (_, pl) in self.links.drain() {
            pl.stop.cancel();
        }
    }
}

/// Splits `HOST:PORT` (IPv6 hosts in brackets).
pub(super) fn split_addr(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// The local address the kernel would use to reach `ip` (no packet is sent, no name looked
/// up).
fn local_ip_towards(ip: IpAddr, port: u16) -> Option<IpAddr> {
    let target = std::net::SocketAddr::new(ip, port);
    let any: std::net::SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(any).ok()?;
    sock.connect(target).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}

/// An IP as it appears in `HOST:PORT` (IPv6 in brackets).
fn fmt_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}
