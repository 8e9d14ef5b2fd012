//! Users and their topic rules: an account made on one instance works at every broker of the
//! mesh, may switch the house but never sees or forges the mesh's own topics, and is refused
//! everywhere once removed.

use super::{add_user, log_of, pub_with};
use crate::support::*;
use std::process::Command;

#[test]
fn a_user_switches_another_instances_relay_through_any_broker_but_never_sees_the_mesh() {
    let a = start_node("alpha", &node_config("a"), &[]);
    let b = start_node("beta", &node_config("b"), &["--peer", &a.addr()]);
    wait_until("beta sees alpha online", || {
        b.peer_status("alpha") == "online"
    });
    let password = add_user(&a, "ha");
    let bp = b.port.to_string();
    let login = ["-u", "ha", "-P", password.as_str()];
    // The account replicates: beta's broker takes it too.
    wait_until("the user is known on beta", || {
        let mut args = vec!["-p", &bp, "-q", "1", "-t", "pimesh/a-light/set", "-m", "ON"];
        args.extend(login);
        pub_with(&args).0
    });
    wait_until("alpha's relay switched by a user at beta", || {
        a.pin(17).as_deref() == Some("1")
    });
    let users = a.cli(&["user", "list"]);
    assert_eq!(text(&users.stdout).trim(), "ha");

    // Subscribed to everything for 3 s while heartbeats flow every second: no internal topic.
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &bp,
            "-u",
            "ha",
            "-P",
            &password,
            "-t",
            "#",
            "-v",
            "-W",
            "3",
        ])
        .output()
        .unwrap();
    let seen = text(&out.stdout);
    assert!(
        seen.contains("pimesh/a-light "),
        "the user sees the house: {seen}"
    );
    assert!(
        !seen.contains("$pimesh/") && !seen.contains("/mesh/"),
        "the user saw internal topics: {seen}"
    );
    assert_eq!(b.peer_status("alpha"), "online", "beats did flow");

    // A forged state, instance status or mesh update is refused.
    let mut forged = vec![
        "-p",
        &bp,
        "-q",
        "1",
        "-r",
        "-t",
        "pimesh/a-light",
        "-m",
        "{\"state\":\"OFF\",\"room\":\"pwned\"}",
    ];
    forged.extend(login);
    pub_with(&forged);
    let mut v5 = vec![
        "-V",
        "mqttv5",
        "-p",
        &bp,
        "-q",
        "1",
        "-t",
        "$pimesh/pimesh/mesh/x/updates",
        "-m",
        "{}",
    ];
    v5.extend(login);
    let (ok, out) = pub_with(&v5);
    assert!(
        !ok || out.to_lowercase().contains("not authori"),
        "MQTT 5 hears that its publish was refused: {out}"
    );
    let retained = mosquitto_sub(b.port, "pimesh/a-light", 1);
    assert!(
        retained[0].contains("\"state\":\"ON\"") && !retained[0].contains("pwned"),
        "{retained:?}"
    );
    assert!(
        log_of(&b).contains("may not publish on \"pimesh/a-light\""),
        "the refusal is logged"
    );

    // Removing the user refuses its next connection everywhere.
    assert!(a.cli(&["user", "remove", "ha"]).status.success());
    wait_until("the removed user is refused at beta", || {
        let mut args = vec![
            "-p",
            &bp,
            "-q",
            "1",
            "-t",
            "pimesh/a-light/set",
            "-m",
            "OFF",
        ];
        args.extend(login);
        !pub_with(&args).0
    });
}
