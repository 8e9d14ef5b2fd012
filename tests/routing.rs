//! Commands across the mesh: routed to the holder, round-robin over runners, automations run
//! exactly once, with real agents on loopback observed through their sim pin files and logs.

mod support;

use support::*;

/// `node_config` plus a virtual object every instance runs.
fn with_scene(p: &str) -> String {
    format!("{}[[virtual]]\nid = \"scene\"\n", node_config(p))
}

/// The instance UUID of an agent.
fn uuid_of(a: &Agent) -> String {
    std::fs::read_to_string(a.dir.join("instance-id"))
        .unwrap()
        .trim()
        .to_string()
}

/// Lines of an agent's log containing `needle`.
fn log_lines(a: &Agent, needle: &str) -> Vec<String> {
    std::fs::read_to_string(a.dir.join("test-agent.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

fn mesh_of(agents: &[(&Agent, &str)]) {
    for (a, _) in agents {
        for (_, other) in agents {
            if a.peers()
                .iter()
                .any(|p| p["name"] == *other && p["status"] == "self")
            {
                continue;
            }
            wait_until("mesh online", || a.peer_status(other) == "online");
        }
    }
}

#[test]
fn a_command_anywhere_runs_on_the_holder_only() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    mesh_of(&[(&a, "alpha"), (&b, "beta")]);
    let out = cli(&["set", "a-light", "on", "--via", &b.addr()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(executed by alpha)"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(a.pin(17).as_deref(), Some("1"));
    assert_eq!(b.pin(17).as_deref(), Some("0"), "beta's own pin untouched");
    mosquitto_pub(b.port, "pimesh/a-light/set", "OFF");
    wait_until("alpha's pin off", || a.pin(17).as_deref() == Some("0"));
    wait_until("state replicated to beta", || {
        b.all()["a-light"]["state"] == "OFF"
    });

    // An MQTT 5 client at beta gets alpha's answer on its response topic, correlated.
    let answer = mqtt5_request(
        b.mqtt5_port(),
        "pimesh/a-light/set",
        "TOGGLE",
        "client/answers",
        b"corr-7",
    );
    assert_eq!(answer.json["result"], "ok", "{:?}", answer.json);
    assert_eq!(answer.json["executed-by"], "alpha");
    assert_eq!(answer.correlation.as_deref(), Some(&b"corr-7"[..]));
    assert_eq!(a.pin(17).as_deref(), Some("1"));
    assert_eq!(b.pin(17).as_deref(), Some("0"), "beta's own pin untouched");

    // The holder's hardware says no: `failed`, exit 1, through the forwarding instance.
    let pin = a.pin_path(27);
    let mut perms = std::fs::metadata(&pin).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&pin, perms).unwrap();
    let out = cli(&["set", "a-fan", "on", "--via", &b.addr()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("read-only") && text(&out.stderr).contains("alpha"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_dead_holder_is_answered_unavailable_without_a_hanging_client() {
    let mut a = start_node("alpha", &node_config("a"), &[]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    mesh_of(&[(&a, "alpha"), (&b, "beta")]);
    a.kill9();
    let t = std::time::Instant::now();
    let out = cli(&[
        "set",
        "a-light",
        "on",
        "--via",
        &b.addr(),
        "--timeout",
        "20",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "answered after {:?}",
        t.elapsed()
    );
    assert!(text(&out.stderr).contains("alpha"), "{}", text(&out.stderr));
    let t = std::time::Instant::now();
    let out = cli(&[
        "set",
        "a-light",
        "on",
        "--via",
        &b.addr(),
        "--timeout",
        "20",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "known offline: answered at once, took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_repeated_command_id_runs_once() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    mesh_of(&[(&a, "alpha"), (&b, "beta")]);
    // One client sends the same command again, through either instance.
    let toggle = r#"{"state":"TOGGLE","id":"once-only"}"#;
    let client = Some("kitchen-panel");
    for _ in 0..3 {
        mosquitto_pub_as_client(b.port, client, "pimesh/a-light/set", toggle);
    }
    mosquitto_pub_as_client(a.port, client, "pimesh/a-light/set", toggle);
    wait_until("the toggle ran", || a.pin(17).as_deref() == Some("1"));
    // A later, different command still runs, after the duplicates: the pin stays toggled once.
    mosquitto_pub(b.port, "pimesh/a-fan/set", r#"{"state":"ON","id":"after"}"#);
    wait_until("the later command ran", || {
        a.pin(27).as_deref() == Some("1")
    });
    assert_eq!(a.pin(17).as_deref(), Some("1"), "a duplicate toggled again");
    assert_eq!(
        log_lines(&a, "a-light")
            .iter()
            .filter(|l| l.contains("command executed"))
            .count(),
        1
    );
}

#[test]
fn equal_command_ids_of_different_clients_or_objects_are_different_commands() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    mesh_of(&[(&a, "alpha"), (&b, "beta")]);
    let answers = Subscriber::new(b.port, "panel/answers/#");
    // Two panels both number their commands from 1: each for its own relay of alpha's, and
    // then both for the same one.
    for (client, object) in [("panel-1", "a-light"), ("panel-2", "a-fan")] {
        let command = format!(r#"{{"state":"ON","id":"1","reply-to":"panel/answers/{client}"}}"#);
        mosquitto_pub_as_client(
            b.port,
            Some(client),
            &format!("pimesh/{object}/set"),
            &command,
        );
    }
    wait_until("both relays switched", || {
        a.pin(17).as_deref() == Some("1") && a.pin(27).as_deref() == Some("1")
    });
    let mut got = answers.take(2);
    got.sort();
    assert!(got[0].starts_with("panel/answers/panel-1 "), "{got:?}");
    assert!(got[1].starts_with("panel/answers/panel-2 "), "{got:?}");
    for line in &got {
        let reply: serde_json::Value =
            serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
        assert_eq!(reply["id"], "1", "the client's own id comes back: {line}");
        assert_eq!(reply["result"], "ok", "{line}");
    }
    // A third panel's command 1 for the light is its own, not panel-1's answered again.
    mosquitto_pub_as_client(
        b.port,
        Some("panel-3"),
        "pimesh/a-light/set",
        r#"{"state":"OFF","id":"1"}"#,
    );
    wait_until("the light switched off", || {
        a.pin(17).as_deref() == Some("0")
    });
}

#[test]
fn virtual_commands_rotate_and_survive_a_dead_runner() {
    let a = start_node("alpha", &with_scene("a"), &[]);
    let b = start_node("beta", &with_scene("b"), &["--peer", &a.addr()]);
    let mut c = start_node("gamma", &with_scene("c"), &["--peer", &a.addr()]);
    mesh_of(&[(&a, "alpha"), (&b, "beta"), (&c, "gamma")]);
    let mut order = [uuid_of(&a), uuid_of(&b), uuid_of(&c)];
    order.sort();
    let mut executors = Vec::new();
    for _ in 0..9 {
        let out = a.cli(&["set", "scene", "toggle", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        executors.push(reply["executed-by-uuid"].as_str().unwrap().to_string());
    }
    let start = order.iter().position(|u| *u == executors[0]).unwrap();
    let expected: Vec<String> = (0..9).map(|i| order[(start + i) % 3].clone()).collect();
    assert_eq!(
        executors, expected,
        "round-robin in the mesh's agreed (UUID) order"
    );

    // 300 toggles through alpha; gamma dies after 50: every command answered ok, none lost,
    // and the state flipped exactly 300 + 9 times (odd: ON).
    let c_uuid = uuid_of(&c);
    let mut after_death = Vec::new();
    for i in 0..300 {
        if i == 50 {
            c.kill9();
        }
        let out = a.cli(&["set", "scene", "toggle", "--json", "--timeout", "15"]);
        assert!(out.status.success(), "command {i}: {}", text(&out.stderr));
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(reply["result"], "ok");
        if i > 50 {
            after_death.push(reply["executed-by-uuid"].as_str().unwrap().to_string());
        }
    }
    assert!(
        after_death.iter().skip(5).all(|u| *u != c_uuid),
        "a dead runner stays out of the rotation"
    );
    wait_until("beta agrees", || b.all()["scene"]["state"] == "ON");
    assert_eq!(a.state("scene"), "ON", "309 toggles from OFF");
}

#[test]
fn a_button_on_one_pi_toggles_a_relay_on_another_exactly_once_per_press() {
    let rule = "[[automation]]\nid = \"press-toggles\"\nwhen = \"a-button\"\nto = \"ON\"\nthen = \"b-light\"\naction = \"toggle\"\n";
    let a = start_node("alpha", &format!("{}{rule}", node_config("a")), &[]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    let mut c = start_node("gamma", &node_config("c"), &["--peer", &a.addr()]);
    mesh_of(&[(&a, "alpha"), (&b, "beta"), (&c, "gamma")]);
    wait_until("the rule replicated", || {
        b.all().contains_key("press-toggles")
    });
    let presses = 100;
    for i in 0..presses {
        if i == 50 {
            c.kill9();
        }
        a.set_pin(5, false);
        wait_until("press seen", || a.get("a-button")["state"] == "ON");
        a.set_pin(5, true);
        wait_until("release seen", || a.get("a-button")["state"] == "OFF");
    }
    let executed = || {
        log_lines(&b, "command executed")
            .into_iter()
            .filter(|l| l.contains("object=b-light") && l.contains("command=auto-press-toggles-"))
            .count()
    };
    wait_until("every press toggled the relay", || executed() >= presses);
    wait_until("every job answered", || {
        log_lines(&a, "automation ran").len() >= presses
    });
    assert_eq!(executed(), presses, "a press toggled the relay twice");
    assert_eq!(
        b.pin(17).as_deref(),
        Some("0"),
        "an even number of toggles leaves it off"
    );
    let runners: std::collections::BTreeSet<String> = log_lines(&a, "automation job handed out")
        .iter()
        .filter_map(|l| {
            l.split("runner=")
                .nth(1)
                .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(
        runners.len(),
        3,
        "jobs rotate over all three instances: {runners:?}"
    );
}

#[test]
fn commands_from_one_client_apply_in_order() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    mesh_of(&[(&a, "alpha"), (&b, "beta")]);
    let mut lines = String::new();
    for i in 0..101 {
        lines.push_str(if i % 2 == 0 { "ON\n" } else { "OFF\n" });
    }
    let mut p = std::process::Command::new("mosquitto_pub")
        .args(mosquitto_auth(b.port))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &b.port.to_string(),
            "-q",
            "1",
            "-t",
            "pimesh/a-light/set",
            "-l",
        ])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    p.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(p.wait().unwrap().success());
    wait_until("all 101 executed on alpha", || {
        log_lines(&a, "object=a-light")
            .iter()
            .filter(|l| l.contains("command executed"))
            .count()
            == 101
    });
    assert_eq!(
        a.pin(17).as_deref(),
        Some("1"),
        "the last command (ON) was applied last"
    );
}

#[test]
fn an_executor_that_stays_silent_is_answered_timeout() {
    // A serial device that takes every line and never replies, with a reply timeout longer
    // than the forwarding instance waits: its holder is alive, the answer just never comes.
    let tty = tempfile::tempdir().unwrap();
    let _socat = Socat::start(tty.path());
    let fake = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(tty.path().join("fake"))
        .unwrap();
    // Counts the lines the device is sent: how often a command really ran.
    let lines = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = lines.clone();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut sink = [0u8; 256];
        let mut fake = fake;
        while let Ok(n) = fake.read(&mut sink) {
            if n == 0 {
                break;
            }
            let ends = sink[..n].iter().filter(|&&b| b == b'\n').count();
            counted.fetch_add(ends, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let config = format!(
        "{}[[serial]]\nid = \"slow\"\npath = \"{}\"\ntimeout-ms = 9000\n\
         [[serial.channel]]\nid = \"slow-r1\"\non = \"R1=1\\n\"\noff = \"R1=0\\n\"\n\
         on-reply = \"OK R1=1\"\noff-reply = \"OK R1=0\"\n",
        node_config("a"),
        tty.path().join("dev").display()
    );
    let a = start_node("alpha", &config, &[]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    mesh_of(&[(&a, "alpha"), (&b, "beta")]);
    wait_until("beta sees the channel online", || {
        b.all()
            .get("slow-r1")
            .is_some_and(|o| o["available"] == true)
    });
    let t = std::time::Instant::now();
    let out = cli(&[
        "set",
        "slow-r1",
        "on",
        "--via",
        &b.addr(),
        "--timeout",
        "20",
    ]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no answer from alpha within"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        took >= std::time::Duration::from_secs(4) && took < std::time::Duration::from_secs(9),
        "answered timeout after {took:?}: the forwarder's wait, not the client's or the device's"
    );
    let ran = lines.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(ran, 1, "the device got the command once");

    // A client sends a command and, while it runs, the same again: both get the answer.
    let answers = Subscriber::new(b.port, "panel/answers");
    let command = r#"{"state":"ON","id":"slow-1","reply-to":"panel/answers"}"#;
    for _ in 0..2 {
        mosquitto_pub_as_client(b.port, Some("panel"), "pimesh/slow-r1/set", command);
    }
    let got = answers.take(2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter()
            .all(|l| l.contains(r#""result":"timeout""#) && l.contains(r#""id":"slow-1""#)),
        "{got:?}"
    );
    assert!(
        lines.load(std::sync::atomic::Ordering::SeqCst) <= ran + 1,
        "it ran at most once"
    );
    // A timeout is not an answer to remember: the same command sent again goes to alpha
    // again (which answers what its device did, or is still silent), not answered `timeout`
    // at once from beta's memory.
    let t = std::time::Instant::now();
    mosquitto_pub_as_client(b.port, Some("panel"), "pimesh/slow-r1/set", command);
    let again = answers.take(1);
    assert_eq!(again.len(), 1, "the retry is answered");
    assert!(
        !again[0].contains(r#""result":"timeout""#)
            || t.elapsed() >= std::time::Duration::from_secs(4),
        "{again:?} after {:?}: a remembered timeout",
        t.elapsed()
    );
}

#[test]
fn a_command_retried_after_the_agent_restarted_is_answered_not_run_again() {
    let mut a = start_node("alpha", &node_config("a"), &[]);
    let toggle = r#"{"state":"TOGGLE","id":"before-restart","reply-to":"panel/answers"}"#;
    let client = Some("kitchen-panel");
    let answers = Subscriber::new(a.port, "panel/answers");
    mosquitto_pub_as_client(a.port, client, "pimesh/a-light/set", toggle);
    let first = answers.take(1);
    assert!(first[0].contains(r#""result":"ok""#), "{first:?}");
    // The agent dies right after answering; the client retries once it is back.
    a.kill9();
    a.restart();
    let after_restart = a.pin(17);
    let answers = Subscriber::new(a.port, "panel/answers");
    mosquitto_pub_as_client(a.port, client, "pimesh/a-light/set", toggle);
    let again = answers.take(1);
    assert!(
        again[0].contains(r#""result":"ok""#) && again[0].contains(r#""state":"ON""#),
        "answered again with the first answer: {again:?}"
    );
    mosquitto_pub_as_client(
        a.port,
        client,
        "pimesh/a-fan/set",
        r#"{"state":"ON","id":"later"}"#,
    );
    wait_until("the later command ran", || {
        a.pin(27).as_deref() == Some("1")
    });
    assert_eq!(a.pin(17), after_restart, "the retried toggle ran again");
    // Another client's command with the same id is its own command, and runs.
    mosquitto_pub_as_client(a.port, Some("hall-panel"), "pimesh/a-light/set", toggle);
    wait_until("another client's toggle ran", || a.pin(17) != after_restart);
}
