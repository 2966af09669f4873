//! broker-api: the OSB API. In Lambda, lambda_http runs the Router;
//! elsewhere a plain listener on 127.0.0.1 runs the same Router, with the
//! worker in the same process (laptop mode). `BROKER_BACKEND=aws` (the
//! deploy templates set it) selects AWS mode. The operator's commands
//! (`catalog seed|apply`, `rotate`) run once and exit: see `--help`.

mod cli;

use clap::Parser;

/// Exits 1 with the error and its causes on one line: what failed and why.
#[tokio::main]
async fn main() -> std::process::ExitCode {
    broker_core::logging::init_tracing();
    match cli::run(cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker-api: {}", broker_core::logging::Report(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}
