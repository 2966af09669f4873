//! Cache settings a developer may choose on provision and update: the
//! eviction policy (`maxmemory_policy`), the weekly maintenance window, the
//! daily snapshot window and how many days of daily snapshots to keep
//! (bounded by the plan). The schema checks each value's shape; this
//! module checks what a schema cannot (a window's length, two windows that
//! overlap) and works out the settings a cache gets: the instance's
//! parameters, else the plan's and ElastiCache's defaults.

use serde_json::{Map, Value, json};

use super::parameter::ParameterError;
use super::{Engine, Plan};

pub const MAXMEMORY_POLICY: &str = "maxmemory_policy";
pub const MAINTENANCE_WINDOW: &str = "preferred_maintenance_window";
pub const SNAPSHOT_WINDOW: &str = "snapshot_window";
pub const SNAPSHOT_RETENTION_DAYS: &str = "snapshot_retention_days";

/// The settings parameters, in the order messages list them.
pub const SETTINGS: [&str; 4] =
    [MAXMEMORY_POLICY, MAINTENANCE_WINDOW, SNAPSHOT_WINDOW, SNAPSHOT_RETENTION_DAYS];

/// What `maxmemory-policy` takes on Redis OSS 6 and 7 and Valkey 7 and 8
/// (ElastiCache User Guide, "Engine specific parameters").
pub const MAXMEMORY_POLICIES: [&str; 8] = [
    "volatile-lru",
    "allkeys-lru",
    "volatile-lfu",
    "allkeys-lfu",
    "volatile-random",
    "allkeys-random",
    "volatile-ttl",
    "noeviction",
];

/// ElastiCache's default eviction policy.
pub const DEFAULT_MAXMEMORY_POLICY: &str = "volatile-lru";
/// The daily snapshot window a cache gets unless its instance names one.
pub const DEFAULT_SNAPSHOT_WINDOW: &str = "03:00-05:00";
/// The weekly maintenance window a cache gets unless its instance names one.
pub const DEFAULT_MAINTENANCE_WINDOW: &str = "sun:05:00-sun:06:00";

/// ElastiCache's shortest window, for maintenance and for snapshots.
const MIN_WINDOW_MINUTES: u32 = 60;
const DAY: u32 = 24 * 60;
const WEEK: u32 = 7 * DAY;
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// The settings a cache has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// The eviction policy when the instance chose one (ElastiCache's
    /// default otherwise, through the default parameter group); Redis OSS
    /// and Valkey only.
    pub maxmemory_policy: Option<String>,
    /// `ddd:hh24:mi-ddd:hh24:mi`, UTC.
    pub maintenance_window: String,
    /// `hh24:mi-hh24:mi`, UTC; `None` for Memcached, which keeps no
    /// snapshots.
    pub snapshot_window: Option<String>,
    /// Days of daily snapshots kept; 0 for none (and for Memcached).
    pub snapshot_retention_days: u8,
}

/// The settings `parameters` give a cache of `plan`, with the defaults for
/// what they leave out.
pub fn of(engine: Engine, plan: &Plan, parameters: &Map<String, Value>) -> CacheSettings {
    let text = |name: &str| parameters.get(name).and_then(Value::as_str).map(str::to_string);
    let snapshots = engine.speaks_redis();
    // A serverless cache has no parameter group and no snapshot window:
    // the plan's daily snapshot time instead.
    let nodes = snapshots && !plan.serverless;
    CacheSettings {
        maxmemory_policy: if nodes { text(MAXMEMORY_POLICY) } else { None },
        maintenance_window: text(MAINTENANCE_WINDOW)
            .unwrap_or_else(|| DEFAULT_MAINTENANCE_WINDOW.to_string()),
        snapshot_window: nodes
            .then(|| text(SNAPSHOT_WINDOW).unwrap_or_else(|| DEFAULT_SNAPSHOT_WINDOW.to_string())),
        snapshot_retention_days: if snapshots {
            parameters
                .get(SNAPSHOT_RETENTION_DAYS)
                .and_then(Value::as_u64)
                .and_then(|d| u8::try_from(d).ok())
                .unwrap_or(plan.snapshot_retention_days)
        } else {
            0
        },
    }
}

/// The settings' part of a plan's parameter schema: what the engine has.
pub fn add_to_schema(engine: Engine, plan: &Plan, properties: &mut Value) {
    if plan.serverless {
        // ElastiCache maintains it outside any window; only the number of
        // days of daily snapshots is the developer's.
        properties[SNAPSHOT_RETENTION_DAYS] = retention_schema(plan);
        return;
    }
    properties[MAINTENANCE_WINDOW] = json!({
        "description": format!("The weekly window (UTC) in which ElastiCache may patch the cache, ddd:hh24:mi-ddd:hh24:mi, at least {MIN_WINDOW_MINUTES} minutes, e.g. \"sun:05:00-sun:06:00\" (the default)."),
        "type": "string",
        "pattern": "^(sun|mon|tue|wed|thu|fri|sat):([01][0-9]|2[0-3]):[0-5][0-9]-(sun|mon|tue|wed|thu|fri|sat):([01][0-9]|2[0-3]):[0-5][0-9]$",
    });
    if !engine.speaks_redis() {
        return;
    }
    properties[MAXMEMORY_POLICY] = json!({
        "description": format!("What the cache evicts when its memory is full. Default: {DEFAULT_MAXMEMORY_POLICY}, as on ElastiCache."),
        "type": "string",
        "enum": MAXMEMORY_POLICIES,
    });
    properties[SNAPSHOT_WINDOW] = json!({
        "description": format!("The daily window (UTC) in which the daily snapshot is taken, hh24:mi-hh24:mi, at least {MIN_WINDOW_MINUTES} minutes, not overlapping the maintenance window. Default: {DEFAULT_SNAPSHOT_WINDOW}."),
        "type": "string",
        "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$",
    });
    properties[SNAPSHOT_RETENTION_DAYS] = retention_schema(plan);
}

fn retention_schema(plan: &Plan) -> Value {
    json!({
        "description": format!("Days of daily snapshots to keep, 0 for none; plan {} keeps at most {} (its default).", plan.name, plan.snapshot_retention_days),
        "type": "integer",
        "minimum": 0,
        "maximum": plan.snapshot_retention_days,
    })
}

/// What a schema error about a setting says: the parameter, what was sent
/// and what it takes. `None` for a parameter that is not a setting.
pub fn describe(name: &str, got: &Value, plan: &Plan) -> Option<String> {
    Some(match name {
        MAXMEMORY_POLICY => format!(
            "parameter '{MAXMEMORY_POLICY}' is {got}; it takes one of {}",
            MAXMEMORY_POLICIES.join(", ")
        ),
        MAINTENANCE_WINDOW => format!(
            "parameter '{MAINTENANCE_WINDOW}' is {got}; it takes a weekly window in UTC as ddd:hh24:mi-ddd:hh24:mi (ddd one of {}), e.g. \"{DEFAULT_MAINTENANCE_WINDOW}\"",
            DAYS.join(", ")
        ),
        SNAPSHOT_WINDOW => format!(
            "parameter '{SNAPSHOT_WINDOW}' is {got}; it takes a daily window in UTC as hh24:mi-hh24:mi, e.g. \"{DEFAULT_SNAPSHOT_WINDOW}\""
        ),
        SNAPSHOT_RETENTION_DAYS => format!(
            "parameter '{SNAPSHOT_RETENTION_DAYS}' is {got}; plan {} keeps daily snapshots for 0 to {} days",
            plan.name, plan.snapshot_retention_days
        ),
        _ => return None,
    })
}

/// What the schema cannot check: each window at least an hour long, and
/// the daily snapshot window clear of the weekly maintenance window
/// (ElastiCache refuses both), the defaults counting for a window the
/// parameters leave out.
pub fn check(engine: Engine, plan: &Plan, parameters: &Map<String, Value>) -> Result<(), ParameterError> {
    let s = of(engine, plan, parameters);
    let maintenance = weekly(&s.maintenance_window)
        .ok_or_else(|| ParameterError(format!("parameter '{MAINTENANCE_WINDOW}' is not a window")))?;
    if maintenance.1 < MIN_WINDOW_MINUTES {
        return Err(ParameterError(format!(
            "parameter '{MAINTENANCE_WINDOW}' is {} minutes long; ElastiCache needs at least {MIN_WINDOW_MINUTES}",
            maintenance.1
        )));
    }
    let Some(snapshot_window) = &s.snapshot_window else { return Ok(()) };
    let snapshot = daily(snapshot_window)
        .ok_or_else(|| ParameterError(format!("parameter '{SNAPSHOT_WINDOW}' is not a window")))?;
    if snapshot.1 < MIN_WINDOW_MINUTES {
        return Err(ParameterError(format!(
            "parameter '{SNAPSHOT_WINDOW}' is {} minutes long; ElastiCache needs at least {MIN_WINDOW_MINUTES}",
            snapshot.1
        )));
    }
    let overlaps = (0..7).any(|day| {
        let start = day * DAY + snapshot.0;
        intersect((start, snapshot.1), maintenance)
    });
    if overlaps {
        let named = |p: &str| parameters.contains_key(p);
        let which = match (named(SNAPSHOT_WINDOW), named(MAINTENANCE_WINDOW)) {
            (true, false) => format!(
                "parameter '{SNAPSHOT_WINDOW}' ({snapshot_window}) overlaps the maintenance window ({})",
                s.maintenance_window
            ),
            (false, true) => format!(
                "parameter '{MAINTENANCE_WINDOW}' ({}) overlaps the daily snapshot window ({snapshot_window})",
                s.maintenance_window
            ),
            _ => format!(
                "parameters '{SNAPSHOT_WINDOW}' ({snapshot_window}) and '{MAINTENANCE_WINDOW}' ({}) overlap",
                s.maintenance_window
            ),
        };
        return Err(ParameterError(format!("{which}; ElastiCache needs them apart: move one of them")));
    }
    Ok(())
}

/// `hh:mm` as minutes of the day.
fn minute_of_day(t: &str) -> Option<u32> {
    let (h, m) = t.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// A daily window as (start minute of the day, length in minutes); one
/// that ends before it starts runs past midnight.
fn daily(window: &str) -> Option<(u32, u32)> {
    let (from, to) = window.split_once('-')?;
    let (from, to) = (minute_of_day(from)?, minute_of_day(to)?);
    Some((from, (to + DAY - from) % DAY))
}

/// A weekly window as (start minute of the week, length in minutes).
fn weekly(window: &str) -> Option<(u32, u32)> {
    let at = |t: &str| -> Option<u32> {
        let (day, time) = t.split_once(':')?;
        let day = DAYS.iter().position(|d| *d == day)? as u32;
        Some(day * DAY + minute_of_day(time)?)
    };
    let (from, to) = window.split_once('-')?;
    let (from, to) = (at(from)?, at(to)?);
    Some((from, (to + WEEK - from) % WEEK))
}

/// Whether two intervals (start, length) of the week's circle share a
/// minute.
fn intersect(a: (u32, u32), b: (u32, u32)) -> bool {
    let starts_in = |x: u32, (start, len): (u32, u32)| (x + WEEK - start) % WEEK < len;
    (a.1 > 0 && b.1 > 0) && (starts_in(a.0, b) || starts_in(b.0, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let catalog = crate::catalog::CatalogFile::builtin();
        catalog.plans.into_iter().find(|p| p.name == "small").expect("plan small")
    }

    fn check_params(v: Value) -> Result<(), String> {
        check(Engine::Redis, &plan(), v.as_object().unwrap()).map_err(|e| e.0)
    }

    #[test]
    fn the_defaults_apply_to_what_the_parameters_leave_out() {
        let s = of(Engine::Redis, &plan(), &Map::new());
        assert_eq!(s.maintenance_window, DEFAULT_MAINTENANCE_WINDOW);
        assert_eq!(s.snapshot_window.as_deref(), Some(DEFAULT_SNAPSHOT_WINDOW));
        assert_eq!(s.snapshot_retention_days, plan().snapshot_retention_days);
        assert_eq!(s.maxmemory_policy, None);
        let memcached = of(Engine::Memcached, &plan(), &Map::new());
        assert_eq!((memcached.snapshot_window, memcached.snapshot_retention_days), (None, 0));
        assert_eq!(check_params(json!({})), Ok(()));
    }

    #[test]
    fn a_window_shorter_than_an_hour_is_refused_with_its_length() {
        assert_eq!(
            check_params(json!({"snapshot_window": "01:00-01:30"})).unwrap_err(),
            "parameter 'snapshot_window' is 30 minutes long; ElastiCache needs at least 60"
        );
        assert_eq!(
            check_params(json!({"preferred_maintenance_window": "sat:23:30-sun:00:15"})).unwrap_err(),
            "parameter 'preferred_maintenance_window' is 45 minutes long; ElastiCache needs at least 60"
        );
        // Past midnight, and past the end of the week, is fine.
        assert_eq!(check_params(json!({"snapshot_window": "23:30-00:30"})), Ok(()));
        assert_eq!(check_params(json!({"preferred_maintenance_window": "sat:23:30-sun:00:30"})), Ok(()));
    }

    #[test]
    fn a_snapshot_window_inside_the_maintenance_window_on_any_day_is_refused() {
        // The default maintenance window is sunday 05:00-06:00.
        let err = check_params(json!({"snapshot_window": "04:30-05:30"})).unwrap_err();
        assert_eq!(
            err,
            "parameter 'snapshot_window' (04:30-05:30) overlaps the maintenance window (sun:05:00-sun:06:00); ElastiCache needs them apart: move one of them"
        );
        // The default snapshot window is 03:00-05:00, every day.
        let err = check_params(json!({"preferred_maintenance_window": "wed:04:00-wed:05:00"})).unwrap_err();
        assert!(
            err.starts_with("parameter 'preferred_maintenance_window' (wed:04:00-wed:05:00) overlaps"),
            "{err}"
        );
        assert_eq!(check_params(json!({"preferred_maintenance_window": "wed:05:00-wed:06:00"})), Ok(()));
        // A snapshot window across midnight meets a window on the next day.
        let err = check_params(
            json!({"snapshot_window": "23:30-01:00", "preferred_maintenance_window": "tue:00:30-tue:02:00"}),
        );
        assert!(err.unwrap_err().starts_with("parameters 'snapshot_window' (23:30-01:00) and"));
    }
}
