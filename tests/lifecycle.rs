//! Start-up, restart and crash: persistence, power-on policies, port policy and config errors,
//! with the real binary.

mod support;

use support::*;

/// Four relays, one per power-on policy case, on the sim board.
const POLICY_CONFIG: &str = r#"
[board]
backend = "sim"
[[relay]]
id = "always-off"
pin = 17
power-on = "off"
[[relay]]
id = "always-on"
pin = 27
power-on = "on"
[[relay]]
id = "remembers"
pin = 22
power-on = "restore"
[[relay]]
id = "inverted"
pin = 23
active-low = true
power-on = "restore"
"#;

#[test]
fn power_on_policies_apply_at_start_and_restore_survives_kill_9() {
    let (_cfg_dir, cfg) = config_file(POLICY_CONFIG);
    let cfg = cfg.to_str().unwrap();
    let mut a = Agent::start(&["--config", cfg]);
    assert_eq!(a.pin(17).as_deref(), Some("0"));
    assert_eq!(a.pin(27).as_deref(), Some("1"));
    assert_eq!(
        a.pin(22).as_deref(),
        Some("0"),
        "restore with no history is off"
    );
    assert_eq!(
        a.pin(23).as_deref(),
        Some("1"),
        "active-low off is a high pin"
    );
    for id in ["always-off", "always-on", "remembers", "inverted"] {
        let want = if id == "always-on" { "OFF" } else { "ON" };
        let value = if want == "ON" { "on" } else { "off" };
        assert!(a.cli(&["set", id, value]).status.success());
    }
    assert_eq!(
        a.pin(23).as_deref(),
        Some("0"),
        "active-low on is a low pin"
    );
    a.kill9();
    a.restart();
    assert_eq!(a.state("always-off"), "OFF");
    assert_eq!(a.pin(17).as_deref(), Some("0"));
    assert_eq!(a.state("always-on"), "ON");
    assert_eq!(a.pin(27).as_deref(), Some("1"));
    assert_eq!(a.state("remembers"), "ON");
    assert_eq!(a.pin(22).as_deref(), Some("1"));
    assert_eq!(a.state("inverted"), "ON");
    assert_eq!(a.pin(23).as_deref(), Some("0"));
}

#[test]
fn state_and_moves_survive_a_clean_restart_and_kill_9() {
    let mut a = Agent::start(&[]);
    let uuid_before = std::fs::read_to_string(a.dir.join("instance-id")).unwrap();
    assert!(a
        .cli(&["move", "relay-4", "attic", "--x", "7", "--y", "8"])
        .status
        .success());
    assert!(a.cli(&["set", "relay-3", "on"]).status.success());
    assert!(a.stop().success(), "SIGTERM is a clean stop with exit 0");
    assert!(
        !a.dir.join("agent.json").exists(),
        "runtime file removed on a clean stop"
    );
    a.restart();
    assert_eq!(
        std::fs::read_to_string(a.dir.join("instance-id")).unwrap(),
        uuid_before
    );
    let moved = a.get("relay-4");
    assert_eq!(
        (moved["room"].as_str(), moved["x"].as_f64()),
        (Some("attic"), Some(7.0)),
        "a move beats the config's room"
    );
    assert_eq!(
        a.state("relay-3"),
        "ON",
        "relay-3 is power-on restore in the default config"
    );
    // Every acknowledged command survives kill -9: the store is written before the answer.
    for i in 0..20 {
        let room = format!("room-{i}");
        assert!(a.cli(&["move", "relay-1", &room]).status.success());
    }
    a.kill9();
    a.restart();
    assert_eq!(a.get("relay-1")["room"], "room-19");
}

#[test]
fn objects_removed_from_the_config_are_deleted() {
    let (_d1, full) = config_file("[board]\nbackend = \"sim\"\n[[relay]]\nid = \"keep\"\npin = 17\n[[relay]]\nid = \"drop\"\npin = 27\n");
    let (_d2, less) =
        config_file("[board]\nbackend = \"sim\"\n[[relay]]\nid = \"keep\"\npin = 17\n");
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut a = Agent::start_in(tmp.path(), port, &["--config", full.to_str().unwrap()]);
    assert_eq!(a.state("drop"), "OFF");
    a.stop();
    let a = Agent::start_in(tmp.path(), port, &["--config", less.to_str().unwrap()]);
    assert_eq!(a.cli(&["get", "drop"]).status.code(), Some(2));
    assert_eq!(a.state("keep"), "OFF");
}

#[test]
fn fixed_port_in_use_fails_at_start_naming_the_port() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args([
            "run",
            "--no-mdns",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "error: broker port {port} on 0.0.0.0 is already in use"
        )),
        "{err}"
    );
    assert!(
        !dir.path().join("sim").exists(),
        "no pin was touched before the broker was up"
    );
}

#[test]
fn without_a_fixed_port_the_first_free_one_is_taken_and_advertised() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let base = taken.local_addr().unwrap().port();
    let (_d, cfg) = config_file(&format!(
        "[board]\nbackend = \"sim\"\n[broker]\nbase-port = {base}\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(bin())
        .args([
            "run",
            "--no-mdns",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let info = dir.path().join("agent.json");
    wait_until("agent.json", || info.exists());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info).unwrap()).unwrap();
    let port = json["port"].as_u64().unwrap() as u16;
    assert!(
        port > base && port < base + 100,
        "took {port}, base {base} was busy"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_config_is_refused_with_file_line_and_reason() {
    let (_d, cfg) = config_file("[board]\nbackend = \"sim\"\n[[relay]]\nid = \"a\"\npin = 17\n[[relay]]\nid = \"b\"\npin = 17\n");
    let path = cfg.to_str().unwrap();
    let out = cli(&["check", "--config", path]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.starts_with(&format!("error: {path}:8: ")), "{err}");
    assert!(err.contains("pin 17") || err.contains("GPIO 17"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args([
            "run",
            "--no-mdns",
            "--config",
            path,
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--port",
            &free_port().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr).lines().last(), err.lines().last());

    let (_d, good) = config_file(POLICY_CONFIG);
    let out = cli(&["check", "--config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (4 relays, 0 inputs, board pi4b)"));
}

/// Off a Pi, a config whose GPIO backend cannot run here is refused by `pimesh run` and by
/// `pimesh check` alike: same exit code, same message, with the fix (`backend = "sim"`).
#[test]
fn a_backend_that_cannot_run_here_is_refused_by_run_and_check_alike() {
    for backend in ["rppal", "cdev"] {
        let (_d, cfg) = config_file(&format!(
            "[board]\nbackend = \"{backend}\"\n[[relay]]\nid = \"a\"\npin = 17\n"
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = cfg.to_str().unwrap();
        let run = std::process::Command::new(bin())
            .args(["run", "--no-mdns", "--config", path, "--data-dir"])
            .arg(dir.path())
            .args(["--port", &free_port().to_string()])
            .output()
            .unwrap();
        let check = cli(&["check", "--config", path]);
        let (run_err, check_err) = (text(&run.stderr), text(&check.stderr));
        assert_eq!(run.status.code(), Some(2), "{backend}: {run_err}");
        assert_eq!(check.status.code(), Some(2), "{backend}: {check_err}");
        assert_eq!(
            run_err.lines().last(),
            check_err.lines().last(),
            "{backend}"
        );
        assert!(
            check_err.starts_with(&format!("error: {path}: "))
                && check_err.contains("backend = \"sim\""),
            "{backend}: {check_err}"
        );
        if backend == "rppal" {
            assert!(check_err.contains("not a Raspberry Pi"), "{check_err}");
        }
    }
}

/// `pimesh config --default` prints the embedded default, which `pimesh check` accepts as a
/// file: what a newcomer saves and edits.
#[test]
fn config_default_prints_the_embedded_default_which_checks() {
    let out = cli(&["config", "--default"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert_eq!(printed, include_str!("../src/config/default.toml"));
    let (_d, file) = config_file(&printed);
    let out = cli(&["check", "--config", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The example configs the README's "Several instances" section starts from are valid and
/// run without GPIO hardware.
#[test]
fn the_readme_example_configs_check() {
    for name in ["a", "b", "c"] {
        let path = format!("{}/boards/examples/{name}.toml", env!("CARGO_MANIFEST_DIR"));
        let out = cli(&["check", "--config", &path]);
        assert!(out.status.success(), "{path}: {}", text(&out.stderr));
    }
}
