//! Day-2 actions: named snapshots, restore and the deletion of named
//! snapshots with their instance against moto (which implements
//! CreateSnapshot, DescribeSnapshots and DeleteSnapshot); RebootCacheCluster
//! and TestFailover, which moto lacks, against aws-smithy-mocks with the
//! response shapes of the ElastiCache API reference, asserting the order
//! of the calls.

use std::sync::{Arc, Mutex};

use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::operation::batch_apply_update_action::BatchApplyUpdateActionOutput;
use aws_sdk_elasticache::operation::describe_cache_clusters::DescribeCacheClustersOutput;
use aws_sdk_elasticache::operation::describe_events::DescribeEventsOutput;
use aws_sdk_elasticache::operation::describe_replication_groups::DescribeReplicationGroupsOutput;
use aws_sdk_elasticache::operation::describe_update_actions::DescribeUpdateActionsOutput;
use aws_sdk_elasticache::operation::reboot_cache_cluster::RebootCacheClusterOutput;
use aws_sdk_elasticache::operation::test_failover::{TestFailoverError, TestFailoverOutput};
use aws_sdk_elasticache::types::error::TestFailoverNotAvailableFault;
use aws_sdk_elasticache::types::{
    AutomaticFailoverStatus, CacheCluster, CacheNode, Event, NodeGroup, NodeGroupMember, ReplicationGroup,
    SourceType,
};
use aws_sdk_elasticache::types::{
    ProcessedUpdateAction, ServiceUpdateStatus, UnprocessedUpdateAction, UpdateAction, UpdateActionStatus,
};
use aws_smithy_mocks::mock;

use super::{DEPROVISION, INSTANCE, meta, mocked, moto, provider_on, secrets_with_admin, spec};
use crate::elasticache::ElastiCacheProvider;
use broker_core::domain::{Action, ActionStep, SnapshotKind};
use broker_core::ports::{CacheProvider, Progress, ProviderError};

// ------------------------------------------------------------------ moto

/// Runs `action` as the worker does: plans it, then starts and waits for
/// each unit in turn; returns the units.
async fn run(provider: &ElastiCacheProvider, instance: &str, action: &Action) -> Vec<ActionStep> {
    let units = provider.plan_action(instance, action).await.unwrap();
    for unit in &units {
        provider.start_action(instance, action, unit).await.unwrap();
        let mut waited = 0;
        while let Progress::Working { detail } =
            provider.action_progress(instance, action, unit).await.unwrap()
        {
            waited += 1;
            assert!(waited < 5, "{} never finished: {detail}", unit.target);
        }
    }
    units
}

#[tokio::test]
async fn a_named_snapshot_is_taken_of_the_group_listed_by_its_name_and_deleted() {
    let m = moto().await;
    m.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    let snapshot = Action::Snapshot { name: "nightly".into() };

    let units = run(&m.provider, INSTANCE, &snapshot).await;
    let aws_name = format!("osb-s-{}-nightly", crate::elasticache::names::hash(INSTANCE.as_bytes()));
    assert_eq!(units, vec![ActionStep::on(&aws_name)]);
    let taken = m.aws.describe_snapshots().snapshot_name(&aws_name).send().await.unwrap();
    assert_eq!(taken.snapshots()[0].replication_group_id(), Some(m.provider.cache_id(INSTANCE).as_str()));
    // Started again (a job delivered twice): the snapshot is this group's,
    // so nothing fails and nothing is taken twice.
    assert_eq!(m.provider.start_action(INSTANCE, &snapshot, &units[0]).await.unwrap(), Progress::Done);

    let listed = m.provider.snapshots(INSTANCE, None).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].name.as_str(), listed[0].kind, listed[0].status.as_str()),
        ("nightly", SnapshotKind::Named, "available")
    );
    assert!(
        listed[0].reference.ends_with(&format!(":snapshot:{aws_name}")),
        "restores name it by ARN: {listed:?}"
    );

    run(&m.provider, INSTANCE, &Action::DeleteSnapshot { name: "nightly".into() }).await;
    assert!(m.provider.snapshots(INSTANCE, None).await.unwrap().is_empty());
    // Deleted again: gone is done.
    let unit = ActionStep::on(&aws_name);
    let again =
        m.provider.start_action(INSTANCE, &Action::DeleteSnapshot { name: "nightly".into() }, &unit).await;
    assert_eq!(again.unwrap(), Progress::Done);
}

#[tokio::test]
async fn another_groups_snapshot_under_the_name_is_not_taken_for_ours() {
    let m = moto().await;
    m.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    let other = "0b7d4c1e-other-instance";
    m.provider.create(&spec(other, "elasticache-redis", "small")).await.unwrap();
    let aws_name = format!("osb-s-{}-nightly", crate::elasticache::names::hash(INSTANCE.as_bytes()));
    m.aws
        .create_snapshot()
        .snapshot_name(&aws_name)
        .replication_group_id(m.provider.cache_id(other))
        .send()
        .await
        .unwrap();
    let why = m
        .provider
        .start_action(INSTANCE, &Action::Snapshot { name: "nightly".into() }, &ActionStep::on(&aws_name))
        .await
        .unwrap_err();
    assert!(
        matches!(&why, ProviderError::Permanent(w) if w.contains("is not of replication group")),
        "{why:?}"
    );
}

#[tokio::test]
async fn a_restore_names_the_snapshot_in_create_replication_group() {
    let m = moto().await;
    m.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    run(&m.provider, INSTANCE, &Action::Snapshot { name: "nightly".into() }).await;
    let reference = m.provider.snapshots(INSTANCE, None).await.unwrap()[0].reference.clone();

    let restored = "a4c0e8f2-restored-instance";
    let mut wanted = spec(restored, "elasticache-redis", "medium");
    wanted.restore = Some(reference.clone());
    m.provider.create(&wanted).await.unwrap();
    let sent: Vec<Option<String>> =
        m.created.0.lock().unwrap().iter().map(|c| c.snapshot_name().map(str::to_string)).collect();
    let name = reference.rsplit(':').next().unwrap().to_string();
    assert_eq!(sent, vec![None, Some(name)], "named by its name, from the ARN {reference}");
}

#[tokio::test]
async fn a_deprovision_deletes_the_named_snapshots_before_the_group_and_keeps_the_final_one() {
    let m = moto().await;
    m.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    run(&m.provider, INSTANCE, &Action::Snapshot { name: "one".into() }).await;
    run(&m.provider, INSTANCE, &Action::Snapshot { name: "two".into() }).await;
    // moto takes no final snapshot on delete: one is made under the name a
    // deprovision asks for, as ElastiCache would.
    let names = crate::elasticache::names::Names::new("osb");
    let final_name = names.final_snapshot(INSTANCE, DEPROVISION);
    m.aws
        .create_snapshot()
        .snapshot_name(&final_name)
        .replication_group_id(m.provider.cache_id(INSTANCE))
        .send()
        .await
        .unwrap();

    let Progress::Working { detail } = m.provider.delete(INSTANCE, Some(DEPROVISION)).await.unwrap() else {
        panic!("done at once")
    };
    assert_eq!(detail, "deleting the instance's snapshots (one, two)");
    assert_eq!(m.group(INSTANCE).await.status(), Some("available"), "the group waits for its snapshots");
    let Progress::Working { detail } = m.provider.delete(INSTANCE, Some(DEPROVISION)).await.unwrap() else {
        panic!("done")
    };
    assert!(detail.starts_with("deleting replication group"), "{detail}");
    m.gone.lock().unwrap().insert(m.provider.cache_id(INSTANCE));

    let left = m.provider.snapshots(INSTANCE, Some(DEPROVISION)).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!((left[0].kind, left[0].name.as_str()), (SnapshotKind::Final, final_name.as_str()));
}

// ------------------------------------------------------------------ mocks

const GROUP_MEMBERS: [&str; 3] = ["001", "002", "003"];

fn group_id() -> String {
    crate::elasticache::names::Names::new("osb").cache(INSTANCE)
}

/// A cluster-mode disabled group of three members whose primary is
/// `primary` (a member suffix), `available`, as DescribeReplicationGroups
/// returns it (CurrentRole is only given in this mode).
fn replicated(primary: &str) -> ReplicationGroup {
    let id = group_id();
    let members: Vec<NodeGroupMember> = GROUP_MEMBERS
        .iter()
        .map(|m| {
            NodeGroupMember::builder()
                .cache_cluster_id(format!("{id}-{m}"))
                .cache_node_id("0001")
                .current_role(if *m == primary { "primary" } else { "replica" })
                .build()
        })
        .collect();
    ReplicationGroup::builder()
        .replication_group_id(&id)
        .status("available")
        .set_member_clusters(Some(GROUP_MEMBERS.iter().map(|m| format!("{id}-{m}")).collect()))
        .node_groups(
            NodeGroup::builder()
                .node_group_id("0001")
                .status("available")
                .set_node_group_members(Some(members))
                .build(),
        )
        .automatic_failover(AutomaticFailoverStatus::Enabled)
        .cluster_enabled(false)
        .build()
}

/// A cluster-mode group of `shards` node groups (no roles given).
fn sharded(shards: usize) -> ReplicationGroup {
    let id = group_id();
    let groups: Vec<NodeGroup> = (1..=shards)
        .map(|s| {
            NodeGroup::builder()
                .node_group_id(format!("{s:04}"))
                .status("available")
                .node_group_members(
                    NodeGroupMember::builder().cache_cluster_id(format!("{id}-{s:04}-001")).build(),
                )
                .node_group_members(
                    NodeGroupMember::builder().cache_cluster_id(format!("{id}-{s:04}-002")).build(),
                )
                .build()
        })
        .collect();
    ReplicationGroup::builder()
        .replication_group_id(&id)
        .status("available")
        .set_node_groups(Some(groups))
        .automatic_failover(AutomaticFailoverStatus::Enabled)
        .cluster_enabled(true)
        .build()
}

/// A member cluster of one node in `status` (its node `available` unless
/// the cluster is rebooting).
fn member(id: &str, status: &str) -> CacheCluster {
    CacheCluster::builder()
        .cache_cluster_id(id)
        .cache_cluster_status(status)
        .cache_nodes(
            CacheNode::builder()
                .cache_node_id("0001")
                .cache_node_status(if status == "available" { "available" } else { "rebooting" })
                .build(),
        )
        .build()
}

#[tokio::test]
async fn a_restart_reboots_the_replicas_then_the_primary_one_at_a_time_waiting_for_each() {
    let rebooting: Arc<Mutex<Option<String>>> = Arc::default();
    let order: Arc<Mutex<Vec<String>>> = Arc::default();
    let describe_group = mock!(Client::describe_replication_groups).then_output(|| {
        DescribeReplicationGroupsOutput::builder().replication_groups(replicated("002")).build()
    });
    // A cluster rebooting says so once after its reboot was asked for, then
    // is available again.
    let state = rebooting.clone();
    let describe_cluster = mock!(Client::describe_cache_clusters).then_output(move || {
        let mut state = state.lock().unwrap();
        let cluster = match state.take() {
            Some(id) => member(&id, "rebooting cluster nodes"),
            None => member("any", "available"),
        };
        DescribeCacheClustersOutput::builder().cache_clusters(cluster).build()
    });
    let (state, seen) = (rebooting.clone(), order.clone());
    let reboot = mock!(Client::reboot_cache_cluster)
        .match_requests(move |req| {
            assert_eq!(req.cache_node_ids_to_reboot(), ["0001".to_string()], "every node of the member");
            let id = req.cache_cluster_id().unwrap_or_default().to_string();
            seen.lock().unwrap().push(id.clone());
            *state.lock().unwrap() = Some(id);
            true
        })
        .then_output(|| RebootCacheClusterOutput::builder().build());
    let provider =
        provider_on(mocked(&[&describe_group, &describe_cluster, &reboot]), secrets_with_admin().await);

    let units = provider.plan_action(INSTANCE, &Action::Restart).await.unwrap();
    let id = group_id();
    let expected: Vec<String> = ["001", "003", "002"].iter().map(|m| format!("{id}-{m}")).collect();
    assert_eq!(units.iter().map(|u| u.target.clone()).collect::<Vec<_>>(), expected, "replicas first");
    for unit in &units {
        let started = provider.start_action(INSTANCE, &Action::Restart, unit).await.unwrap();
        assert!(matches!(started, Progress::Working { .. }), "{started:?}");
        let first = provider.action_progress(INSTANCE, &Action::Restart, unit).await.unwrap();
        assert_eq!(
            first,
            Progress::Working { detail: format!("cache cluster {} is rebooting cluster nodes", unit.target) }
        );
        assert_eq!(provider.action_progress(INSTANCE, &Action::Restart, unit).await.unwrap(), Progress::Done);
    }
    assert_eq!(*order.lock().unwrap(), expected);
    assert_eq!(reboot.num_calls(), 3);
}

#[tokio::test]
async fn a_member_already_rebooting_is_not_asked_again() {
    let id = group_id();
    let describe_cluster = mock!(Client::describe_cache_clusters).then_output(move || {
        DescribeCacheClustersOutput::builder()
            .cache_clusters(member(&format!("{}-001", group_id()), "rebooting cluster nodes"))
            .build()
    });
    let reboot =
        mock!(Client::reboot_cache_cluster).then_output(|| RebootCacheClusterOutput::builder().build());
    let provider = provider_on(mocked(&[&describe_cluster, &reboot]), secrets_with_admin().await);
    let started =
        provider.start_action(INSTANCE, &Action::Restart, &ActionStep::on(format!("{id}-001"))).await;
    assert!(matches!(started, Ok(Progress::Working { .. })), "{started:?}");
    assert_eq!(reboot.num_calls(), 0);
}

#[tokio::test]
async fn a_cluster_mode_group_is_not_rebooted() {
    let describe_group = mock!(Client::describe_replication_groups)
        .then_output(|| DescribeReplicationGroupsOutput::builder().replication_groups(sharded(3)).build());
    let provider = provider_on(mocked(&[&describe_group]), secrets_with_admin().await);
    let why = provider.plan_action(INSTANCE, &Action::Restart).await.unwrap_err();
    assert!(matches!(&why, ProviderError::Permanent(w) if w.contains("cluster mode")), "{why:?}");
}

#[tokio::test]
async fn a_failover_test_is_done_when_the_node_group_has_another_primary() {
    let primary = Arc::new(Mutex::new("001".to_string()));
    let now = primary.clone();
    let describe_group = mock!(Client::describe_replication_groups).then_output(move || {
        DescribeReplicationGroupsOutput::builder()
            .replication_groups(replicated(&now.lock().unwrap()))
            .build()
    });
    let failover = mock!(Client::test_failover)
        .match_requests(|req| {
            req.replication_group_id() == Some(group_id().as_str()) && req.node_group_id() == Some("0001")
        })
        .then_output(|| TestFailoverOutput::builder().build());
    let provider = provider_on(mocked(&[&describe_group, &failover]), secrets_with_admin().await);

    let units = provider.plan_action(INSTANCE, &Action::TestFailover).await.unwrap();
    assert_eq!(
        units,
        vec![ActionStep { target: "0001".into(), before: Some(format!("{}-001", group_id())) }]
    );
    let started = provider.start_action(INSTANCE, &Action::TestFailover, &units[0]).await.unwrap();
    assert!(matches!(started, Progress::Working { .. }));
    assert_eq!(failover.num_calls(), 1);
    // The group stays available while ElastiCache fails over: the old
    // primary still answering as primary is not done.
    let waiting = provider.action_progress(INSTANCE, &Action::TestFailover, &units[0]).await.unwrap();
    assert!(
        matches!(&waiting, Progress::Working { detail } if detail.contains("still has primary")),
        "{waiting:?}"
    );
    *primary.lock().unwrap() = "003".into();
    assert_eq!(
        provider.action_progress(INSTANCE, &Action::TestFailover, &units[0]).await.unwrap(),
        Progress::Done
    );
}

#[tokio::test]
async fn a_cluster_mode_failover_test_goes_shard_by_shard_and_reads_the_groups_events() {
    let describe_group = mock!(Client::describe_replication_groups)
        .then_output(|| DescribeReplicationGroupsOutput::builder().replication_groups(sharded(3)).build());
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = asked.clone();
    let failover = mock!(Client::test_failover)
        .match_requests(move |req| {
            seen.lock().unwrap().push(req.node_group_id().unwrap_or_default().to_string());
            true
        })
        .then_output(|| TestFailoverOutput::builder().build());
    // ElastiCache's events: shard 0001 failed over; 0002 not yet.
    let events = mock!(Client::describe_events)
        .match_requests(|req| {
            req.source_identifier() == Some(group_id().as_str())
                && req.source_type() == Some(&SourceType::ReplicationGroup)
        })
        .then_output(|| {
            let id = group_id();
            DescribeEventsOutput::builder()
                .events(Event::builder().message("Test Failover API called for node group 0001").build())
                .events(
                    Event::builder()
                        .message(format!(
                            "Failover from primary node {id}-0001-001 to replica node {id}-0001-002 completed"
                        ))
                        .build(),
                )
                .events(Event::builder().message("Test Failover API called for node group 0002").build())
                .build()
        });
    let provider = provider_on(mocked(&[&describe_group, &failover, &events]), secrets_with_admin().await);

    let units = provider.plan_action(INSTANCE, &Action::TestFailover).await.unwrap();
    assert_eq!(units.iter().map(|u| u.target.as_str()).collect::<Vec<_>>(), ["0001", "0002", "0003"]);
    assert!(units.iter().all(|u| u.before.as_deref().is_some_and(|b| b.starts_with("since:"))));
    provider.start_action(INSTANCE, &Action::TestFailover, &units[0]).await.unwrap();
    assert_eq!(
        provider.action_progress(INSTANCE, &Action::TestFailover, &units[0]).await.unwrap(),
        Progress::Done
    );
    provider.start_action(INSTANCE, &Action::TestFailover, &units[1]).await.unwrap();
    let waiting = provider.action_progress(INSTANCE, &Action::TestFailover, &units[1]).await.unwrap();
    assert!(matches!(waiting, Progress::Working { .. }), "{waiting:?}");
    assert_eq!(*asked.lock().unwrap(), ["0001", "0002"]);
}

#[tokio::test]
async fn the_daily_failover_test_limit_fails_the_action_naming_the_fault() {
    let failover = mock!(Client::test_failover).then_error(|| {
        let message = "Test failover is not available: the limit of 15 node groups in 24 hours is reached.";
        TestFailoverError::TestFailoverNotAvailableFault(
            TestFailoverNotAvailableFault::builder()
                .message(message)
                .meta(meta("TestFailoverNotAvailableFault", message))
                .build(),
        )
    });
    let provider = provider_on(mocked(&[&failover]), secrets_with_admin().await);
    let unit = ActionStep { target: "0001".into(), before: Some("x-001".into()) };
    let why = provider.start_action(INSTANCE, &Action::TestFailover, &unit).await.unwrap_err();
    assert!(
        matches!(&why, ProviderError::Permanent(w) if w.starts_with("TestFailover failed: TestFailoverNotAvailableFault")),
        "{why:?}"
    );
}

/// An update action of `service_update` on the group, as
/// DescribeUpdateActions lists it.
fn update_action(service_update: &str, status: UpdateActionStatus) -> UpdateAction {
    UpdateAction::builder()
        .replication_group_id(group_id())
        .service_update_name(service_update)
        .service_update_status(ServiceUpdateStatus::Available)
        .update_action_status(status)
        .engine("redis")
        .build()
}

#[tokio::test]
async fn a_maintenance_applies_each_pending_service_update_and_waits_until_it_is_complete() {
    let applied: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = applied.clone();
    let describe_group = mock!(Client::describe_replication_groups).then_output(|| {
        DescribeReplicationGroupsOutput::builder().replication_groups(replicated("001")).build()
    });
    // What the group has: one update applied already, one waiting; the
    // waiting one in progress once it was applied, then complete.
    let state = applied.clone();
    let looks = Arc::new(Mutex::new(0));
    let describe = mock!(Client::describe_update_actions)
        .match_requests(|req| {
            req.replication_group_ids() == [group_id()]
                && req.service_update_status() == [ServiceUpdateStatus::Available]
        })
        .then_output(move || {
            let applied = !state.lock().unwrap().is_empty();
            let mut looks = looks.lock().unwrap();
            let waiting = match (applied, *looks) {
                (false, _) => UpdateActionStatus::NotApplied,
                (true, n) => {
                    *looks = n + 1;
                    if n == 0 { UpdateActionStatus::InProgress } else { UpdateActionStatus::Complete }
                }
            };
            DescribeUpdateActionsOutput::builder()
                .update_actions(update_action("elasticache-20261001-001", UpdateActionStatus::Complete))
                .update_actions(update_action("elasticache-20261115-002", waiting))
                .build()
        });
    let apply = mock!(Client::batch_apply_update_action)
        .match_requests(move |req| {
            assert_eq!(req.replication_group_ids(), [group_id()]);
            seen.lock().unwrap().push(req.service_update_name().unwrap_or_default().to_string());
            true
        })
        .then_output(|| {
            BatchApplyUpdateActionOutput::builder()
                .processed_update_actions(
                    ProcessedUpdateAction::builder()
                        .replication_group_id(group_id())
                        .service_update_name("elasticache-20261115-002")
                        .update_action_status(UpdateActionStatus::WaitingToStart)
                        .build(),
                )
                .build()
        });
    let provider = provider_on(mocked(&[&describe_group, &describe, &apply]), secrets_with_admin().await);

    let units = provider.plan_action(INSTANCE, &Action::Maintenance).await.unwrap();
    assert_eq!(units.iter().map(|u| u.target.as_str()).collect::<Vec<_>>(), ["elasticache-20261115-002"]);
    let started = provider.start_action(INSTANCE, &Action::Maintenance, &units[0]).await.unwrap();
    assert_eq!(
        started,
        Progress::Working { detail: "applying service update elasticache-20261115-002".into() }
    );
    let waiting = provider.action_progress(INSTANCE, &Action::Maintenance, &units[0]).await.unwrap();
    assert_eq!(
        waiting,
        Progress::Working { detail: "service update elasticache-20261115-002 is in-progress".into() }
    );
    assert_eq!(
        provider.action_progress(INSTANCE, &Action::Maintenance, &units[0]).await.unwrap(),
        Progress::Done
    );
    assert_eq!(*applied.lock().unwrap(), ["elasticache-20261115-002"]);
}

#[tokio::test]
async fn a_service_update_elasticache_does_not_process_fails_the_maintenance_naming_why() {
    let apply = mock!(Client::batch_apply_update_action).then_output(|| {
        BatchApplyUpdateActionOutput::builder()
            .unprocessed_update_actions(
                UnprocessedUpdateAction::builder()
                    .replication_group_id(group_id())
                    .service_update_name("elasticache-20261115-002")
                    .error_type("InvalidParameterValue")
                    .error_message("The cluster is not in an available state")
                    .build(),
            )
            .build()
    });
    let provider = provider_on(mocked(&[&apply]), secrets_with_admin().await);
    let unit =
        ActionStep { target: "elasticache-20261115-002".into(), before: Some("replication-group".into()) };
    let why = provider.start_action(INSTANCE, &Action::Maintenance, &unit).await.unwrap_err();
    assert_eq!(
        why,
        ProviderError::Permanent(format!(
            "BatchApplyUpdateAction did not apply service update elasticache-20261115-002 to {}: InvalidParameterValue: The cluster is not in an available state",
            group_id()
        ))
    );
}
