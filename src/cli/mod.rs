//! The command line: argument definitions and what each subcommand does.
//!
//! Exit codes (also in the README): 0 done; 1 the command ran and failed; 2 bad usage, bad
//! input or invalid config; 3 target unavailable; 4 timeout or agent unreachable.

mod admin;
mod args;
mod remote;

pub use args::*;

use crate::agent::{self, Settings};
use crate::api::{self, SetRequest, Switch};
use crate::broker::PortChoice;
use crate::config::{self, Config};
use crate::{boards, identity};

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Process exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// The command ran and failed (e.g. the hardware said no).
    Failed = 1,
    /// Bad usage, bad input or invalid config.
    Usage = 2,
    /// The target is unavailable.
    Unavailable = 3,
    /// Timeout, or the agent could not be reached.
    Timeout = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Run(args) => run_agent(args),
        Command::Set(args) => {
            let Some(switch) = Switch::parse(&args.value) else {
                eprintln!("error: value {:?} is not on, off or toggle", args.value);
                return Exit::Usage;
            };
            let req = SetRequest {
                state: Some(switch),
                ..Default::default()
            };
            remote::send_set(&args.object, req, &args.conn)
        }
        Command::Move(args) => {
            let req = SetRequest {
                room: Some(args.room),
                x: args.x,
                y: args.y,
                ..Default::default()
            };
            if let Err(e) = api::check(&req) {
                eprintln!("error: {e}");
                return Exit::Usage;
            }
            remote::send_set(&args.object, req, &args.conn)
        }
        Command::Get(args) => remote::get(args),
        Command::Peers(args) => remote::peers(args),
        Command::Check(args) => match load_runnable(&args.config) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} relays, {} inputs, board {})",
                    args.config.display(),
                    cfg.relays.len(),
                    cfg.inputs.len(),
                    cfg.board.model
                );
                Exit::Ok
            }
            Err(e) => {
                eprintln!("error: {e}");
                Exit::Usage
            }
        },
        Command::Config(_) => {
            print!("{}", config::DEFAULT_CONFIG);
            Exit::Ok
        }
        Command::Doctor(args) => crate::doctor::run(args.root.as_deref()),
        Command::Invite(args) => admin::invite(args.data_dir, &args.expires),
        Command::Ca(args) => print_ca(args.data_dir.unwrap_or_else(default_data_dir)),
        Command::Lan(args) => remote::lan(args),
        Command::Forget(args) => admin::forget(args.data_dir, args.instance),
        Command::User(args) => match args.action {
            UserAction::Add {
                name,
                password_file,
            } => admin::user_add(args.data_dir, name, password_file),
            UserAction::List => admin::user_list(args.data_dir),
            UserAction::Remove { name } => admin::user_remove(args.data_dir, name),
        },
        Command::Boards(args) => match args.name {
            None => {
                print!("{}", boards::list());
                Exit::Ok
            }
            Some(name) => match boards::describe(&name) {
                Some(text) => {
                    print!("{text}");
                    Exit::Ok
                }
                None => {
                    eprintln!("error: no board or HAT named {name:?}; `pimesh boards` lists them");
                    Exit::Usage
                }
            },
        },
    }
}

/// The data dir when none is given: systemd's StateDirectory, /var/lib/pimesh for root,
/// else the user's XDG state dir.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        if let Some(first) = dir
            .to_string_lossy()
            .split(':')
            .next()
            .filter(|s| !s.is_empty())
        {
            return PathBuf::from(first);
        }
    }
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/pimesh");
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("pimesh");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/pimesh"),
        None => PathBuf::from("pimesh-data"),
    }
}

/// `pimesh ca`: the CA certificate from the data dir (the agent need not be running, and the
/// CA's key is not read: `ca.pem` is readable by anyone).
fn print_ca(dir: PathBuf) -> Exit {
    let file = dir.join(crate::tls::CA_CERT_FILE);
    match std::fs::read_to_string(&file) {
        Ok(pem) => {
            print!("{pem}");
            Exit::Ok
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "error: {} does not exist; the mesh CA is made at the agent's first start: start `pimesh run` with this data dir once",
                file.display()
            );
            Exit::Usage
        }
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            Exit::Failed
        }
    }
}

/// Why a config cannot run on this machine.
#[derive(Debug, thiserror::Error)]
enum NotRunnable {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{file}: {source}")]
    Backend {
        file: PathBuf,
        source: crate::hal::HalError,
    },
}

/// Loads and validates a config and asks whether its GPIO backend can run here: the one
/// check `pimesh check` and `pimesh run` share, so they give the same verdict.
fn load_runnable(path: &Path) -> Result<Config, NotRunnable> {
    let cfg = config::load(path)?;
    crate::hal::probe(cfg.board.backend, &cfg.board.line_prefix).map_err(|source| {
        NotRunnable::Backend {
            file: path.to_path_buf(),
            source,
        }
    })?;
    Ok(cfg)
}

/// `pimesh run`: merge flags into the config and run the agent until SIGTERM/SIGINT.
fn run_agent(args: RunArgs) -> Exit {
    let mut cfg: Config = match &args.config {
        Some(path) => match load_runnable(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Usage;
            }
        },
        None => config::embedded_default(),
    };
    cfg.mesh.peers.extend(args.peers);
    if let Some(token) = args.join {
        if let Err(e) = crate::membership::Token::decode(&token) {
            eprintln!("error: --join: {e}");
            return Exit::Usage;
        }
        cfg.mesh.join = Some(token);
    }
    cfg.broker.allow_anonymous |= args.allow_anonymous;
    cfg.mesh.mdns &= !args.no_mdns;
    cfg.broker.ws_port = args.ws_port.or(cfg.broker.ws_port);
    if args.no_plaintext {
        if !cfg.mesh.tls {
            eprintln!("error: --no-plaintext leaves mesh links nowhere to go with [mesh] tls = false; turn one of them on");
            return Exit::Usage;
        }
        cfg.broker.plaintext = false;
    }
    let tls_port = match args.tls_port.or(cfg.broker.tls_port) {
        Some(p) => PortChoice::Fixed(p),
        None => PortChoice::FirstFree(crate::tls::DEFAULT_TLS_PORT),
    };
    let data_dir = args
        .data_dir
        .or(cfg.data_dir.clone())
        .unwrap_or_else(default_data_dir);
    let name = args
        .name
        .or(cfg.name.clone())
        .unwrap_or_else(identity::default_name);
    let port = match args.port.or(cfg.broker.port) {
        Some(p) => PortChoice::Fixed(p),
        None => PortChoice::FirstFree(cfg.broker.base_port),
    };
    if args.config.is_none() {
        tracing::info!("no --config given: running the embedded default (simulated board)");
    }
    let settings = Settings {
        mqtt5_port: args.mqtt5_port.or(cfg.broker.mqtt5_port),
        bind: cfg.broker.bind,
        config: cfg,
        data_dir,
        name,
        port,
        tls_port,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failed;
        }
    };
    runtime.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        tokio::spawn(stop_on_signal(cancel.clone()));
        match agent::run(settings, cancel).await {
            Ok(()) => Exit::Ok,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("error: {e}");
                match e {
                    agent::AgentError::Runtime(_) | agent::AgentError::Broker(_) => Exit::Usage,
                    _ => Exit::Failed,
                }
            }
        }
    })
}

/// Cancels on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn stop_on_signal(cancel: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop pimesh with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    cancel.cancel();
}
