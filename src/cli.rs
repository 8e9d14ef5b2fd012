//! The command line: argument definitions and what each subcommand does.
//!
//! Exit codes (also in the README): 0 done; 1 the command ran and failed; 2 bad usage, bad
//! input or invalid config; 3 target unavailable; 4 timeout or agent unreachable.

use crate::agent::{self, Settings};
use crate::api::{self, Outcome, Reply, SetRequest, Switch};
use crate::broker::PortChoice;
use crate::client::{self, ClientError, Target};
use crate::config::{self, Config};
use crate::{boards, identity};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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

/// pimesh: one agent per Raspberry Pi, one house.
#[derive(Debug, Parser)]
#[command(name = "pimesh", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (with no config: a simulated board with relay-1..relay-4, button-1, button-2).
    Run(RunArgs),
    /// Switch an object: on, off or toggle.
    Set(SetArgs),
    /// Move an object to a room (and position).
    Move(MoveArgs),
    /// Show objects and their state.
    Get(GetArgs),
    /// List the instances of the mesh as this agent sees them.
    Peers(PeersArgs),
    /// Validate a config file and its board without starting anything.
    Check(CheckArgs),
    /// List the board and HAT definitions, or show one.
    Boards(BoardsArgs),
    /// Show the detected model, the GPIO backend, GPIO chips, permission problems and serial ports.
    Doctor(DoctorArgs),
}

/// `pimesh run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (TOML). Without it the embedded default runs.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data dir (identity, store, sim pins). Overrides the config.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Instance name. Overrides the config; default: the hostname.
    #[arg(long)]
    pub name: Option<String>,
    /// Fixed broker port (fail if taken). Default: first free from [broker] base-port.
    #[arg(long)]
    pub port: Option<u16>,
    /// A peer's broker, HOST:PORT (repeatable). Adds to [mesh] peers.
    #[arg(long = "peer")]
    pub peers: Vec<String>,
}

/// How the CLI reaches an agent.
#[derive(Debug, Args)]
pub struct Conn {
    /// The agent's broker, HOST:PORT. Default: the agent running on --data-dir.
    #[arg(long)]
    pub via: Option<String>,
    /// Data dir of the local agent to talk to.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// Base topic, with --via (the local agent tells its own).
    #[arg(long, default_value = "pimesh")]
    pub base_topic: String,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pimesh set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Object id, e.g. relay-1.
    pub object: String,
    /// on, off or toggle.
    pub value: String,
    #[command(flatten)]
    pub conn: Conn,
}

/// `pimesh move`.
#[derive(Debug, Args)]
pub struct MoveArgs {
    /// Object id.
    pub object: String,
    /// The new room.
    pub room: String,
    /// New x position in the room.
    #[arg(long, allow_negative_numbers = true)]
    pub x: Option<f64>,
    /// New y position in the room.
    #[arg(long, allow_negative_numbers = true)]
    pub y: Option<f64>,
    #[command(flatten)]
    pub conn: Conn,
}

/// `pimesh get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Only this object.
    pub object: Option<String>,
    #[command(flatten)]
    pub conn: Conn,
}

/// `pimesh peers`.
#[derive(Debug, Args)]
pub struct PeersArgs {
    #[command(flatten)]
    pub conn: Conn,
}

/// `pimesh check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file to validate.
    #[arg(long)]
    pub config: PathBuf,
}

/// `pimesh boards`.
#[derive(Debug, Args)]
pub struct BoardsArgs {
    /// A board or HAT id.
    pub name: Option<String>,
}

/// `pimesh doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Read /proc, /dev and /etc under this directory instead of / (for tests).
    #[arg(long, hide = true)]
    pub root: Option<PathBuf>,
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
            send_set(&args.object, req, &args.conn)
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
            send_set(&args.object, req, &args.conn)
        }
        Command::Get(args) => get(args),
        Command::Peers(args) => peers(args),
        Command::Check(args) => match config::load(&args.config) {
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
        Command::Doctor(args) => crate::doctor::run(args.root.as_deref()),
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

/// `pimesh run`: merge flags into the config and run the agent until SIGTERM/SIGINT.
fn run_agent(args: RunArgs) -> Exit {
    let mut cfg: Config = match &args.config {
        Some(path) => match config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Usage;
            }
        },
        None => config::embedded_default(),
    };
    cfg.mesh.peers.extend(args.peers);
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
        bind: cfg.broker.bind,
        config: cfg,
        data_dir,
        name,
        port,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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

/// Runs an async client action on a small runtime.
fn block_on<T>(fut: impl std::future::Future<Output = T>) -> Result<T, Exit> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| rt.block_on(fut))
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            Exit::Failed
        })
}

/// Resolves the connection options to a target.
fn target(conn: &Conn) -> Result<Target, Exit> {
    let dir = conn.data_dir.clone().unwrap_or_else(default_data_dir);
    client::resolve(conn.via.as_deref(), &dir, &conn.base_topic).map_err(|e| report(&e))
}

/// Prints a client error and maps it to its exit code.
fn report(e: &ClientError) -> Exit {
    eprintln!("error: {e}");
    match e {
        ClientError::BadVia(_) => Exit::Usage,
        _ => Exit::Timeout,
    }
}

/// The timeout option as a duration (bad values fall back to the default).
fn timeout(conn: &Conn) -> Duration {
    Duration::try_from_secs_f64(conn.timeout).unwrap_or(Duration::from_secs(5))
}

/// Sends a set request, prints the answer and maps its outcome to an exit code.
fn send_set(object: &str, mut req: SetRequest, conn: &Conn) -> Exit {
    let target = match target(conn) {
        Ok(t) => t,
        Err(code) => return code,
    };
    req.id = Some(uuid::Uuid::new_v4().to_string());
    let topic = format!("{}/{object}/set", target.base);
    let answer = block_on(client::request(
        &target,
        &topic,
        |reply_to| {
            req.reply_to = Some(reply_to.to_string());
            serde_json::to_vec(&req).unwrap_or_default()
        },
        timeout(conn),
    ));
    let bytes = match answer {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return report(&e),
        Err(code) => return code,
    };
    let reply: Reply = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the agent's answer is not understood: {e}");
            return Exit::Failed;
        }
    };
    if conn.json {
        println!("{}", String::from_utf8_lossy(&bytes));
    }
    let by = reply.executed_by.as_deref().unwrap_or("?");
    match reply.result {
        Outcome::Ok => {
            if !conn.json {
                let state = reply.state.as_ref().map(summary).unwrap_or_default();
                println!("{object}: {state} (executed by {by})");
            }
            Exit::Ok
        }
        other => {
            let why = reply.error.as_deref().unwrap_or("no reason given");
            eprintln!("error: {object}: {other:?} ({why}; answered by {by})");
            match other {
                Outcome::Failed => Exit::Failed,
                Outcome::Rejected => Exit::Usage,
                Outcome::Unavailable => Exit::Unavailable,
                Outcome::Timeout | Outcome::Ok => Exit::Timeout,
            }
        }
    }
}

/// One line for an object's state: `ON room=kitchen x=1 y=2`.
fn summary(state: &serde_json::Value) -> String {
    let field = |k: &str| match state.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => "-".into(),
    };
    format!(
        "{} room={} x={} y={}",
        field("state"),
        field("room"),
        field("x"),
        field("y")
    )
}

/// `pimesh get`: asks the agent for every object and prints them.
fn get(args: GetArgs) -> Exit {
    let bytes = match ask(&args.conn, |t| api::get_topic(&t.base)) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let reply: api::GetReply = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the agent's answer is not understood: {e}");
            return Exit::Failed;
        }
    };
    let objects: Vec<&serde_json::Value> = reply
        .objects
        .iter()
        .filter(|o| {
            args.object
                .as_deref()
                .is_none_or(|want| o.get("id").and_then(|v| v.as_str()) == Some(want))
        })
        .collect();
    if let (Some(want), true) = (&args.object, objects.is_empty()) {
        eprintln!("error: unknown object {want:?}");
        return Exit::Usage;
    }
    if args.conn.json {
        let out = if args.object.is_some() {
            objects[0].clone()
        } else {
            serde_json::Value::Array(objects.into_iter().cloned().collect())
        };
        println!("{out}");
        return Exit::Ok;
    }
    println!(
        "{:<24} {:<8} {:<8} {:<14} {:>6} {:>6}  HOLDER",
        "ID", "KIND", "STATE", "ROOM", "X", "Y"
    );
    for o in objects {
        let f = |k: &str| match o.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) if !v.is_null() => v.to_string(),
            _ => "-".into(),
        };
        let mut holder = o
            .get("holder-name")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| f("holder"));
        if o.get("available") == Some(&serde_json::Value::Bool(false)) {
            holder.push_str(" (unavailable)");
        }
        if let Some(c) = o.get("conflict") {
            holder = format!("CONFLICT {c}");
        }
        println!(
            "{:<24} {:<8} {:<8} {:<14} {:>6} {:>6}  {}",
            f("id"),
            f("kind"),
            f("state"),
            f("room"),
            f("x"),
            f("y"),
            holder
        );
    }
    Exit::Ok
}

/// Sends a request with only a `reply-to` to `topic` and returns the answer's bytes.
fn ask(conn: &Conn, topic: impl FnOnce(&Target) -> String) -> Result<Vec<u8>, Exit> {
    let target = target(conn)?;
    let topic = topic(&target);
    let answer = block_on(client::request(
        &target,
        &topic,
        |reply_to| {
            serde_json::to_vec(&api::GetRequest {
                reply_to: reply_to.to_string(),
            })
            .unwrap_or_default()
        },
        timeout(conn),
    ))?;
    answer.map_err(|e| report(&e))
}

/// `pimesh peers`: the mesh as the agent sees it.
fn peers(args: PeersArgs) -> Exit {
    let bytes = match ask(&args.conn, |t| api::peers_topic(&t.base)) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let rows: Vec<crate::mesh::peers::PeerRow> = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the agent's answer is not understood: {e}");
            return Exit::Failed;
        }
    };
    if args.conn.json {
        println!("{}", String::from_utf8_lossy(&bytes));
        return Exit::Ok;
    }
    let now = crate::clock::now_ms();
    println!(
        "{:<20} {:<36} {:<22} {:<10} LAST SEEN",
        "NAME", "UUID", "ADDRESS", "STATUS"
    );
    for r in rows {
        let seen = match r.last_seen_ms {
            0 => "never".to_string(),
            t => format!("{:.1} s ago", now.saturating_sub(t) as f64 / 1000.0),
        };
        let name = if r.name_conflict {
            format!("{} (NAME CONFLICT)", r.name)
        } else {
            r.name
        };
        let uuid = r.uuid.map(|u| u.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<20} {:<36} {:<22} {:<10} {}",
            name, uuid, r.addr, r.status, seen
        );
    }
    Exit::Ok
}
