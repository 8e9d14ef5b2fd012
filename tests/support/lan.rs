//! A small LAN of network namespaces for fault tests: a hub namespace holding a bridge, and
//! one host namespace per agent joined to it by a veth pair. Each host's cable can be pulled
//! and its outgoing packets lost, delayed and reordered, with `tc netem` when the kernel has
//! it and with `impair.py` on an NFQUEUE when it does not. The test's own namespace is never
//! touched; everything is removed on drop.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// LANs made by this test process, so each gets its own names.
static MADE: AtomicUsize = AtomicUsize::new(0);

/// Loss, delay and reordering of one host's outgoing packets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairment {
    /// Share of packets dropped, 0 to 1.
    pub loss: f64,
    /// Mean delay in milliseconds.
    pub delay_ms: u32,
    /// Delay varies by up to this much either way, which reorders packets by itself.
    pub jitter_ms: u32,
    /// Share of packets sent at once, overtaking delayed ones.
    pub reorder: f64,
}

/// One host of the LAN.
struct Host {
    /// Its namespace.
    ns: String,
    /// Its address on the LAN.
    ip: String,
    /// Its cable's end on the hub's bridge.
    hub_if: String,
    /// The NFQUEUE impairer and its control input, when netem is missing.
    impairer: Option<(Child, ChildStdin)>,
}

/// A bridge in a hub namespace and hosts hanging off it.
pub struct Lan {
    /// The hub namespace.
    hub: String,
    /// The hosts, in the order made.
    hosts: Vec<Host>,
    /// Whether this kernel has netem (else the NFQUEUE impairer is used).
    netem: bool,
}

impl Lan {
    /// Makes a LAN of `n` hosts (needs root, as CI has). Host `k` is 10.215.0.(10 + k).
    pub fn create(n: usize) -> Lan {
        let tag = format!(
            "pmf{}x{}",
            std::process::id() % 100_000,
            MADE.fetch_add(1, Ordering::SeqCst)
        );
        let hub = format!("{tag}-hub");
        forget_ns(&hub);
        run("ip", &["netns", "add", &hub]);
        let mut lan = Lan {
            hub,
            hosts: Vec::new(),
            netem: false,
        };
        lan.in_ns(&lan.hub, &["ip", "link", "add", "br0", "type", "bridge"]);
        lan.in_ns(&lan.hub, &["ip", "link", "set", "br0", "up"]);
        for k in 0..n {
            let ns = format!("{tag}-h{k}");
            let hub_if = format!("h{k}");
            forget_ns(&ns);
            run("ip", &["netns", "add", &ns]);
            let hub_ns = lan.hub.clone();
            run(
                "ip",
                &[
                    "-n", &hub_ns, "link", "add", &hub_if, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            );
            lan.in_ns(&hub_ns, &["ip", "link", "set", &hub_if, "master", "br0"]);
            lan.in_ns(&hub_ns, &["ip", "link", "set", &hub_if, "up"]);
            let ip = format!("10.215.0.{}", 10 + k);
            let cidr = format!("{ip}/24");
            lan.in_ns(&ns, &["ip", "addr", "add", &cidr, "dev", "eth0"]);
            lan.in_ns(&ns, &["ip", "link", "set", "eth0", "up"]);
            lan.in_ns(&ns, &["ip", "link", "set", "lo", "up"]);
            lan.hosts.push(Host {
                ns,
                ip,
                hub_if,
                impairer: None,
            });
        }
        lan.netem = n > 0
            && Command::new("ip")
                .args(["netns", "exec", &lan.hosts[0].ns])
                .args(["tc", "qdisc", "add", "dev", "eth0", "root", "netem"])
                .args(["delay", "0ms"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !lan.netem {
            eprintln!("lan: this kernel has no netem; impairing packets with tests/support/impair.py on an NFQUEUE");
        }
        lan
    }

    /// Host `k`'s namespace.
    pub fn ns(&self, k: usize) -> &str {
        &self.hosts[k].ns
    }

    /// Host `k`'s address on the LAN.
    pub fn ip(&self, k: usize) -> &str {
        &self.hosts[k].ip
    }

    /// Pulls host `k`'s cable: nothing crosses until [`plug`](Self::plug).
    pub fn unplug(&self, k: usize) {
        let hub_if = &self.hosts[k].hub_if;
        self.in_ns(&self.hub, &["ip", "link", "set", hub_if, "down"]);
    }

    /// Plugs host `k`'s cable back in.
    pub fn plug(&self, k: usize) {
        let hub_if = &self.hosts[k].hub_if;
        self.in_ns(&self.hub, &["ip", "link", "set", hub_if, "up"]);
    }

    /// Impairs host `k`'s outgoing packets (all zero: none), replacing what it had.
    pub fn impair(&mut self, k: usize, how: Impairment) {
        let ns = self.hosts[k].ns.clone();
        if self.netem {
            let (delay, jitter) = (
                format!("{}ms", how.delay_ms),
                format!("{}ms", how.jitter_ms),
            );
            let (loss, reorder) = (pct(how.loss), pct(how.reorder));
            let mut args = vec!["tc", "qdisc", "replace", "dev", "eth0", "root", "netem"];
            args.extend(["delay", &delay, &jitter, "loss", &loss]);
            if how.delay_ms > 0 {
                args.extend(["reorder", &reorder]);
            }
            self.in_ns(&ns, &args);
            return;
        }
        if self.hosts[k].impairer.is_none() {
            self.hosts[k].impairer = Some(start_impairer(&ns, k));
        }
        let (_, input) = self.hosts[k].impairer.as_mut().expect("impairer");
        writeln!(
            input,
            "{} {} {} {}",
            how.loss, how.delay_ms, how.jitter_ms, how.reorder
        )
        .expect("impair.py takes its settings");
    }

    /// Runs `args` in namespace `ns`, failing the test if it fails.
    fn in_ns(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", ns];
        all.extend_from_slice(args);
        run("ip", &all);
    }
}

/// `0.1` as netem's `10%`.
fn pct(share: f64) -> String {
    format!("{}%", (share * 100.0).clamp(0.0, 100.0))
}

/// Sends namespace `ns`'s outgoing packets through `impair.py` (packets pass untouched
/// until it is bound, and whenever it is gone); returns it once it is bound.
fn start_impairer(ns: &str, k: usize) -> (Child, ChildStdin) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/impair.py");
    let rule = ["-A", "OUTPUT", "-o", "eth0", "-j", "NFQUEUE"];
    let queue = ["--queue-num", "0", "--queue-bypass"];
    let mut ipt = vec!["netns", "exec", ns, "iptables-legacy"];
    ipt.extend(rule);
    ipt.extend(queue);
    run("ip", &ipt);
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "/usr/bin/python3", script, "0"])
        .arg(k.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs tests/support/impair.py");
    let input = child.stdin.take().expect("impair.py stdin");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("impair.py stdout")).read_line(&mut line);
    assert_eq!(line.trim(), "ready", "impair.py did not bind its queue");
    (child, input)
}

/// Deletes namespace `ns` if it exists (one left by an earlier run of this pid, or ours).
fn forget_ns(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// Runs a command, failing the test with its stderr if it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (iproute2, iptables) must be installed: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed (namespace tests need root): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Lan {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            if let Some((mut child, input)) = host.impairer.take() {
                drop(input);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Deleting a namespace deletes its end of each veth pair, and with it the other end.
        for ns in self
            .hosts
            .iter()
            .map(|h| h.ns.as_str())
            .chain([self.hub.as_str()])
        {
            forget_ns(ns);
        }
    }
}
