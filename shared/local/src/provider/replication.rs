//! Replicas and clusters of local servers, once every server answers.
//!
//! Every server of an instance of several logs in to its primary as the
//! admin user (`masteruser` / `masterauth`, set with CONFIG SET after each
//! start and after an admin rotation, so the password is in no file).
//!
//! - **Replicas without cluster mode**: each replica is told `REPLICAOF`
//!   the primary's place; a replica whose link is down is waited for.
//! - **Cluster mode**: the first time, each shard's primary takes its even
//!   share of the 16,384 slots (`CLUSTER ADDSLOTSRANGE`, only those it has
//!   not claimed already), the first node meets the others, and each
//!   replica is told `CLUSTER REPLICATE` its shard's primary; then, as on
//!   every start, the cluster is ready once every node says
//!   `cluster_state:ok`.
//! - **test_failover**: in cluster mode, `CLUSTER FAILOVER` on a replica of
//!   each shard. Without cluster mode the primary hands over to the
//!   reader's replica (`FAILOVER TO`, which loses no acknowledged write),
//!   then the two servers change places: the primary endpoint's port is
//!   served by the promoted data from then on, as ElastiCache's primary
//!   endpoint follows the new primary.

use super::*;

/// How long one pass waits for replicas and the cluster before it reports
/// `Working` (the worker asks again).
const CONVERGE_WAIT: Duration = Duration::from_secs(20);
/// Redis OSS and Valkey's hash slots.
const SLOTS: u32 = 16_384;

/// The `name:value` field of an `INFO` answer ("" when absent).
pub(super) fn info_field<'a>(info: &'a str, name: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or("")
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClusterNode {
    pub(super) id: String,
    pub(super) port: u16,
    pub(super) flags: Vec<String>,
    /// The id of its primary, for a replica.
    pub(super) primary: Option<String>,
    /// The slot ranges it serves, inclusive.
    pub(super) slots: Vec<(u32, u32)>,
}

impl ClusterNode {
    pub(super) fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// `CLUSTER NODES` as lines (`<id> <ip:port@bus[,host]> <flags> <primary>
/// <ping> <pong> <epoch> <link> <slot>...`).
pub(super) fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(ClusterNode {
                id: fields[0].to_string(),
                port,
                flags: fields[2].split(',').map(str::to_string).collect(),
                primary: (fields[3] != "-").then(|| fields[3].to_string()),
                slots,
            })
        })
        .collect()
}

/// How many nodes each shard of a `CLUSTER SHARDS` reply lists (each
/// shard is `slots`, its ranges, `nodes`, its nodes; a map in RESP3).
pub(super) fn shard_sizes(reply: &redis::Value) -> Vec<usize> {
    let redis::Value::Array(shards) = reply else { return Vec::new() };
    shards
        .iter()
        .map(|shard| {
            let fields: Vec<(&redis::Value, &redis::Value)> = match shard {
                redis::Value::Array(items) => {
                    items.chunks(2).filter_map(|p| Some((p.first()?, p.get(1)?))).collect()
                }
                redis::Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
                _ => Vec::new(),
            };
            fields
                .into_iter()
                .find(|(key, _)| {
                    redis::from_redis_value::<String>((*key).clone()).is_ok_and(|k| k == "nodes")
                })
                .map_or(0, |(_, nodes)| match nodes {
                    redis::Value::Array(nodes) => nodes.len(),
                    _ => 0,
                })
        })
        .collect()
}

/// Shard `shard`'s even share of the slots among `shards`, inclusive.
pub(super) fn slot_range(shard: u8, shards: u8) -> (u32, u32) {
    let (s, n) = (u32::from(shard), u32::from(shards.max(1)));
    (s * SLOTS / n, (s + 1) * SLOTS / n - 1)
}

/// The parts of `want` that none of `owned` covers, as inclusive ranges.
pub(super) fn missing_ranges(want: (u32, u32), owned: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut missing = Vec::new();
    let mut start = None;
    for slot in want.0..=want.1 {
        let covered = owned.iter().any(|&(a, b)| (a..=b).contains(&slot));
        match (covered, start) {
            (false, None) => start = Some(slot),
            (true, Some(s)) => {
                missing.push((s, slot - 1));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        missing.push((s, want.1));
    }
    missing
}

impl LocalCacheProvider {
    /// An admin connection to the server of place `place`.
    pub(super) async fn node_connection(
        &self,
        record: &Record,
        place: usize,
        tls: Option<&Tls>,
        password: &SecretString,
    ) -> Result<MultiplexedConnection, ProviderError> {
        let port = record.nodes[place].port;
        connect(port, tls, ADMIN_USER, password).await.map_err(|e| {
            redis_failure(
                &format!(
                    "could not reach {} for instance {} on {HOST}:{port} as {ADMIN_USER}",
                    record.engine.as_str(),
                    record.instance_id
                ),
                &e,
                std::slice::from_ref(password),
            )
        })
    }

    /// What is left once every server answers: replication's login,
    /// replicas attached or the cluster formed, a restored snapshot taken
    /// in. `Done` when the instance is whole.
    pub(super) async fn converge(
        &self,
        mut record: Record,
        paths: &Paths,
    ) -> Result<Progress, ProviderError> {
        if record.engine.speaks_redis() && (record.nodes.len() > 1 || record.cluster_mode) {
            let password = self.admin_password(&record).await?;
            let tls = self.tls_of(&record)?;
            let mut connections = Vec::with_capacity(record.nodes.len());
            for place in 0..record.nodes.len() {
                let mut connection = self.node_connection(&record, place, tls.as_deref(), &password).await?;
                set_primary_login(&mut connection, &record, &password).await?;
                connections.push(connection);
            }
            let progress = if record.cluster_mode {
                self.form_cluster(&mut record, paths, &mut connections).await?
            } else {
                attach_replicas(&record, &mut connections).await?
            };
            if let Progress::Working { .. } = progress {
                return Ok(progress);
            }
        }
        self.settle(record, paths).await
    }

    /// The cluster of a cluster-mode instance, formed the first time, and
    /// `Done` once every node says `cluster_state:ok`.
    async fn form_cluster(
        &self,
        record: &mut Record,
        paths: &Paths,
        connections: &mut [MultiplexedConnection],
    ) -> Result<Progress, ProviderError> {
        let id = record.instance_id.clone();
        let failed = |what: &str, e: &RedisError| redis_failure(&format!("{what} of instance {id}"), e, &[]);
        let deadline = Instant::now() + CONVERGE_WAIT;
        if !record.formed {
            let shards = Layout::of_record(record).shards;
            let mut ids = Vec::with_capacity(connections.len());
            for (place, connection) in connections.iter_mut().enumerate() {
                let node_id: String =
                    ask(connection, &["CLUSTER", "MYID"], "could not read the cluster id of a node", &id)
                        .await?;
                let node = &record.nodes[place];
                if !node.replica {
                    let text: String =
                        ask(connection, &["CLUSTER", "NODES"], "could not read the cluster nodes", &id)
                            .await?;
                    let owned: Vec<(u32, u32)> = parse_cluster_nodes(&text)
                        .into_iter()
                        .find(|n| n.has("myself"))
                        .map(|n| n.slots)
                        .unwrap_or_default();
                    let missing = missing_ranges(slot_range(node.shard, shards), &owned);
                    if !missing.is_empty() {
                        let mut add = redis::cmd("CLUSTER");
                        add.arg("ADDSLOTSRANGE");
                        for (a, b) in &missing {
                            add.arg(*a).arg(*b);
                        }
                        add.query_async::<()>(connection)
                            .await
                            .map_err(|e| failed("could not assign the slots of a shard", &e))?;
                    }
                }
                ids.push(node_id);
            }
            // The first node meets every other; gossip does the rest.
            for node in &record.nodes[1..] {
                let bus = node.bus_port.unwrap_or_default();
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg(HOST)
                    .arg(node.port)
                    .arg(bus)
                    .query_async::<()>(&mut connections[0])
                    .await
                    .map_err(|e| failed("could not join the nodes into a cluster", &e))?;
            }
            loop {
                let mut all_known = true;
                for connection in connections.iter_mut() {
                    let text: String =
                        ask(connection, &["CLUSTER", "NODES"], "could not read the cluster nodes", &id)
                            .await?;
                    let known = parse_cluster_nodes(&text)
                        .iter()
                        .filter(|n| !n.has("handshake") && !n.has("noaddr"))
                        .count();
                    all_known &= known >= ids.len();
                }
                if all_known {
                    break;
                }
                if Instant::now() >= deadline {
                    return Ok(Progress::Working {
                        detail: format!("the {} nodes of instance {id} are meeting", ids.len()),
                    });
                }
                sleep(POLL).await;
            }
            for (node, connection) in record.nodes.iter().zip(connections.iter_mut()) {
                if !node.replica {
                    continue;
                }
                let primary_place =
                    record.nodes.iter().position(|n| n.shard == node.shard && !n.replica).ok_or_else(
                        || ProviderError::Permanent(format!("instance {id}: shard has no primary")),
                    )?;
                let text: String =
                    ask(connection, &["CLUSTER", "NODES"], "could not read the cluster nodes", &id).await?;
                let me = parse_cluster_nodes(&text).into_iter().find(|n| n.has("myself"));
                if me.is_some_and(|me| me.primary.as_deref() == Some(ids[primary_place].as_str())) {
                    continue;
                }
                redis::cmd("CLUSTER")
                    .arg("REPLICATE")
                    .arg(&ids[primary_place])
                    .query_async::<()>(connection)
                    .await
                    .map_err(|e| failed("could not attach a replica to its shard's primary", &e))?;
            }
        }
        let replicas = record.nodes.iter().filter(|n| n.replica).count();
        let layout = Layout::of_record(record);
        let per_shard = 1 + usize::from(layout.replicas);
        loop {
            let mut waiting = None;
            for (place, connection) in connections.iter_mut().enumerate() {
                let info: String =
                    ask(connection, &["CLUSTER", "INFO"], "could not read the cluster state", &id).await?;
                if info_field(&info, "cluster_state") != "ok" {
                    waiting = Some(format!(
                        "node {place} says cluster_state:{}",
                        info_field(&info, "cluster_state")
                    ));
                    break;
                }
                // Every node must know every replica as one, or it would
                // leave the replica out of what it tells cluster clients.
                let text: String =
                    ask(connection, &["CLUSTER", "NODES"], "could not read the cluster nodes", &id).await?;
                let known =
                    parse_cluster_nodes(&text).iter().filter(|n| n.has("slave") && !n.has("fail")).count();
                if known < replicas {
                    waiting = Some(format!("node {place} knows {known} of the {replicas} replicas"));
                    break;
                }
                // And see each replica in its primary's shard: a node that
                // saves its view while a replica's shard id is still its
                // own (Valkey 8.0.1 does) cannot start from it again
                // ("corrupted cluster config file").
                let shards: redis::Value =
                    ask(connection, &["CLUSTER", "SHARDS"], "could not read the cluster shards", &id).await?;
                let sizes = shard_sizes(&shards);
                if sizes.len() != usize::from(layout.shards) || sizes.iter().any(|&n| n != per_shard) {
                    waiting = Some(format!("node {place} sees shards of {sizes:?} nodes"));
                    break;
                }
                let replication: String =
                    ask(connection, &["INFO", "replication"], "could not read the replication state", &id)
                        .await?;
                if info_field(&replication, "role") == "slave"
                    && info_field(&replication, "master_link_status") != "up"
                {
                    waiting =
                        Some(format!("the replica at node {place} is not in sync with its primary yet"));
                    break;
                }
            }
            match waiting {
                None => break,
                Some(detail) if Instant::now() >= deadline => {
                    return Ok(Progress::Working { detail: format!("instance {id}'s cluster: {detail}") });
                }
                Some(_) => sleep(POLL).await,
            }
        }
        if !record.formed {
            record.formed = true;
            write_record(paths, record)?;
            tracing::info!(instance_id = %id, nodes = record.nodes.len(), "local cluster formed");
        }
        Ok(Progress::Done)
    }

    /// Test failover of one shard (`shard`), as planned: see the module
    /// documentation. `before` is what the shard's primary was when the
    /// action was planned (a node id in cluster mode, the directory
    /// serving the primary's place without); nothing is done once the
    /// shard's primary is another.
    pub(super) async fn fail_over(
        &self,
        instance_id: &str,
        shard: u8,
        before: Option<&str>,
    ) -> Result<Progress, ProviderError> {
        let _guard = self.lock(instance_id).await;
        let (paths, mut record) = self.existing(instance_id)?;
        // The servers run and follow their primaries before anything else:
        // a repeat after a stop that failed half way finds some down, and
        // starts them again on the places as recorded. Until the instance
        // is whole the start is retried later (as a failed call is).
        let whole = if self.node_pids(&record, &paths).iter().any(Option::is_none) {
            self.start(record, &paths).await?
        } else {
            self.converge(record, &paths).await?
        };
        if let Progress::Working { detail } = whole {
            return Err(ProviderError::Retryable(format!(
                "the failover of instance {instance_id} waits for it to be whole: {detail}"
            )));
        }
        record = self.existing(instance_id)?.1;
        let password = self.admin_password(&record).await?;
        let tls = self.tls_of(&record)?;
        if record.cluster_mode {
            if self.shard_primary(&record, shard).await?.as_deref() != before {
                return Ok(Progress::Done);
            }
            if !record.nodes.iter().any(|n| n.shard == shard && n.replica) {
                return Err(ProviderError::Permanent(format!(
                    "shard {} of instance {instance_id} has no replica to fail over to",
                    shard + 1
                )));
            }
            // The node made a replica may be the primary after an earlier
            // test: the shard's replica is whichever says so now.
            let mut target = None;
            for place in (0..record.nodes.len()).filter(|&p| record.nodes[p].shard == shard) {
                let mut c = self.node_connection(&record, place, tls.as_deref(), &password).await?;
                let info: String =
                    redis::cmd("INFO").arg("replication").query_async(&mut c).await.map_err(|e| {
                        redis_failure(&format!("could not read the role of a node of {instance_id}"), &e, &[])
                    })?;
                if info_field(&info, "role") == "slave" {
                    target = Some(place);
                    break;
                }
            }
            let Some(target) = target else {
                return Ok(Progress::Working {
                    detail: format!(
                        "shard {} of instance {instance_id} has no replica in sync yet",
                        shard + 1
                    ),
                });
            };
            let mut c = self.node_connection(&record, target, tls.as_deref(), &password).await?;
            redis::cmd("CLUSTER").arg("FAILOVER").query_async::<()>(&mut c).await.map_err(|e| {
                redis_failure(
                    &format!("could not start the failover of shard {} of {instance_id}", shard + 1),
                    &e,
                    &[],
                )
            })?;
            tracing::info!(instance_id, shard = shard + 1, node = target, "cluster failover started");
            return Ok(Progress::Working { detail: format!("shard {} is failing over", shard + 1) });
        }
        if Some(record.nodes[0].dir.to_string().as_str()) != before {
            return Ok(Progress::Done);
        }
        let reader = record.nodes.iter().position(|n| n.replica).ok_or_else(|| {
            ProviderError::Permanent(format!("instance {instance_id} has no replica to fail over to"))
        })?;
        let mut promoted = self.node_connection(&record, reader, tls.as_deref(), &password).await?;
        let role = |info: &str| info_field(info, "role").to_string();
        let info: String =
            redis::cmd("INFO").arg("replication").query_async(&mut promoted).await.map_err(|e| {
                redis_failure(&format!("could not read the role of a replica of {instance_id}"), &e, &[])
            })?;
        if role(&info) != "master" {
            let mut primary = self.node_connection(&record, 0, tls.as_deref(), &password).await?;
            redis::cmd("FAILOVER")
                .arg("TO")
                .arg(HOST)
                .arg(record.nodes[reader].port)
                .arg("TIMEOUT")
                .arg(10_000)
                .query_async::<()>(&mut primary)
                .await
                .map_err(|e| {
                    redis_failure(&format!("could not start the failover of {instance_id}"), &e, &[])
                })?;
            let deadline = Instant::now() + CONVERGE_WAIT;
            loop {
                let info: String =
                    redis::cmd("INFO").arg("replication").query_async(&mut promoted).await.map_err(|e| {
                        redis_failure(
                            &format!("could not read the role of a replica of {instance_id}"),
                            &e,
                            &[],
                        )
                    })?;
                if role(&info) == "master" {
                    break;
                }
                if Instant::now() >= deadline {
                    return Ok(Progress::Working {
                        detail: format!("the replica of {instance_id} is taking over from its primary"),
                    });
                }
                sleep(POLL).await;
            }
        }
        // The promoted data takes the primary's place (and port), the old
        // primary's data the replica's.
        self.stop_places(&record, &paths, &[0, reader]).await?;
        let (old, new) = (record.nodes[0].dir, record.nodes[reader].dir);
        record.nodes[0].dir = new;
        record.nodes[reader].dir = old;
        record.nodes[0].pid = None;
        record.nodes[reader].pid = None;
        write_record(&paths, &record)?;
        tracing::info!(instance_id, promoted = new, demoted = old, "failed over to the replica");
        self.start(record, &paths).await
    }

    /// The node id of shard `shard`'s primary as the cluster says now.
    pub(super) async fn shard_primary(
        &self,
        record: &Record,
        shard: u8,
    ) -> Result<Option<String>, ProviderError> {
        let password = self.admin_password(record).await?;
        let tls = self.tls_of(record)?;
        let ports: Vec<u16> = record.nodes.iter().filter(|n| n.shard == shard).map(|n| n.port).collect();
        for place in 0..record.nodes.len() {
            let Ok(mut c) = self.node_connection(record, place, tls.as_deref(), &password).await else {
                continue;
            };
            let Ok(text) = redis::cmd("CLUSTER").arg("NODES").query_async::<String>(&mut c).await else {
                continue;
            };
            return Ok(parse_cluster_nodes(&text)
                .into_iter()
                .find(|n| ports.contains(&n.port) && n.has("master") && !n.has("fail"))
                .map(|n| n.id));
        }
        Err(ProviderError::Retryable(format!("no node of instance {} answers", record.instance_id)))
    }
}

/// `args` as one command on `connection`; a failure says `what` could not
/// be done on instance `id`.
async fn ask<T: redis::FromRedisValue>(
    connection: &mut MultiplexedConnection,
    args: &[&str],
    what: &str,
    id: &str,
) -> Result<T, ProviderError> {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command
        .query_async(connection)
        .await
        .map_err(|e| redis_failure(&format!("{what} of instance {id}"), &e, &[]))
}

/// Every server logs in to its primary as the admin user: set after each
/// start and after an admin rotation, never written to a file.
pub(super) async fn set_primary_login(
    connection: &mut MultiplexedConnection,
    record: &Record,
    password: &SecretString,
) -> Result<(), ProviderError> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("masteruser")
        .arg(ADMIN_USER)
        .arg("masterauth")
        .arg(password.expose_secret())
        .query_async::<()>(connection)
        .await
        .map_err(|e| {
            redis_failure(
                &format!("could not give a server of instance {} its primary's login", record.instance_id),
                &e,
                std::slice::from_ref(password),
            )
        })
}

/// Without cluster mode: the primary's place is a primary, each replica
/// follows it; `Done` once every replica's link is up.
async fn attach_replicas(
    record: &Record,
    connections: &mut [MultiplexedConnection],
) -> Result<Progress, ProviderError> {
    let id = &record.instance_id;
    let failed = |what: &str, e: &RedisError| redis_failure(&format!("{what} of instance {id}"), e, &[]);
    let primary_port = record.nodes[0].port;
    for (place, connection) in connections.iter_mut().enumerate() {
        let info: String =
            ask(connection, &["INFO", "replication"], "could not read the replication state", id).await?;
        let replica = record.nodes[place].replica;
        let follows = info_field(&info, "role") == "slave"
            && info_field(&info, "master_host") == HOST
            && info_field(&info, "master_port") == primary_port.to_string();
        if !replica && info_field(&info, "role") != "master" {
            redis::cmd("REPLICAOF")
                .arg("NO")
                .arg("ONE")
                .query_async::<()>(connection)
                .await
                .map_err(|e| failed("could not make the primary a primary", &e))?;
        } else if replica && !follows {
            redis::cmd("REPLICAOF")
                .arg(HOST)
                .arg(primary_port)
                .query_async::<()>(connection)
                .await
                .map_err(|e| failed("could not attach a replica to its primary", &e))?;
            tracing::info!(instance_id = %id, node = place, primary_port, "replica attached");
        }
    }
    let deadline = Instant::now() + CONVERGE_WAIT;
    loop {
        let mut waiting = None;
        for (place, connection) in
            connections.iter_mut().enumerate().filter(|(p, _)| record.nodes[*p].replica)
        {
            let info: String =
                ask(connection, &["INFO", "replication"], "could not read the replication state", id).await?;
            if info_field(&info, "master_link_status") != "up" {
                waiting = Some(place);
                break;
            }
        }
        match waiting {
            None => return Ok(Progress::Done),
            Some(place) if Instant::now() >= deadline => {
                return Ok(Progress::Working {
                    detail: format!(
                        "the replica at node {place} of instance {id} is not in sync with its primary yet"
                    ),
                });
            }
            Some(_) => sleep(POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_evenly_and_only_the_missing_ones_are_added() {
        assert_eq!(slot_range(0, 1), (0, 16_383));
        assert_eq!(
            [slot_range(0, 3), slot_range(1, 3), slot_range(2, 3)],
            [(0, 5460), (5461, 10_921), (10_922, 16_383)]
        );
        assert_eq!(missing_ranges((0, 10), &[]), [(0, 10)]);
        assert_eq!(missing_ranges((0, 10), &[(3, 4), (7, 7)]), [(0, 2), (5, 6), (8, 10)]);
        assert_eq!(missing_ranges((0, 10), &[(0, 20)]), []);
    }

    #[test]
    fn cluster_shards_replies_give_the_nodes_of_each_shard() {
        use redis::Value::{Array, BulkString, Int};
        let text = |s: &str| BulkString(s.as_bytes().to_vec());
        let shard = |nodes: usize| {
            Array(vec![
                text("slots"),
                Array(vec![Int(0), Int(5460)]),
                text("nodes"),
                Array((0..nodes).map(|_| Array(vec![text("id"), text("abc")])).collect()),
            ])
        };
        assert_eq!(shard_sizes(&Array(vec![shard(2), shard(2), shard(1)])), [2, 2, 1]);
        assert_eq!(shard_sizes(&Int(0)), Vec::<usize>::new());
    }

    #[test]
    fn cluster_nodes_lines_give_ids_ports_roles_and_slots() {
        let text = "07c3 127.0.0.1:30004@31004 slave e7d1 0 1426238317239 4 connected\n\
                    e7d1 127.0.0.1:30001@31001,host myself,master - 0 0 1 connected 0-5460 5500 [5461->-abc]\n";
        let nodes = parse_cluster_nodes(text);
        assert_eq!(nodes.len(), 2);
        assert_eq!((nodes[0].port, nodes[0].primary.as_deref()), (30004, Some("e7d1")));
        assert!(nodes[1].has("myself") && nodes[1].has("master"));
        assert_eq!(nodes[1].slots, [(0, 5460), (5500, 5500)]);
    }
}
