//! Membership in the agent: the instance's own admin requests (invitations, users), join
//! requests from invited instances, joining a mesh with a token, and keeping the front
//! door's keys in step with the replicated members and users.

use super::Agent;
use crate::clock;
use crate::door::acl;
use crate::door::auth::member_proof;
use crate::membership::{self, Invitations, Token};
use crate::mqtt::{Credentials, Qos};
use crate::secret;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Default lifetime of an invitation.
pub const INVITE_EXPIRES_S: u64 = 3600;
/// Longest lifetime of an invitation.
pub const MAX_INVITE_EXPIRES_S: u64 = 7 * 24 * 3600;

/// A request of the instance's own tools on `$pimesh/<base>/agent/admin`.
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

/// The answer, on `$pimesh/<base>/client/local/reply`.
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
    /// `false` when the disk refuses writes: the change is made (in memory, and written once
    /// the disk takes it) but not yet durable, so a crash now would lose it. Absent when it
    /// is written as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persisted: Option<bool>,
}

/// `$pimesh/<base>/client/local/reply`.
pub fn admin_reply_topic(base: &str) -> String {
    format!("{}/{}reply", crate::api::internal(base), acl::LOCAL_REPLIES)
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
        let (replica, invitations) = (self.replica(), &self.members.invitations);
        self.members
            .auth
            .update(|k| membership::refresh(k, replica, invitations));
    }

    /// Records this instance as a member of its mesh (a no-op when the record is current).
    pub(super) fn record_self_as_member(&mut self) {
        let props = membership::member_props(&self.name, &self.members.key.verifying_key());
        self.record(&membership::member_id(self.uuid), props);
        self.refresh_keys();
    }

    /// Handles `$pimesh/<base>/agent/admin` (only the local tools can publish there).
    pub(super) async fn on_admin(&mut self, payload: &[u8]) {
        let request: AdminRequest = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed admin request");
                return;
            }
        };
        // These change the replicated house; an invitation lives in its own file.
        let records = matches!(
            request,
            AdminRequest::UserAdd { .. }
                | AdminRequest::UserRemove { .. }
                | AdminRequest::Forget { .. }
        );
        let reply = match request {
            AdminRequest::Invite { id, expires_s } => self.invite(id, expires_s),
            AdminRequest::UserAdd { id, name, password } => self.user_add(id, &name, password),
            AdminRequest::UserRemove { id, name } => self.user_remove(id, &name),
            AdminRequest::Forget { id, who } => self.forget(id, &who),
            AdminRequest::UserList { id } => {
                let (_, users) = membership::keys_from(self.replica());
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
        let reply = AdminReply {
            persisted: (records && reply.ok && self.store.refusing()).then_some(false),
            ..reply
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
        if self.members.join.is_some() {
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
        let (inv_id, secret) = self
            .members
            .invitations
            .create(clock::now_ms() + secs * 1000);
        if let Err(e) = self.members.invitations.save(&self.data_dir) {
            return failed(id, format!("cannot keep the invitation: {e}"));
        }
        self.refresh_keys();
        let token = Token {
            mesh: self.mesh_id(),
            by: self.uuid,
            key: secret::to_hex(self.members.key.verifying_key().as_bytes()),
            addrs: self.own_addresses(),
            id: inv_id.clone(),
            secret,
            ca: Some(self.tls.material.ca.fingerprint()),
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
            .filter(|oid| self.replica().get(oid).is_some_and(|o| !o.is_deleted()));
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
            .node
            .replica()
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
        self.node.forget_peer(uuid);
        self.forget_known(uuid);
        self.refresh_keys();
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

/// Loads the invitations of `dir` for the agent.
pub fn load_invitations(dir: &std::path::Path) -> Invitations {
    Invitations::load(dir, clock::now_ms())
}
