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

/// An error and every cause under it, as one line: "what failed: why:
/// why that". The form operators read in a log line or on stderr.
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Report;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open the store")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_report_names_every_cause_in_order() {
        let err = Outer(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied"));
        assert_eq!(Report(&err).to_string(), "cannot open the store: permission denied");
    }
}
