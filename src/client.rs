//! The CLI's side of the public interface: find an agent, send one request, wait for its answer.

use crate::mqtt::{fixed_credentials, Link, LinkEvent, LinkOptions, Qos};
use crate::runtime::{RuntimeError, RuntimeInfo};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The broker of the agent a command is sent to.
#[derive(Clone, Debug)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Base topic of that agent's public interface.
    pub base: String,
    /// User name and password presented to it.
    pub credentials: Option<(String, String)>,
    /// TLS, trusting these roots; plaintext when none.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Environment variable with the user name for `--via`.
pub const USER_ENV: &str = "PIMESH_USER";
/// Environment variable with the password for `--via`.
pub const PASSWORD_ENV: &str = "PIMESH_PASSWORD";

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--via {0:?} is not HOST:PORT")]
    BadVia(String),
    #[error(transparent)]
    NoAgent(#[from] RuntimeError),
    #[error("cannot reach the agent at {host}:{port}: {reason}")]
    Unreachable {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("no answer from the agent at {host}:{port} within {secs} s")]
    Timeout { host: String, port: u16, secs: f64 },
    #[error("the agent at {host}:{port} refused the connection ({reason}); on the agent's own machine use --data-dir (its credentials are read from there), elsewhere give --user NAME with --password-file FILE, or set {USER_ENV} and {PASSWORD_ENV} (`pimesh user add NAME` on the agent's machine makes an account)")]
    Refused {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("cannot read the password file {file}: {reason}")]
    PasswordFile { file: String, reason: String },
    #[error("cannot read the local credentials: {0}")]
    Credentials(#[from] crate::secret::SecretError),
    #[error("cannot use the CA certificate {file}: {reason}")]
    CaFile { file: String, reason: String },
}

/// A TLS client configuration trusting the CA certificate(s) in `file` (PEM), as `pimesh ca`
/// prints them.
pub fn tls_from_cafile(file: &Path) -> Result<std::sync::Arc<rustls::ClientConfig>, ClientError> {
    let fail = |reason: String| ClientError::CaFile {
        file: file.display().to_string(),
        reason,
    };
    let pem = std::fs::read(file).map_err(|e| fail(e.to_string()))?;
    crate::tls::client_config_for_ca(&pem).map_err(fail)
}

/// A user's credentials for `--via`: `user` with the password from `password_file`, else the
/// environment's [`USER_ENV`] and [`PASSWORD_ENV`], else none.
pub fn user_credentials(
    user: Option<&str>,
    password_file: Option<&Path>,
) -> Result<Option<(String, String)>, ClientError> {
    let password = match password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map(|p| p.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| ClientError::PasswordFile {
                    file: f.display().to_string(),
                    reason: e.to_string(),
                })?,
        ),
        None => std::env::var(PASSWORD_ENV).ok(),
    };
    let user = user
        .map(str::to_string)
        .or_else(|| std::env::var(USER_ENV).ok());
    Ok(user.zip(password))
}

/// Finds the agent: `via` if given (with the user's `credentials`, over TLS when `tls` is
/// given), else the one running on `data_dir` (with that instance's own credentials; over TLS
/// with its CA when it serves no plaintext port).
pub fn resolve(
    via: Option<&str>,
    data_dir: &Path,
    base: &str,
    credentials: Option<(String, String)>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<Target, ClientError> {
    match via {
        Some(v) => {
            let (host, port) = v
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                .filter(|(h, p)| !h.is_empty() && *p != 0)
                .ok_or_else(|| ClientError::BadVia(v.to_string()))?;
            Ok(Target {
                host: host.trim_matches(['[', ']']).to_string(),
                port,
                base: base.to_string(),
                credentials,
                tls,
            })
        }
        None => {
            let info = RuntimeInfo::read(data_dir)?;
            let local = crate::secret::read_local_password(data_dir)?
                .map(|p| (crate::door::auth::LOCAL_USER.to_string(), p));
            let (port, tls) = match (info.port, info.tls_port) {
                (Some(port), _) => (port, None),
                (None, Some(tls_port)) => {
                    // The certificate only: the CA's key is not the CLI's business.
                    let file = data_dir.join(crate::tls::CA_CERT_FILE);
                    (tls_port, Some(tls_from_cafile(&file)?))
                }
                (None, None) => {
                    return Err(RuntimeError::NotRunning {
                        dir: data_dir.to_path_buf(),
                    }
                    .into())
                }
            };
            Ok(Target {
                host: "127.0.0.1".into(),
                port,
                base: info.base_topic,
                credentials: local.or(credentials),
                tls,
            })
        }
    }
}

/// Publishes the payload made by `build(reply_topic)` on `topic` and returns the first
/// message on the reply topic that `ours` accepts (the topic is shared with other CLI
/// invocations). The subscription is acknowledged before the request goes out, so a fast
/// answer cannot be missed.
pub async fn request(
    target: &Target,
    topic: &str,
    build: impl FnOnce(&str) -> Vec<u8>,
    ours: impl Fn(&[u8]) -> bool,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let user = target
        .credentials
        .as_ref()
        .map(|(name, _)| name.as_str())
        .filter(|name| *name != crate::door::auth::LOCAL_USER);
    let reply_topic = crate::api::reply_topic(&target.base, user);
    request_on(target, topic, &reply_topic, build, ours, timeout).await
}

/// [`request`] with the answer expected on `reply_topic`.
pub async fn request_on(
    target: &Target,
    topic: &str,
    reply_topic: &str,
    build: impl FnOnce(&str) -> Vec<u8>,
    ours: impl Fn(&[u8]) -> bool,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let me = Uuid::new_v4();
    let reply_topic = reply_topic.to_string();
    let stop = CancellationToken::new();
    let _stop_on_return = stop.clone().drop_guard();
    let mut opts = LinkOptions::new(target.host.clone(), target.port, format!("pimesh-cli-{me}"));
    opts.keep_alive = Duration::from_secs(30);
    opts.credentials = target
        .credentials
        .clone()
        .map(|(u, p)| fixed_credentials(u, p));
    opts.tls = target.tls.clone();
    let (link, mut events) = Link::spawn(opts, stop);
    let deadline = Instant::now() + timeout;
    let timed_out = || ClientError::Timeout {
        host: target.host.clone(),
        port: target.port,
        secs: timeout.as_secs_f64(),
    };
    let mut payload = Some(build(&reply_topic));
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| timed_out())?;
        match ev {
            Some(LinkEvent::Connected) => {
                let _ = link.subscribe(&reply_topic, Qos::AtLeastOnce);
            }
            Some(LinkEvent::Subscribed) => {
                if let Some(p) = payload.take() {
                    link.publish(topic, Qos::AtLeastOnce, false, p)
                        .await
                        .map_err(|e| ClientError::Unreachable {
                            host: target.host.clone(),
                            port: target.port,
                            reason: e.to_string(),
                        })?;
                }
            }
            Some(LinkEvent::Message {
                topic: t, payload, ..
            }) if t == reply_topic && ours(&payload) => {
                link.disconnect().await;
                return Ok(payload);
            }
            Some(LinkEvent::Message { .. }) => {}
            Some(LinkEvent::Refused(reason)) => {
                return Err(ClientError::Refused {
                    host: target.host.clone(),
                    port: target.port,
                    reason,
                });
            }
            Some(LinkEvent::Disconnected(reason)) => {
                // Before the request is out, an unreachable agent is final; after it, the
                // link reconnects and the answer may still come until the deadline.
                if payload.is_some() {
                    return Err(ClientError::Unreachable {
                        host: target.host.clone(),
                        port: target.port,
                        reason,
                    });
                }
            }
            None => return Err(timed_out()),
        }
    }
}
