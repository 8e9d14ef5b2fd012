//! Who is connecting: credentials checked once per connection, at CONNECT.
//!
//! The user name says which kind of credential follows:
//! - `local`: this instance's own tools, with the secret kept in the data dir (mode 0600);
//! - `member:<uuid>`: another instance of the mesh. Its password is a fresh proof, never a
//!   secret: `m1.<unix ms>.<nonce>.<ed25519 signature>` over the mesh id, its UUID, the time
//!   and the nonce, checked with the public key its invitation put in the replicated house.
//!   A proof is valid for [`PROOF_WINDOW_MS`] either way of our clock and only once, so one
//!   seen by a stranger is worth nothing later;
//! - `join:<invitation>`: an instance holding an invitation, which may only ask to join;
//! - anything else: a user account (argon2 hash, replicated with the house).
//!
//! The agent owns the data (members, users, invitations) and refreshes [`Keys`] whenever it
//! changes; checks only read it.

use super::acl::Role;
use super::wire::Refusal;
use crate::secret;
use ed25519_dalek::{Signature, VerifyingKey};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use uuid::Uuid;

/// User name of the instance's own tools.
pub const LOCAL_USER: &str = "local";
/// User name prefix of a member's proof.
pub const MEMBER_PREFIX: &str = "member:";
/// User name prefix of an invitation.
pub const JOIN_PREFIX: &str = "join:";
/// How far a member's proof may be from our clock, either way.
pub const PROOF_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Proofs remembered to refuse a replay; older ones are outside the window anyway.
pub const REPLAY_MEMORY: usize = 4096;

/// An invitation the agent accepts until it is used or expires.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Invitation {
    /// The secret the token carries.
    pub secret: String,
    /// Unix ms after which it is refused.
    pub expires_ms: u64,
}

/// Everything a credential is checked against.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    /// The mesh this instance belongs to; members' proofs name it.
    pub mesh: Uuid,
    /// The secret of this instance's own tools.
    pub local_secret: String,
    /// Clients without credentials are users named `anonymous` (labs only).
    pub allow_anonymous: bool,
    /// Users by name: their argon2 hashes (PHC strings).
    pub users: HashMap<String, String>,
    /// Members by UUID: their public keys.
    pub members: HashMap<Uuid, VerifyingKey>,
    /// Open invitations by id.
    pub invitations: HashMap<String, Invitation>,
}

/// A refused CONNECT: what the client is told and what the log says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// The CONNACK code.
    pub refusal: Refusal,
    /// Why, for the log line.
    pub why: String,
}

fn denied(why: impl Into<String>) -> Denied {
    Denied {
        refusal: Refusal::BadCredentials,
        why: why.into(),
    }
}

/// The credential checker the listeners share.
#[derive(Clone, Debug)]
pub struct Auth {
    keys: Arc<RwLock<Keys>>,
    /// Member proofs seen recently (signature bytes), oldest first.
    replay: Arc<Mutex<VecDeque<[u8; 64]>>>,
    /// One argon2 check at a time: each takes ~19 MiB, and a scanner must not multiply that.
    hashing: Arc<tokio::sync::Semaphore>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth::new(Keys::default())
    }
}

impl Auth {
    /// A checker over `keys`.
    pub fn new(keys: Keys) -> Auth {
        Auth {
            keys: Arc::new(RwLock::new(keys)),
            replay: Default::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Replaces part of the keys (the agent calls this when members, users or invitations
    /// change).
    pub fn update(&self, change: impl FnOnce(&mut Keys)) {
        if let Ok(mut k) = self.keys.write() {
            change(&mut k);
        }
    }

    /// A copy of the current keys.
    pub fn keys(&self) -> Keys {
        self.keys.read().map(|k| k.clone()).unwrap_or_default()
    }

    /// Checks a CONNECT's credentials at `now_ms` (unix ms).
    pub async fn check(
        &self,
        login: Option<(String, String)>,
        now_ms: u64,
    ) -> Result<Role, Denied> {
        let keys = self.keys();
        let Some((user, password)) = login else {
            return if keys.allow_anonymous {
                Ok(Role::User("anonymous".into()))
            } else {
                Err(denied(
                    "no user name and password (anonymous clients are not allowed)",
                ))
            };
        };
        if user == LOCAL_USER {
            return if secret::equal(password.as_bytes(), keys.local_secret.as_bytes()) {
                Ok(Role::Local)
            } else {
                Err(denied("wrong password for the instance's own credentials"))
            };
        }
        if let Some(uuid) = user.strip_prefix(MEMBER_PREFIX) {
            return self.check_member(&keys, uuid, &password, now_ms);
        }
        if let Some(id) = user.strip_prefix(JOIN_PREFIX) {
            return match keys.invitations.get(id) {
                None => Err(denied(format!("unknown or used invitation {id:?}"))),
                Some(inv) if inv.expires_ms < now_ms => {
                    Err(denied(format!("invitation {id:?} has expired")))
                }
                Some(inv) if !secret::equal(inv.secret.as_bytes(), password.as_bytes()) => {
                    Err(denied(format!("wrong secret for invitation {id:?}")))
                }
                Some(_) => Ok(Role::Joiner(id.to_string())),
            };
        }
        let Some(hash) = keys.users.get(&user).cloned() else {
            return Err(denied(format!("unknown user {user:?}")));
        };
        let Ok(_permit) = self.hashing.acquire().await else {
            return Err(denied("shutting down"));
        };
        let ok = tokio::task::spawn_blocking(move || secret::verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        if ok {
            Ok(Role::User(user))
        } else {
            Err(denied(format!("wrong password for user {user:?}")))
        }
    }

    fn check_member(
        &self,
        keys: &Keys,
        uuid: &str,
        proof: &str,
        now_ms: u64,
    ) -> Result<Role, Denied> {
        let uuid: Uuid = uuid
            .parse()
            .map_err(|_| denied(format!("member name {uuid:?} is not a UUID")))?;
        let key = keys
            .members
            .get(&uuid)
            .ok_or_else(|| denied(format!("{uuid} is not a member of this mesh (it needs an invitation: `pimesh invite` on a member, then `pimesh run --join`)")))?;
        let (ms, nonce, sig) =
            parse_proof(proof).ok_or_else(|| denied("malformed member proof"))?;
        if ms.abs_diff(now_ms) > PROOF_WINDOW_MS {
            return Err(denied(format!(
                "member proof of {uuid} is {} s away from our clock (at most {} s)",
                ms.abs_diff(now_ms) / 1000,
                PROOF_WINDOW_MS / 1000
            )));
        }
        let message = proof_message(keys.mesh, uuid, ms, nonce);
        key.verify_strict(&message, &Signature::from_bytes(&sig))
            .map_err(|_| denied(format!("bad member proof signature for {uuid}")))?;
        let mut seen = self
            .replay
            .lock()
            .map_err(|_| denied("replay memory poisoned"))?;
        if seen.contains(&sig) {
            return Err(denied(format!("member proof of {uuid} was used before")));
        }
        if seen.len() >= REPLAY_MEMORY {
            seen.pop_front();
        }
        seen.push_back(sig);
        Ok(Role::Member(uuid))
    }
}

/// What a member signs to prove itself.
fn proof_message(mesh: Uuid, member: Uuid, ms: u64, nonce: &str) -> Vec<u8> {
    format!("pimesh-member-v1\n{mesh}\n{member}\n{ms}\n{nonce}").into_bytes()
}

fn parse_proof(proof: &str) -> Option<(u64, &str, [u8; 64])> {
    let mut parts = proof.split('.');
    if parts.next()? != "m1" {
        return None;
    }
    let ms = parts.next()?.parse().ok()?;
    let nonce = parts.next()?;
    if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let sig: [u8; 64] = secret::from_hex(parts.next()?)?.try_into().ok()?;
    parts.next().is_none().then_some((ms, nonce, sig))
}

/// A fresh proof that `member` (holding `key`) belongs to `mesh`, as its password.
pub fn member_proof(
    key: &ed25519_dalek::SigningKey,
    mesh: Uuid,
    member: Uuid,
    now_ms: u64,
) -> String {
    use ed25519_dalek::Signer;
    let nonce = secret::to_hex(&secret::random::<16>());
    let sig = key.sign(&proof_message(mesh, member, now_ms, &nonce));
    format!("m1.{now_ms}.{nonce}.{}", secret::to_hex(&sig.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Auth, ed25519_dalek::SigningKey, Uuid, Uuid) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mesh = Uuid::from_u128(9);
        let member = Uuid::from_u128(5);
        let keys = Keys {
            mesh,
            local_secret: "s3cret".into(),
            members: HashMap::from([(member, key.verifying_key())]),
            users: HashMap::from([("ha".into(), secret::hash_password("pw").unwrap())]),
            invitations: HashMap::from([(
                "inv1".into(),
                Invitation {
                    secret: "x".into(),
                    expires_ms: 2_000,
                },
            )]),
            ..Default::default()
        };
        (Auth::new(keys), key, mesh, member)
    }

    fn login(u: &str, p: &str) -> Option<(String, String)> {
        Some((u.into(), p.into()))
    }

    #[tokio::test]
    async fn anonymous_is_refused_unless_allowed() {
        let (auth, ..) = setup();
        let err = auth.check(None, 0).await.unwrap_err();
        assert_eq!(err.refusal, Refusal::BadCredentials);
        assert!(err.why.contains("anonymous"), "{}", err.why);
        auth.update(|k| k.allow_anonymous = true);
        assert_eq!(
            auth.check(None, 0).await.unwrap(),
            Role::User("anonymous".into())
        );
    }

    #[tokio::test]
    async fn local_users_and_invitations() {
        let (auth, ..) = setup();
        assert_eq!(
            auth.check(login("local", "s3cret"), 0).await.unwrap(),
            Role::Local
        );
        assert!(auth.check(login("local", "s3cre"), 0).await.is_err());
        assert_eq!(
            auth.check(login("ha", "pw"), 0).await.unwrap(),
            Role::User("ha".into())
        );
        assert!(auth
            .check(login("ha", "pW"), 0)
            .await
            .unwrap_err()
            .why
            .contains("wrong password"));
        assert!(auth
            .check(login("bob", "pw"), 0)
            .await
            .unwrap_err()
            .why
            .contains("unknown user"));
        assert_eq!(
            auth.check(login("join:inv1", "x"), 1_000).await.unwrap(),
            Role::Joiner("inv1".into())
        );
        assert!(auth
            .check(login("join:inv1", "x"), 3_000)
            .await
            .unwrap_err()
            .why
            .contains("expired"));
        assert!(auth.check(login("join:inv1", "y"), 1_000).await.is_err());
    }

    #[tokio::test]
    async fn a_member_proof_works_once_and_only_in_its_window() {
        let (auth, key, mesh, member) = setup();
        let now = 1_700_000_000_000;
        let user = format!("member:{member}");
        let proof = member_proof(&key, mesh, member, now);
        assert_eq!(
            auth.check(login(&user, &proof), now + 5_000).await.unwrap(),
            Role::Member(member)
        );
        let again = auth
            .check(login(&user, &proof), now + 6_000)
            .await
            .unwrap_err();
        assert!(again.why.contains("used before"), "{}", again.why);
        let late = member_proof(&key, mesh, member, now);
        let err = auth
            .check(login(&user, &late), now + PROOF_WINDOW_MS + 1)
            .await
            .unwrap_err();
        assert!(err.why.contains("away from our clock"), "{}", err.why);
        // Signed for another mesh, or by another key, or claiming another member: refused.
        let other_mesh = member_proof(&key, Uuid::from_u128(1), member, now);
        assert!(auth.check(login(&user, &other_mesh), now).await.is_err());
        let stranger = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let forged = member_proof(&stranger, mesh, member, now);
        assert!(auth
            .check(login(&user, &forged), now)
            .await
            .unwrap_err()
            .why
            .contains("signature"));
        let unknown = format!("member:{}", Uuid::from_u128(6));
        let proof = member_proof(&key, mesh, Uuid::from_u128(6), now);
        assert!(auth
            .check(login(&unknown, &proof), now)
            .await
            .unwrap_err()
            .why
            .contains("not a member"));
    }
}
