//! Who belongs to the mesh: the mesh id, invitations, and members and users as replicated
//! system objects.
//!
//! A new instance founds a mesh of its own (a random mesh id in `mesh.json`) and records
//! itself as its first member. Another instance becomes a member only through an invitation:
//! `pimesh invite` on a member makes a single-use token (the inviting instance's addresses,
//! its public key, an invitation id and secret), `pimesh run --join TOKEN` presents it, and
//! the inviting instance records the newcomer as `_member-<uuid>` with its public key. That
//! record replicates like any object, so every member then accepts the newcomer's proofs (see
//! [`crate::door::auth`]). Users are `_user-<name>` objects with an argon2 hash, replicated
//! the same way, so one account works on every Pi's broker.

use crate::door::auth::{Invitation, Keys};
use crate::model::{ObjectId, Value};
use crate::replica::Replica;
use crate::secret::{self, SecretError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use uuid::Uuid;

/// File in the data dir naming the mesh this instance belongs to.
pub const MESH_FILE: &str = "mesh.json";
/// File in the data dir with the open invitations (mode 0600: they hold secrets).
pub const INVITATIONS_FILE: &str = "invitations.json";
/// Property of a member object: its ed25519 public key, hex.
pub const KEY: &str = crate::replica::trust::KEY_PROP;
/// Property of a user object: its argon2 hash (PHC string).
pub const HASH: &str = "hash";
/// Token prefix, with the token format's version.
pub const TOKEN_PREFIX: &str = "pimesh1-";
/// Open invitations kept at most; the oldest goes first.
pub const MAX_INVITATIONS: usize = 32;
/// Longest user name.
pub const MAX_USER_NAME: usize = 32;

/// The mesh this instance belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshFile {
    /// The mesh id, named by every member's proof.
    pub mesh: Uuid,
    /// The invitation this instance joined with, so a `[mesh] join` left in the config does
    /// not join again at the next start (the mesh may differ from the token's, see
    /// [`verify_join`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_with: Option<String>,
}

impl MeshFile {
    /// The mesh of the instance in `dir`, or None before its first start.
    pub fn load(dir: &Path) -> Result<Option<MeshFile>, SecretError> {
        let path = dir.join(MESH_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| SecretError::Damaged {
                        file: path,
                        why: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SecretError::Io { file: path, source }),
        }
    }

    /// Writes it to `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), SecretError> {
        let text = serde_json::to_string(self).unwrap_or_default();
        secret::write_private(&dir.join(MESH_FILE), &text)
    }
}

/// What a token carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The mesh joined.
    pub mesh: Uuid,
    /// The inviting instance.
    pub by: Uuid,
    /// Its public key, hex: the joiner checks the answer to its request with it.
    pub key: String,
    /// Its broker addresses, `HOST:PORT` (its TLS port, unless mesh links are in the clear;
    /// a plaintext port takes a TLS join too).
    pub addrs: Vec<String>,
    /// The invitation id.
    pub id: String,
    /// The invitation secret.
    pub secret: String,
    /// SHA-256 of the mesh CA's certificate, hex: the joiner talks TLS to a server that
    /// presents this CA and is issued by it. None in tokens from before TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// Why a token is not one.
#[derive(Debug, thiserror::Error)]
#[error("not a pimesh invitation token ({0}); copy the whole line `pimesh invite` printed")]
pub struct TokenError(String);

impl Token {
    /// The one-line text form.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{TOKEN_PREFIX}{}", base64url(&json))
    }

    /// Parses the text form.
    pub fn decode(text: &str) -> Result<Token, TokenError> {
        let body = text
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| TokenError(format!("it does not start with {TOKEN_PREFIX}")))?;
        let json = from_base64url(body).ok_or_else(|| TokenError("damaged".into()))?;
        serde_json::from_slice(&json).map_err(|e| TokenError(e.to_string()))
    }
}

/// What a joiner sends on `$pimesh/<base>/join/<id>/request`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joiner's UUID.
    pub uuid: Uuid,
    /// Its name.
    pub name: String,
    /// Its public key, hex.
    pub key: String,
    /// Sent over TLS to the CA the token names: the reply may carry the CA's key.
    #[serde(default)]
    pub tls: bool,
}

/// The inviting instance's answer on `$pimesh/<base>/join/<id>/reply`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinReply {
    /// The mesh joined (as the token said).
    pub mesh: Uuid,
    /// Signature of the inviting instance over [`join_message`] (or [`join_message_ca`] when
    /// the CA is handed over), hex.
    pub sig: String,
    /// The mesh CA's certificate, PEM, for a request that came over TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// The mesh CA's key, PEM, with it: every member can invite and issue its certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key: Option<String>,
}

/// What the inviting instance signs: the joiner learns that the mesh accepted exactly its key.
pub fn join_message(mesh: Uuid, joiner: Uuid, key: &str) -> Vec<u8> {
    format!("pimesh-join-v1\n{mesh}\n{joiner}\n{key}").into_bytes()
}

/// What the inviting instance signs when it hands over the CA: the join, and SHA-256 of the CA
/// certificate and key texts, so nobody can swap either on the way.
pub fn join_message_ca(mesh: Uuid, joiner: Uuid, key: &str, cert: &str, ca_key: &str) -> Vec<u8> {
    format!(
        "pimesh-join-v2\n{mesh}\n{joiner}\n{key}\n{}\n{}",
        crate::tls::fingerprint(cert.as_bytes()),
        crate::tls::fingerprint(ca_key.as_bytes())
    )
    .into_bytes()
}

/// Checks the inviting instance's signature on a join reply.
///
/// The reply names the mesh the inviter belongs to *now*, which is not the token's when the
/// inviter itself joined another mesh after `pimesh invite` (a new Pi invited while it was
/// still joining): its signature over that mesh, by the key the token names, is what the
/// joiner trusts, so it joins the inviter's current mesh.
pub fn verify_join(token: &Token, request: &JoinRequest, reply: &JoinReply) -> bool {
    let Some(key) = public_key(&token.key) else {
        return false;
    };
    let Some(sig) = secret::from_hex(&reply.sig).and_then(|b| <[u8; 64]>::try_from(b).ok()) else {
        return false;
    };
    let message = match (&reply.ca_cert, &reply.ca_key) {
        (None, None) => join_message(reply.mesh, request.uuid, &request.key),
        (Some(cert), Some(ca_key)) => {
            join_message_ca(reply.mesh, request.uuid, &request.key, cert, ca_key)
        }
        _ => return false,
    };
    key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&sig))
        .is_ok()
}

/// A public key from its hex form.
pub fn public_key(hex: &str) -> Option<ed25519_dalek::VerifyingKey> {
    crate::replica::trust::parse_key(hex)
}

/// The id of the member object of `uuid`.
pub fn member_id(uuid: Uuid) -> ObjectId {
    ObjectId::member(uuid)
}

/// The id of the user object of `name`, if `name` is a valid user name: 1 to 32 of `a-z`,
/// digits and `-`, and not `local` (the instance's own tools).
pub fn user_id(name: &str) -> Option<ObjectId> {
    if name.len() > MAX_USER_NAME || name == crate::door::auth::LOCAL_USER {
        return None;
    }
    ObjectId::system("user", name).ok()
}

/// The properties of a member object.
pub fn member_props(name: &str, key: &ed25519_dalek::VerifyingKey) -> Vec<(String, Value)> {
    vec![
        (crate::model::NAME.into(), name.into()),
        (KEY.into(), secret::to_hex(key.as_bytes()).into()),
    ]
}

/// Members' keys and users' hashes as they stand in the replica.
pub fn keys_from(
    replica: &Replica,
) -> (
    HashMap<Uuid, ed25519_dalek::VerifyingKey>,
    HashMap<String, String>,
) {
    let mut members = HashMap::new();
    let mut users = HashMap::new();
    for (id, obj) in replica.objects() {
        if !id.is_system() || obj.is_deleted() {
            continue;
        }
        if let Some(uuid) = crate::replica::trust::member_of(id) {
            if let Some(key) = obj.text(KEY).and_then(public_key) {
                members.insert(uuid, key);
            }
        } else if let Some(name) = id.as_str().strip_prefix("_user-") {
            if let Some(hash) = obj.text(HASH) {
                users.insert(name.to_string(), hash.to_string());
            }
        }
    }
    (members, users)
}

/// The open invitations of this instance, persisted in its data dir.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Invitations {
    /// By id.
    open: Vec<(String, Invitation)>,
}

impl Invitations {
    /// Loads them from `dir` (none if the file is missing), dropping expired ones.
    pub fn load(dir: &Path, now_ms: u64) -> Invitations {
        let mut inv: Invitations = std::fs::read(dir.join(INVITATIONS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        inv.open.retain(|(_, i)| i.expires_ms >= now_ms);
        inv
    }

    /// Writes them to `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), SecretError> {
        let text = serde_json::to_string(self).unwrap_or_default();
        secret::write_private(&dir.join(INVITATIONS_FILE), &text)
    }

    /// A new invitation valid until `expires_ms`; returns its id and secret.
    pub fn create(&mut self, expires_ms: u64) -> (String, String) {
        let id = secret::to_hex(&secret::random::<8>());
        let secret = secret::to_hex(&secret::random::<16>());
        if self.open.len() >= MAX_INVITATIONS {
            self.open.remove(0);
        }
        self.open.push((
            id.clone(),
            Invitation {
                secret: secret.clone(),
                expires_ms,
            },
        ));
        (id, secret)
    }

    /// Takes invitation `id` if it is open at `now_ms`: it can be used once.
    pub fn take(&mut self, id: &str, now_ms: u64) -> bool {
        let open = self
            .open
            .iter()
            .any(|(i, inv)| i == id && inv.expires_ms >= now_ms);
        self.open
            .retain(|(i, inv)| i != id && inv.expires_ms >= now_ms);
        open
    }

    /// The open invitations, for the front door.
    pub fn as_map(&self) -> HashMap<String, Invitation> {
        self.open.iter().cloned().collect()
    }
}

/// Fills `keys` from the replica and the invitations.
pub fn refresh(keys: &mut Keys, replica: &Replica, invitations: &Invitations) {
    let (members, users) = keys_from(replica);
    keys.members = members;
    keys.users = users;
    keys.invitations = invitations.as_map();
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn from_base64url(text: &str) -> Option<Vec<u8>> {
    let values: Vec<u32> = text
        .bytes()
        .map(|c| B64.iter().position(|&b| b == c).map(|p| p as u32))
        .collect::<Option<_>>()?;
    let mut out = Vec::with_capacity(values.len() * 3 / 4);
    for chunk in values.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, v)| acc | (v << (18 - 6 * i)));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_every_length() {
        for len in 0..20 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 200) as u8).collect();
            assert_eq!(from_base64url(&base64url(&bytes)).unwrap(), bytes);
        }
        assert!(from_base64url("a").is_none());
        assert!(from_base64url("ab=c").is_none());
    }

    #[test]
    fn a_token_round_trips_and_garbage_is_named() {
        let t = Token {
            mesh: Uuid::from_u128(1),
            by: Uuid::from_u128(2),
            key: "ab".into(),
            addrs: vec!["127.0.0.1:1883".into()],
            id: "i".into(),
            secret: "s".into(),
            ca: Some("ab01".into()),
        };
        assert_eq!(Token::decode(&t.encode()).unwrap(), t);
        let err = Token::decode("hello").unwrap_err().to_string();
        assert!(err.contains("does not start with pimesh1-"), "{err}");
        assert!(Token::decode("pimesh1-!!").is_err());
    }

    #[test]
    fn an_invitation_is_used_once_and_expires() {
        let mut inv = Invitations::default();
        let (id, _) = inv.create(1_000);
        let (old, _) = inv.create(10);
        assert!(!inv.take(&old, 500), "expired");
        assert!(inv.take(&id, 500));
        assert!(!inv.take(&id, 500), "used");
        for _ in 0..MAX_INVITATIONS + 5 {
            inv.create(1_000);
        }
        assert_eq!(inv.as_map().len(), MAX_INVITATIONS);
    }

    #[test]
    fn a_join_reply_is_checked_against_the_token_key() {
        use ed25519_dalek::Signer;
        let inviter = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let token = Token {
            mesh: Uuid::from_u128(1),
            by: Uuid::from_u128(2),
            key: secret::to_hex(inviter.verifying_key().as_bytes()),
            addrs: vec![],
            id: "i".into(),
            secret: "s".into(),
            ca: None,
        };
        let req = JoinRequest {
            uuid: Uuid::from_u128(3),
            name: "b".into(),
            key: "cd".into(),
            tls: false,
        };
        let sig = inviter.sign(&join_message(token.mesh, req.uuid, &req.key));
        let reply = JoinReply {
            mesh: token.mesh,
            sig: secret::to_hex(&sig.to_bytes()),
            ca_cert: None,
            ca_key: None,
        };
        assert!(verify_join(&token, &req, &reply));
        let ca_sig = inviter.sign(&join_message_ca(token.mesh, req.uuid, &req.key, "C", "K"));
        let with_ca = JoinReply {
            sig: secret::to_hex(&ca_sig.to_bytes()),
            ca_cert: Some("C".into()),
            ca_key: Some("K".into()),
            ..reply.clone()
        };
        assert!(verify_join(&token, &req, &with_ca));
        let swapped = JoinReply {
            ca_key: Some("another key".into()),
            ..with_ca.clone()
        };
        assert!(!verify_join(&token, &req, &swapped), "the CA key is signed");
        let stripped = JoinReply {
            ca_cert: None,
            ca_key: None,
            ..with_ca
        };
        assert!(
            !verify_join(&token, &req, &stripped),
            "the signature covers the CA"
        );
        let other = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let forged = JoinReply {
            mesh: token.mesh,
            sig: secret::to_hex(
                &other
                    .sign(&join_message(token.mesh, req.uuid, &req.key))
                    .to_bytes(),
            ),
            ca_cert: None,
            ca_key: None,
        };
        assert!(!verify_join(&token, &req, &forged));
        // The inviter moved to another mesh since: it vouches for that one.
        let moved = Uuid::from_u128(9);
        let reply = JoinReply {
            mesh: moved,
            sig: secret::to_hex(
                &inviter
                    .sign(&join_message(moved, req.uuid, &req.key))
                    .to_bytes(),
            ),
            ca_cert: None,
            ca_key: None,
        };
        assert!(verify_join(&token, &req, &reply));
        let claimed = JoinReply {
            mesh: moved,
            sig: secret::to_hex(&sig.to_bytes()),
            ca_cert: None,
            ca_key: None,
        };
        assert!(
            !verify_join(&token, &req, &claimed),
            "signed for another mesh"
        );
    }

    #[test]
    fn user_names_are_checked() {
        assert!(user_id("ha").is_some());
        assert!(user_id("local").is_none());
        assert!(user_id("Bad Name").is_none());
        assert!(user_id(&"a".repeat(33)).is_none());
    }
}
