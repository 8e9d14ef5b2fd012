//! One agent, end to end: the real binary on loopback, driven by its CLI, by Debian's
//! mosquitto clients, and through its sim pin files.

mod support;

use support::*;

#[test]
fn default_config_runs_four_relays_and_two_inputs() {
    let a = Agent::start(&[]);
    let out = a.cli(&["get", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["button-1", "button-2", "relay-1", "relay-2", "relay-3", "relay-4"]
    );
    assert_eq!(a.pin(17).as_deref(), Some("0"), "relay-1 powers on off");
    let relay = a.get("relay-1");
    assert_eq!(relay["state"], "OFF");
    assert_eq!(relay["room"], "kitchen");
    assert_eq!(relay["kind"], "relay");
    let table = text(&a.cli(&["get"]).stdout);
    assert!(
        table.contains("relay-4") && table.contains("hall"),
        "{table}"
    );
}

#[test]
fn cli_switches_toggles_and_moves() {
    let a = Agent::start(&["--name", "kitchen-pi"]);
    let out = a.cli(&["set", "relay-1", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "relay-1: ON room=kitchen x=2.0 y=1.5 (executed by kitchen-pi)"
    );
    assert_eq!(a.pin(17).as_deref(), Some("1"));
    assert!(a.cli(&["set", "relay-1", "toggle"]).status.success());
    assert_eq!(a.pin(17).as_deref(), Some("0"));
    assert!(a.cli(&["set", "relay-1", "TOGGLE"]).status.success());
    assert_eq!(a.pin(17).as_deref(), Some("1"));
    assert!(a.cli(&["set", "relay-1", "off"]).status.success());
    assert_eq!(a.pin(17).as_deref(), Some("0"));
    assert_eq!(a.pin(27).as_deref(), Some("0"), "other relays untouched");

    let out = a.cli(&["move", "relay-2", "hall", "--x", "3", "--y", "-1.5"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let moved = a.get("relay-2");
    assert_eq!(
        (
            moved["room"].as_str(),
            moved["x"].as_f64(),
            moved["y"].as_f64()
        ),
        (Some("hall"), Some(3.0), Some(-1.5))
    );
    assert_eq!(
        a.pin(27).as_deref(),
        Some("0"),
        "a move never touches the pin"
    );
}

#[test]
fn concurrent_cli_invocations_each_get_their_own_answer() {
    // Every CLI invocation waits on one shared reply topic (a topic each would grow the
    // broker's memory forever); answers are told apart by request id.
    let a = Agent::start(&[]);
    let runs: Vec<_> = (0..12)
        .map(|i| {
            let dir = a.dir.clone();
            std::thread::spawn(move || {
                let d = dir.to_str().unwrap().to_string();
                let args: Vec<String> = match i % 3 {
                    0 => vec!["set".into(), format!("relay-{}", i % 4 + 1), "on".into()],
                    1 => vec!["get".into(), "button-1".into(), "--json".into()],
                    _ => vec!["peers".into(), "--json".into()],
                };
                let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
                args.extend(["--data-dir", &d]);
                (i, cli(&args))
            })
        })
        .collect();
    for run in runs {
        let (i, out) = run.join().unwrap();
        assert!(out.status.success(), "run {i}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        match i % 3 {
            0 => assert!(
                stdout.contains(&format!("relay-{}: ON", i % 4 + 1)),
                "{stdout}"
            ),
            1 => {
                let reply: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                assert_eq!(reply["id"], "button-1", "{stdout}");
            }
            _ => {
                let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
                assert_eq!(rows[0]["status"], "self", "{stdout}");
            }
        }
    }
}

#[test]
fn cli_errors_map_to_exit_codes() {
    let a = Agent::start(&[]);
    let out = a.cli(&["set", "no-such-thing", "on"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown object \"no-such-thing\""),
        "{}",
        text(&out.stderr)
    );
    let out = a.cli(&["set", "relay-1", "dim"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: value \"dim\" is not on, off or toggle"
    );
    let out = a.cli(&["set", "button-1", "on"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("button-1 is an input"),
        "{}",
        text(&out.stderr)
    );
    let out = a.cli(&["get", "nothing-here"]);
    assert_eq!(out.status.code(), Some(2));

    // A pin that refuses to switch (sim: read-only pin file) is a failed command, exit 1,
    // and the state stays what the pin really is.
    let pin = a.pin_path(22);
    let mut perms = std::fs::metadata(&pin).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(&pin, perms).unwrap();
    let out = a.cli(&["set", "relay-3", "on"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("read-only"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(a.state("relay-3"), "OFF");
}

#[test]
fn cli_without_an_agent_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(&["get", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("no pimesh agent is running"),
        "{}",
        text(&out.stderr)
    );
    let port = free_port().to_string();
    let out = cli(&[
        "set",
        "relay-1",
        "on",
        "--via",
        &format!("127.0.0.1:{port}"),
        "--timeout",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("cannot reach the agent"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&["set", "relay-1", "on", "--via", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn via_names_the_broker_directly() {
    let a = Agent::start(&[]);
    let via = format!("127.0.0.1:{}", a.port);
    let out = cli(&["set", "relay-4", "on", "--via", &via, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["result"], "ok");
    assert_eq!(reply["state"]["state"], "ON");
    assert_eq!(a.pin(23).as_deref(), Some("1"));
}

#[test]
fn inputs_follow_their_pin_files() {
    let a = Agent::start(&[]);
    // button-1: GPIO 5, pull-up, active-low: idle file reads 1 and the state is OFF.
    assert_eq!(a.pin(5).as_deref(), Some("1"));
    assert_eq!(a.state("button-1"), "OFF");
    a.set_pin(5, false);
    wait_until("button-1 pressed", || a.state("button-1") == "ON");
    a.set_pin(5, true);
    wait_until("button-1 released", || a.state("button-1") == "OFF");
    // Garbage in a pin file is ignored, then a valid level is seen again.
    std::fs::write(a.pin_path(6), "bogus").unwrap();
    a.set_pin(6, false);
    wait_until("button-2 pressed after garbage", || {
        a.state("button-2") == "ON"
    });
}

#[test]
fn second_agent_on_the_same_data_dir_is_refused() {
    let a = Agent::start(&[]);
    let out = std::process::Command::new(bin())
        .args([
            "run",
            "--no-mdns",
            "--data-dir",
            a.dir.to_str().unwrap(),
            "--port",
            &free_port().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("another pimesh agent is already running with data dir"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        a.cli(&["get", "relay-1"]).status.success(),
        "first agent unaffected"
    );
}

#[test]
fn boards_are_listed_and_described() {
    let out = cli(&["boards"]);
    assert!(out.status.success());
    let list = text(&out.stdout);
    for id in ["pi3b", "pi4b", "pi5", "pizero2w", "waveshare-relay-3ch"] {
        assert!(list.contains(id), "{id} missing from:\n{list}");
    }
    let out = cli(&["boards", "waveshare-relay-3ch"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("26"), "{}", text(&out.stdout));
    assert_eq!(cli(&["boards", "pi99"]).status.code(), Some(2));
}
