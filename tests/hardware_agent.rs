//! The hardware rules wired into the real agent, end to end: the binary on the sim backend,
//! commanded through its CLI and observed through the sim pin files and its public state —
//! pulse, interlock with dead time, the max-on watchdog, on-stop, and press events.

mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const RELAYS: &str = r#"
[board]
backend = "sim"
[[relay]]
id = "up"
pin = 5
interlock = "blind"
interlock-dead-ms = 150
[[relay]]
id = "down"
pin = 6
interlock = "blind"
[[relay]]
id = "door"
pin = 13
pulse-ms = 300
[[relay]]
id = "heater"
pin = 19
max-on-s = 1
[[relay]]
id = "pump"
pin = 20
on-stop = "off"
[[relay]]
id = "lamp"
pin = 21
"#;

/// Pin levels seen by the sampler, each with the moment it first saw them.
type Samples = Vec<(Instant, Vec<bool>)>;

/// Reads sim pin files as fast as it can on a thread, recording every change it sees.
struct Sampler {
    seen: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(files: Vec<PathBuf>) -> Sampler {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let now: Vec<bool> = files
                    .iter()
                    .map(|f| std::fs::read_to_string(f).is_ok_and(|t| t.trim() == "1"))
                    .collect();
                let mut log = log.lock().unwrap();
                if log.last().is_none_or(|(_, last)| *last != now) {
                    log.push((Instant::now(), now));
                }
            }
        });
        Sampler {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until the latest sample is `state`.
    fn wait_for(&self, state: &[bool]) {
        wait_until(&format!("pins {state:?}"), || {
            self.seen.lock().unwrap().last().map(|(_, s)| s.as_slice()) == Some(state)
        });
    }

    /// Stops sampling and returns every change seen.
    fn finish(mut self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let seen = self.seen.lock().unwrap().clone();
        seen
    }
}

/// `pimesh set OBJECT STATE` must succeed.
fn set(a: &Agent, object: &str, state: &str) {
    let out = a.cli(&["set", object, state]);
    assert!(
        out.status.success(),
        "set {object} {state}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn a_pulse_relay_goes_back_off_by_itself_after_pulse_ms() {
    let a = start_node("garage", RELAYS, &[]);
    let sampler = Sampler::start(vec![a.pin_path(13)]);
    set(&a, "door", "on");
    wait_until("the pin files to show the pulse rise and fall", || {
        let seen = sampler.seen.lock().unwrap();
        seen.iter()
            .position(|(_, p)| p[0])
            .is_some_and(|rise| seen[rise..].iter().any(|(_, p)| !p[0]))
    });
    let seen = sampler.finish();
    let rise = seen.iter().find(|(_, p)| p[0]).map(|(t, _)| *t);
    let fall = seen.iter().rev().find(|(_, p)| !p[0]).map(|(t, _)| *t);
    let (Some(rise), Some(fall)) = (rise, fall) else {
        panic!("the pulse was not seen: {seen:?}");
    };
    // The sampler sees each edge a moment after it happens; only a lag at the rise could
    // shorten the pulse as seen, and it is a few ms at most.
    let length = fall.saturating_duration_since(rise);
    assert!(length >= Duration::from_millis(290), "pulse {length:?}");
    wait_until("door OFF with its reason", || {
        let door = a.get("door");
        door["state"] == "OFF" && door["reason"] == "pulse-ms elapsed"
    });
}

#[test]
fn interlocked_relays_are_never_on_together_and_a_delayed_command_is_answered() {
    let a = start_node("blinds", RELAYS, &[]);
    set(&a, "up", "on");
    assert_eq!(a.pin(5).as_deref(), Some("1"));
    let sampler = Sampler::start(vec![a.pin_path(5), a.pin_path(6)]);
    let sent = Instant::now();
    // Answered only after the dead time, once `down` is really on.
    set(&a, "down", "on");
    assert!(sent.elapsed() >= Duration::from_millis(150));
    assert_eq!(a.pin(6).as_deref(), Some("1"));
    sampler.wait_for(&[false, true]);
    set(&a, "up", "on");
    sampler.wait_for(&[true, false]);
    let seen = sampler.finish();
    assert!(
        seen.iter().all(|(_, pins)| !(pins[0] && pins[1])),
        "two pins high at once: {seen:?}"
    );
    assert!(seen.iter().any(|(_, p)| p == &[false, false]), "{seen:?}");
    let down = a.get("down");
    assert_eq!(down["state"], "OFF");
    assert_eq!(down["reason"], "interlock: up switched on");
    let up = a.get("up");
    assert_eq!(
        (up["state"].as_str(), up["reason"].as_str()),
        (Some("ON"), Some("command"))
    );
}

/// Makes a sim pin file read-only (or writable again): the next write to it fails, as a
/// broken driver would.
fn pin_writable(a: &Agent, pin: u8, writable: bool) {
    use std::os::unix::fs::PermissionsExt;
    let path = a.pin_path(pin);
    let mode = if writable { 0o644 } else { 0o444 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_relay_that_cannot_switch_mid_sequence_fails_the_command_and_keeps_the_interlock() {
    let a = start_node("blinds", RELAYS, &[]);
    set(&a, "up", "on");

    // The first step fails: `up` cannot go off, so `down` must not come on.
    pin_writable(&a, 5, false);
    let out = a.cli(&["set", "down", "on"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot switch up OFF"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        (a.pin(5).as_deref(), a.pin(6).as_deref()),
        (Some("1"), Some("0"))
    );
    assert_eq!(
        a.get("up")["state"],
        "ON",
        "the record follows the hardware"
    );
    assert_eq!(a.get("down")["state"], "OFF");

    // The last step fails: `up` went off, the dead time passed, `down` cannot come on.
    pin_writable(&a, 5, true);
    pin_writable(&a, 6, false);
    let out = a.cli(&["set", "down", "on"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot switch down ON"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        (a.pin(5).as_deref(), a.pin(6).as_deref()),
        (Some("0"), Some("0"))
    );
    assert_eq!(a.get("up")["state"], "OFF");
    assert_eq!(a.get("down")["state"], "OFF");

    // Nothing is stuck: with the pin writable again, the same command works.
    pin_writable(&a, 6, true);
    set(&a, "down", "on");
    assert_eq!(
        (a.pin(5).as_deref(), a.pin(6).as_deref()),
        (Some("0"), Some("1"))
    );
}

#[test]
fn the_watchdog_switches_a_relay_off_after_max_on_s_and_says_why() {
    let a = start_node("boiler", RELAYS, &[]);
    let events = Subscriber::new(a.port, "pimesh/heater/event");
    let sent = Instant::now();
    set(&a, "heater", "on");
    assert_eq!(a.pin(19).as_deref(), Some("1"));
    wait_until("the watchdog switched the heater off", || {
        a.pin(19).as_deref() == Some("0")
    });
    assert!(sent.elapsed() >= Duration::from_secs(1));
    let heater = a.get("heater");
    assert_eq!(heater["state"], "OFF");
    assert_eq!(heater["reason"], "max-on-s exceeded");
    let events = events.take(1);
    assert_eq!(
        events,
        [r#"pimesh/heater/event {"reason":"max-on-s exceeded","state":"OFF"}"#]
    );
}

#[test]
fn a_restart_does_not_give_the_watchdog_a_fresh_period() {
    let config = "[board]\nbackend = \"sim\"\n[[relay]]\nid = \"heater\"\npin = 19\n\
                  max-on-s = 2\npower-on = \"restore\"\n";
    let mut a = start_node("boiler", config, &[]);
    set(&a, "heater", "on");
    let switched_on = Instant::now();
    a.kill9();
    // The heater has now been on longer than max-on-s: this waits for time itself to pass.
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(switched_on.elapsed()));
    a.restart();
    // Restored ON, but its period is used up: off before the agent even says it runs.
    assert_eq!(a.pin(19).as_deref(), Some("0"));
    let heater = a.get("heater");
    assert_eq!(heater["state"], "OFF");
    assert_eq!(heater["reason"], "max-on-s exceeded");
}

#[test]
fn a_clean_stop_applies_on_stop_and_leaves_the_others() {
    let mut a = start_node("cellar", RELAYS, &[]);
    set(&a, "pump", "on");
    set(&a, "lamp", "on");
    assert_eq!(a.pin(20).as_deref(), Some("1"));
    assert!(a.stop().success());
    assert_eq!(a.pin(20).as_deref(), Some("0"), "on-stop = off");
    assert_eq!(a.pin(21).as_deref(), Some("1"), "on-stop left as is");
}

const BUTTON: &str = r#"
[board]
backend = "sim"
[[input]]
id = "button"
pin = 5
pull = "up"
active-low = true
debounce-ms = 10
double-ms = 300
long-ms = 700
[[relay]]
id = "lamp"
pin = 21
[[automation]]
id = "double-toggles"
when = "button"
property = "event"
to = "double"
then = "lamp"
action = "toggle"
"#;

/// Presses the sim button (active low) for `ms`, then releases it.
fn press(a: &Agent, ms: u64) {
    a.set_pin(5, false);
    std::thread::sleep(Duration::from_millis(ms));
    a.set_pin(5, true);
}

/// Two short presses well within `double-ms`.
fn double_press(a: &Agent) {
    press(a, 60);
    std::thread::sleep(Duration::from_millis(80));
    press(a, 60);
}

#[test]
fn presses_become_events_that_automations_trigger_on_every_time() {
    let a = start_node("hall", BUTTON, &[]);
    a.set_pin(5, true);
    let events = Subscriber::new(a.port, "pimesh/button/event");
    double_press(&a);
    wait_until("the first double press toggled the lamp on", || {
        a.pin(21).as_deref() == Some("1")
    });
    assert_eq!(a.get("button")["event"], "double");
    // The same event again is still an event: the rule runs again.
    std::thread::sleep(Duration::from_millis(400));
    double_press(&a);
    wait_until("the second double press toggled the lamp off", || {
        a.pin(21).as_deref() == Some("0")
    });
    std::thread::sleep(Duration::from_millis(400));
    press(&a, 60);
    wait_until("a single press", || a.get("button")["event"] == "single");
    press(&a, 1000);
    wait_until("a long press", || a.get("button")["event"] == "long");
    let events = events.take(4);
    assert_eq!(
        events,
        [
            "pimesh/button/event double",
            "pimesh/button/event double",
            "pimesh/button/event single",
            "pimesh/button/event long",
        ]
    );
    assert_eq!(
        a.pin(21).as_deref(),
        Some("0"),
        "single and long toggle nothing"
    );
}

/// A fake Arduino on the `fake` end: answers `R1=x` with `OK R1=x` and records every line.
fn fake_device(path: &std::path::Path) -> Arc<Mutex<Vec<String>>> {
    use std::io::{BufRead, Write};
    let port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (reader, mut writer, log) = (port.try_clone().unwrap(), port, seen.clone());
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            let answer = match line.as_str() {
                "R1=1" => "OK R1=1\r\n",
                "R1=0" => "OK R1=0\r\n",
                "ping" => "pong\n",
                _ => "ERR unknown\n",
            };
            log.lock().unwrap().push(line);
            let _ = writer.write_all(answer.as_bytes());
        }
    });
    seen
}

#[test]
fn a_serial_channel_is_switched_through_its_device_and_goes_unavailable_when_unplugged() {
    let tty = tempfile::tempdir().unwrap();
    let mut socat = Socat::start(tty.path());
    let seen = fake_device(&tty.path().join("fake"));
    let config = format!(
        "[board]\nbackend = \"sim\"\n\
         [[serial]]\nid = \"arduino\"\npath = \"{}\"\nbaud = 115200\ntimeout-ms = 500\nfail-prefix = \"ERR\"\n\
         [[serial.channel]]\nid = \"arduino-r1\"\non = \"R1=1\\n\"\noff = \"R1=0\\n\"\n\
         on-reply = \"OK R1=1\"\noff-reply = \"OK R1=0\"\n",
        tty.path().join("dev").display()
    );
    let a = start_node("workshop", &config, &[]);
    wait_until("the channel online", || {
        a.get("arduino-r1")["online"] == true
    });
    set(&a, "arduino-r1", "on");
    assert_eq!(seen.lock().unwrap().as_slice(), ["R1=1"]);
    let r1 = a.get("arduino-r1");
    assert_eq!(
        (r1["state"].as_str(), r1["kind"].as_str()),
        (Some("ON"), Some("serial-channel"))
    );
    assert_eq!(r1["available"], true);

    socat.stop();
    wait_until("the channel unavailable", || {
        a.get("arduino-r1")["available"] == false
    });
    let out = a.cli(&["set", "arduino-r1", "off"]);
    assert!(
        !out.status.success(),
        "a command to an unplugged device fails"
    );
    assert!(
        text(&out.stdout).contains("unavailable") || text(&out.stderr).contains("unavailable"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // Plugged back in: available again, and commands reach the device.
    let _socat = Socat::start(tty.path());
    let seen = fake_device(&tty.path().join("fake"));
    wait_until("the channel available again", || {
        a.get("arduino-r1")["available"] == true
    });
    set(&a, "arduino-r1", "off");
    assert_eq!(seen.lock().unwrap().as_slice(), ["R1=0"]);
    assert_eq!(a.state("arduino-r1"), "OFF");
}

#[test]
fn a_raw_serial_device_is_a_byte_bridge() {
    let tty = tempfile::tempdir().unwrap();
    let _socat = Socat::start(tty.path());
    let seen = fake_device(&tty.path().join("fake"));
    let config = format!(
        "[board]\nbackend = \"sim\"\n\
         [[serial]]\nid = \"modem\"\npath = \"{}\"\nprotocol = \"raw\"\n",
        tty.path().join("dev").display()
    );
    let a = start_node("attic", &config, &[]);
    let out = Subscriber::new(a.port, "pimesh/modem");
    wait_until("the device hears ping", || {
        mosquitto_pub(a.port, "pimesh/modem/send", "ping\n");
        std::thread::sleep(Duration::from_millis(100));
        !seen.lock().unwrap().is_empty()
    });
    assert_eq!(seen.lock().unwrap()[0], "ping");
    let out = out.take(1);
    assert_eq!(out.first().map(String::as_str), Some("pimesh/modem pong"));
}

#[test]
fn a_restored_relay_trusts_its_pin_after_a_restart_and_the_store_after_a_reboot() {
    let config = "[board]\nbackend = \"sim\"\n[[relay]]\nid = \"lamp\"\npin = 19\n\
                  power-on = \"restore\"\n";
    let mut a = start_node("hall", config, &[]);
    assert_eq!(a.get("lamp")["state"], "OFF");
    // The lamp was switched on, and the store never took it (a full disk, then a crash):
    // the pin holds ON, the store OFF. The machine did not reboot, so the pin is right.
    a.kill9();
    std::fs::write(a.pin_path(19), "1\n").unwrap();
    a.restart();
    assert_eq!(a.pin(19).as_deref(), Some("1"));
    assert_eq!(a.get("lamp")["state"], "ON");
    // After a reboot a pin holds its power-on default, not the relay's state: the store wins.
    set(&a, "lamp", "off");
    a.kill9();
    std::fs::write(a.pin_path(19), "1\n").unwrap();
    std::fs::write(a.dir.join("boot-id"), "another boot\n").unwrap();
    a.restart();
    assert_eq!(a.pin(19).as_deref(), Some("0"));
    assert_eq!(a.get("lamp")["state"], "OFF");
}
