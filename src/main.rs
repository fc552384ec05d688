//! The `sbx` binary: parse the command line, set up logging and the runtime, run, exit.

use clap::Parser;
use sbx::exit::ExitStatus;

fn main() {
    let cli = sbx::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            sbx::env::var(sbx::env::SBX_LOG)
                .and_then(|f| tracing_subscriber::EnvFilter::try_new(f).ok())
                .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("off")),
        )
        .init();
    let status = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(sbx::app::run(cli)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitStatus::Failure
        }
    };
    // Exit without waiting on the thread that may still block reading stdin.
    std::process::exit(status.code());
}
