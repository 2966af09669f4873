//! The OSB headers: API version, originating identity, request identity.

use base64::Engine as _;
use serde_json::Value;

pub const API_VERSION: &str = "x-broker-api-version";
pub const ORIGINATING_IDENTITY: &str = "x-broker-api-originating-identity";
pub const REQUEST_IDENTITY: &str = "x-broker-api-request-identity";

/// The lowest 2.x minor version served: 2.13 (the first with
/// `maximum_polling_duration` and `maintenance_info` the catalog uses).
pub const MIN_MINOR: u32 = 13;

/// Checks `X-Broker-API-Version`: 2.13 and later 2.x are served.
pub fn check_api_version(value: &str) -> Result<(), String> {
    let refuse = || {
        format!(
            "X-Broker-API-Version {value:?} is not supported; this broker serves 2.{MIN_MINOR} to 2.17 (any later 2.x is accepted)"
        )
    };
    let (major, minor) = value.trim().split_once('.').ok_or_else(refuse)?;
    let major: u32 = major.parse().map_err(|_| refuse())?;
    let minor: u32 = minor.parse().map_err(|_| refuse())?;
    if major == 2 && minor >= MIN_MINOR { Ok(()) } else { Err(refuse()) }
}

/// `X-Broker-API-Originating-Identity: platform base64(json)`, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginatingIdentity {
    pub platform: String,
    pub value: Value,
}

impl OriginatingIdentity {
    pub fn parse(header: &str) -> Result<OriginatingIdentity, String> {
        let (platform, encoded) = header.trim().split_once(' ').ok_or("expected 'platform base64-json'")?;
        if platform.is_empty() {
            return Err("the platform is empty".into());
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| format!("the value is not base64: {e}"))?;
        let value: Value = serde_json::from_slice(&raw).map_err(|e| format!("the value is not JSON: {e}"))?;
        if !value.is_object() {
            return Err("the value is not a JSON object".into());
        }
        Ok(OriginatingIdentity { platform: platform.to_string(), value })
    }

    /// The user the platform names: `user_id` (Cloud Foundry) or `username`
    /// (Kubernetes).
    pub fn user(&self) -> Option<&str> {
        self.value.get("user_id").or_else(|| self.value.get("username")).and_then(Value::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_2_13_up_are_served() {
        assert!(check_api_version("2.17").is_ok());
        assert!(check_api_version("2.13").is_ok());
        assert!(check_api_version("2.99").is_ok());
        assert!(check_api_version("2.12").is_err());
        assert!(check_api_version("3.0").is_err());
        assert!(check_api_version("1.14").is_err());
        assert!(check_api_version("two").is_err());
        assert!(check_api_version("2").is_err());
    }

    #[test]
    fn the_cloud_foundry_example_identity_parses() {
        let id = OriginatingIdentity::parse(
            "cloudfoundry eyANCiAgInVzZXJfaWQiOiAiNjgzZWE3NDgtMzA5Mi00ZmY0LWI2NTYtMzljYWNjNGQ1MzYwIg0KfQ==",
        )
        .unwrap();
        assert_eq!(id.platform, "cloudfoundry");
        assert_eq!(id.user(), Some("683ea748-3092-4ff4-b656-39cacc4d5360"));
    }

    #[test]
    fn a_malformed_identity_says_why() {
        assert!(OriginatingIdentity::parse("cloudfoundry").is_err());
        assert!(OriginatingIdentity::parse("cloudfoundry !!!").unwrap_err().contains("base64"));
        assert!(OriginatingIdentity::parse("kubernetes bm90IGpzb24=").unwrap_err().contains("JSON"));
    }
}
