//! The AWS-mode settings: every one from an environment variable, parsed once
//! at cold start into a typed value. A missing or malformed variable stops
//! start-up with a message naming it. The SAM template and Terraform set
//! exactly these names.

/// Every variable the AWS mode reads, for the deploy templates' checks.
pub const VARIABLES: &[&str] = &[
    "BROKER_BACKEND",
    "TABLE_NAME",
    "QUEUE_URL",
    "BROKER_CREDENTIALS_SECRET_ARN",
    "NAME_PREFIX",
    "CACHE_SUBNET_GROUP",
    "MEMCACHED_SUBNET_GROUP",
    "CACHE_SECURITY_GROUP_IDS",
    "CACHE_SUBNET_IDS",
    "KMS_KEY_ID",
    "POLL_DELAY_SECS",
    "CATALOG_CACHE_SECS",
    "SECRET_RECOVERY_WINDOW_DAYS",
    "ROTATION_DAYS",
    "ROTATION_GRACE_SECS",
    "ROTATION_FUNCTION_ARN",
    "ORPHAN_GRACE_SECS",
    "SWEEP_EVERY_SECS",
    "ALARM_ACTIONS",
    "CACHE_LOG_RETENTION_DAYS",
];

/// The retention periods CloudWatch Logs accepts, in days.
pub const LOG_RETENTION_DAYS: &[u32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];

/// Actions an alarm may take in one state (CloudWatch's limit).
pub const MAX_ALARM_ACTIONS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// DynamoDB table of plans, instances, bindings and operations.
    pub table_name: String,
    /// The job queue (it has a dead-letter queue).
    pub queue_url: String,
    /// The secret holding the broker's own basic-auth credentials.
    pub credentials_secret_arn: String,
    /// Prefix of every resource and secret name (lowercase letters, digits, hyphens; at most 16).
    pub name_prefix: String,
    /// Subnet group of Redis OSS and Valkey replication groups.
    pub cache_subnet_group: String,
    /// Subnet group of Memcached clusters (defaults to `cache_subnet_group`).
    pub memcached_subnet_group: String,
    pub security_group_ids: Vec<String>,
    /// The subnets of serverless caches' VPC endpoints (serverless caches
    /// take subnets, not a subnet group); empty where no plan is serverless.
    pub cache_subnet_ids: Vec<String>,
    /// KMS key for encryption at rest; AWS-owned key when absent.
    pub kms_key_id: Option<String>,
    /// Delay before the worker looks again at a busy cache (1..=900).
    pub poll_delay_secs: u32,
    /// How long the API keeps the catalog before reading the table again.
    pub catalog_cache_secs: u64,
    /// Recovery window of deleted secrets (7..=30 days).
    pub secret_recovery_window_days: i64,
    /// Days between scheduled rotations of the admin and binding passwords
    /// (1..=1000, as Secrets Manager allows); 0 schedules none.
    pub rotation_days: u32,
    /// How long the previous password keeps working after a rotation
    /// (0..=7 days, in seconds).
    pub rotation_grace_secs: u64,
    /// The rotation function Secrets Manager invokes (the provisioner's own
    /// ARN); without it nothing is put on a rotation schedule.
    pub rotation_function_arn: Option<String>,
    /// How long the reconciler's orphan sweep lets a resource under the
    /// prefix that no record names stay before deleting it (600 s to 7
    /// days).
    pub orphan_grace_secs: i64,
    /// How often a sweep round starts (0 to a day; 0: every pass).
    pub sweep_every_secs: i64,
    /// What the caches' CloudWatch alarms notify on alarm and on recovery
    /// (`ALARM_ACTIONS`: comma-separated ARNs, SNS topics as a rule, at
    /// most 5 as CloudWatch allows); none: alarms change state without
    /// telling anyone.
    pub alarm_actions: Vec<String>,
    /// Days the caches' log groups (log delivery) keep their events
    /// (`CACHE_LOG_RETENTION_DAYS`, default 30; one of [`LOG_RETENTION_DAYS`]).
    pub cache_log_retention_days: u32,
}

impl AwsSettings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<AwsSettings, String> {
        AwsSettings::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<AwsSettings, String> {
        let opt = |k: &str| get(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let req = |k: &str| opt(k).ok_or_else(|| format!("{k} is required in AWS mode and is not set"));
        let number = |k: &str, default: u64, min: u64, max: u64| -> Result<u64, String> {
            match opt(k) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    _ => Err(format!("{k}={v:?} must be a whole number from {min} to {max}")),
                },
            }
        };
        let name_prefix = req("NAME_PREFIX")?;
        let prefix_ok = name_prefix.len() <= 16
            && name_prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && name_prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name_prefix.ends_with('-')
            && !name_prefix.contains("--");
        if !prefix_ok {
            return Err(format!(
                "NAME_PREFIX={name_prefix:?} must start with a letter and be at most 16 lowercase letters, digits or single hyphens (ElastiCache names allow no more)"
            ));
        }
        let queue_url = req("QUEUE_URL")?;
        if !(queue_url.starts_with("https://") || queue_url.starts_with("http://")) {
            return Err(format!("QUEUE_URL={queue_url:?} is not a queue URL"));
        }
        let credentials_secret_arn = req("BROKER_CREDENTIALS_SECRET_ARN")?;
        if !credentials_secret_arn.starts_with("arn:") {
            return Err(
                "BROKER_CREDENTIALS_SECRET_ARN must be a secret ARN (arn:aws:secretsmanager:...)".into()
            );
        }
        let rotation_function_arn = opt("ROTATION_FUNCTION_ARN");
        if let Some(arn) = &rotation_function_arn
            && !arn.starts_with("arn:")
        {
            return Err(format!(
                "ROTATION_FUNCTION_ARN={arn:?} must be a Lambda function ARN (arn:aws:lambda:...)"
            ));
        }
        let alarm_actions: Vec<String> = opt("ALARM_ACTIONS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = alarm_actions.iter().find(|a| !a.starts_with("arn:")) {
            return Err(format!("ALARM_ACTIONS: {bad:?} is not an ARN (an SNS topic: arn:aws:sns:...)"));
        }
        if alarm_actions.len() > MAX_ALARM_ACTIONS {
            return Err(format!(
                "ALARM_ACTIONS names {} actions; CloudWatch allows at most {MAX_ALARM_ACTIONS}",
                alarm_actions.len()
            ));
        }
        let cache_log_retention_days = number("CACHE_LOG_RETENTION_DAYS", 30, 1, 3653)? as u32;
        if !LOG_RETENTION_DAYS.contains(&cache_log_retention_days) {
            return Err(format!(
                "CACHE_LOG_RETENTION_DAYS={cache_log_retention_days} is not a retention CloudWatch Logs accepts; use one of {}",
                LOG_RETENTION_DAYS.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ));
        }
        let cache_subnet_group = req("CACHE_SUBNET_GROUP")?;
        let security_group_ids: Vec<String> = req("CACHE_SECURITY_GROUP_IDS")?
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = security_group_ids.iter().find(|s| !s.starts_with("sg-")) {
            return Err(format!("CACHE_SECURITY_GROUP_IDS: {bad:?} is not a security group id (sg-...)"));
        }
        let cache_subnet_ids: Vec<String> = opt("CACHE_SUBNET_IDS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(bad) = cache_subnet_ids.iter().find(|s| !s.starts_with("subnet-")) {
            return Err(format!("CACHE_SUBNET_IDS: {bad:?} is not a subnet id (subnet-...)"));
        }
        let rotation = broker_core::domain::RotationPolicy {
            days: number("ROTATION_DAYS", 30, 0, 1000)? as u32,
            grace_secs: number("ROTATION_GRACE_SECS", 3600, 0, 86_400 * 7)?,
        };
        rotation.check()?;
        Ok(AwsSettings {
            table_name: req("TABLE_NAME")?,
            queue_url,
            credentials_secret_arn,
            name_prefix,
            memcached_subnet_group: opt("MEMCACHED_SUBNET_GROUP")
                .unwrap_or_else(|| cache_subnet_group.clone()),
            cache_subnet_group,
            security_group_ids,
            cache_subnet_ids,
            kms_key_id: opt("KMS_KEY_ID"),
            poll_delay_secs: number("POLL_DELAY_SECS", 30, 1, 900)? as u32,
            catalog_cache_secs: number("CATALOG_CACHE_SECS", 60, 0, 3600)?,
            secret_recovery_window_days: number("SECRET_RECOVERY_WINDOW_DAYS", 7, 7, 30)? as i64,
            rotation_days: rotation.days,
            rotation_grace_secs: rotation.grace_secs,
            rotation_function_arn,
            orphan_grace_secs: number("ORPHAN_GRACE_SECS", 3600, 600, 86_400 * 7)? as i64,
            sweep_every_secs: number("SWEEP_EVERY_SECS", 3600, 0, 86_400)? as i64,
            alarm_actions,
            cache_log_retention_days,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = [
            ("TABLE_NAME", "osb-broker"),
            ("QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/osb-jobs"),
            (
                "BROKER_CREDENTIALS_SECRET_ARN",
                "arn:aws:secretsmanager:eu-west-1:123456789012:secret:osb/broker-AbCdEf",
            ),
            ("NAME_PREFIX", "osb"),
            ("CACHE_SUBNET_GROUP", "osb-cache"),
            ("CACHE_SECURITY_GROUP_IDS", "sg-0123, sg-0456"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    fn parse(m: &HashMap<String, String>) -> Result<AwsSettings, String> {
        AwsSettings::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn a_complete_environment_parses_with_defaults() {
        let s = parse(&env(&[])).unwrap();
        assert_eq!(s.security_group_ids, ["sg-0123", "sg-0456"]);
        assert_eq!(s.memcached_subnet_group, "osb-cache");
        assert_eq!((s.poll_delay_secs, s.catalog_cache_secs, s.secret_recovery_window_days), (30, 60, 7));
        assert_eq!(s.kms_key_id, None);
        assert_eq!((s.rotation_days, s.rotation_grace_secs, s.rotation_function_arn), (30, 3600, None));
        assert_eq!((s.orphan_grace_secs, s.sweep_every_secs), (3600, 3600));
    }

    #[test]
    fn alarm_actions_are_optional_arns_and_at_most_five() {
        assert!(parse(&env(&[])).unwrap().alarm_actions.is_empty());
        let arn = "arn:aws:sns:eu-west-1:123456789012:cache-alarms";
        let pager = "arn:aws:sns:eu-west-1:123456789012:pager";
        let two = format!("{arn}, {pager}");
        assert_eq!(parse(&env(&[("ALARM_ACTIONS", &two)])).unwrap().alarm_actions, [arn, pager]);
        let err = parse(&env(&[("ALARM_ACTIONS", "cache-alarms")])).unwrap_err();
        assert_eq!(err, "ALARM_ACTIONS: \"cache-alarms\" is not an ARN (an SNS topic: arn:aws:sns:...)");
        let six = [arn; 6].join(",");
        let err = parse(&env(&[("ALARM_ACTIONS", &six)])).unwrap_err();
        assert_eq!(err, "ALARM_ACTIONS names 6 actions; CloudWatch allows at most 5");
    }

    #[test]
    fn the_caches_log_retention_is_one_cloudwatch_logs_accepts() {
        assert_eq!(parse(&env(&[])).unwrap().cache_log_retention_days, 30);
        assert_eq!(
            parse(&env(&[("CACHE_LOG_RETENTION_DAYS", "365")])).unwrap().cache_log_retention_days,
            365
        );
        let err = parse(&env(&[("CACHE_LOG_RETENTION_DAYS", "31")])).unwrap_err();
        assert!(
            err.starts_with(
                "CACHE_LOG_RETENTION_DAYS=31 is not a retention CloudWatch Logs accepts; use one of 1, 3, 5"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_orphan_grace_period_shorter_than_ten_minutes_is_refused() {
        let err = parse(&env(&[("ORPHAN_GRACE_SECS", "60")])).unwrap_err();
        assert_eq!(err, "ORPHAN_GRACE_SECS=\"60\" must be a whole number from 600 to 604800");
        let s = parse(&env(&[("ORPHAN_GRACE_SECS", "600"), ("SWEEP_EVERY_SECS", "0")])).unwrap();
        assert_eq!((s.orphan_grace_secs, s.sweep_every_secs), (600, 0));
    }

    #[test]
    fn rotation_settings_parse_at_their_bounds() {
        let arn = "arn:aws:lambda:eu-west-1:123456789012:function:osb-provisioner";
        let s = parse(&env(&[
            ("ROTATION_DAYS", "0"),
            ("ROTATION_GRACE_SECS", "604800"),
            ("ROTATION_FUNCTION_ARN", arn),
        ]))
        .unwrap();
        assert_eq!((s.rotation_days, s.rotation_grace_secs), (0, 604_800), "0 turns scheduled rotation off");
        assert_eq!(s.rotation_function_arn.as_deref(), Some(arn));
        let s = parse(&env(&[("ROTATION_DAYS", "1000"), ("ROTATION_GRACE_SECS", "0")])).unwrap();
        assert_eq!((s.rotation_days, s.rotation_grace_secs), (1000, 0));
        let s = parse(&env(&[("ROTATION_FUNCTION_ARN", " ")])).unwrap();
        assert_eq!(s.rotation_function_arn, None, "blank is unset");
    }

    /// Secrets Manager, "Rotation schedules" (rotate-secrets_schedule): a
    /// rotation that starts while the last one is unfinished finds it "in
    /// progress". The grace period must end before the next rotation.
    #[test]
    fn a_grace_period_not_shorter_than_the_rotation_interval_stops_start_up_naming_both() {
        let err = parse(&env(&[("ROTATION_DAYS", "1"), ("ROTATION_GRACE_SECS", "604800")])).unwrap_err();
        assert!(err.contains("ROTATION_GRACE_SECS=604800") && err.contains("ROTATION_DAYS=1"), "{err}");
        assert!(parse(&env(&[("ROTATION_DAYS", "1"), ("ROTATION_GRACE_SECS", "86400")])).is_err());
        assert!(parse(&env(&[("ROTATION_DAYS", "1"), ("ROTATION_GRACE_SECS", "86399")])).is_ok());
    }

    #[test]
    fn each_missing_required_variable_is_named() {
        for k in [
            "TABLE_NAME",
            "QUEUE_URL",
            "BROKER_CREDENTIALS_SECRET_ARN",
            "NAME_PREFIX",
            "CACHE_SUBNET_GROUP",
            "CACHE_SECURITY_GROUP_IDS",
        ] {
            let mut m = env(&[]);
            m.remove(k);
            let err = parse(&m).unwrap_err();
            assert!(err.starts_with(k), "{k}: {err}");
        }
    }

    #[test]
    fn malformed_values_are_refused_naming_the_variable() {
        for (k, v) in [
            ("NAME_PREFIX", "OSB"),
            ("NAME_PREFIX", "a-very-long-prefix-name"),
            ("QUEUE_URL", "osb-jobs"),
            ("BROKER_CREDENTIALS_SECRET_ARN", "osb/broker"),
            ("CACHE_SECURITY_GROUP_IDS", "default"),
            ("POLL_DELAY_SECS", "0"),
            ("POLL_DELAY_SECS", "901"),
            ("SECRET_RECOVERY_WINDOW_DAYS", "3"),
            ("ROTATION_DAYS", "1001"),
            ("ROTATION_DAYS", "-1"),
            ("ROTATION_GRACE_SECS", "604801"),
            ("ROTATION_FUNCTION_ARN", "osb-provisioner"),
        ] {
            let err = parse(&env(&[(k, v)])).unwrap_err();
            assert!(err.starts_with(k), "{k}={v}: {err}");
        }
    }

    #[test]
    fn every_variable_read_is_listed_for_the_templates() {
        for k in [
            "TABLE_NAME",
            "QUEUE_URL",
            "KMS_KEY_ID",
            "MEMCACHED_SUBNET_GROUP",
            "CATALOG_CACHE_SECS",
            "ROTATION_DAYS",
            "ROTATION_GRACE_SECS",
            "ROTATION_FUNCTION_ARN",
        ] {
            assert!(VARIABLES.contains(&k), "{k}");
        }
    }
}
