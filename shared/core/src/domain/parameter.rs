//! What the parameter modules share below them all: the refusal every
//! check returns, and the names one module refuses on another's behalf.
//! `params` builds the schemas from `day2`, `settings` and `serverless`,
//! which take these from here, not from `params`, so no module of the
//! parameters depends on one that depends on it.

/// Why parameters were refused; the text is shown to the developer as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParameterError(pub String);

/// The parameter that picks the logs the cache delivers (Redis OSS, Valkey).
pub const LOG_DELIVERY: &str = "log_delivery";
