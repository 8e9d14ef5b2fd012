//! The house on a page (issue 14), end to end: real agents on loopback, their web pages
//! over HTTPS, a real headless Chromium driven over the DevTools protocol, and the event
//! stream. Raw HTTP for what a browser would never send, and logins, are in `web/access.rs`.
//!
//! Screenshots of the browser run land in `target/web-artifacts/`.

#[path = "web/access.rs"]
mod access;
#[path = "web/cdp.rs"]
mod cdp;
#[path = "web/client.rs"]
mod client;
mod support;

use client::Site;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::*;

/// A sim board holding `<p>-light`, `<p>-fan` and `<p>-button` in room `room-<p>`, laid out
/// from `left` so each instance's room has its own place on the plan.
fn node(p: &str, left: f64) -> String {
    format!(
        "[board]\nbackend = \"sim\"\n\
         [[relay]]\nid = \"{p}-light\"\nname = \"{p} light\"\npin = 17\nroom = \"room-{p}\"\nx = {}\ny = 1\n\
         [[relay]]\nid = \"{p}-fan\"\nname = \"{p} fan\"\npin = 27\nroom = \"room-{p}\"\nx = {}\ny = 1\n\
         [[input]]\nid = \"{p}-button\"\nname = \"{p} button\"\npin = 5\npull = \"up\"\nactive-low = true\nroom = \"room-{p}\"\nx = {}\ny = 3\n",
        left + 1.0,
        left + 3.0,
        left + 2.0
    )
}

/// The web port an agent took, from its `agent.json`.
fn http_port(a: &Agent) -> u16 {
    let text = std::fs::read_to_string(a.dir.join("agent.json")).expect("agent.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["http-port"].as_u64().expect("agent.json names http-port") as u16
}

/// Adds user `name` with `password` on `a`.
fn add_user(a: &Agent, name: &str, password: &str) {
    let file = a.dir.join(format!("{name}.password"));
    std::fs::write(&file, password).expect("password file");
    let out = a.cli(&[
        "user",
        "add",
        name,
        "--password-file",
        &file.to_string_lossy(),
    ]);
    assert!(out.status.success(), "user add: {}", text(&out.stderr));
}

fn artifacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/web-artifacts")
}

fn sel(id: &str) -> String {
    format!("[data-object=\"{id}\"]")
}

#[test]
fn three_instances_on_one_page_in_a_real_browser() {
    let mut browser = cdp::Browser::launch(1100, 760);
    let mut a = start_node("alpha", &node("a", 0.0), &[]);
    // A fixed web port for B, so its page is at the same address after a restart.
    let b_web = free_port();
    let b_config = format!("{}[web]\nport = {b_web}\n", node("b", 6.0));
    let mut b = start_node("beta", &b_config, &["--peer", &a.addr()]);
    let c = start_node("gamma", &node("c", 12.0), &["--peer", &a.addr()]);
    for n in [&a, &b, &c] {
        wait_until("all 9 objects everywhere", || n.all().len() == 9);
    }
    add_user(&b, "ann", "correct horse");
    let url = format!("https://localhost:{}/", http_port(&b));

    // Nothing about the house before the login.
    browser.goto(&url);
    browser.wait(
        "the login form",
        "document.querySelector('form#login') !== null",
    );
    assert_eq!(
        browser.eval("document.body.innerHTML.includes('a-light')"),
        false
    );
    browser.screenshot(&artifacts().join("01-login.png"));
    browser.eval(
        "document.querySelector('input[name=user]').value = 'ann';\
         document.querySelector('input[name=password]').value = 'correct horse';\
         document.querySelector('form#login').submit(); true",
    );
    browser.wait(
        "the floor plan with all 9 objects",
        "document.querySelectorAll('[data-object]').length === 9",
    );
    browser.wait(
        "the page to be live",
        "document.getElementById('conn').dataset.connected === 'true'",
    );
    browser.wait(
        "the peers panel",
        "['alpha','beta','gamma'].every(n => document.querySelector(`#peers li[data-peer=\"${n}\"]`))",
    );
    assert_eq!(
        browser.eval(&format!(
            "document.querySelector('{}').dataset.available",
            sel("a-light")
        )),
        "true"
    );
    browser.screenshot(&artifacts().join("02-floorplan.png"));

    // A click on B's page switches A's relay: A's pin, and the element follows.
    assert_eq!(a.pin(17).as_deref(), Some("0"));
    browser.click(&sel("a-light"));
    wait_until("a-light's pin on A to go high", || {
        a.pin(17).as_deref() == Some("1")
    });
    browser.wait(
        "a-light ON on the page",
        &format!(
            "document.querySelector('{}').dataset.state === 'ON'",
            sel("a-light")
        ),
    );
    assert_eq!(
        b.pin(17).as_deref(),
        Some("0"),
        "only the holder's pin moves"
    );

    // Switched from A's CLI: the page follows without a reload.
    browser.eval("window.__sameDocument = true");
    let out = a.cli(&["set", "a-light", "off"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = Instant::now();
    browser.wait(
        "a-light OFF on the page",
        &format!(
            "document.querySelector('{}').dataset.state === 'OFF'",
            sel("a-light")
        ),
    );
    println!(
        "the page followed the CLI in {} ms",
        t.elapsed().as_millis()
    );
    assert_eq!(
        browser.eval("window.__sameDocument === true"),
        true,
        "no reload"
    );

    // A press of B's button shows as its last press event.
    b.set_pin(5, false);
    wait_until("the button to be down", || b.state("b-button") == "ON");
    b.set_pin(5, true);
    browser.wait(
        "b-button's press on the page",
        &format!(
            "document.querySelector('{} .press').dataset.press === 'single'",
            sel("b-button")
        ),
    );

    // Dragging b-fan into gamma's room moves it, for every instance.
    let to = browser.centre("[data-room=\"room-c\"] rect");
    browser.drag(&sel("b-fan"), (to.0 + 30.0, to.1));
    wait_until("b-fan to be in room-c on C", || {
        let o = c.get("b-fan");
        o["room"] == "room-c" && o["x"].as_f64().is_some_and(|x| x > 11.0)
    });
    browser.wait(
        "b-fan drawn in room-c",
        &format!(
            "document.querySelector('{} title').textContent.includes('in room-c')",
            sel("b-fan")
        ),
    );

    // On a phone: a narrow screen, and a tap switches B's own light.
    browser.phone(true);
    browser.wait(
        "the plan in a narrow window",
        "document.getElementById('plan').getBoundingClientRect().width < 400",
    );
    browser.tap(&sel("b-light"));
    wait_until("b-light's pin on B to go high", || {
        b.pin(17).as_deref() == Some("1")
    });
    browser.wait(
        "b-light ON on the phone",
        &format!(
            "document.querySelector('{}').dataset.state === 'ON'",
            sel("b-light")
        ),
    );
    browser.screenshot(&artifacts().join("04-phone.png"));
    browser.phone(false);

    // B restarts: the page reconnects by itself, the login still holds, and it is live.
    b.stop();
    browser.wait(
        "the page to notice",
        "document.getElementById('conn').dataset.connected === 'false'",
    );
    b.restart();
    browser.wait(
        "the page to reconnect",
        "document.getElementById('conn').dataset.connected === 'true'",
    );
    wait_until("B to link to gamma again", || {
        b.peer_status("gamma") == "online"
    });
    let out = c.cli(&["set", "c-light", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_until("B to learn c-light is ON", || b.state("c-light") == "ON");
    browser.wait(
        "c-light ON after the restart",
        &format!(
            "document.querySelector('{}').dataset.state === 'ON'",
            sel("c-light")
        ),
    );
    assert_eq!(
        browser.eval("window.__sameDocument === true"),
        true,
        "reconnected without a reload"
    );
    browser.wait(
        "b-button's last press kept across the restart",
        &format!(
            "document.querySelector('{} .press').dataset.press === 'single'",
            sel("b-button")
        ),
    );

    // A dies: its objects grey out, the panel says so.
    a.kill9();
    for id in ["a-light", "a-fan", "a-button"] {
        browser.wait(
            &format!("{id} unavailable"),
            &format!(
                "document.querySelector('{}').dataset.available === 'false'",
                sel(id)
            ),
        );
    }
    browser.wait(
        "alpha offline in the panel",
        "document.querySelector('#peers li[data-peer=\"alpha\"]').dataset.status === 'offline'",
    );
    assert_eq!(
        browser.eval(&format!(
            "document.querySelector('{}').dataset.available",
            sel("b-light")
        )),
        "true"
    );
    // The longer labels of unavailable neighbours (two units apart) stay apart.
    let apart = format!(
        "(() => {{ const boxes = s => [...document.querySelector(s).querySelectorAll('text')].map(t => t.getBoundingClientRect()); \
           const a = boxes('{}'), b = boxes('{}'); \
           return String(a.every(x => b.every(y => x.right <= y.left || y.right <= x.left || x.bottom <= y.top || y.bottom <= x.top))); }})()",
        sel("a-light"),
        sel("a-fan")
    );
    assert_eq!(
        browser.eval(&apart),
        "true",
        "a-light's and a-fan's labels overlap"
    );
    browser.screenshot(&artifacts().join("03-alpha-offline.png"));

    drop(browser);
}

#[test]
fn events_follow_the_house_within_a_few_hundred_ms() {
    let solo = start_node("solo", &node("s", 0.0), &[]);
    add_user(&solo, "ann", "password-1");
    let site = Site::new(&solo.dir, http_port(&solo), true);
    let login = site.login("ann", "password-1");
    let cookie = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let mut stream = site.connect();
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: localhost\r\nCookie: {cookie}\r\n\r\n"
    )
    .unwrap();
    let mut seen = String::new();
    let mut read_until = |want: &dyn Fn(&str) -> bool, seen: &mut String| {
        let end = Instant::now() + DEADLINE;
        let mut buf = [0u8; 4096];
        while !want(seen) {
            assert!(Instant::now() < end, "timed out; the stream so far: {seen}");
            let n = stream.read(&mut buf).expect("read the stream");
            assert!(n > 0, "the stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    };
    read_until(&|s| s.contains("event: house"), &mut seen);
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(seen.contains("s-light"));
    let before = seen.len();
    let out = solo.cli(&["set", "s-light", "on"]);
    assert!(out.status.success());
    // The CLI returns once the relay switched; the event is already on its way.
    let t = Instant::now();
    read_until(
        &|s| s[before..].contains("event: object") && s[before..].contains(r#""state":"ON""#),
        &mut seen,
    );
    let took = t.elapsed();
    println!(
        "the event arrived {} ms after the CLI's answer",
        took.as_millis()
    );
    assert!(took < Duration::from_millis(1000), "{took:?}");
}
