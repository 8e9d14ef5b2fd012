//! The command line: argument definitions and what each subcommand does.
//!
//! Exit codes (also in the README): 0 done; 1 the command ran and failed; 2 bad usage, bad
//! input or invalid config; 3 target unavailable; 4 timeout or agent unreachable.

mod admin;
mod remote;

use crate::agent::{self, Settings};
use crate::api::{self, SetRequest, Switch};
use crate::broker::PortChoice;
use crate::config::{self, Config};
use crate::{boards, identity};
use clap::{Args, Parser, Subcommand};
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
    /// Print the embedded default config (annotated, every key with its default).
    Config(ConfigArgs),
    /// List the board and HAT definitions, or show one.
    Boards(BoardsArgs),
    /// Show the detected model, the GPIO backend, GPIO chips, permission problems and serial ports.
    Doctor(DoctorArgs),
    /// Print a one-time token another instance joins this mesh with (`pimesh run --join`).
    Invite(InviteArgs),
    /// Manage the users that may use the brokers (Home Assistant, scripts, devices).
    User(UserArgs),
    /// Retire an instance for good (a dead Pi): its claims are released so a replacement
    /// takes its relays, it leaves `pimesh peers`, and it is no longer trusted.
    Forget(ForgetArgs),
    /// Print the mesh's CA certificate (PEM), for TLS clients (`mosquitto_pub --cafile`).
    Ca(CaArgs),
    /// List the pimesh instances and MQTT brokers announced on this LAN (mDNS).
    Lan(LanArgs),
}

/// `pimesh lan`.
#[derive(Debug, Args)]
pub struct LanArgs {
    /// How long to listen for answers, in seconds.
    #[arg(long, default_value_t = 3)]
    pub wait: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `pimesh forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The instance: its name or UUID (a UUID when several share the name).
    pub instance: String,
    /// Data dir of the local agent (a member of the mesh).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `pimesh ca`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// Data dir of the instance (default: the standard one).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `pimesh invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// Data dir of the local agent (a member of the mesh).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// How long the token may be used: e.g. 30m, 1h, 2d (at most 7d).
    #[arg(long, default_value = "1h")]
    pub expires: String,
}

/// `pimesh user`.
#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    pub action: UserAction,
    /// Data dir of the local agent.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
}

/// What `pimesh user` does.
#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a user, or set a user's password; prints a generated one without --password-file.
    Add {
        /// User name: 1-32 of a-z 0-9 -.
        name: String,
        /// File holding the password (at least 8 characters).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// List the users.
    List,
    /// Remove a user: its connections are refused from then on.
    Remove {
        /// User name.
        name: String,
    },
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
    /// Fixed MQTT 5 port (fail if taken). Default: first free from the broker port + 1000.
    #[arg(long)]
    pub mqtt5_port: Option<u16>,
    /// Fixed TLS port (fail if taken). Default: first free from 8883.
    #[arg(long)]
    pub tls_port: Option<u16>,
    /// Fixed MQTT over WebSocket port (fail if taken). Default: first free from 9001.
    #[arg(long)]
    pub ws_port: Option<u16>,
    /// Serve MQTT over TLS only: no plaintext ports. Overrides [broker] plaintext.
    #[arg(long, conflicts_with_all = ["port", "mqtt5_port"])]
    pub no_plaintext: bool,
    /// Do not announce this instance on the LAN by mDNS. Overrides [mesh] mdns.
    #[arg(long)]
    pub no_mdns: bool,
    /// A peer's broker, HOST:PORT (repeatable). Adds to [mesh] peers.
    #[arg(long = "peer")]
    pub peers: Vec<String>,
    /// Join the mesh of this invitation token (from `pimesh invite` on a member).
    #[arg(long)]
    pub join: Option<String>,
    /// Let clients without credentials in (labs only). Overrides [broker] allow-anonymous.
    #[arg(long)]
    pub allow_anonymous: bool,
}

/// How the CLI reaches an agent.
#[derive(Debug, Args)]
pub struct Conn {
    /// The agent's broker, HOST:PORT. Default: the agent running on --data-dir.
    #[arg(long)]
    pub via: Option<String>,
    /// With --via: speak TLS, trusting the CA certificate in this file (`pimesh ca` prints
    /// it); HOST must be a name or address the agent's certificate carries.
    #[arg(long, requires = "via")]
    pub cafile: Option<PathBuf>,
    /// Data dir of the local agent to talk to.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// Base topic, with --via (the local agent tells its own).
    #[arg(long, default_value = "pimesh")]
    pub base_topic: String,
    /// User name, with --via (default: $PIMESH_USER).
    #[arg(long)]
    pub user: Option<String>,
    /// File holding the password of --user (default: $PIMESH_PASSWORD).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
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

/// `pimesh config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the embedded default config, the one `pimesh run` uses without --config.
    #[arg(long, required = true)]
    pub default: bool,
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
