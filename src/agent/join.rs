//! Joining: answering the join requests of invited instances, and joining a mesh with a
//! token ourselves.

use super::Agent;
use crate::clock;
use crate::door::acl;
use crate::membership::{self, JoinReply, JoinRequest, MeshFile, Token};
use crate::mqtt::{fixed_credentials, Link, LinkEvent, LinkOptions, Qos};
use crate::secret;
use crate::tls::MeshCa;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

impl Agent {
    /// Handles `$pimesh/<base>/join/<invitation>/request` from an invited instance.
    pub(super) async fn on_join_request(&mut self, invitation: &str, payload: &[u8]) {
        let Ok(request) = serde_json::from_slice::<JoinRequest>(payload) else {
            tracing::warn!(%invitation, "ignoring a malformed join request");
            return;
        };
        let Some(key) = membership::public_key(&request.key) else {
            tracing::warn!(%invitation, "ignoring a join request with a malformed key");
            return;
        };
        if !self.members.invitations.take(invitation, clock::now_ms()) {
            tracing::warn!(%invitation, joiner = %request.uuid, "join request for an unknown, used or expired invitation");
            return;
        }
        if let Err(e) = self.members.invitations.save(&self.data_dir) {
            tracing::warn!(error = %e, "cannot write the invitations; a used one may be offered again after a restart");
        }
        let name = request.name.chars().take(64).collect::<String>();
        self.record(
            &membership::member_id(request.uuid),
            membership::member_props(&name, &key),
        );
        self.refresh_keys();
        use ed25519_dalek::Signer;
        let mesh = self.mesh_id();
        // The CA's key only ever leaves over TLS: a joiner that asks for it came through a
        // TLS session pinned to the CA, so the reply is encrypted on the wire.
        let reply = if request.tls {
            let ca = &self.tls.material.ca;
            let message = membership::join_message_ca(
                mesh,
                request.uuid,
                &request.key,
                &ca.cert_pem,
                &ca.key_pem,
            );
            JoinReply {
                mesh,
                sig: secret::to_hex(&self.members.key.sign(&message).to_bytes()),
                ca_cert: Some(ca.cert_pem.clone()),
                ca_key: Some(ca.key_pem.clone()),
            }
        } else {
            let message = membership::join_message(mesh, request.uuid, &request.key);
            JoinReply {
                mesh,
                sig: secret::to_hex(&self.members.key.sign(&message).to_bytes()),
                ca_cert: None,
                ca_key: None,
            }
        };
        let topic = format!("{}reply", acl::join_prefix(&self.base, invitation));
        let payload = serde_json::to_vec(&reply).unwrap_or_default();
        if let Err(e) = self
            .link
            .publish(&topic, Qos::AtLeastOnce, false, payload)
            .await
        {
            tracing::warn!(error = %e, "could not answer a join request");
        }
        tracing::info!(member = %request.uuid, name = %name, "a new member joined the mesh");
    }

    /// The mesh this instance belongs to now.
    pub(super) fn mesh_id(&self) -> Uuid {
        self.members.mesh.lock().map(|m| *m).unwrap_or_default()
    }

    /// Takes the mesh CA a join handed over: this instance's certificate is issued again by
    /// it, and the front door, the web page and new peer links use both from now on.
    fn adopt_ca(&mut self, ca: MeshCa) -> Result<(), crate::tls::TlsError> {
        ca.save(&self.data_dir)?;
        let identity = crate::tls::Identity::load_or_issue(
            &self.data_dir,
            &ca,
            &self.tls.names,
            rustls::pki_types::UnixTime::now(),
        )?;
        let material = crate::tls::Material { ca, identity };
        self.tls.door.set(material.server_config()?);
        self.tls.web.set(material.web_server_config()?);
        if self.tls.mesh.is_some() {
            self.tls.mesh = Some(material.mesh_client_config()?);
        }
        tracing::info!(fingerprint = %material.ca.fingerprint(), "took the mesh's certificate authority");
        self.tls.material = material;
        Ok(())
    }

    /// A join finished: from now on this instance is a member of `mesh`, the inviter's (and
    /// holds its CA, when the join handed it over).
    pub(super) fn joined(&mut self, token: &Token, mesh: Uuid, ca: Option<MeshCa>, via: &str) {
        if let Some(ca) = ca {
            if let Err(e) = self.adopt_ca(ca) {
                tracing::error!(error = %e, "cannot keep the mesh's CA; the join is repeated at the next start");
                return;
            }
        }
        let file = MeshFile {
            mesh,
            joined_with: Some(token.id.clone()),
        };
        if let Err(e) = file.save(&self.data_dir) {
            tracing::error!(error = %e, "cannot record the mesh joined; the join is repeated at the next start");
        }
        if let Ok(mut m) = self.members.mesh.lock() {
            *m = mesh;
        }
        self.members.auth.update(|k| k.mesh = mesh);
        if let Some(lan) = &mut self.lan {
            lan.set_mesh(mesh);
        }
        tracing::info!(%mesh, %via, "joined the mesh");
        // Links made before the join were refused; make them again with the new proof.
        let mut addrs: Vec<String> = self
            .links
            .keys()
            .cloned()
            .chain(token.addrs.iter().cloned())
            .chain([via.to_string()])
            .collect();
        addrs.sort();
        addrs.dedup();
        for addr in addrs {
            self.drop_link(&addr);
            self.connect_peer(&addr);
        }
    }
}

/// Joins the mesh of `token`: tries the configured peers, then the token's addresses, then
/// between rounds what the LAN says of the inviting instance (mDNS, [`crate::lan::find`],
/// unless `lan` is off),
/// until one answers with a reply signed by the inviting instance's key (any member's broker
/// forwards nothing: only the inviting instance answers); returns the mesh, its CA and the
/// address that answered, for the first peer link. Gives up only if every address
/// refuses the invitation. A token that names the mesh CA is used over TLS pinned to that CA
/// only, and the answer must hand over that CA (returned); an older one joins in the clear.
pub async fn join(
    token: Token,
    peers: Vec<String>,
    mut request: JoinRequest,
    base: String,
    lan: bool,
    own_ports: Vec<u16>,
    stop: CancellationToken,
) -> Result<(Uuid, Option<MeshCa>, String), String> {
    let mut addrs = peers;
    let tls = match &token.ca {
        Some(pin) => Some(crate::tls::pinned_client_config(pin).map_err(|e| e.to_string())?),
        None => None,
    };
    request.tls = tls.is_some();
    addrs.extend(token.addrs.iter().cloned());
    addrs.dedup();
    // A loopback address of the inviter on one of our own ports is our own broker here (two
    // Pis on the default ports): asking it would only count as a refusal.
    addrs.retain(|a| !is_ourselves(a, &own_ports));
    let prefix = acl::join_prefix(&base, &token.id);
    let (request_topic, reply_topic) = (format!("{prefix}request"), format!("{prefix}reply"));
    let payload = serde_json::to_vec(&request).unwrap_or_default();
    let mut refusals = 0;
    loop {
        for addr in &addrs {
            let Some((host, port)) = super::mesh::split_addr(addr) else {
                continue;
            };
            let mut opts =
                LinkOptions::new(host, port, format!("pimesh-join-{}", request.uuid.simple()));
            opts.credentials = Some(fixed_credentials(
                format!("{}{}", crate::door::auth::JOIN_PREFIX, token.id),
                token.secret.clone(),
            ));
            opts.tls = tls.clone();
            let attempt = CancellationToken::new();
            let _end = attempt.clone().drop_guard();
            let (link, mut events) = Link::spawn(opts, attempt.clone());
            let outcome = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(ev) = events.recv().await {
                    match ev {
                        LinkEvent::Connected => {
                            let _ = link.subscribe(&reply_topic, Qos::AtLeastOnce);
                        }
                        LinkEvent::Subscribed => {
                            let _ = link
                                .publish(&request_topic, Qos::AtLeastOnce, false, payload.clone())
                                .await;
                        }
                        LinkEvent::Message { topic, payload, .. } if topic == reply_topic => {
                            return match serde_json::from_slice::<JoinReply>(&payload) {
                                Ok(reply) if membership::verify_join(&token, &request, &reply) => handed_ca(&token, reply),
                                _ => Err(format!("{addr} answered the join with a reply not signed by the inviting instance")),
                            };
                        }
                        LinkEvent::Refused(reason) => return Err(format!("refused: {reason}")),
                        LinkEvent::Disconnected(reason) => return Err(format!("unreachable: {reason}")),
                        LinkEvent::Message { .. } => {}
                    }
                }
                Err("link closed".to_string())
            })
            .await
            .unwrap_or_else(|_| Err("no answer within 10 s".into()));
            link.disconnect().await;
            match outcome {
                Ok((mesh, ca)) => return Ok((mesh, ca, addr.clone())),
                Err(why) => {
                    if why.starts_with("refused") {
                        refusals += 1;
                    }
                    tracing::warn!(peer = %addr, %why, "joining through this address failed");
                }
            }
        }
        if refusals >= addrs.len().max(1) {
            return Err("every address of the invitation refused it: it was used, has expired or was made for another mesh; make a new one with `pimesh invite` on a member".into());
        }
        refusals = 0;
        // Before the next round, look for the inviter on the LAN: a token whose addresses
        // are not reachable from here (or that names none) still finds it.
        let by = token.by;
        let lookup = async move {
            if !lan {
                tokio::time::sleep(Duration::from_secs(2)).await;
                return Vec::new();
            }
            tokio::task::spawn_blocking(move || crate::lan::find(by, Duration::from_secs(2)))
                .await
                .unwrap_or_default()
        };
        tokio::select! {
            _ = stop.cancelled() => return Err("stopped".into()),
            found = lookup => {
                for addr in found {
                    if !addrs.contains(&addr) {
                        tracing::info!(%addr, inviter = %token.by, "found the inviting instance on the LAN");
                        addrs.push(addr);
                    }
                }
            }
        }
    }
}

/// The CA a verified join reply handed over: the one the token names, or none for a token
/// from before TLS.
fn handed_ca(token: &Token, reply: JoinReply) -> Result<(Uuid, Option<MeshCa>), String> {
    let Some(pin) = &token.ca else {
        return Ok((reply.mesh, None));
    };
    let (Some(cert), Some(key)) = (reply.ca_cert, reply.ca_key) else {
        return Err("the inviting instance did not hand over the mesh's CA".into());
    };
    let ca = MeshCa::from_pem(&cert, &key).map_err(|e| format!("the mesh's CA: {e}"))?;
    if ca.fingerprint() != *pin {
        return Err(
            "the inviting instance handed over another CA than the invitation names".into(),
        );
    }
    Ok((reply.mesh, Some(ca)))
}

/// Who this instance is in the mesh, whom the front door lets in, and the invitations it
/// made or has to join with.
pub(super) struct Membership {
    /// This instance's signing key: proves membership, signs join answers.
    pub(super) key: ed25519_dalek::SigningKey,
    /// The mesh this instance belongs to (shared with the peer links' credential makers).
    pub(super) mesh: std::sync::Arc<std::sync::Mutex<Uuid>>,
    /// What the front door checks credentials against.
    pub(super) auth: crate::door::auth::Auth,
    /// Open invitations made here.
    pub(super) invitations: crate::membership::Invitations,
    /// Members or users changed: refresh the front door's keys.
    pub(super) keys_dirty: bool,
    /// The invitation this instance still has to join with.
    pub(super) join: Option<crate::membership::Token>,
}

/// The mesh CA and this instance's certificate, and the TLS configurations made from them,
/// which a join that brings the mesh's CA replaces (`Agent::adopt_ca`).
pub(super) struct Tls {
    /// The mesh CA and this instance's certificate.
    pub(super) material: crate::tls::Material,
    /// The names this instance's certificate carries.
    pub(super) names: crate::tls::Names,
    /// The front door's TLS configuration.
    pub(super) door: std::sync::Arc<crate::tls::ServerSlot>,
    /// The web page's TLS configuration.
    pub(super) web: std::sync::Arc<crate::tls::ServerSlot>,
    /// How peer links speak TLS (client certificate, mesh CA); none with `[mesh] tls = false`.
    pub(super) mesh: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Whether `addr` is a loopback address on one of `own_ports`: our own broker.
fn is_ourselves(addr: &str, own_ports: &[u16]) -> bool {
    let Some((host, port)) = super::mesh::split_addr(addr) else {
        return false;
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback && own_ports.contains(&port)
}

/// Whether the instance whose mesh file is `current` and whose CA has fingerprint `ca` still
/// has to join with `token`: it has not joined with it yet, and the token names another mesh
/// or (an instance from before TLS made its own CA at start) another CA.
pub fn needs_join(current: &MeshFile, ca: &str, token: &Token) -> bool {
    current.joined_with.as_deref() != Some(token.id.as_str())
        && (current.mesh != token.mesh || token.ca.as_deref().is_some_and(|pin| pin != ca))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(mesh: u128, ca: Option<&str>) -> Token {
        Token {
            mesh: Uuid::from_u128(mesh),
            by: Uuid::from_u128(9),
            key: String::new(),
            addrs: vec![],
            id: "i".into(),
            secret: "s".into(),
            ca: ca.map(str::to_string),
        }
    }

    #[test]
    fn a_joiner_never_asks_its_own_broker() {
        let own = [8883, 1883];
        assert!(is_ourselves("127.0.0.1:8883", &own));
        assert!(is_ourselves("[::1]:1883", &own));
        assert!(is_ourselves("localhost:8883", &own));
        assert!(
            !is_ourselves("127.0.0.1:8884", &own),
            "another instance on this host"
        );
        assert!(
            !is_ourselves("192.168.1.10:8883", &own),
            "the inviter on the LAN"
        );
        assert!(!is_ourselves("not an address", &own));
    }

    #[test]
    fn a_token_of_another_ca_of_the_same_mesh_joins_again() {
        let mesh = MeshFile {
            mesh: Uuid::from_u128(1),
            joined_with: None,
        };
        assert!(!needs_join(&mesh, "ab", &token(1, Some("ab"))), "joined");
        assert!(
            needs_join(&mesh, "ab", &token(2, Some("ab"))),
            "another mesh"
        );
        assert!(
            needs_join(&mesh, "ab", &token(1, Some("cd"))),
            "an instance from before TLS made a CA of its own"
        );
        assert!(
            !needs_join(&mesh, "ab", &token(1, None)),
            "a token from before TLS"
        );
        let done = MeshFile {
            joined_with: Some("i".into()),
            ..mesh
        };
        assert!(
            !needs_join(&done, "ab", &token(2, Some("cd"))),
            "joined with it already"
        );
    }
}
