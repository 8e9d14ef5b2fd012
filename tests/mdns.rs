//! Zero-configuration discovery on a LAN: two instances in network namespaces on one bridge
//! (root, as CI has). An invitation that names no address at all still joins: the new
//! instance finds its inviter by mDNS (`_pimesh._tcp`, the inviter's UUID in TXT) and links to
//! it, and the mesh works.

mod support;

use support::lan::Lan;
use support::*;

#[test]
fn an_invitation_without_addresses_finds_its_inviter_on_the_lan() {
    let tmp = tempfile::tempdir().unwrap();
    let lan = Lan::create(2);
    let start = |k: usize, name: &str, extra: &[&str]| {
        let cfg = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, node_config(&name[..1])).unwrap();
        let cfg = cfg.to_string_lossy().to_string();
        let mut args = vec!["--name", name, "--config", &cfg];
        args.extend(extra);
        Agent::start_in_netns(lan.ns(k), &tmp.path().join(name), free_port(), &args)
    };
    let a = start(0, "alpha", &[]);
    let token = invite(&a.dir, Some(lan.ns(0)));
    let mut token = pimesh::membership::Token::decode(&token).expect("a token");
    // Nothing to dial: only the LAN can say where the inviter is.
    token.addrs.clear();
    let token = token.encode();
    let b = start(1, "beta", &["--join", &token]);
    wait_until("beta joined alpha's mesh and sees it online", || {
        b.peer_status("alpha") == "online"
    });
    wait_until("beta has alpha's objects", || {
        b.all().contains_key("a-light")
    });
    assert!(
        b.log().contains("found the inviting instance on the LAN"),
        "{}",
        b.log()
    );
    // The mesh works across the link mDNS found: a command at beta switches alpha's relay.
    let out = b.cli(&["set", "a-light", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(a.pin(17).as_deref(), Some("1"));
    wait_until("alpha sees beta online", || {
        a.peer_status("beta") == "online"
    });

    // `pimesh lan` on beta's host: both instances as _pimesh._tcp with one mesh id (beta
    // announces the mesh it joined), and alpha's broker as _mqtt._tcp on its MQTT port.
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            lan.ns(1),
            bin(),
            "lan",
            "--json",
            "--wait",
            "3",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let entry = |service: &str, uuid: &str| {
        found
            .iter()
            .find(|f| f["service"] == service && f["uuid"] == uuid)
            .unwrap_or_else(|| panic!("no {service} of {uuid} in {found:#?}"))
            .clone()
    };
    let (ua, ub) = (a.uuid(), b.uuid());
    let mqtt = entry("mqtt", &ua);
    let alpha_broker = format!("{}:{}", lan.ip(0), a.port);
    assert!(
        mqtt["addrs"]
            .as_array()
            .unwrap()
            .contains(&alpha_broker.into()),
        "{mqtt}"
    );
    assert_eq!(mqtt["name"], "alpha");
    let (pa, pb) = (entry("pimesh", &ua), entry("pimesh", &ub));
    assert_eq!(pa["mesh"], pb["mesh"], "beta announces the mesh it joined");
    assert_eq!(pb["name"], "beta");
}
