//! The command line's arguments, as clap parses them.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

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
