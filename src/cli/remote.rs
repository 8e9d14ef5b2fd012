//! The CLI commands that talk to a running agent (`set`, `move`, `get`, `peers`): send one
//! request over MQTT, print the answer, and turn its outcome into an exit code.

use super::{default_data_dir, Conn, Exit, GetArgs, PeersArgs};
use crate::api::{self, Outcome, Reply, SetRequest};
use crate::client::{self, ClientError, Target};
use std::time::Duration;

/// Runs an async client action on a small runtime.
fn block_on<T>(fut: impl std::future::Future<Output = T>) -> Result<T, Exit> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(fut))
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            Exit::Failed
        })
}

/// Resolves the connection options to a target.
fn target(conn: &Conn) -> Result<Target, Exit> {
    let dir = conn.data_dir.clone().unwrap_or_else(default_data_dir);
    let user = client::user_credentials(conn.user.as_deref(), conn.password_file.as_deref())
        .map_err(|e| report(&e))?;
    let tls = match &conn.cafile {
        Some(file) => Some(client::tls_from_cafile(file).map_err(|e| report(&e))?),
        None => None,
    };
    client::resolve(conn.via.as_deref(), &dir, &conn.base_topic, user, tls).map_err(|e| report(&e))
}

/// Prints a client error and maps it to its exit code.
fn report(e: &ClientError) -> Exit {
    eprintln!("error: {e}");
    match e {
        ClientError::BadVia(_)
        | ClientError::Refused { .. }
        | ClientError::PasswordFile { .. }
        | ClientError::CaFile { .. }
        | ClientError::Credentials(_) => Exit::Usage,
        _ => Exit::Timeout,
    }
}

/// The timeout option as a duration (bad values fall back to the default).
fn timeout(conn: &Conn) -> Duration {
    Duration::try_from_secs_f64(conn.timeout).unwrap_or(Duration::from_secs(5))
}

/// Sends a set request, prints the answer and maps its outcome to an exit code.
pub(super) fn send_set(object: &str, mut req: SetRequest, conn: &Conn) -> Exit {
    let target = match target(conn) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let id = uuid::Uuid::new_v4().to_string();
    req.id = Some(id.clone());
    let topic = format!("{}/{object}/set", target.base);
    let answer = block_on(client::request(
        &target,
        &topic,
        |reply_to| {
            req.reply_to = Some(reply_to.to_string());
            serde_json::to_vec(&req).unwrap_or_default()
        },
        |answer| {
            serde_json::from_slice::<Reply>(answer).is_ok_and(|r| r.id.as_deref() == Some(&id))
        },
        timeout(conn),
    ));
    let bytes = match answer {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return report(&e),
        Err(code) => return code,
    };
    let reply: Reply = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the agent's answer is not understood: {e}");
            return Exit::Failed;
        }
    };
    if conn.json {
        println!("{}", String::from_utf8_lossy(&bytes));
    }
    let by = reply.executed_by.as_deref().unwrap_or("?");
    if reply.persisted == Some(false) {
        eprintln!("warning: {object}: done, but {by} cannot write it to its disk yet (see its log); it is written once the disk takes it, and a crash before that loses it");
    }
    match reply.result {
        Outcome::Ok => {
            if !conn.json {
                let state = reply.state.as_ref().map(summary).unwrap_or_default();
                println!("{object}: {state} (executed by {by})");
            }
            Exit::Ok
        }
        other => {
            let why = reply.error.as_deref().unwrap_or("no reason given");
            eprintln!("error: {object}: {other:?} ({why}; answered by {by})");
            match other {
                Outcome::Failed => Exit::Failed,
                Outcome::Rejected => Exit::Usage,
                Outcome::Unavailable => Exit::Unavailable,
                Outcome::Timeout | Outcome::Unknown | Outcome::Ok => Exit::Timeout,
            }
        }
    }
}

/// One line for an object's state: `ON room=kitchen x=1 y=2`.
fn summary(state: &serde_json::Value) -> String {
    let field = |k: &str| match state.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => "-".into(),
    };
    format!(
        "{} room={} x={} y={}",
        field("state"),
        field("room"),
        field("x"),
        field("y")
    )
}

/// `pimesh get`: asks the agent for every object and prints them.
pub(super) fn get(args: GetArgs) -> Exit {
    let ours = |answer: &[u8], id: &str| {
        serde_json::from_slice::<api::GetReply>(answer).is_ok_and(|r| r.id.as_deref() == Some(id))
    };
    let bytes = match ask(&args.conn, |t| api::get_topic(&t.base), ours) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let reply: api::GetReply = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the agent's answer is not understood: {e}");
            return Exit::Failed;
        }
    };
    let objects: Vec<&serde_json::Value> = reply
        .objects
        .iter()
        .filter(|o| {
            args.object
                .as_deref()
                .is_none_or(|want| o.get("id").and_then(|v| v.as_str()) == Some(want))
        })
        .collect();
    if let (Some(want), true) = (&args.object, objects.is_empty()) {
        eprintln!("error: unknown object {want:?}");
        return Exit::Usage;
    }
    if args.conn.json {
        let out = if args.object.is_some() {
            objects[0].clone()
        } else {
            serde_json::Value::Array(objects.into_iter().cloned().collect())
        };
        println!("{out}");
        return Exit::Ok;
    }
    println!(
        "{:<24} {:<8} {:<8} {:<14} {:>6} {:>6}  HOLDER",
        "ID", "KIND", "STATE", "ROOM", "X", "Y"
    );
    for o in objects {
        let f = |k: &str| match o.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) if !v.is_null() => v.to_string(),
            _ => "-".into(),
        };
        let mut holder = o
            .get("holder-name")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| f("holder"));
        if o.get("available") == Some(&serde_json::Value::Bool(false)) {
            holder.push_str(" (unavailable)");
        }
        if let Some(c) = o.get("conflict") {
            holder = format!("CONFLICT {c}");
        }
        println!(
            "{:<24} {:<8} {:<8} {:<14} {:>6} {:>6}  {}",
            f("id"),
            f("kind"),
            f("state"),
            f("room"),
            f("x"),
            f("y"),
            holder
        );
    }
    Exit::Ok
}

/// Sends a request with a `reply-to` and an id to `topic` and returns the first answer
/// `ours` accepts (it is given the answer and the id).
fn ask(
    conn: &Conn,
    topic: impl FnOnce(&Target) -> String,
    ours: impl Fn(&[u8], &str) -> bool,
) -> Result<Vec<u8>, Exit> {
    let target = target(conn)?;
    let topic = topic(&target);
    let id = uuid::Uuid::new_v4().to_string();
    let answer = block_on(client::request(
        &target,
        &topic,
        |reply_to| {
            serde_json::to_vec(&api::GetRequest {
                reply_to: reply_to.to_string(),
                id: Some(id.clone()),
            })
            .unwrap_or_default()
        },
        |answer| ours(answer, &id),
        timeout(conn),
    ))?;
    answer.map_err(|e| report(&e))
}

/// `pimesh peers`: the mesh as the agent sees it.
pub(super) fn peers(args: PeersArgs) -> Exit {
    // The peers answer carries no id; any one is the agent's current view, so a concurrent
    // `pimesh peers` answer is as good as ours. Anything else on the topic is not.
    let ours = |answer: &[u8], _: &str| {
        serde_json::from_slice::<Vec<crate::mesh::peers::PeerRow>>(answer).is_ok()
    };
    let bytes = match ask(&args.conn, |t| api::peers_topic(&t.base), ours) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let rows: Vec<crate::mesh::peers::PeerRow> = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the agent's answer is not understood: {e}");
            return Exit::Failed;
        }
    };
    if args.conn.json {
        println!("{}", String::from_utf8_lossy(&bytes));
        return Exit::Ok;
    }
    let now = crate::clock::now_ms();
    println!(
        "{:<20} {:<36} {:<22} {:<10} LAST SEEN",
        "NAME", "UUID", "ADDRESS", "STATUS"
    );
    for r in rows {
        let seen = match r.last_seen_ms {
            0 => "never".to_string(),
            t => format!("{:.1} s ago", now.saturating_sub(t) as f64 / 1000.0),
        };
        let name = if r.name_conflict {
            format!("{} (NAME CONFLICT)", r.name)
        } else {
            r.name
        };
        let uuid = r.uuid.map(|u| u.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<20} {:<36} {:<22} {:<10} {}",
            name, uuid, r.addr, r.status, seen
        );
    }
    Exit::Ok
}

/// `pimesh lan`: what answers on the LAN's mDNS within `--wait`, one line each (exit 0 also
/// when nothing does: an empty LAN is an answer).
pub fn lan(args: super::LanArgs) -> Exit {
    let found = match crate::lan::browse(Duration::from_secs(args.wait.min(60))) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Failed;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&found).unwrap_or_default()
        );
        return Exit::Ok;
    }
    if found.is_empty() {
        eprintln!(
            "nothing announced _pimesh._tcp or _mqtt._tcp on this LAN within {} s",
            args.wait
        );
    }
    for f in found {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        println!(
            "{:<6} {:<16} {:<36} mesh {:<36} {}",
            f.service,
            show(&f.name),
            show(&f.uuid),
            show(&f.mesh),
            f.addrs.join(" ")
        );
    }
    Exit::Ok
}
