//! The error catalog: every error the API returns, with its HTTP status and its
//! OSB `error` key. A 500 says nothing internal; the log says everything.

use http::StatusCode;
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OsbError {
    /// 400: malformed request or invalid data; the text names the field.
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    /// 404: unknown instance or binding (or one still being created).
    #[error("{0}")]
    NotFound(String),
    /// 405: with the methods the route allows.
    #[error("this route does not take that method; it takes {allow}")]
    MethodNotAllowed { allow: String },
    /// 409: the same id exists with different attributes.
    #[error("{0}")]
    Conflict(String),
    /// 410: nothing to delete.
    #[error("{0}")]
    Gone(String),
    /// 412: unsupported `X-Broker-API-Version`.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 422 AsyncRequired.
    #[error("{0}")]
    AsyncRequired(String),
    /// 422 ConcurrencyError.
    #[error("{0}")]
    Concurrency(String),
    /// 422 MaintenanceInfoConflict.
    #[error("{0}")]
    MaintenanceInfoConflict(String),
    /// 422 with a broker-specific key: the change cannot be done (plan change
    /// not supported, engine downgrade, instance not usable ...).
    #[error("{description}")]
    Unprocessable { error: &'static str, description: String, update_repeatable: Option<bool> },
    /// 500: the description is logged, never returned.
    #[error("internal error: {0}")]
    Internal(String),
    /// 503: a backend is unavailable; retrying later may work.
    #[error("{0}")]
    Unavailable(String),
}

impl OsbError {
    pub fn status(&self) -> StatusCode {
        match self {
            OsbError::BadRequest(_) => StatusCode::BAD_REQUEST,
            OsbError::Unauthorized => StatusCode::UNAUTHORIZED,
            OsbError::NotFound(_) => StatusCode::NOT_FOUND,
            OsbError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            OsbError::Conflict(_) => StatusCode::CONFLICT,
            OsbError::Gone(_) => StatusCode::GONE,
            OsbError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            OsbError::AsyncRequired(_)
            | OsbError::Concurrency(_)
            | OsbError::MaintenanceInfoConflict(_)
            | OsbError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            OsbError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            OsbError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The OSB `error` key: the spec's own where it defines one.
    pub fn key(&self) -> &'static str {
        match self {
            OsbError::BadRequest(_) => "BadRequest",
            OsbError::Unauthorized => "Unauthorized",
            OsbError::NotFound(_) => "NotFound",
            OsbError::MethodNotAllowed { .. } => "MethodNotAllowed",
            OsbError::Conflict(_) => "Conflict",
            OsbError::Gone(_) => "Gone",
            OsbError::PreconditionFailed(_) => "PreconditionFailed",
            OsbError::AsyncRequired(_) => "AsyncRequired",
            OsbError::Concurrency(_) => "ConcurrencyError",
            OsbError::MaintenanceInfoConflict(_) => "MaintenanceInfoConflict",
            OsbError::Unprocessable { error, .. } => error,
            OsbError::Internal(_) => "InternalError",
            OsbError::Unavailable(_) => "ServiceUnavailable",
        }
    }

    /// The response body: `{"error", "description"}`, plus `update_repeatable`
    /// where the spec allows it. A 500 body is the same fixed text every time.
    pub fn body(&self) -> Value {
        let description = match self {
            OsbError::Internal(_) => {
                "The broker failed to process the request; the operator can find the cause in the broker's log under this request's id.".to_string()
            }
            other => crate::domain::public::for_platform(&other.to_string()),
        };
        let mut body = json!({ "error": self.key(), "description": description });
        if let OsbError::Unprocessable { update_repeatable: Some(r), .. } = self {
            body["update_repeatable"] = json!(r);
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_spec_error_has_its_status_and_key() {
        let cases = [
            (OsbError::AsyncRequired("a".into()), 422, "AsyncRequired"),
            (OsbError::Concurrency("c".into()), 422, "ConcurrencyError"),
            (OsbError::MaintenanceInfoConflict("m".into()), 422, "MaintenanceInfoConflict"),
            (OsbError::Conflict("x".into()), 409, "Conflict"),
            (OsbError::Gone("g".into()), 410, "Gone"),
            (OsbError::PreconditionFailed("p".into()), 412, "PreconditionFailed"),
            (OsbError::BadRequest("b".into()), 400, "BadRequest"),
            (OsbError::Unauthorized, 401, "Unauthorized"),
        ];
        for (err, status, key) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.body()["error"], key);
            assert!(!err.body()["description"].as_str().unwrap().is_empty());
        }
    }

    #[test]
    fn an_internal_error_body_reveals_nothing() {
        let err = OsbError::Internal("sqlite: disk I/O error at /var/lib/x".into());
        let body = err.body().to_string();
        assert!(!body.contains("sqlite"));
        assert!(!body.contains("/var/lib"));
        assert_eq!(err.status().as_u16(), 500);
    }
}
