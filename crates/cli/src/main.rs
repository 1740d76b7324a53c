//! `hearth`: parses arguments, sets up logging, runs one command, and maps
//! its error (with the whole `source()` chain) to exit status 1.

mod api;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // A bug must still read as one line to a user, never a stack trace
    // (HEARTH_BACKTRACE=1 keeps Rust's default report for debugging).
    if std::env::var_os("HEARTH_BACKTRACE").is_none() {
        std::panic::set_hook(Box::new(|info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            eprintln!("error: internal bug in hearth: {msg}{at} (please report it; HEARTH_BACKTRACE=1 shows more)");
        }));
    }
    let cli = commands::Cli::parse();
    // The server logs its lifecycle by default; one-shot commands stay quiet.
    let default = match cli.command {
        commands::Command::Serve(_) => "info,sqlx=warn",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("HEARTH_LOG").unwrap_or_else(|_| EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
