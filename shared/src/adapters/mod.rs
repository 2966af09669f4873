//! Implementations of the ports: `local` for laptop mode (embedded store,
//! durable local queue, local secret store, real local cache processes) and
//! `aws` (feature `aws`) for Lambda.

#[cfg(feature = "aws")]
pub mod aws;
pub mod local;

use secrecy::SecretString;

use crate::domain::Engine;
use crate::ports::{ProviderError, SecretError, SecretStore, Stage};

/// An instance's admin password, read from the secret its record names, with
/// errors an operator can act on: a missing reference or secret is permanent,
/// an unreachable secret store retryable. Both cache providers use it.
pub(crate) async fn read_admin_password(
    secrets: &dyn SecretStore,
    reference: Option<&str>,
    instance_id: &str,
    engine: Engine,
) -> Result<SecretString, ProviderError> {
    let Some(reference) = reference else {
        return Err(ProviderError::Permanent(format!(
            "instance {instance_id} has no admin secret reference, which {} needs",
            engine.as_str()
        )));
    };
    match secrets.read(reference, Stage::Current).await {
        Ok(Some(password)) => Ok(password),
        Ok(None) => {
            Err(ProviderError::Permanent(format!("the admin secret {reference} has no current version")))
        }
        Err(SecretError::NotFound(_)) => {
            Err(ProviderError::Permanent(format!("the admin secret {reference} does not exist")))
        }
        Err(e @ SecretError::Unavailable(_)) => {
            Err(ProviderError::Retryable(format!("could not read the admin secret {reference}: {e}")))
        }
    }
}
