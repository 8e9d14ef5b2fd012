//! Commands through one instance (or a mesh) from the lean load generator ([`crate::loadgen`]):
//! as fast as their answers come back, or paced at a fixed rate for latency.

use crate::report::Latency;
use crate::support::{self, Agent};
use crate::{loadgen, WINDOW};
use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// The throughput run's outcome.
pub struct Throughput {
    pub per_second: f64,
    pub answered: usize,
    pub lost: usize,
    pub executors: BTreeMap<String, usize>,
    /// From each command's publish to its answer (None when none was answered).
    pub latency: Option<Latency>,
}

/// `total` toggles of the virtual `scene` through `b`, [`WINDOW`] in flight (`BENCH_WINDOW`),
/// from the lean load generator; at most `rate` a second when set. Answers must be `ok`
/// and, when `ordered` (one executor), come in the order the commands were sent.
pub fn throughput(
    b: &Agent,
    total: usize,
    rate: Option<f64>,
    ordered: bool,
    failures: &mut Vec<String>,
) -> Result<Throughput> {
    let window: usize = std::env::var("BENCH_WINDOW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(WINDOW);
    let pid = std::process::id();
    let load = loadgen::Load {
        name: "bench-pipeline",
        port: b.port,
        creds: support::maybe_creds(b.port),
        subscribe: "bench/answer/tp",
        total,
        window,
        rate,
    };
    let mut executors = BTreeMap::new();
    let mut next = 0usize;
    let mut problems = Vec::new();
    let run = loadgen::run(
        &load,
        |n| {
            let body =
                format!(r#"{{"state":"TOGGLE","id":"tp-{pid}-{n}","reply-to":"bench/answer/tp"}}"#);
            ("pimesh/scene/set".to_string(), body.into_bytes())
        },
        |_, payload| {
            let ans: Answer = serde_json::from_slice(payload)
                .with_context(|| format!("an answer that is not JSON: {payload:?}"))?;
            let Some(n) = ans
                .id
                .strip_prefix(&format!("tp-{pid}-"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                return Ok(loadgen::Heard::Other);
            };
            if ans.result != "ok" {
                problems.push(format!("command {}: answered {}", ans.id, ans.result));
            }
            if ordered && n != next && problems.len() < 10 {
                problems.push(format!("command {n} answered where {next} was due"));
            }
            next = n + 1;
            *executors
                .entry(ans.executed_by.as_deref().unwrap_or("?").to_string())
                .or_insert(0) += 1;
            Ok(loadgen::Heard::Answer(n))
        },
    )?;
    failures.extend(problems.into_iter().map(|p| format!("throughput: {p}")));
    Ok(Throughput {
        per_second: run.per_second,
        answered: run.answered,
        lost: total - run.answered,
        executors,
        latency: (!run.latencies.is_empty()).then(|| Latency::of(run.latencies)),
    })
}

/// Latency at a fixed `rate` of commands a second (an open loop: the next command leaves on
/// time whether or not the last one was answered), over three seconds of commands.
pub fn paced(a: &Agent, rate: f64, failures: &mut Vec<String>) -> Result<Latency> {
    let total = loadgen::paced_total(rate);
    let tp = throughput(a, total, Some(rate), true, failures)?;
    if tp.lost > 0 {
        failures.push(format!(
            "at {rate:.0} commands/s: {} of {total} lost",
            tp.lost
        ));
    }
    tp.latency
        .with_context(|| format!("at {rate:.0} commands/s no command was answered"))
}

/// What the throughput run reads of an answer.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    result: std::borrow::Cow<'a, str>,
    #[serde(rename = "executed-by", borrow)]
    executed_by: Option<std::borrow::Cow<'a, str>>,
}
