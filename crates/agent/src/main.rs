//! `hearth-agent`: parse flags, set up logging, run the agent.

use std::path::PathBuf;

use clap::Parser;
use hearth_agent::transport::ListenAddr;
use hearth_agent::AgentConfig;
use hearth_agent_protocol::error_chain;

/// The Hearth guest agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Where to serve: unix:PATH, chardev:PATH or vsock:PORT. Repeatable.
    /// Default as PID 1: chardev:/dev/virtio-ports/hearth.agent.
    #[arg(long, env = "HEARTH_AGENT_LISTEN")]
    listen: Vec<ListenAddr>,
    /// Let `init` set the clock and hostname and credit entropy (implied as PID 1).
    #[arg(long)]
    manage_system: bool,
    /// User commands run as by default (default: `sandbox` when it exists).
    #[arg(long)]
    default_user: Option<String>,
    /// Directory commands start in by default when it exists.
    #[arg(long, default_value = "/workspace")]
    default_cwd: PathBuf,
    /// Ring buffer per background process, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    process_buffer_bytes: usize,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, env = "HEARTH_AGENT_LOG", default_value = "info")]
    log: String,
}

fn main() -> std::process::ExitCode {
    hearth_agent::tune_allocator();
    if hearth_agent::init::is_init_invocation() {
        // The kernel gives /init no arguments; a failure here has nobody to
        // report to but the console, and PID 1 must not just exit.
        if let Err(e) = hearth_agent::init::boot_into_sandbox() {
            eprintln!("hearth-agent: init failed: {}", error_chain(&e));
            hearth_agent::pid1::power_off(false);
        }
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    let mut listen = args.listen;
    let mut config = AgentConfig::new(Vec::new());
    if listen.is_empty() {
        if !config.pid1 {
            eprintln!("hearth-agent: --listen is required outside a VM");
            return std::process::ExitCode::from(2);
        }
        listen.push(ListenAddr::CharDev(
            format!(
                "/dev/virtio-ports/{}",
                hearth_agent_protocol::VIRTIO_PORT_NAME
            )
            .into(),
        ));
    }
    config.listen = listen;
    config.manage_system |= args.manage_system;
    config.default_user = args.default_user;
    config.default_cwd = args.default_cwd;
    config.process_buffer_bytes = args.process_buffer_bytes;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hearth-agent: start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(hearth_agent::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hearth-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
