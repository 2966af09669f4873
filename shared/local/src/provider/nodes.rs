//! The servers of one instance: the layout a plan asks for, and starting,
//! watching and stopping each server as ElastiCache's nodes would be.
//!
//! A plan of nodes runs `shards x (1 + replicas)` servers (Memcached: its
//! node count); a serverless plan runs one cluster-mode server, since a
//! serverless endpoint speaks the cluster protocol. Each server has a
//! place in [`Record::nodes`] and a node directory ([`Paths::node`]).

use super::*;

/// How many servers of which kind a plan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) cluster_mode: bool,
    pub(super) shards: u8,
    pub(super) replicas: u8,
}

impl Layout {
    pub(super) fn of(spec: &CacheSpec) -> Layout {
        let plan = &spec.plan;
        if spec.engine == Engine::Memcached {
            // Memcached nodes are independent: a "shard" each.
            return Layout { cluster_mode: false, shards: plan.cache_nodes.max(1), replicas: 0 };
        }
        if plan.serverless {
            return Layout { cluster_mode: true, shards: 1, replicas: 0 };
        }
        Layout {
            cluster_mode: plan.cluster_mode,
            shards: plan.shards.max(1),
            replicas: plan.replicas_per_shard,
        }
    }

    /// The layout a record's servers have.
    pub(super) fn of_record(record: &Record) -> Layout {
        let shards = record.nodes.iter().map(|n| n.shard).max().map_or(1, |s| s + 1);
        let replicas = record.nodes.iter().filter(|n| n.shard == 0 && n.replica).count();
        Layout { cluster_mode: record.cluster_mode, shards, replicas: replicas as u8 }
    }

    /// The places of a new instance, shard by shard, primary first; each
    /// served by the node directory of its own number.
    pub(super) fn nodes(self) -> Vec<Node> {
        let mut nodes = Vec::new();
        for shard in 0..self.shards {
            for r in 0..=self.replicas {
                nodes.push(Node::new(shard, r > 0, nodes.len()));
            }
        }
        nodes
    }

    pub(super) fn describe(self) -> String {
        match (self.cluster_mode, self.shards, self.replicas) {
            (true, s, r) => format!("cluster mode with {s} shard(s) of 1 primary and {r} replica(s)"),
            (false, 1, 0) => "one server".to_string(),
            (false, 1, r) => format!("1 primary and {r} replica(s)"),
            (false, n, _) => format!("{n} nodes"),
        }
    }
}

/// The key of a node's child handle: instance and node directory.
fn child_key(instance_id: &str, dir: usize) -> String {
    format!("{instance_id}/{dir}")
}

impl LocalCacheProvider {
    /// The pid of a node's server when it runs. A server this provider
    /// started is asked about through its handle, which also reaps it once
    /// it exited: that is exact, and it does not race Redis rewriting its
    /// command line at start-up. Any other (adopted) server is looked up
    /// in /proc.
    pub(super) fn node_pid(&self, record: &Record, node: &Node, paths: &Paths) -> Option<u32> {
        let key = child_key(&record.instance_id, node.dir);
        {
            let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(child) = children.get_mut(&key) {
                match (child.try_wait(), child.id()) {
                    (Ok(None), Some(pid)) => return Some(pid),
                    _ => {
                        children.remove(&key);
                    }
                }
            }
        }
        live_pid(node, &paths.node(node.dir))
    }

    /// The pid of each node's server, `None` where it does not run.
    pub(super) fn node_pids(&self, record: &Record, paths: &Paths) -> Vec<Option<u32>> {
        record.nodes.iter().map(|node| self.node_pid(record, node, paths)).collect()
    }

    /// Forgets the handles of an instance's servers (it is deleted).
    pub(super) fn forget_children(&self, instance_id: &str) {
        let prefix = format!("{instance_id}/");
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| !key.starts_with(&prefix));
    }

    /// The root's TLS files for a record that speaks TLS.
    pub(super) fn tls_of(&self, record: &Record) -> Result<Option<Arc<Tls>>, ProviderError> {
        record.tls.then(|| self.tls_files()).transpose()
    }

    /// The root's TLS files, made or read once per provider: every
    /// connection to a TLS server needs the CA, and the servers keep the
    /// certificate they started with.
    pub(super) fn tls_files(&self) -> Result<Arc<Tls>, ProviderError> {
        let mut cached = self.tls_files.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tls) = cached.as_ref() {
            return Ok(tls.clone());
        }
        let tls = Arc::new(Tls::under(&self.root)?);
        *cached = Some(tls.clone());
        Ok(tls)
    }

    /// Writes the node's configuration and starts its server on its port,
    /// or on a new one when that is taken; records the port and pid before
    /// returning. Does not wait for it to answer.
    pub(super) fn launch(
        &self,
        record: &mut Record,
        place: usize,
        paths: &Paths,
        binary: &Path,
        tls: Option<&Tls>,
        new_port: bool,
    ) -> Result<(), ProviderError> {
        let node_paths = paths.node(record.nodes[place].dir);
        create_dir(&node_paths.dir)?;
        create_dir(&node_paths.data)?;
        let taken: Vec<u16> = record
            .nodes
            .iter()
            .enumerate()
            .filter(|(n, _)| *n != place)
            .flat_map(|(_, node)| [Some(node.port), node.bus_port])
            .flatten()
            .collect();
        let node = &mut record.nodes[place];
        if new_port || node.port == 0 || !port_is_free(node.port) || taken.contains(&node.port) {
            node.port = free_port_except(&taken)?;
        }
        if record.cluster_mode
            && (new_port
                || node
                    .bus_port
                    .is_none_or(|bus| !port_is_free(bus) || taken.contains(&bus) || bus == node.port))
        {
            let mut avoid = taken.clone();
            avoid.push(node.port);
            node.bus_port = Some(free_port_except(&avoid)?);
        }
        let node = record.nodes[place].clone();
        if record.engine.speaks_redis() {
            write_file(&node_paths.conf, redis_config(record, &node, &node_paths, paths, tls)?.as_bytes())?;
        }
        // The record names the port before the server starts: a crash
        // between the two leaves a record the next create finds, and it
        // adopts the server by its pid file (written by the server on
        // that port) instead of starting a second one on the same data.
        record.nodes[place].pid = None;
        write_record(paths, record)?;
        let child = spawn(binary, record, &node, &node_paths, tls)?;
        record.nodes[place].pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(child_key(&record.instance_id, node.dir), child);
        write_record(paths, record)?;
        tracing::info!(
            instance_id = %record.instance_id,
            engine = record.engine.as_str(),
            node = place,
            port = node.port,
            pid = record.nodes[place].pid,
            "started local cache server"
        );
        Ok(())
    }

    /// SIGTERM to every running server of the instance, then SIGKILL to
    /// those still running after [`STOP_WAIT`]; `Ok` once none runs.
    pub(super) async fn stop(&self, record: &Record, paths: &Paths) -> Result<(), ProviderError> {
        self.stop_places(record, paths, &(0..record.nodes.len()).collect::<Vec<_>>()).await
    }

    /// [`LocalCacheProvider::stop`] for the servers of some places only.
    pub(super) async fn stop_places(
        &self,
        record: &Record,
        paths: &Paths,
        places: &[usize],
    ) -> Result<(), ProviderError> {
        let running = |provider: &Self| -> Vec<(usize, u32)> {
            places
                .iter()
                .filter_map(|&n| provider.node_pid(record, &record.nodes[n], paths).map(|pid| (n, pid)))
                .collect()
        };
        let first = running(self);
        if first.is_empty() {
            return Ok(());
        }
        for (_, pid) in &first {
            signal(*pid, "TERM").await;
        }
        if self.wait_until_stopped(record, paths, places, STOP_WAIT).await {
            return Ok(());
        }
        for (n, pid) in running(self) {
            tracing::warn!(
                instance_id = %record.instance_id,
                node = n,
                pid,
                "local cache server ignored SIGTERM; killing it"
            );
            signal(pid, "KILL").await;
        }
        if self.wait_until_stopped(record, paths, places, KILL_WAIT).await {
            return Ok(());
        }
        let left: Vec<String> = running(self).iter().map(|(_, pid)| pid.to_string()).collect();
        Err(ProviderError::Retryable(format!(
            "{} for instance {} (pid {}) still runs after SIGKILL",
            record.engine.as_str(),
            record.instance_id,
            left.join(", ")
        )))
    }

    async fn wait_until_stopped(
        &self,
        record: &Record,
        paths: &Paths,
        places: &[usize],
        within: Duration,
    ) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if places.iter().all(|&n| self.node_pid(record, &record.nodes[n], paths).is_none()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(POLL).await;
        }
    }
}

/// A free port that is none of `taken` (another server of the instance
/// may have it recorded while it is down).
fn free_port_except(taken: &[u16]) -> Result<u16, ProviderError> {
    for _ in 0..16 {
        let port = free_port()?;
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(ProviderError::Retryable(format!("could not find a free port on {HOST} that no other server has")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_places_each_shards_primary_before_its_replicas() {
        let layout = Layout { cluster_mode: true, shards: 3, replicas: 1 };
        let nodes = layout.nodes();
        let places: Vec<(u8, bool, usize)> = nodes.iter().map(|n| (n.shard, n.replica, n.dir)).collect();
        assert_eq!(
            places,
            [(0, false, 0), (0, true, 1), (1, false, 2), (1, true, 3), (2, false, 4), (2, true, 5)]
        );
        let record = Record {
            instance_id: "i".into(),
            engine: Engine::Valkey,
            engine_version: "8.0".into(),
            nodes,
            cluster_mode: true,
            tls: true,
            formed: false,
            legacy_port: None,
            legacy_pid: None,
            admin_secret: None,
            admin_user: None,
            restoring: false,
            maxmemory_policy: None,
            maxmemory_gb: None,
        };
        assert_eq!(Layout::of_record(&record), layout);
    }
}
