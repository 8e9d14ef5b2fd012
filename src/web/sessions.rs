//! Who is logged in to the page: a bounded table of sessions with expiry, and the cookie.
//!
//! A login (form or HTTP Basic) is checked by the front door's own [`Auth`] against the
//! users' argon2 hashes, so the page has exactly the MQTT users. It makes a session: a random
//! 32-byte token the browser keeps in an `HttpOnly`, `SameSite=Strict` cookie; the table keeps
//! only the token's SHA-256, so the file it is saved in (`web-sessions.json`, mode 0600, kept
//! so a restart does not log everybody out) holds nothing a browser could present. A session
//! ends at its expiry, on logout, and as soon as its user is removed or given a new password.
//! The table holds at most [`MAX_SESSIONS`]; a new login then ends the oldest one.

use crate::door::acl::Role;
use crate::door::auth::Auth;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Sessions kept at once.
pub const MAX_SESSIONS: usize = 256;
/// The file the table is kept in, in the data dir.
pub const FILE: &str = "web-sessions.json";

/// One logged-in browser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The user it logged in as.
    pub user: String,
    /// SHA-256 of the user's password hash at login: a new password ends the session.
    pub hash_of_hash: String,
    /// Unix ms it was made, to end the oldest first when the table is full.
    pub created_ms: u64,
    /// Unix ms after which it is refused.
    pub expires_ms: u64,
}

/// The session table, shared by every connection.
#[derive(Debug)]
pub struct Sessions {
    /// Sessions by the hex SHA-256 of their token.
    table: Mutex<HashMap<String, Session>>,
    /// Where the table is saved; none in tests.
    file: Option<PathBuf>,
    /// How long a session lasts.
    lifetime_ms: u64,
    /// The credential checker of the front door.
    auth: Auth,
}

/// Why a login was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn digest(text: &str) -> String {
    crate::secret::to_hex(&Sha256::digest(text.as_bytes()))
}

impl Sessions {
    /// The table of `data_dir` (what a previous run saved, without expired sessions), or an
    /// in-memory one when `data_dir` is None.
    pub fn load(data_dir: Option<&Path>, lifetime_ms: u64, auth: Auth, now_ms: u64) -> Sessions {
        let file = data_dir.map(|d| d.join(FILE));
        let mut table: HashMap<String, Session> = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|t| serde_json::from_slice(&t).ok())
            .unwrap_or_default();
        table.retain(|_, s| s.expires_ms > now_ms);
        while table.len() > MAX_SESSIONS {
            evict_oldest(&mut table);
        }
        Sessions {
            table: Mutex::new(table),
            file,
            lifetime_ms,
            auth,
        }
    }

    /// Checks a user's password as the broker does; only user accounts may log in (not the
    /// instance's own credentials, members, invitations or anonymous).
    pub async fn check_password(
        &self,
        user: &str,
        password: &str,
        now_ms: u64,
    ) -> Result<(), Refused> {
        if user.is_empty() || user.len() > 128 || password.len() > 1024 {
            return Err(Refused("wrong user name or password".into()));
        }
        match self
            .auth
            .check(Some((user.into(), password.into())), now_ms)
            .await
        {
            Ok(Role::User(name)) if name == user => Ok(()),
            Ok(_) => Err(Refused(format!(
                "{user:?} is not a user account; make one with `pimesh user add NAME`"
            ))),
            Err(d) => Err(Refused(d.why)),
        }
    }

    /// Makes a session for `user` (whose password was just checked) and returns its token.
    pub fn create(&self, user: &str, now_ms: u64) -> Result<String, Refused> {
        let hash = self
            .auth
            .keys()
            .users
            .get(user)
            .cloned()
            .ok_or_else(|| Refused(format!("unknown user {user:?}")))?;
        let token = crate::secret::to_hex(&crate::secret::random::<32>());
        let session = Session {
            user: user.to_string(),
            hash_of_hash: digest(&hash),
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(self.lifetime_ms),
        };
        self.change(|t| {
            t.retain(|_, s| s.expires_ms > now_ms);
            while t.len() >= MAX_SESSIONS {
                evict_oldest(t);
            }
            t.insert(digest(&token), session);
        });
        Ok(token)
    }

    /// The user of the session `token`, if it is valid now: not expired, and its user still
    /// exists with the password it logged in with. An invalid session is dropped.
    pub fn user(&self, token: &str, now_ms: u64) -> Option<String> {
        let key = digest(token);
        let session = self.table.lock().ok()?.get(&key).cloned()?;
        let current = self.auth.keys().users.get(&session.user).map(|h| digest(h));
        if session.expires_ms > now_ms && current.as_deref() == Some(session.hash_of_hash.as_str())
        {
            return Some(session.user);
        }
        self.change(|t| {
            t.remove(&key);
        });
        None
    }

    /// Ends the session `token` (logout).
    pub fn end(&self, token: &str) {
        let key = digest(token);
        self.change(|t| {
            t.remove(&key);
        });
    }

    /// How many sessions are kept.
    pub fn len(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies `f` to the table and saves it.
    fn change(&self, f: impl FnOnce(&mut HashMap<String, Session>)) {
        let Ok(mut t) = self.table.lock() else {
            return;
        };
        f(&mut t);
        if let Some(file) = &self.file {
            let text = serde_json::to_string(&*t).unwrap_or_default();
            if let Err(e) = crate::secret::write_private(file, &text) {
                tracing::warn!(error = %e, "cannot save the web sessions; logins end at the next restart");
            }
        }
    }
}

fn evict_oldest(t: &mut HashMap<String, Session>) {
    if let Some(key) = t
        .iter()
        .min_by_key(|(_, s)| s.created_ms)
        .map(|(k, _)| k.clone())
    {
        t.remove(&key);
    }
}

/// The value of cookie `name` in a `Cookie` header, if present.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value that keeps `token` for `max_age_s` (0 deletes it).
pub fn set_cookie(name: &str, token: &str, max_age_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}")
}

/// The user and password of an `Authorization: Basic` header.
pub fn basic(header: &str) -> Option<(String, String)> {
    use base64::Engine;
    let encoded = header.strip_prefix("Basic ")?.trim();
    if encoded.len() > 2048 {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The pairs of an `application/x-www-form-urlencoded` body.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::auth::Keys;

    fn auth() -> Auth {
        let hash = crate::secret::hash_password("pw").unwrap();
        Auth::new(Keys {
            local_secret: "local-secret".into(),
            users: HashMap::from([("ann".into(), hash)]),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn only_users_with_their_password_log_in() {
        let s = Sessions::load(None, 1000, auth(), 0);
        assert!(s.check_password("ann", "pw", 0).await.is_ok());
        assert!(s
            .check_password("ann", "pW", 0)
            .await
            .unwrap_err()
            .0
            .contains("wrong password"));
        assert!(s.check_password("bob", "pw", 0).await.is_err());
        let local = s
            .check_password("local", "local-secret", 0)
            .await
            .unwrap_err();
        assert!(local.0.contains("not a user account"), "{local}");
    }

    #[test]
    fn sessions_expire_and_end_with_their_user_or_password() {
        let a = auth();
        let s = Sessions::load(None, 1000, a.clone(), 0);
        let t = s.create("ann", 10).unwrap();
        assert_eq!(s.user(&t, 500).as_deref(), Some("ann"));
        assert_eq!(s.user(&t, 1010), None, "expired");
        assert!(s.is_empty(), "an expired session is dropped");
        let t = s.create("ann", 2000).unwrap();
        assert_eq!(s.user("nope", 2000), None);
        let new_hash = crate::secret::hash_password("new").unwrap();
        a.update(|k| {
            k.users.insert("ann".into(), new_hash);
        });
        assert_eq!(s.user(&t, 2001), None, "a new password ends the session");
        let t = s.create("ann", 3000).unwrap();
        s.end(&t);
        assert_eq!(s.user(&t, 3001), None, "logged out");
        let t = s.create("ann", 4000).unwrap();
        a.update(|k| {
            k.users.clear();
        });
        assert_eq!(s.user(&t, 4001), None, "a removed user's session ends");
    }

    #[test]
    fn the_table_is_bounded_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        // One account for every load: its hash (and salt) must stay the same.
        let a = auth();
        let s = Sessions::load(Some(dir.path()), 10_000, a.clone(), 0);
        let first = s.create("ann", 1).unwrap();
        let mut last = String::new();
        for i in 0..MAX_SESSIONS as u64 {
            last = s.create("ann", 2 + i).unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert_eq!(s.user(&first, 500), None, "the oldest session was ended");
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(
            !text.contains(&last),
            "the file holds digests, never tokens"
        );
        let again = Sessions::load(Some(dir.path()), 10_000, a.clone(), 600);
        assert_eq!(again.user(&last, 600).as_deref(), Some("ann"));
        let later = Sessions::load(Some(dir.path()), 10_000, a.clone(), 20_000);
        assert!(later.is_empty(), "expired sessions are not loaded");
    }

    #[test]
    fn forms_decode() {
        assert_eq!(
            form_pairs(b"user=ann+b&password=p%26w%3D%zz%4"),
            vec![
                ("user".into(), "ann b".into()),
                ("password".into(), "p&w=%zz%4".into())
            ]
        );
        assert_eq!(
            form_pairs(b"\xff=\xfe"),
            vec![("\u{fffd}".into(), "\u{fffd}".into())]
        );
    }

    #[test]
    fn cookies_and_basic_headers() {
        assert_eq!(cookie("a=1; pimesh-x=tok; b=2", "pimesh-x"), Some("tok"));
        assert_eq!(cookie("a=1", "pimesh-x"), None);
        let c = set_cookie("pimesh-x", "tok", 60, true);
        assert_eq!(
            c,
            "pimesh-x=tok; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
        assert_eq!(
            basic("Basic YW5uOnA6dw=="),
            Some(("ann".into(), "p:w".into()))
        );
        assert_eq!(basic("Basic !!"), None);
        assert_eq!(basic("Bearer x"), None);
    }
}
