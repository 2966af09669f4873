//! What a running server says of itself: Redis OSS and Valkey's `INFO`
//! (as the admin user), memcached's `stats`. Laptop mode's charts sample it.

use super::*;

/// One reading of a server's own counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeStats {
    /// CPU seconds the server used since it started (user and system).
    pub cpu_secs: f64,
    /// Bytes its data takes (`used_memory`; memcached's `bytes`).
    pub used_bytes: u64,
    /// Its memory limit in bytes, 0 for none (`maxmemory`; memcached's
    /// `limit_maxbytes`).
    pub limit_bytes: u64,
    /// Clients connected now, the one asking included.
    pub connections: u64,
}

/// The `name: value` fields of an `INFO` answer, or of `STAT name value`
/// lines.
fn fields<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let line = line.trim_end().strip_prefix("STAT ").unwrap_or(line.trim_end());
        let (name, value) = line.split_once(':').or_else(|| line.split_once(' '))?;
        (name == field).then_some(value.trim())
    })
}

fn number<T: std::str::FromStr + Default>(text: &str, field: &str) -> T {
    fields(text, field).and_then(|v| v.parse().ok()).unwrap_or_default()
}

/// `INFO`'s counters.
pub(super) fn from_info(info: &str) -> NodeStats {
    NodeStats {
        cpu_secs: number::<f64>(info, "used_cpu_user") + number::<f64>(info, "used_cpu_sys"),
        used_bytes: number(info, "used_memory"),
        limit_bytes: number(info, "maxmemory"),
        connections: number(info, "connected_clients"),
    }
}

/// memcached's `stats` counters.
pub(super) fn from_stats(stats: &str) -> NodeStats {
    NodeStats {
        cpu_secs: number::<f64>(stats, "rusage_user") + number::<f64>(stats, "rusage_system"),
        used_bytes: number(stats, "bytes"),
        limit_bytes: number(stats, "limit_maxbytes"),
        connections: number(stats, "curr_connections"),
    }
}

impl LocalCacheProvider {
    /// What the instance's first server (the primary's place, the
    /// configuration endpoint's node, the first Memcached node) says of
    /// itself now; `None` when it is not running (or none was ever made).
    pub async fn stats(&self, instance_id: &str) -> Result<Option<NodeStats>, ProviderError> {
        let paths = Paths::of(&self.root, instance_id)?;
        let Some(record) = read_record(&paths)? else { return Ok(None) };
        if self.node_pid(&record, &record.nodes[0], &paths).is_none() {
            return Ok(None);
        }
        let tls = self.tls_of(&record)?;
        let port = record.nodes[0].port;
        if !record.engine.speaks_redis() {
            let text = memcached_ask(port, tls.as_deref(), "stats", true).await.map_err(|e| {
                ProviderError::Retryable(format!(
                    "memcached for instance {instance_id} does not answer stats on {HOST}:{port}: {e}"
                ))
            })?;
            return Ok(Some(from_stats(&text)));
        }
        let password = self.admin_password(&record).await?;
        let mut connection = self.node_connection(&record, 0, tls.as_deref(), &password).await?;
        let info: String = redis::cmd("INFO").query_async(&mut connection).await.map_err(|e| {
            redis_failure(
                &format!("{} for instance {instance_id} does not answer INFO", record.engine.as_str()),
                &e,
                &[],
            )
        })?;
        Ok(Some(from_info(&info)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_and_stats_give_cpu_memory_and_connections() {
        let info = "# Clients\r\nconnected_clients:3\r\n# Memory\r\nused_memory:1048576\r\n\
                    used_memory_human:1.00M\r\nmaxmemory:0\r\n# CPU\r\nused_cpu_sys:0.25\r\nused_cpu_user:1.5\r\n\
                    used_cpu_sys_children:9.0\r\n";
        assert_eq!(
            from_info(info),
            NodeStats { cpu_secs: 1.75, used_bytes: 1_048_576, limit_bytes: 0, connections: 3 }
        );
        let stats = "STAT pid 1\r\nSTAT rusage_user 0.5\r\nSTAT rusage_system 0.25\r\nSTAT curr_connections 2\r\n\
                     STAT bytes 4096\r\nSTAT limit_maxbytes 67108864\r\nSTAT bytes_read 77\r\n";
        assert_eq!(
            from_stats(stats),
            NodeStats { cpu_secs: 0.75, used_bytes: 4096, limit_bytes: 67_108_864, connections: 2 }
        );
        assert_eq!(from_info("").connections, 0, "a missing field reads as 0");
    }
}
