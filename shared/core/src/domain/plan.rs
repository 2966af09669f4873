//! Services and plans as data. The catalog file seeds them; at run time the store
//! is the source of truth, so an operator changes a plan without a release.

use serde::{Deserialize, Serialize};

/// The cache engine a service offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Redis,
    Valkey,
    Memcached,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Valkey => "valkey",
            Engine::Memcached => "memcached",
        }
    }

    /// Redis OSS and Valkey speak the Redis protocol and have ACL users.
    pub fn speaks_redis(self) -> bool {
        matches!(self, Engine::Redis | Engine::Valkey)
    }

    /// Whether `version` of the engine has users with passwords of their
    /// own (ACL users; ElastiCache RBAC): Valkey always, Redis OSS from 6.0.
    /// Before that a Redis OSS cache has one AUTH token, and Memcached has
    /// no authentication at all.
    pub fn has_users(self, version: &str) -> bool {
        match self {
            Engine::Valkey => true,
            Engine::Redis => {
                version.split('.').next().and_then(|m| m.trim().parse::<u32>().ok()).is_none_or(|m| m >= 6)
            }
            Engine::Memcached => false,
        }
    }

    /// The URI scheme of the credentials' `uri`.
    pub fn uri_scheme(self) -> &'static str {
        match self {
            Engine::Redis | Engine::Valkey => "redis",
            Engine::Memcached => "memcached",
        }
    }
}

/// A service offering: one engine, several plans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    /// CLI-friendly: lowercase letters, digits and hyphens.
    pub name: String,
    pub description: String,
    pub engine: Engine,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// Where the service stands in the catalog file it came from (set when
    /// the file is read): the catalog lists services in this order, as
    /// platforms show them in the broker's order.
    #[serde(default)]
    pub position: u32,
}

/// Display metadata of a plan, passed through to the catalog.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PlanMetadata {
    #[serde(rename = "displayName")]
    pub display_name: String,
    #[serde(default)]
    pub bullets: Vec<String>,
    #[serde(default)]
    pub costs: Vec<serde_json::Value>,
}

/// A plan: the shape of the cache a developer gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub service_id: String,
    /// CLI-friendly: lowercase letters, digits and hyphens.
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub free: bool,
    /// ElastiCache node type, e.g. `cache.t4g.micro`; none for a serverless
    /// plan.
    #[serde(default)]
    pub node_type: String,
    /// An ElastiCache Serverless cache instead of nodes (see
    /// [`super::serverless`]), within `usage_limits`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub serverless: bool,
    /// A serverless plan's limits of data and ECPU a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_limits: Option<super::serverless::UsageLimits>,
    /// When a serverless cache takes its daily snapshot (hh24:mi UTC);
    /// ElastiCache picks a time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_snapshot_time: Option<String>,
    /// Shards (node groups). 1 unless `cluster_mode`.
    #[serde(default = "one")]
    pub shards: u8,
    /// Replicas per shard (Redis OSS, Valkey).
    #[serde(default)]
    pub replicas_per_shard: u8,
    /// Cache nodes (Memcached).
    #[serde(default = "one")]
    pub cache_nodes: u8,
    #[serde(default)]
    pub cluster_mode: bool,
    #[serde(default)]
    pub multi_az: bool,
    #[serde(default)]
    pub automatic_failover: bool,
    /// Major versions a developer may ask for, as strings: "6.2", "7.0".
    pub engine_versions: Vec<String>,
    pub default_engine_version: String,
    /// Seconds a platform should poll; also the deadline of every operation.
    pub maximum_polling_duration: u64,
    #[serde(default)]
    pub snapshot_retention_days: u8,
    /// Whether deprovisioning keeps a final snapshot of the cache (Redis OSS
    /// and Valkey; ElastiCache Memcached has no snapshots, and the catalog
    /// refuses it there). The snapshot outlives the instance: nothing the
    /// broker does deletes it.
    #[serde(default)]
    pub final_snapshot: bool,
    /// OSB maintenance_info.version; a request naming another one gets 422.
    /// An update that carries it to an instance on an older one applies
    /// the cache's pending ElastiCache service updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_version: Option<String>,
    /// OSB maintenance_info.description: what the version brings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_description: Option<String>,
    /// ACL rules each binding user gets (Redis OSS, Valkey).
    #[serde(default = "default_access_string")]
    pub access_string: String,
    /// How many binding users each instance keeps ready in advance, each
    /// with its own password, so that a bind takes one and answers at once
    /// (adding a user to an ElastiCache user group takes minutes). 0 turns
    /// it off: binds then wait for a new user. Redis OSS and Valkey only;
    /// laptop mode makes users at once and keeps none.
    #[serde(default = "default_spare_binding_users")]
    pub spare_binding_users: u8,
    /// How many ready caches of this plan the broker keeps unclaimed, so a
    /// provision with the plan's default engine version takes one and
    /// answers at once (see [`super::pool`]). 0, the default, keeps none.
    /// Each waiting cache costs what an instance of the plan costs.
    #[serde(default)]
    pub warm_pool_size: u8,
    /// The CloudWatch alarms each cache of the plan gets (AWS mode).
    #[serde(default)]
    pub alarms: AlarmThresholds,
    /// The logs each cache of the plan delivers to a CloudWatch Logs group
    /// of its own (AWS mode; Redis OSS and Valkey), unless the instance's
    /// `log_delivery` parameter says otherwise. None by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_delivery: Vec<LogType>,
    pub metadata: PlanMetadata,
    /// Where the plan stands among the catalog file's plans (set when the
    /// file is read): the catalog lists a service's plans in this order.
    #[serde(default)]
    pub position: u32,
}

fn one() -> u8 {
    1
}

/// A log ElastiCache delivers to CloudWatch Logs, as its API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LogType {
    /// The engine's SLOWLOG: commands slower than `slowlog-log-slower-than`.
    #[serde(rename = "slow-log")]
    SlowLog,
    /// The engine's own log (start-up, replication, failover ...).
    #[serde(rename = "engine-log")]
    EngineLog,
}

impl LogType {
    pub const ALL: [LogType; 2] = [LogType::SlowLog, LogType::EngineLog];

    pub fn as_str(self) -> &'static str {
        match self {
            LogType::SlowLog => "slow-log",
            LogType::EngineLog => "engine-log",
        }
    }

    /// Why `engine` at major `version` cannot deliver it, if it cannot
    /// (ElastiCache User Guide, "Log delivery": slow log from Redis OSS 6.0,
    /// engine log from 6.2, both on every Valkey; none on Memcached).
    pub fn refusal(self, engine: Engine, version: &str) -> Option<String> {
        let lowest = match (engine, self) {
            (Engine::Memcached, _) => return Some("Memcached delivers no logs".to_string()),
            (Engine::Valkey, _) => return None,
            (Engine::Redis, LogType::SlowLog) => "6.0",
            (Engine::Redis, LogType::EngineLog) => "6.2",
        };
        (super::params::compare_versions(version, lowest) == std::cmp::Ordering::Less).then(|| {
            format!("{} needs Redis OSS {lowest} or later, and the version is {version}", self.as_str())
        })
    }
}

/// The CloudWatch alarms the broker keeps on every node of a plan's caches
/// (AWS mode; see [`crate::ports::Alarms`]): a threshold per metric, or
/// `null` in the catalog for no alarm on that metric. The defaults are what
/// the Valkey migration plan asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmThresholds {
    /// Percent of CPU: `EngineCPUUtilization` for Redis OSS and Valkey (the
    /// engine's thread), `CPUUtilization` for Memcached (the host's).
    #[serde(default = "default_cpu_percent")]
    pub cpu_percent: Option<f64>,
    /// `CurrConnections` of a node.
    #[serde(default = "default_connections")]
    pub connections: Option<f64>,
    /// `DatabaseMemoryUsagePercentage` of a node (Redis OSS and Valkey;
    /// Memcached publishes no share of its memory, so gets no such alarm).
    #[serde(default = "default_memory_percent")]
    pub memory_percent: Option<f64>,
    /// Seconds per datapoint: a multiple of 60, as ElastiCache publishes
    /// its metrics every minute.
    #[serde(default = "default_alarm_period")]
    pub period_secs: u32,
    /// Datapoints in a row over the threshold that set the alarm off.
    #[serde(default = "default_evaluation_periods")]
    pub evaluation_periods: u32,
}

impl Default for AlarmThresholds {
    fn default() -> AlarmThresholds {
        AlarmThresholds {
            cpu_percent: default_cpu_percent(),
            connections: default_connections(),
            memory_percent: default_memory_percent(),
            period_secs: default_alarm_period(),
            evaluation_periods: default_evaluation_periods(),
        }
    }
}

impl AlarmThresholds {
    /// What is wrong with them, in words naming the field and what it takes.
    pub fn check(&self) -> Result<(), String> {
        for (field, value, max) in [
            ("cpu_percent", self.cpu_percent, Some(100.0)),
            ("connections", self.connections, None),
            ("memory_percent", self.memory_percent, Some(100.0)),
        ] {
            let Some(v) = value else { continue };
            if !v.is_finite() || v <= 0.0 || max.is_some_and(|m| v > m) {
                let range = if max.is_some() { "above 0 and at most 100" } else { "above 0" };
                return Err(format!("alarms.{field} is {v}; it must be {range}, or null for no alarm"));
            }
        }
        if self.period_secs == 0 || !self.period_secs.is_multiple_of(60) {
            return Err(format!(
                "alarms.period_secs is {}; it must be a multiple of 60 (ElastiCache publishes its metrics every minute)",
                self.period_secs
            ));
        }
        let total = u64::from(self.period_secs) * u64::from(self.evaluation_periods);
        if self.evaluation_periods == 0 || total > MAX_ALARM_WINDOW_SECS {
            return Err(format!(
                "alarms.evaluation_periods is {}; it must be at least 1, and period_secs x evaluation_periods at most {MAX_ALARM_WINDOW_SECS} (one day, CloudWatch's limit)",
                self.evaluation_periods
            ));
        }
        Ok(())
    }
}

/// The longest time an alarm may look back (CloudWatch: one day).
pub const MAX_ALARM_WINDOW_SECS: u64 = 86_400;

fn default_cpu_percent() -> Option<f64> {
    Some(80.0)
}

fn default_connections() -> Option<f64> {
    Some(1000.0)
}

fn default_memory_percent() -> Option<f64> {
    Some(80.0)
}

fn default_alarm_period() -> u32 {
    60
}

fn default_evaluation_periods() -> u32 {
    5
}

fn default_spare_binding_users() -> u8 {
    2
}

/// The most spare binding users a plan may ask for (a user group holds at
/// most 100 users, bindings included).
pub const MAX_SPARE_BINDING_USERS: u8 = 10;

fn default_access_string() -> String {
    "~* &* +@all -@dangerous".to_string()
}

impl Plan {
    /// Total cache nodes the plan runs: shards x (1 + replicas), or the
    /// Memcached node count.
    pub fn total_nodes(&self, engine: Engine) -> u32 {
        match engine {
            Engine::Memcached => u32::from(self.cache_nodes),
            _ => u32::from(self.shards) * (1 + u32::from(self.replicas_per_shard)),
        }
    }
}

/// True when `name` is lowercase letters, digits and single hyphens, as CLIs like.
pub fn is_cli_friendly(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valkey_and_redis_from_6_have_users_memcached_and_older_redis_do_not() {
        assert!(Engine::Valkey.has_users("7.2"));
        assert!(Engine::Redis.has_users("6.0"));
        assert!(Engine::Redis.has_users("7.1"));
        assert!(!Engine::Redis.has_users("5.0.6"));
        assert!(!Engine::Memcached.has_users("1.6"));
    }

    #[test]
    fn alarm_thresholds_default_to_the_migration_plans_and_refuse_what_cloudwatch_would() {
        let plain: AlarmThresholds = serde_json::from_str("{}").unwrap();
        assert_eq!(plain, AlarmThresholds::default());
        assert_eq!(
            (plain.cpu_percent, plain.connections, plain.memory_percent),
            (Some(80.0), Some(1000.0), Some(80.0))
        );
        assert!(plain.check().is_ok());
        let off: AlarmThresholds = serde_json::from_str(r#"{"connections": null}"#).unwrap();
        assert_eq!((off.connections, off.cpu_percent), (None, Some(80.0)));
        assert!(off.check().is_ok());
        for (json, field) in [
            (r#"{"cpu_percent": 120}"#, "alarms.cpu_percent"),
            (r#"{"memory_percent": 0}"#, "alarms.memory_percent"),
            (r#"{"connections": -1}"#, "alarms.connections"),
            (r#"{"period_secs": 90}"#, "alarms.period_secs"),
            (r#"{"evaluation_periods": 0}"#, "alarms.evaluation_periods"),
            (r#"{"period_secs": 3600, "evaluation_periods": 25}"#, "alarms.evaluation_periods"),
        ] {
            let t: AlarmThresholds = serde_json::from_str(json).unwrap();
            let e = t.check().unwrap_err();
            assert!(e.starts_with(field), "{json}: {e}");
        }
    }

    #[test]
    fn logs_are_delivered_from_the_versions_elasticache_names() {
        assert_eq!(LogType::SlowLog.refusal(Engine::Redis, "6.0"), None);
        assert_eq!(LogType::EngineLog.refusal(Engine::Redis, "6.2"), None);
        assert_eq!(LogType::EngineLog.refusal(Engine::Valkey, "7.2"), None);
        assert_eq!(
            LogType::EngineLog.refusal(Engine::Redis, "6.0").as_deref(),
            Some("engine-log needs Redis OSS 6.2 or later, and the version is 6.0")
        );
        assert!(LogType::SlowLog.refusal(Engine::Redis, "5.0").is_some());
        assert!(LogType::SlowLog.refusal(Engine::Memcached, "1.6").is_some());
        let parsed: Vec<LogType> = serde_json::from_str(r#"["slow-log", "engine-log"]"#).unwrap();
        assert_eq!(parsed, LogType::ALL);
    }

    #[test]
    fn cli_friendly_names_are_lowercase_digits_and_hyphens() {
        assert!(is_cli_friendly("redis-ha-3"));
        assert!(!is_cli_friendly("Redis"));
        assert!(!is_cli_friendly("redis_ha"));
        assert!(!is_cli_friendly("-redis"));
        assert!(!is_cli_friendly("redis--ha"));
        assert!(!is_cli_friendly(""));
    }
}
