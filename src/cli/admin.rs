//! The CLI commands that manage the mesh through the local agent: `invite` and `user`. They
//! use the instance's own credentials from its data dir, so they run only on the agent's own
//! machine (nobody else may publish admin requests or read their answers).

use super::{default_data_dir, Exit};
use crate::agent::{admin_reply_topic, AdminReply, AdminRequest};
use crate::client::{self, Target};
use std::path::PathBuf;
use std::time::Duration;

/// Sends one admin request to the agent of `data_dir` and returns its answer.
fn admin(
    data_dir: Option<PathBuf>,
    make: impl FnOnce(String) -> AdminRequest,
) -> Result<AdminReply, Exit> {
    let dir = data_dir.unwrap_or_else(default_data_dir);
    let target: Target = client::resolve(None, &dir, "pimesh", None, None).map_err(|e| {
        eprintln!("error: {e}");
        Exit::Timeout
    })?;
    if target.credentials.is_none() {
        eprintln!(
            "error: {} has no credentials file; is it the data dir of a running agent?",
            dir.display()
        );
        return Err(Exit::Usage);
    }
    let id = uuid::Uuid::new_v4().to_string();
    let request = make(id.clone());
    let topic = crate::door::acl::admin_topic(&target.base);
    let reply_topic = admin_reply_topic(&target.base);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            Exit::Failed
        })?;
    let bytes = runtime
        .block_on(client::request_on(
            &target,
            &topic,
            &reply_topic,
            |_| serde_json::to_vec(&request).unwrap_or_default(),
            |answer| serde_json::from_slice::<AdminReply>(answer).is_ok_and(|r| r.id == id),
            // A user's password is hashed with argon2 on the agent: slow on a Pi Zero.
            Duration::from_secs(20),
        ))
        .map_err(|e| {
            eprintln!("error: {e}");
            Exit::Timeout
        })?;
    let reply: AdminReply = serde_json::from_slice(&bytes).map_err(|e| {
        eprintln!("error: the agent's answer is not understood: {e}");
        Exit::Failed
    })?;
    if !reply.ok {
        eprintln!("error: {}", reply.error.as_deref().unwrap_or("refused"));
        return Err(Exit::Usage);
    }
    if reply.persisted == Some(false) {
        eprintln!("warning: done, but this instance cannot write it to its disk yet (see its log); it is written once the disk takes it, and a crash before that loses it");
    }
    Ok(reply)
}

/// Parses `1h`, `30m`, `2d`, `45s` or plain seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = digits.parse().ok()?;
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// `pimesh invite`: prints a token another instance joins with.
pub fn invite(data_dir: Option<PathBuf>, expires: &str) -> Exit {
    let Some(secs) = parse_duration(expires) else {
        eprintln!("error: --expires {expires:?} is not a duration like 30m, 1h or 2d");
        return Exit::Usage;
    };
    match admin(data_dir, |id| AdminRequest::Invite {
        id,
        expires_s: Some(secs),
    }) {
        Ok(reply) => {
            println!("{}", reply.token.unwrap_or_default());
            eprintln!("Start the new instance with: pimesh run --join <the token above> (valid once, for {expires})");
            Exit::Ok
        }
        Err(code) => code,
    }
}

/// `pimesh user add`: adds a user (or sets its password); prints a generated password.
pub fn user_add(data_dir: Option<PathBuf>, name: String, password_file: Option<PathBuf>) -> Exit {
    let password = match password_file {
        Some(f) => match std::fs::read_to_string(&f) {
            Ok(p) => Some(p.trim_end_matches(['\n', '\r']).to_string()),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", f.display());
                return Exit::Usage;
            }
        },
        None => None,
    };
    match admin(data_dir, |id| AdminRequest::UserAdd {
        id,
        name: name.clone(),
        password,
    }) {
        Ok(reply) => {
            match reply.password {
                Some(p) => println!("{p}"),
                None => eprintln!("user {name} added"),
            }
            Exit::Ok
        }
        Err(code) => code,
    }
}

/// `pimesh user remove`.
pub fn user_remove(data_dir: Option<PathBuf>, name: String) -> Exit {
    match admin(data_dir, |id| AdminRequest::UserRemove {
        id,
        name: name.clone(),
    }) {
        Ok(_) => {
            eprintln!("user {name} removed");
            Exit::Ok
        }
        Err(code) => code,
    }
}

/// `pimesh forget`.
pub fn forget(data_dir: Option<PathBuf>, who: String) -> Exit {
    match admin(data_dir, |id| AdminRequest::Forget {
        id,
        who: who.clone(),
    }) {
        Ok(reply) => {
            let gone = reply.users.first().cloned().unwrap_or(who);
            eprintln!("{gone} is forgotten: its objects are free for another instance, and it is no longer a member");
            Exit::Ok
        }
        Err(code) => code,
    }
}

/// `pimesh user list`.
pub fn user_list(data_dir: Option<PathBuf>) -> Exit {
    match admin(data_dir, |id| AdminRequest::UserList { id }) {
        Ok(reply) => {
            for u in reply.users {
                println!("{u}");
            }
            Exit::Ok
        }
        Err(code) => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("2d"), Some(172800));
        assert_eq!(parse_duration("45"), Some(45));
        assert_eq!(parse_duration("1y"), None);
        assert_eq!(parse_duration("h"), None);
    }
}
