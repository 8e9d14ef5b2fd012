//! The `pimesh` binary: parse the command line, set up logging, run, exit with a code.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = pimesh::cli::Cli::parse();
    // rumqttd logs every connection at info and every disconnect at error; the agent reports
    // what matters about its broker itself.
    let default_level = match cli.command {
        pimesh::cli::Command::Run(_) => "info,rumqttd=warn,rumqttd::router::routing=off",
        _ => "warn,rumqttd=off",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    pimesh::cli::run(cli).into()
}
