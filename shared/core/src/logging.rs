//! Logs: text on a terminal, JSON lines elsewhere (Lambda, CI).

/// Logs as text on a terminal and as JSON lines elsewhere (Lambda, CI), at
/// the level `RUST_LOG` names (default info).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AWS_LAMBDA_FUNCTION_NAME").is_ok()
        || std::env::var("LOG_FORMAT").as_deref() == Ok("json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(false).init();
    } else {
        builder.init();
    }
}
