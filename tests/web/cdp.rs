//! Headless Chromium driven over the Chrome DevTools Protocol: a real browser for the page.
//!
//! Chromium runs in a process group of its own with a fresh profile, so dropping the
//! [`Browser`] kills it and every helper process it started, also when a test fails.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Socket = tungstenite::WebSocket<TcpStream>;

/// A running headless Chromium and the page it shows.
pub struct Browser {
    child: Child,
    ws: Socket,
    next: u64,
    _profile: tempfile::TempDir,
}

/// Where Chromium is: `CHROMIUM` or the Debian package's binary.
fn chromium() -> PathBuf {
    let candidates = [
        std::env::var("CHROMIUM").unwrap_or_default(),
        "/usr/bin/chromium".into(),
        "/usr/bin/chromium-browser".into(),
    ];
    candidates
        .iter()
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "Chromium is missing: the web tests need a real browser. Install it with \
                 `apt-get install -y chromium` (`make deps` does), or name one in CHROMIUM"
            )
        })
}

impl Browser {
    /// Starts Chromium headless (accepting the test mesh's certificates) and attaches to its
    /// first page.
    pub fn launch(width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        // setpriv execs Chromium with a death signal: a test killed before its Drop runs
        // (a timeout, ^C) takes the browser with it.
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(chromium())
            .args([
                "--disable-breakpad",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--ignore-certificate-errors",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromium");
        let mut browser_guard = Guard(Some(child));
        let port = wait_for_port(profile.path());
        let page = page_ws_url(port);
        let (ws, _) = tungstenite::client::client(
            page.as_str(),
            TcpStream::connect(("127.0.0.1", port)).expect("connect to chromium"),
        )
        .expect("DevTools websocket");
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let child = browser_guard.0.take().expect("child");
        let mut b = Browser {
            child,
            ws,
            next: 1,
            _profile: profile,
        };
        b.call("Page.enable", json!({}));
        b.call("Runtime.enable", json!({}));
        b
    }

    /// Sends one command and returns its result, skipping events.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(tungstenite::Message::text(msg))
            .expect("send to chromium");
        loop {
            let m = self.ws.read().expect("read from chromium");
            let tungstenite::Message::Text(t) = m else {
                continue;
            };
            let v: Value = serde_json::from_str(t.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method} failed: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` and waits for the document to load.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait("the page to load", "document.readyState === 'complete'");
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{js} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Waits until `js` is true in the page, at most `crate::support::DEADLINE`.
    pub fn wait(&mut self, what: &str, js: &str) {
        eprintln!("browser: waiting for {what}");
        let end = Instant::now() + crate::support::DEADLINE;
        loop {
            if self.eval(&format!("!!({js})")) == json!(true) {
                return;
            }
            if Instant::now() > end {
                let page = self.eval(
                    "location.href + '\\n' + document.documentElement.outerHTML.slice(0, 3000)",
                );
                panic!("timed out waiting in the browser for: {what}\nthe page: {page}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The centre of the element `selector` in CSS pixels.
    pub fn centre(&mut self, selector: &str) -> (f64, f64) {
        let js = format!(
            "(() => {{ const r = document.querySelector({}).getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            json!(selector)
        );
        let v = self.eval(&js);
        (v[0].as_f64().expect("x"), v[1].as_f64().expect("y"))
    }

    fn mouse(&mut self, kind: &str, (x, y): (f64, f64), buttons: u32) {
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": x, "y": y, "button": "left", "buttons": buttons, "clickCount": 1}),
        );
    }

    /// A click at the centre of `selector`, as a mouse makes it.
    pub fn click(&mut self, selector: &str) {
        let at = self.centre(selector);
        self.mouse("mouseMoved", at, 0);
        self.mouse("mousePressed", at, 1);
        self.mouse("mouseReleased", at, 0);
    }

    /// A finger's tap at the centre of `selector` (touch emulation must be on).
    pub fn tap(&mut self, selector: &str) {
        let (x, y) = self.centre(selector);
        self.call(
            "Input.dispatchTouchEvent",
            json!({"type": "touchStart", "touchPoints": [{"x": x, "y": y}]}),
        );
        self.call(
            "Input.dispatchTouchEvent",
            json!({"type": "touchEnd", "touchPoints": []}),
        );
    }

    /// Shows the page as a phone would: a narrow screen and touch.
    pub fn phone(&mut self, on: bool) {
        if on {
            self.call(
                "Emulation.setDeviceMetricsOverride",
                json!({"width": 390, "height": 780, "deviceScaleFactor": 2, "mobile": true}),
            );
        } else {
            self.call("Emulation.clearDeviceMetricsOverride", json!({}));
        }
        self.call(
            "Emulation.setTouchEmulationEnabled",
            json!({"enabled": on, "maxTouchPoints": 5}),
        );
    }

    /// Drags `selector` to (x, y) in steps, as a hand does.
    pub fn drag(&mut self, selector: &str, to: (f64, f64)) {
        let from = self.centre(selector);
        self.mouse("mouseMoved", from, 0);
        self.mouse("mousePressed", from, 1);
        for i in 1..=10 {
            let f = f64::from(i) / 10.0;
            let at = (from.0 + (to.0 - from.0) * f, from.1 + (to.1 - from.1) * f);
            self.mouse("mouseMoved", at, 1);
        }
        self.mouse("mouseReleased", to, 0);
    }

    /// Saves a PNG of the page.
    pub fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("artifacts dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Kills a Chromium that has not become a [`Browser`] yet.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            kill_group(c);
        }
    }
}

/// Kills the process group `child` leads (Chromium and its helpers), then reaps it.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// The DevTools port Chromium writes into its profile once it listens.
fn wait_for_port(profile: &Path) -> u16 {
    let file = profile.join("DevToolsActivePort");
    let mut port = 0;
    crate::support::wait_until("chromium to open its DevTools port", || {
        port = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse().ok())
            .unwrap_or(0);
        port != 0
    });
    port
}

/// The WebSocket URL of Chromium's first page.
fn page_ws_url(port: u16) -> String {
    let mut url = String::new();
    crate::support::wait_until("chromium to list its page", || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = write!(
            s,
            "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        );
        // Read up to the declared length: the server may keep the connection open.
        let mut bytes = Vec::new();
        let mut buf = [0u8; 8192];
        let body = loop {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok());
                if len.is_some_and(|n| body.len() >= n) {
                    break body.to_string();
                }
            }
            match s.read(&mut buf) {
                Ok(0) => {
                    break text
                        .split_once("\r\n\r\n")
                        .map(|(_, b)| b.to_string())
                        .unwrap_or_default()
                }
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(_) => return false,
            }
        };
        let list: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
        url = list
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or("")
            .to_string();
        !url.is_empty()
    });
    url
}
