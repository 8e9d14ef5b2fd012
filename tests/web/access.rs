//! What the page gives to whom, over raw HTTPS: a stranger gets the login form and nothing of
//! the house, bad requests get clear answers, and an address that keeps guessing passwords is
//! told to wait.

use super::{add_user, client, http_port, node};
use crate::support::*;
use client::Site;

/// What a page must never hold before a login: any object id of the test house.
fn leaks_the_house(a: &client::Answer) -> bool {
    ["s-light", "s-fan", "s-button", "room-s"]
        .iter()
        .any(|id| a.body.contains(id))
}

#[test]
fn strangers_get_nothing_and_bad_requests_get_clear_answers() {
    let solo = start_node("solo", &node("s", 0.0), &[]);
    add_user(&solo, "ann", "password-1");
    let site = Site::new(&solo.dir, http_port(&solo), true);

    // Before a login: the form, and 401 from every API path, with nothing of the house.
    let page = site.get("/", None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<form id=\"login\""), "{}", page.body);
    assert!(!leaks_the_house(&page));
    for path in ["/api/house", "/api/events"] {
        let a = site.get(path, None);
        assert_eq!(a.status, 401, "{path}: {a:?}");
        assert!(a.body.contains("log in first"), "{a:?}");
        assert!(!leaks_the_house(&a));
    }
    let a = site.request(
        "POST",
        "/api/objects/s-light/set",
        &["Content-Type: application/json"],
        r#"{"state":"ON"}"#,
    );
    assert_eq!(a.status, 401);
    assert_eq!(
        solo.pin(17).as_deref(),
        Some("0"),
        "a stranger switched nothing"
    );
    let a = site.request(
        "GET",
        "/api/house",
        &["Authorization: Basic YW5uOm5vcGU="],
        "",
    );
    assert_eq!(a.status, 401, "wrong Basic password: {a:?}");
    assert!(!leaks_the_house(&a));

    // A wrong password: the form again, no cookie; the instance's own credentials are not a
    // user account.
    let a = site.login("ann", "wrong");
    assert_eq!(a.status, 401);
    assert!(a.header("set-cookie").is_none());
    assert!(a.body.contains("Wrong user name or password"));
    let (local, secret) = solo.credentials();
    assert_eq!(site.login(&local, &secret).status, 401);

    // The right one: a random, HttpOnly, SameSite=Strict, Secure session cookie.
    let a = site.login("ann", "password-1");
    assert_eq!(a.status, 303, "{a:?}");
    let set = a
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(set.contains(flag), "{flag} missing in {set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let token = cookie.split_once('=').unwrap().1;
    assert!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{token}"
    );
    let again = site.login("ann", "password-1");
    assert_ne!(
        again
            .header("set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap(),
        cookie,
        "each login its own token"
    );

    // Logged in: the house, and commands like an MQTT user's.
    let house = site.get("/api/house", Some(&cookie));
    assert_eq!(house.status, 200);
    let v: serde_json::Value = serde_json::from_str(&house.body).expect("JSON");
    assert_eq!(v["user"], "ann");
    assert_eq!(v["objects"].as_array().unwrap().len(), 3);
    let page = site.get("/", Some(&cookie));
    assert!(page.body.contains("id=\"plan\""));
    let cookie_line = format!("Cookie: {cookie}");
    let set = |body: &str, extra: &[&str]| {
        let mut h = vec!["Content-Type: application/json", &cookie_line];
        h.extend_from_slice(extra);
        site.request("POST", "/api/objects/s-light/set", &h, body)
    };
    let ok = set(r#"{"state":"ON"}"#, &[]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.body.contains(r#""result":"ok""#), "{ok:?}");
    assert_eq!(solo.pin(17).as_deref(), Some("1"));
    let basic = site.request(
        "GET",
        "/api/house",
        &["Authorization: Basic YW5uOnBhc3N3b3JkLTE="],
        "",
    );
    assert_eq!(basic.status, 200, "HTTP Basic with a user works too");

    // Bad input: clear answers, and the agent keeps serving.
    let a = set(r#"{"state":"DIM"}"#, &[]);
    assert_eq!((a.status, a.body.contains("give {")), (400, true), "{a:?}");
    let a = set("not json", &[]);
    assert_eq!(
        (a.status, a.body.contains("JSON object")),
        (400, true),
        "{a:?}"
    );
    let a = set(r#"{"state":"ON"}"#, &["Origin: https://evil.example"]);
    assert_eq!(a.status, 403, "a cross-site POST: {a:?}");
    let a = site.request(
        "POST",
        "/api/objects/no-such/set",
        &["Content-Type: application/json", &cookie_line],
        r#"{"state":"ON"}"#,
    );
    assert_eq!(a.status, 400, "unknown object: {a:?}");
    let a = site.request(
        "POST",
        "/api/objects/a+b/set",
        &["Content-Type: application/json", &cookie_line],
        r#"{"state":"ON"}"#,
    );
    assert_eq!(a.status, 400, "a bad id: {a:?}");
    let huge = "x".repeat(64 * 1024);
    let a = set(&huge, &[]);
    assert_eq!(a.status, 413, "{:?}", a.status);
    assert!(a.body.contains("larger than"));
    // A head of exactly the limit, not ended: hyper has read it all when it answers (more
    // bytes left unread would make the kernel reset the connection over the answer).
    let mut big_head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big_head.resize(16 * 1024, b'y');
    assert_eq!(site.raw(&big_head).status, 431);
    assert_eq!(site.raw(b"BLAH\r\n\r\n").status, 400);
    assert_eq!(site.raw(b"\x00\x01\x02garbage\r\n\r\n").status, 400);
    assert_eq!(
        site.get("/api/house", Some(&cookie)).status,
        200,
        "still serving"
    );

    // Plain HTTP on the HTTPS port is redirected, and tells nothing.
    let plain = Site::new(&solo.dir, site.port, false);
    let a = plain.get("/api/house", None);
    assert_eq!(a.status, 308);
    assert!(a.header("location").unwrap().starts_with("https://"));
    assert!(!leaks_the_house(&a));

    // The whole page is small.
    let size: usize = ["/", "/app.js", "/app.css"]
        .iter()
        .map(|p| site.get(p, Some(&cookie)).body.len())
        .sum();
    println!("the page is {size} bytes");
    assert!(
        size < 100 * 1024,
        "the page is {size} bytes, more than 100 KB"
    );

    // Logout ends the session.
    let a = site.request("POST", "/logout", &[&cookie_line], "");
    assert_eq!(a.status, 303);
    assert!(a.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(site.get("/api/house", Some(&cookie)).status, 401);
}

#[test]
fn an_address_that_keeps_guessing_passwords_is_told_to_wait() {
    let solo = start_node("solo", &node("s", 0.0), &[]);
    add_user(&solo, "ann", "password-1");
    let site = Site::new(&solo.dir, http_port(&solo), true);
    for i in 0..10 {
        let a = site.login("ann", &format!("guess-{i}"));
        assert_eq!(a.status, 401, "guess {i}: {a:?}");
    }
    // Now even the right password waits, by form and by HTTP Basic.
    let a = site.login("ann", "password-1");
    assert_eq!(a.status, 429, "{a:?}");
    assert!(a.body.contains("too many failed logins"), "{a:?}");
    let wait: u64 = a
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    // ann:password-1
    let basic = site.request(
        "GET",
        "/api/house",
        &["Authorization: Basic YW5uOnBhc3N3b3JkLTE="],
        "",
    );
    assert_eq!(basic.status, 429, "{basic:?}");
    assert!(!leaks_the_house(&basic));
}
