//! The invariants checked after each round, from outside: what the CLI answered, what every
//! instance shows once healed, and what the relays' sim pins did.

use crate::house::{House, Issued, Op, CRASH, NAMES};
use std::collections::BTreeMap;
use std::time::Instant;

/// `ok 12, unavailable 3, …` for a slice of the log.
pub fn outcomes(log: &[Issued]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for issued in log {
        let what = match (issued.exit, issued.answers.first()) {
            (None, _) => "hung".to_string(),
            (_, Some(a)) if a["result"].is_string() => {
                let result = a["result"].as_str().unwrap_or_default().to_string();
                if a["persisted"] == false {
                    format!("{result} (not persisted)")
                } else {
                    result
                }
            }
            (Some(4), _) if issued.stderr.contains("no answer from") => {
                "no answer within the CLI's timeout".to_string()
            }
            (Some(code), _) => format!("exit {code} without an answer"),
        };
        *counts.entry(what).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    parts.join(", ")
}

/// The answer's result for a finished command, if an agent answered.
fn result(issued: &Issued) -> Option<&str> {
    issued.answers.first().and_then(|a| a["result"].as_str())
}

/// Whether the command surely took effect: answered `ok`, and on disk or on an instance that
/// is never killed (a change waiting for disk room is kept in memory until it fits).
fn acknowledged(issued: &Issued) -> bool {
    let Some(answer) = issued.answers.first() else {
        return false;
    };
    issued.exit == Some(0)
        && answer["result"] == "ok"
        && (answer["persisted"] != false || answer["executed-by"] != NAMES[CRASH])
}

/// The properties a command writes, with the values it writes.
fn writes(op: &Op) -> Vec<(&'static str, serde_json::Value)> {
    match op {
        Op::Set(on) => vec![("state", (if *on { "ON" } else { "OFF" }).into())],
        Op::Move { room, x, y } => vec![
            ("room", room.as_str().into()),
            ("x", (*x).into()),
            ("y", (*y).into()),
        ],
    }
}

/// One line for a command: when (seconds into the campaign), what, through whom, the answer.
fn describe(issued: &Issued, t0: Instant) -> String {
    let answer = match issued.answers.first() {
        Some(a) => format!(
            "{} by {}{}{}",
            a["result"].as_str().unwrap_or("?"),
            a["executed-by"].as_str().unwrap_or("?"),
            if a["persisted"] == false {
                " (not persisted)"
            } else {
                ""
            },
            a["error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        None => issued.stderr.trim().to_string(),
    };
    format!(
        "{:7.3} s {} {:?} via {} -> exit {:?} {answer}{}",
        issued.started.duration_since(t0).as_secs_f64(),
        issued.object,
        issued.op,
        NAMES[issued.via],
        issued.exit,
        if issued.answers.len() > 1 {
            format!(" (+{} more answers)", issued.answers.len() - 1)
        } else {
            String::new()
        }
    )
}

/// The invariants, checked on the healed house; panics listing every broken one.
pub fn check(
    house: &House,
    initial: &BTreeMap<String, serde_json::Value>,
    view: &BTreeMap<String, serde_json::Value>,
    log: &[Issued],
    pins: &[(Instant, usize, String)],
) {
    let t0 = house.t0;
    let mut problems: Vec<String> = Vec::new();
    // Every command got exactly one answer, which agrees with the exit code.
    for issued in log {
        let one = issued.answers.len() == 1;
        let agrees = match issued.exit {
            Some(0) => one && result(issued) == Some("ok"),
            Some(3) => one && result(issued) == Some("unavailable"),
            Some(4) => {
                issued.answers.is_empty()
                    || (one && matches!(result(issued), Some("timeout" | "unknown")))
            }
            // Failed (1) and rejected (2) are never right here: pins are writable and every
            // command names an object the house has, with valid values; an instance restarted
            // after SIGKILL kept every replicated update it had received (see
            // `a_killed_instance_keeps_the_objects_it_had_received`).
            _ => false,
        };
        if !agrees {
            problems.push(format!(
                "no single answer agreeing with the exit code: {}",
                describe(issued, t0)
            ));
        }
        if let (Some("ok"), Op::Set(on)) = (result(issued), &issued.op) {
            if issued.answers[0]["state"]["state"] != if *on { "ON" } else { "OFF" } {
                problems.push(format!(
                    "an ok answer shows another state: {}",
                    describe(issued, t0)
                ));
            }
        }
    }
    // Last acknowledged writer wins, per object and property; commands after it that may
    // or may not have run (timeout, unknown, unavailable) may have won instead.
    let (mut pinned, mut props) = (0, 0);
    for object in &house.objects {
        let mine: Vec<&Issued> = log.iter().filter(|i| i.object == *object).collect();
        for prop in ["state", "room", "x", "y"] {
            let writers: Vec<(&Issued, serde_json::Value)> = mine
                .iter()
                .filter_map(|i| {
                    writes(&i.op)
                        .into_iter()
                        .find(|(p, _)| *p == prop)
                        .map(|(_, v)| (*i, v))
                })
                .collect();
            let last_ok = writers.iter().rposition(|(i, _)| acknowledged(i));
            let mut allowed: Vec<serde_json::Value> = match last_ok {
                Some(at) => vec![writers[at].1.clone()],
                None => vec![initial[object][prop].clone()],
            };
            let after = last_ok.map_or(0, |at| at + 1);
            allowed.extend(writers[after..].iter().map(|(_, v)| v.clone()));
            props += 1;
            if allowed.iter().all(|v| same(v, &allowed[0])) {
                pinned += 1;
            }
            let now = &view[object][prop];
            if !allowed.iter().any(|v| same(v, now)) {
                let history: Vec<String> = writers
                    .iter()
                    .map(|(i, _)| format!("    {}", describe(i, t0)))
                    .collect();
                problems.push(format!(
                    "{object} {prop} is {now} after healing, but the last acknowledged command (or a later unanswered one) says one of {allowed:?}; the commands writing it:\n{}",
                    history.join("\n")
                ));
            }
        }
    }
    println!("  {pinned} of {props} properties have exactly one value the house may hold");
    // Pins: the holder's matches the house; nobody else has it; every change was asked for.
    for (r, relay) in house.relays.iter().enumerate() {
        if view[&relay.id]["holder-name"] != NAMES[relay.host] {
            problems.push(format!("{} is not held by {}", relay.id, NAMES[relay.host]));
        }
        let on = view[&relay.id]["state"] == "ON";
        let level = house.agents[relay.host].pin(relay.pin);
        if level.as_deref() != Some(if on { "1" } else { "0" }) {
            problems.push(format!(
                "{}'s pin on {} is {level:?} but the house says {}",
                relay.id, NAMES[relay.host], view[&relay.id]["state"]
            ));
        }
        for (k, agent) in house.agents.iter().enumerate() {
            if k != relay.host && agent.pin_path(relay.pin).exists() {
                problems.push(format!(
                    "{} has a pin file for {}'s GPIO {}",
                    NAMES[k], relay.id, relay.pin
                ));
            }
        }
        for (when, _, level) in pins.iter().filter(|(_, i, _)| *i == r) {
            let on = level == "1";
            let asked = log
                .iter()
                .any(|i| i.object == relay.id && i.op == Op::Set(on) && i.started <= *when);
            if !asked {
                problems.push(format!(
                    "{}'s pin went to {level} at {:.3} s with no command asking for it before",
                    relay.id,
                    when.duration_since(t0).as_secs_f64()
                ));
            }
        }
    }
    if !problems.is_empty() {
        let faults: Vec<String> = house
            .events
            .iter()
            .map(|(t, e)| format!("  {:7.3} s {e}", t.duration_since(t0).as_secs_f64()))
            .collect();
        panic!(
            "{} broken invariants:\n{}\nfaults done:\n{}",
            problems.len(),
            problems
                .iter()
                .take(30)
                .map(|p| format!("- {p}"))
                .collect::<Vec<_>>()
                .join("\n"),
            faults.join("\n")
        );
    }
}

/// JSON values equal, numbers by value (3 and 3.0 are one position).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}
