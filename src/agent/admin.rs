//! Membership in the agent: the instance's own admin requests (invitations, users), join
//! requests from invited instances, joining a mesh with a token, and keeping the front
//! door's keys in step with the replicated members and users.

use super::Agent;
use crate::clock;
use crate::door::acl;
use crate::door::auth::member_proof;
use crate::membership::{self, Invitations, JoinReply, JoinRequest, MeshFile, Token};
use crate::mqtt::{fixed_credentials, Credentials, Link, LinkEvent, LinkOptions, Qos};
use crate::secret;
use crate::tls::MeshCa;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Default lifetime of an invitation.
pub const INVITE_EXPIRES_S: u64 = 3600;
/// Longest lifetime of an invitation.
pub const MAX_INVITE_EXPIRES_S: u64 = 7 * 24 * 3600;

/// A request of the instance's own tools on `<base>/agent/admin`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AdminRequest {
    /// Make an invitation valid for `expires_s` seconds.
    Invite {
        id: String,
        #[serde(default)]
        expires_s: Option<u64>,
    },
    /// Add a user (or set its password); without a password one is generated and returned.
    UserAdd {
        id: String,
        name: String,
        #[serde(default)]
        password: Option<String>,
    },
    /// Remove a user.
    UserRemove { id: String, name: String },
    /// List users.
    UserList { id: String },
    /// Retire an instance (name or UUID) for good.
    Forget { id: String, who: String },
}

/// The answer, on `<base>/client/local/reply`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AdminReply {
    /// The request's id.
    pub id: String,
    /// Whether it was done.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// An invitation token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A generated password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// User names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

/// `<base>/client/local/reply`.
pub fn admin_reply_topic(base: &str) -> String {
    format!("{base}/{}reply", acl::LOCAL_REPLIES)
}

/// How this instance proves membership on its links to peers: a fresh proof per attempt,
/// for the mesh it belongs to now (a join changes it).
pub fn member_credentials(
    key: ed25519_dalek::SigningKey,
    mesh: Arc<Mutex<Uuid>>,
    me: Uuid,
) -> Credentials {
    Arc::new(move || {
        let mesh = mesh.lock().map(|m| *m).unwrap_or_default();
        (
            format!("{}{me}", crate::door::auth::MEMBER_PREFIX),
            member_proof(&key, mesh, me, clock::now_ms()),
        )
    })
}

impl Agent {
    /// Rebuilds the front door's members and users from the replica.
    pub(super) fn refresh_keys(&mut self) {
        let (replica, invitations) = (&self.replica, &self.invitations);
        self.auth
            .update(|k| membership::refresh(k, replica, invitations));
    }

    /// Records this instance as a member of its mesh (a no-op when the record is current).
    pub(super) fn record_self_as_member(&mut self) {
        let props = membership::member_props(&self.name, &self.key.verifying_key());
        self.record(&membership::member_id(self.uuid), props);
        self.refresh_keys();
    }

    /// Handles `<base>/agent/admin` (only the local tools can publish there).
    pub(super) async fn on_admin(&mut self, payload: &[u8]) {
        let request: AdminRequest = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed admin request");
                return;
            }
        };
        let reply = match request {
            AdminRequest::Invite { id, expires_s } => self.invite(id, expires_s),
            AdminRequest::UserAdd { id, name, password } => self.user_add(id, &name, password),
            AdminRequest::UserRemove { id, name } => self.user_remove(id, &name),
            AdminRequest::Forget { id, who } => self.forget(id, &who),
            AdminRequest::UserList { id } => {
                let (_, users) = membership::keys_from(&self.replica);
                let mut users: Vec<String> = users.into_keys().collect();
                users.sort();
                AdminReply {
                    id,
                    ok: true,
                    users,
                    ..Default::default()
                }
            }
        };
        let payload = serde_json::to_vec(&reply).unwrap_or_default();
        let topic = admin_reply_topic(&self.base);
        if let Err(e) = self
            .link
            .publish(&topic, Qos::AtLeastOnce, false, payload)
            .await
        {
            tracing::warn!(error = %e, "could not answer an admin request");
        }
    }

    fn invite(&mut self, id: String, expires_s: Option<u64>) -> AdminReply {
        if self.join.is_some() {
            // Its token would name the mesh and CA this instance is about to leave.
            return failed(
                id,
                "this instance is still joining the mesh of its invitation; invite again once it has joined".into(),
            );
        }
        let secs = expires_s.unwrap_or(INVITE_EXPIRES_S);
        if secs == 0 || secs > MAX_INVITE_EXPIRES_S {
            return failed(
                id,
                format!("an invitation expires after 1 s to {MAX_INVITE_EXPIRES_S} s (7 days)"),
            );
        }
        let (inv_id, secret) = self.invitations.create(clock::now_ms() + secs * 1000);
        if let Err(e) = self.invitations.save(&self.data_dir) {
            return failed(id, format!("cannot keep the invitation: {e}"));
        }
        self.refresh_keys();
        let token = Token {
            mesh: self.mesh_id(),
            by: self.uuid,
            key: secret::to_hex(self.key.verifying_key().as_bytes()),
            addrs: self.own_addresses(),
            id: inv_id.clone(),
            secret,
            ca: Some(self.tls.ca.fingerprint()),
        };
        tracing::info!(invitation = %inv_id, expires_s = secs, "invitation made");
        AdminReply {
            id,
            ok: true,
            token: Some(token.encode()),
            ..Default::default()
        }
    }

    fn user_add(&mut self, id: String, name: &str, password: Option<String>) -> AdminReply {
        let Some(oid) = membership::user_id(name) else {
            return failed(
                id,
                format!(
                    "user name {name:?} must be 1-{} characters of a-z 0-9 - and not \"local\"",
                    membership::MAX_USER_NAME
                ),
            );
        };
        let generated = password.is_none();
        let password = password.unwrap_or_else(secret::new_password);
        if password.len() < 8 {
            return failed(id, "a password needs at least 8 characters".into());
        }
        let hash = match secret::hash_password(&password) {
            Ok(h) => h,
            Err(e) => return failed(id, e.to_string()),
        };
        self.record(
            &oid,
            vec![
                (membership::HASH.into(), hash.into()),
                (crate::model::DELETED.into(), false.into()),
            ],
        );
        self.refresh_keys();
        tracing::info!(user = %name, "user added");
        AdminReply {
            id,
            ok: true,
            password: generated.then_some(password),
            ..Default::default()
        }
    }

    fn user_remove(&mut self, id: String, name: &str) -> AdminReply {
        let exists = membership::user_id(name)
            .filter(|oid| self.replica.get(oid).is_some_and(|o| !o.is_deleted()));
        let Some(oid) = exists else {
            return failed(id, format!("there is no user {name:?}"));
        };
        self.record(&oid, vec![(crate::model::DELETED.into(), true.into())]);
        self.refresh_keys();
        tracing::info!(user = %name, "user removed");
        AdminReply {
            id,
            ok: true,
            ..Default::default()
        }
    }

    /// Retires the member `who` (a name or UUID): its member record is deleted, which every
    /// replica reads as "no longer trusted, its claims count for nothing" (see
    /// [`crate::replica::Replica::is_retired`]). Refused for this instance itself and for one
    /// that is online: stop it first.
    fn forget(&mut self, id: String, who: &str) -> AdminReply {
        let members: Vec<(Uuid, String)> = self
            .replica
            .objects()
            .filter(|(_, o)| !o.is_deleted())
            .filter_map(|(oid, o)| {
                let uuid = crate::replica::trust::member_of(oid)?;
                Some((uuid, o.text(crate::model::NAME).unwrap_or("").to_string()))
            })
            .collect();
        let by_uuid = who.parse::<Uuid>().ok();
        let mut found: Vec<&(Uuid, String)> = members
            .iter()
            .filter(|(u, n)| Some(*u) == by_uuid || n == who)
            .collect();
        if found.len() > 1 {
            // The everyday case: a rebuilt Pi has the name of its dead self; forget the one
            // that is not running.
            found.retain(|(u, _)| *u != self.uuid && !self.peers.is_alive(*u));
        }
        let (uuid, name) = match found.as_slice() {
            [one] => (one.0, one.1.clone()),
            [] => return failed(id, format!("no member of this mesh is called {who:?}")),
            many => {
                let list: Vec<String> = many.iter().map(|(u, _)| u.to_string()).collect();
                return failed(
                    id,
                    format!(
                        "several offline members are called {who:?}; give the UUID of one: {}",
                        list.join(", ")
                    ),
                );
            }
        };
        if uuid == self.uuid {
            return failed(
                id,
                "an instance cannot forget itself; run `pimesh forget` on another member".into(),
            );
        }
        if self.peers.is_alive(uuid) {
            return failed(id, format!("{name} ({uuid}) is online; stop it first"));
        }
        self.record(
            &membership::member_id(uuid),
            vec![(crate::model::DELETED.into(), true.into())],
        );
        self.member_retired(uuid);
        tracing::info!(member = %uuid, %name, "instance forgotten: its claims are released and it is no longer trusted");
        AdminReply {
            id,
            ok: true,
            users: vec![format!("{name} ({uuid})")],
            ..Default::default()
        }
    }

    /// A member was retired (here or by another member): drop its links and its place in
    /// the peer list, and let the door forget its key.
    pub(super) fn member_retired(&mut self, uuid: Uuid) {
        if let Some(addr) = self.peers.forget(uuid) {
            self.drop_link(&addr);
        }
        self.refresh_keys();
    }

    /// Handles `<base>/join/<invitation>/request` from an invited instance.
    pub(super) async fn on_join_request(&mut self, invitation: &str, payload: &[u8]) {
        let Ok(request) = serde_json::from_slice::<JoinRequest>(payload) else {
            tracing::warn!(%invitation, "ignoring a malformed join request");
            return;
        };
        let Some(key) = membership::public_key(&request.key) else {
            tracing::warn!(%invitation, "ignoring a join request with a malformed key");
            return;
        };
        if !self.invitations.take(invitation, clock::now_ms()) {
            tracing::warn!(%invitation, joiner = %request.uuid, "join request for an unknown, used or expired invitation");
            return;
        }
        if let Err(e) = self.invitations.save(&self.data_dir) {
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
            let ca = &self.tls.ca;
            let message = membership::join_message_ca(
                mesh,
                request.uuid,
                &request.key,
                &ca.cert_pem,
                &ca.key_pem,
            );
            JoinReply {
                mesh,
                sig: secret::to_hex(&self.key.sign(&message).to_bytes()),
                ca_cert: Some(ca.cert_pem.clone()),
                ca_key: Some(ca.key_pem.clone()),
            }
        } else {
            let message = membership::join_message(mesh, request.uuid, &request.key);
            JoinReply {
                mesh,
                sig: secret::to_hex(&self.key.sign(&message).to_bytes()),
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
        self.mesh.lock().map(|m| *m).unwrap_or_default()
    }

    /// Takes the mesh CA a join handed over: this instance's certificate is issued again by
    /// it, and the front door and new peer links use both from now on.
    fn adopt_ca(&mut self, ca: MeshCa) -> Result<(), crate::tls::TlsError> {
        ca.save(&self.data_dir)?;
        let identity = crate::tls::Identity::load_or_issue(
            &self.data_dir,
            &ca,
            &self.tls_names,
            rustls::pki_types::UnixTime::now(),
        )?;
        let material = crate::tls::Material { ca, identity };
        self.door_tls.set(material.server_config()?);
        if self.mesh_tls.is_some() {
            self.mesh_tls = Some(material.mesh_client_config()?);
        }
        tracing::info!(fingerprint = %material.ca.fingerprint(), "took the mesh's certificate authority");
        self.tls = material;
        Ok(())
    }

    /// A join finished: from now on this instance is a member of `mesh`, the inviter's (and
    /// holds its CA, when the join handed it over).
    pub(super) fn joined(&mut self, token: &Token, mesh: Uuid, ca: Option<MeshCa>) {
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
        if let Ok(mut m) = self.mesh.lock() {
            *m = mesh;
        }
        self.auth.update(|k| k.mesh = mesh);
        tracing::info!(%mesh, "joined the mesh");
        // Links made before the join were refused; make them again with the new proof.
        let mut addrs: Vec<String> = self
            .links
            .keys()
            .cloned()
            .chain(token.addrs.iter().cloned())
            .collect();
        addrs.sort();
        addrs.dedup();
        for addr in addrs {
            self.drop_link(&addr);
            self.connect_peer(&addr);
        }
    }
}

fn failed(id: String, error: String) -> AdminReply {
    AdminReply {
        id,
        ok: false,
        error: Some(error),
        ..Default::default()
    }
}

/// Joins the mesh of `token`: tries the configured peers, then the token's addresses, until
/// one answers with a reply signed by the inviting instance's key (any member's broker
/// forwards nothing: only the inviting instance answers). Gives up only if every address
/// refuses the invitation. A token that names the mesh CA is used over TLS pinned to that CA
/// only, and the answer must hand over that CA (returned); an older one joins in the clear.
pub async fn join(
    token: Token,
    peers: Vec<String>,
    mut request: JoinRequest,
    base: String,
    stop: CancellationToken,
) -> Result<(Uuid, Option<MeshCa>), String> {
    let mut addrs = peers;
    let tls = match &token.ca {
        Some(pin) => Some(crate::tls::pinned_client_config(pin).map_err(|e| e.to_string())?),
        None => None,
    };
    request.tls = tls.is_some();
    addrs.extend(token.addrs.iter().cloned());
    addrs.dedup();
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
                Ok(joined) => return Ok(joined),
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
        tokio::select! {
            _ = stop.cancelled() => return Err("stopped".into()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
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

/// Whether the instance whose mesh file is `current` and whose CA has fingerprint `ca` still
/// has to join with `token`: it has not joined with it yet, and the token names another mesh
/// or (an instance from before TLS made its own CA at start) another CA.
pub fn needs_join(current: &MeshFile, ca: &str, token: &Token) -> bool {
    current.joined_with.as_deref() != Some(token.id.as_str())
        && (current.mesh != token.mesh || token.ca.as_deref().is_some_and(|pin| pin != ca))
}

/// Loads the invitations of `dir` for the agent.
pub fn load_invitations(dir: &std::path::Path) -> Invitations {
    Invitations::load(dir, clock::now_ms())
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
