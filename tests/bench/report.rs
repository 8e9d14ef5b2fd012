//! What the benchmark prints: latency percentiles, the machine it ran on, and process memory.

use std::time::Duration;

/// Percentiles of a set of round-trip samples.
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Worst sample, to show the tail.
    pub max: Duration,
    /// How many samples the figures come from.
    pub n: usize,
}

impl Latency {
    /// Percentiles of `samples` (which must not be empty).
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        let n = samples.len();
        let rank = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Latency {
            p50: rank(0.50),
            p99: rank(0.99),
            max: samples[n - 1],
            n,
        }
    }

    /// One line: name, p50, p99, max and sample count, plus ratios to `base` when given.
    pub fn line(&self, name: &str, base: Option<&Latency>) -> String {
        let mut s = format!(
            "{name:<34} p50 {:>9}  p99 {:>9}  max {:>9}  (n={})",
            us(self.p50),
            us(self.p99),
            us(self.max),
            self.n
        );
        if let Some(b) = base {
            s.push_str(&format!(
                "  ratio p50 {:.2}x p99 {:.2}x",
                ratio(self.p50, b.p50),
                ratio(self.p99, b.p99)
            ));
        }
        s
    }
}

/// `a / b` as a float.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// A duration in microseconds, e.g. `312 µs`.
pub fn us(d: Duration) -> String {
    format!("{} µs", d.as_micros())
}

/// Resident memory of process `pid` in KiB (VmRSS), if readable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Memory as `12.3 MiB`, or `?` when it could not be read.
pub fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "?".into())
}

/// The machine: CPU model, cores, memory, kernel and load, one item per line.
pub fn machine() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into());
    vec![
        format!("cpu      {model}"),
        format!("cores    {cores} (usable by this process)"),
        format!("memory   {mem}"),
        format!("kernel   {kernel}"),
        format!("load     {load} (1/5/15 min, at start)"),
    ]
}
