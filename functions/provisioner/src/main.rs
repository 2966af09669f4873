//! provisioner: the SQS-triggered worker, and the Secrets Manager rotation
//! function of the broker's secrets (`broker_core::invocation` tells the two
//! kinds of event apart). `BROKER_BACKEND=aws` uses the AWS adapters;
//! otherwise laptop mode's (`cargo lambda watch`).

mod mode;

use clap::Parser;

/// The provisioner takes no arguments: Lambda invokes it with events.
#[derive(Parser)]
#[command(
    name = "provisioner",
    version,
    about = "The job consumer and rotation function of the ElastiCache service broker"
)]
struct Cli {}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    Cli::parse();
    broker_core::logging::init_tracing();
    if let Err(e) = mode::serve().await {
        eprintln!("provisioner: {}", broker_core::logging::Report(&*e));
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
