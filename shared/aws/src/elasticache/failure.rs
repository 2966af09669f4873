//! One place that decides what an ElastiCache error means: gone, already
//! there, worth retrying, or final. Decisions rest on the modeled error
//! variants (and, for errors the model does not name, on the error code and
//! HTTP status), never on message text.

use aws_sdk_elasticache::Error as ApiError;
use aws_sdk_elasticache::config::http::HttpResponse;
use aws_sdk_elasticache::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret, SecretString};

use broker_core::ports::ProviderError;

/// What a failed call means to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The resource does not exist (deletes and lookups treat this as fine).
    NotFound,
    /// The resource exists already (creates adopt it; a delete whose final
    /// snapshot exists already deletes without one).
    AlreadyExists,
    /// Nothing was left to do (IncreaseReplicaCount and friends say so).
    NoOperation,
    /// Busy, throttled or unreachable: the same call may work later.
    Retryable,
    /// Retrying will not help.
    Permanent,
}

/// A failed call, described in AWS terms: "CreateReplicationGroup failed:
/// InsufficientCacheClusterCapacity: ...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: Kind,
    pub description: String,
}

impl Failure {
    pub fn is(&self, kind: Kind) -> bool {
        self.kind == kind
    }

    /// Blanks out `secrets` should AWS ever quote one back in a message.
    pub fn redacting(mut self, secrets: &[&SecretString]) -> Failure {
        for secret in secrets {
            let value = secret.expose_secret();
            if !value.is_empty() {
                self.description = self.description.replace(value, "[redacted]");
            }
        }
        self
    }
}

impl From<Failure> for ProviderError {
    fn from(f: Failure) -> ProviderError {
        match f.kind {
            Kind::Retryable => ProviderError::Retryable(f.description),
            _ => ProviderError::Permanent(f.description),
        }
    }
}

/// Codes of errors the ElastiCache model does not name but every AWS query
/// API can answer with, and that go away by themselves.
pub(crate) const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Classifies the error of the ElastiCache call `call` (its API name, e.g.
/// `CreateReplicationGroup`).
pub fn classify<E>(call: &str, err: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    ApiError: From<SdkError<E, HttpResponse>>,
{
    // Errors before or around the exchange say nothing about the resource.
    if let Some(what) = crate::transport_problem(&err) {
        return Failure {
            kind: Kind::Retryable,
            description: format!("{call} failed: {what}: {}", DisplayErrorContext(&err)),
        };
    }
    if let SdkError::ConstructionFailure(_) = &err {
        return Failure {
            kind: Kind::Permanent,
            description: format!(
                "{call} failed: the request could not be built: {}",
                DisplayErrorContext(&err)
            ),
        };
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    let error = ApiError::from(err);
    let kind = kind_of(&error, status);
    let code = error.code().unwrap_or("an unnamed error");
    let description = match error.message() {
        Some(message) if !message.is_empty() => format!("{call} failed: {code}: {message}"),
        _ => format!("{call} failed: {code}"),
    };
    Failure { kind, description }
}

fn kind_of(error: &ApiError, status: Option<u16>) -> Kind {
    match error {
        ApiError::CacheClusterNotFoundFault(_)
        | ApiError::ReplicationGroupNotFoundFault(_)
        | ApiError::UserNotFoundFault(_)
        | ApiError::UserGroupNotFoundFault(_)
        | ApiError::SnapshotNotFoundFault(_)
        | ApiError::CacheParameterGroupNotFoundFault(_)
        | ApiError::ServerlessCacheNotFoundFault(_)
        | ApiError::ServerlessCacheSnapshotNotFoundFault(_) => Kind::NotFound,

        ApiError::CacheClusterAlreadyExistsFault(_)
        | ApiError::ReplicationGroupAlreadyExistsFault(_)
        | ApiError::UserAlreadyExistsFault(_)
        | ApiError::UserGroupAlreadyExistsFault(_)
        | ApiError::SnapshotAlreadyExistsFault(_)
        | ApiError::CacheParameterGroupAlreadyExistsFault(_)
        | ApiError::ServerlessCacheAlreadyExistsFault(_)
        | ApiError::ServerlessCacheSnapshotAlreadyExistsFault(_) => Kind::AlreadyExists,

        ApiError::NoOperationFault(_) => Kind::NoOperation,

        // The resource is busy (creating, modifying, snapshotting, deleting)
        // or the account is calling too fast: both pass.
        ApiError::ApiCallRateForCustomerExceededFault(_)
        | ApiError::InvalidCacheClusterStateFault(_)
        | ApiError::InvalidReplicationGroupStateFault(_)
        | ApiError::InvalidUserGroupStateFault(_)
        | ApiError::InvalidUserStateFault(_)
        | ApiError::InvalidSnapshotStateFault(_)
        | ApiError::InvalidGlobalReplicationGroupStateFault(_)
        | ApiError::InvalidCacheParameterGroupStateFault(_)
        | ApiError::InvalidServerlessCacheStateFault(_)
        | ApiError::InvalidServerlessCacheSnapshotStateFault(_) => Kind::Retryable,

        // Capacity, quotas, bad parameters, and the network set-up (subnet
        // groups, security groups, a VPC "in an invalid state" because of
        // them, KMS keys): an operator has to act, so these are final, and
        // `classify` names the fault.
        ApiError::InsufficientCacheClusterCapacityFault(_)
        | ApiError::ClusterQuotaForCustomerExceededFault(_)
        | ApiError::NodeQuotaForClusterExceededFault(_)
        | ApiError::NodeQuotaForCustomerExceededFault(_)
        | ApiError::NodeGroupsPerReplicationGroupQuotaExceededFault(_)
        | ApiError::UserQuotaExceededFault(_)
        | ApiError::UserGroupQuotaExceededFault(_)
        | ApiError::TagQuotaPerResourceExceeded(_)
        | ApiError::SnapshotQuotaExceededFault(_)
        | ApiError::ServerlessCacheQuotaForCustomerExceededFault(_)
        | ApiError::ServerlessCacheSnapshotQuotaExceededFault(_)
        | ApiError::SnapshotFeatureNotSupportedFault(_)
        | ApiError::InvalidParameterValueException(_)
        | ApiError::InvalidParameterCombinationException(_)
        | ApiError::CacheSubnetGroupNotFoundFault(_)
        | ApiError::CacheSecurityGroupNotFoundFault(_)
        | ApiError::InvalidCacheSecurityGroupStateFault(_)
        | ApiError::InvalidSubnet(_)
        | ApiError::SubnetNotAllowedFault(_)
        | ApiError::InvalidVpcNetworkStateFault(_)
        | ApiError::InvalidKmsKeyFault(_)
        | ApiError::ServiceLinkedRoleNotFoundFault(_)
        | ApiError::DefaultUserRequired(_)
        | ApiError::DuplicateUserNameFault(_)
        | ApiError::DefaultUserAssociatedToUserGroupFault(_) => Kind::Permanent,

        // Errors the model does not name: throttling and server-side trouble
        // pass; anything else is taken as final.
        other => {
            let transient_code = other.code().is_some_and(|code| TRANSIENT_CODES.contains(&code));
            let transient_status = status.is_some_and(|s| s == 429 || s >= 500);
            if transient_code || transient_status { Kind::Retryable } else { Kind::Permanent }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_elasticache::error::ErrorMetadata;
    use aws_sdk_elasticache::operation::create_replication_group::CreateReplicationGroupError;
    use aws_sdk_elasticache::types::error::{
        InsufficientCacheClusterCapacityFault, InvalidReplicationGroupStateFault,
        ReplicationGroupNotFoundFault,
    };

    fn meta(code: &str, message: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).message(message).build()
    }

    fn kind(error: ApiError) -> Kind {
        kind_of(&error, Some(400))
    }

    #[test]
    fn missing_and_existing_resources_are_told_apart_from_failures() {
        let gone =
            ReplicationGroupNotFoundFault::builder().meta(meta("ReplicationGroupNotFoundFault", "")).build();
        assert_eq!(kind(ApiError::ReplicationGroupNotFoundFault(gone)), Kind::NotFound);
    }

    #[test]
    fn a_busy_replication_group_is_retryable() {
        let busy = InvalidReplicationGroupStateFault::builder()
            .meta(meta("InvalidReplicationGroupState", "Replication group must be in available state"))
            .build();
        assert_eq!(kind(ApiError::InvalidReplicationGroupStateFault(busy)), Kind::Retryable);
    }

    #[test]
    fn missing_capacity_is_permanent_and_named_in_aws_terms() {
        let fault = CreateReplicationGroupError::InsufficientCacheClusterCapacityFault(
            InsufficientCacheClusterCapacityFault::builder()
                .message("cache.m7g.large is not available in us-east-1a")
                .meta(meta(
                    "InsufficientCacheClusterCapacity",
                    "cache.m7g.large is not available in us-east-1a",
                ))
                .build(),
        );
        let err = SdkError::service_error(fault, HttpResponse::new(400.try_into().unwrap(), "".into()));
        let failure = classify("CreateReplicationGroup", err);
        assert_eq!(failure.kind, Kind::Permanent);
        assert_eq!(
            failure.description,
            "CreateReplicationGroup failed: InsufficientCacheClusterCapacity: cache.m7g.large is not available in us-east-1a"
        );
    }

    #[test]
    fn a_password_quoted_back_by_aws_is_blanked_out() {
        let password = SecretString::from("hunter2hunter2hunter2");
        let failure = Failure {
            kind: Kind::Permanent,
            description: "CreateUser failed: InvalidParameterValue: bad password hunter2hunter2hunter2"
                .into(),
        }
        .redacting(&[&password]);
        assert!(!failure.description.contains("hunter2"));
        assert!(failure.description.ends_with("[redacted]"));
    }
}
