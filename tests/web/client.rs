//! A small HTTP/1.1 client for the web tests: raw requests over TLS (checked against the
//! mesh CA of the agent's data dir, as a browser with `pimesh ca` installed would) or plain
//! TCP, so malformed and oversized requests can be sent as they are.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One answer: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A connection to the page of one agent.
pub struct Site {
    pub port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Either kind of stream.
pub trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

impl Site {
    /// The page of the agent with data dir `dir` on `port`, over TLS with its CA when `tls`.
    pub fn new(dir: &Path, port: u16, tls: bool) -> Site {
        let tls = tls.then(|| {
            let ca = std::fs::read(dir.join("ca.pem")).expect("the agent's ca.pem");
            pimesh::tls::client_config_for_ca(&ca).expect("client config")
        });
        Site { port, tls }
    }

    /// A fresh connection.
    pub fn connect(&self) -> Box<dyn Stream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to the page");
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        match &self.tls {
            None => Box::new(tcp),
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                let conn = rustls::ClientConnection::new(cfg.clone(), name).expect("tls");
                Box::new(rustls::StreamOwned::new(conn, tcp))
            }
        }
    }

    /// Sends `raw` as it is and reads the answer until the server closes.
    pub fn raw(&self, raw: &[u8]) -> Answer {
        let mut s = self.connect();
        // The server may answer and close before taking all of an oversized request.
        let _ = s.write_all(raw);
        let mut bytes = Vec::new();
        let _ = s.read_to_end(&mut bytes);
        parse(&bytes)
    }

    /// A request with `headers` (each `Name: value`) and `body`.
    pub fn request(&self, method: &str, path: &str, headers: &[&str], body: &str) -> Answer {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.port,
            body.len()
        );
        for h in headers {
            req.push_str(h);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.raw(req.as_bytes())
    }

    /// `GET path` with a session cookie line (or none).
    pub fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let c = cookie.map(|c| format!("Cookie: {c}"));
        self.request(
            "GET",
            path,
            &c.iter().map(String::as_str).collect::<Vec<_>>(),
            "",
        )
    }

    /// Logs in with the form; returns the answer.
    pub fn login(&self, user: &str, password: &str) -> Answer {
        let body = format!("user={user}&password={password}");
        self.request(
            "POST",
            "/login",
            &["Content-Type: application/x-www-form-urlencoded"],
            &body,
        )
    }
}

/// Parses a whole HTTP/1.1 answer (chunked bodies joined).
pub fn parse(bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn unchunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            out.push_str(&rest[..n.min(rest.len())]);
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
