//! The provider against aws-smithy-mocks alone: the states moto never shows
//! (creating, failed, modifying) and the errors it never returns. Responses
//! have the shapes of the ElastiCache API reference; errors carry the code
//! and message the wire would.

use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::operation::add_tags_to_resource::AddTagsToResourceOutput;
use aws_sdk_elasticache::operation::create_cache_cluster::CreateCacheClusterOutput;
use aws_sdk_elasticache::operation::create_replication_group::{
    CreateReplicationGroupError, CreateReplicationGroupOutput,
};
use aws_sdk_elasticache::operation::create_user::{CreateUserError, CreateUserOutput};
use aws_sdk_elasticache::operation::create_user_group::{CreateUserGroupError, CreateUserGroupOutput};
use aws_sdk_elasticache::operation::delete_cache_cluster::DeleteCacheClusterOutput;
use aws_sdk_elasticache::operation::delete_replication_group::{
    DeleteReplicationGroupError, DeleteReplicationGroupOutput,
};
use aws_sdk_elasticache::operation::describe_cache_clusters::{
    DescribeCacheClustersError, DescribeCacheClustersOutput,
};
use aws_sdk_elasticache::operation::describe_replication_groups::{
    DescribeReplicationGroupsError, DescribeReplicationGroupsOutput,
};
use aws_sdk_elasticache::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_elasticache::operation::describe_user_groups::DescribeUserGroupsOutput;
use aws_sdk_elasticache::operation::describe_users::{DescribeUsersError, DescribeUsersOutput};
use aws_sdk_elasticache::operation::list_tags_for_resource::ListTagsForResourceOutput;
use aws_sdk_elasticache::operation::modify_replication_group::{
    ModifyReplicationGroupError, ModifyReplicationGroupOutput,
};
use aws_sdk_elasticache::operation::modify_user::{ModifyUserError, ModifyUserOutput};
use aws_sdk_elasticache::operation::modify_user_group::ModifyUserGroupOutput;
use aws_sdk_elasticache::types::error::{
    CacheClusterNotFoundFault, InsufficientCacheClusterCapacityFault, InvalidParameterValueException,
    InvalidReplicationGroupStateFault, ReplicationGroupAlreadyExistsFault, ReplicationGroupNotFoundFault,
    SnapshotAlreadyExistsFault, SnapshotQuotaExceededFault, UserAlreadyExistsFault,
    UserGroupAlreadyExistsFault, UserNotFoundFault,
};
use aws_sdk_elasticache::types::{
    AuthTokenUpdateStatus, AuthTokenUpdateStrategyType, Authentication, AuthenticationType,
    AutomaticFailoverStatus, CacheCluster, Endpoint as AwsEndpoint, MultiAzStatus, NodeGroup,
    NodeGroupMember, ReplicationGroup, ReplicationGroupPendingModifiedValues, Tag, User, UserGroup,
    UserGroupPendingChanges,
};
use aws_smithy_mocks::{Rule, mock};
use secrecy::{ExposeSecret, SecretString};

use super::{DEPROVISION, INSTANCE, meta, mocked, provider_on, secrets_with_admin, spec};
use broker_core::domain::{CacheUser, Endpoint, LogType};
use broker_core::ports::{CacheProvider, Principal, Progress, ProviderError};

/// The ids the provider uses for [`INSTANCE`] under the prefix `osb`.
fn ids() -> (String, String) {
    let names = crate::elasticache::names::Names::new("osb");
    (names.cache(INSTANCE), names.binding_user(INSTANCE, "b-1"))
}

/// A single-node Redis OSS 7.1 replication group in `status`, with
/// `members` member clusters, as DescribeReplicationGroups returns it.
fn group(status: &str, members: usize) -> ReplicationGroup {
    let (id, _) = ids();
    let member_ids: Vec<String> = (1..=members).map(|i| format!("{id}-{i:03}")).collect();
    let node_group = NodeGroup::builder()
        .node_group_id("0001")
        .status(status)
        .primary_endpoint(
            AwsEndpoint::builder()
                .address(format!("master.{id}.abc123.use1.cache.amazonaws.com"))
                .port(6379)
                .build(),
        )
        .set_node_group_members(Some(
            member_ids
                .iter()
                .map(|m| NodeGroupMember::builder().cache_cluster_id(m).cache_node_id("0001").build())
                .collect(),
        ))
        .build();
    ReplicationGroup::builder()
        .replication_group_id(&id)
        .description("redis 7.1 plan small")
        .status(status)
        .set_member_clusters(Some(member_ids))
        .node_groups(node_group)
        .automatic_failover(AutomaticFailoverStatus::Disabled)
        .multi_az(MultiAzStatus::Disabled)
        .snapshot_retention_limit(3)
        .snapshot_window("03:00-05:00")
        .cluster_enabled(false)
        .cache_node_type("cache.t4g.small")
        .transit_encryption_enabled(true)
        .at_rest_encryption_enabled(true)
        .user_group_ids(&id)
        .engine("redis")
        .arn(format!("arn:aws:elasticache:us-east-1:123456789012:replicationgroup:{id}"))
        .build()
}

/// ListTagsForResource of a cache whose `broker-instance-id` tag names
/// `instance`.
fn tagged_for(instance: &'static str) -> Rule {
    mock!(Client::list_tags_for_resource).then_output(move || {
        ListTagsForResourceOutput::builder()
            .tag_list(Tag::builder().key("broker").value("osb").build())
            .tag_list(Tag::builder().key("broker-instance-id").value(instance).build())
            .build()
    })
}

/// ListTagsForResource of a cache that is [`INSTANCE`]'s.
fn ours() -> Rule {
    tagged_for(INSTANCE)
}

/// DescribeSnapshots of a cache with no snapshots (a delete looks for the
/// instance's named ones first).
fn no_snapshots() -> Rule {
    mock!(Client::describe_snapshots).then_output(|| DescribeSnapshotsOutput::builder().build())
}

fn describe_group(group: ReplicationGroup) -> Rule {
    mock!(Client::describe_replication_groups).then_output(move || {
        DescribeReplicationGroupsOutput::builder().replication_groups(group.clone()).build()
    })
}

fn group_not_found() -> DescribeReplicationGroupsError {
    let (id, _) = ids();
    let message = format!("Replication group {id} not found.");
    DescribeReplicationGroupsError::ReplicationGroupNotFoundFault(
        ReplicationGroupNotFoundFault::builder()
            .message(&message)
            .meta(meta("ReplicationGroupNotFoundFault", &message))
            .build(),
    )
}

fn no_group() -> Rule {
    mock!(Client::describe_replication_groups).then_error(group_not_found)
}

fn no_cluster() -> Rule {
    mock!(Client::describe_cache_clusters).then_error(|| {
        DescribeCacheClustersError::CacheClusterNotFoundFault(
            CacheClusterNotFoundFault::builder()
                .message("CacheCluster not found")
                .meta(meta("CacheClusterNotFound", "CacheCluster not found"))
                .build(),
        )
    })
}

/// DescribeServerlessCaches of a cache that is not serverless (nor there).
fn no_serverless() -> Rule {
    use aws_sdk_elasticache::operation::describe_serverless_caches::DescribeServerlessCachesError;
    use aws_sdk_elasticache::types::error::ServerlessCacheNotFoundFault;
    mock!(Client::describe_serverless_caches).then_error(|| {
        DescribeServerlessCachesError::ServerlessCacheNotFoundFault(
            ServerlessCacheNotFoundFault::builder()
                .message("Serverless cache not found")
                .meta(meta("ServerlessCacheNotFoundFault", "Serverless cache not found"))
                .build(),
        )
    })
}

/// DescribeServerlessCacheSnapshots of a cache with none.
fn no_serverless_snapshots() -> Rule {
    use aws_sdk_elasticache::operation::describe_serverless_cache_snapshots::DescribeServerlessCacheSnapshotsOutput;
    mock!(Client::describe_serverless_cache_snapshots)
        .then_output(|| DescribeServerlessCacheSnapshotsOutput::builder().build())
}

/// DescribeCacheClusters of one member cluster, in `status`.
fn member(id: String, status: &'static str) -> Rule {
    let wanted = id.clone();
    mock!(Client::describe_cache_clusters)
        .match_requests(move |req| req.cache_cluster_id() == Some(wanted.as_str()))
        .then_output(move || {
            DescribeCacheClustersOutput::builder()
                .cache_clusters(
                    CacheCluster::builder()
                        .cache_cluster_id(&id)
                        .cache_cluster_status(status)
                        .engine("redis")
                        .engine_version("7.1.0")
                        .cache_node_type("cache.t4g.small")
                        .num_cache_nodes(1)
                        .build(),
                )
                .build()
        })
}

fn active_user(id: &str) -> User {
    User::builder()
        .user_id(id)
        .user_name("b-1")
        .status("active")
        .engine("redis")
        .access_string("on ~*")
        .build()
}

fn user_not_found() -> DescribeUsersError {
    DescribeUsersError::UserNotFoundFault(
        UserNotFoundFault::builder()
            .message("User not found")
            .meta(meta("UserNotFound", "User not found"))
            .build(),
    )
}

fn user_group(status: &str, users: &[&str], adding: &[&str]) -> UserGroup {
    let (id, _) = ids();
    let mut group = UserGroup::builder()
        .user_group_id(&id)
        .status(status)
        .engine("redis")
        .set_user_ids(Some(users.iter().map(|u| u.to_string()).collect()))
        .minimum_engine_version("6.0")
        .replication_groups(&id);
    if !adding.is_empty() {
        group = group.pending_changes(
            UserGroupPendingChanges::builder()
                .set_user_ids_to_add(Some(adding.iter().map(|u| u.to_string()).collect()))
                .build(),
        );
    }
    group.build()
}

fn user(passwords: &[&str]) -> CacheUser {
    CacheUser {
        username: "b-1".into(),
        passwords: passwords.iter().map(|p| SecretString::from(p.to_string())).collect(),
        access_string: "~* +@all".into(),
    }
}

fn retryable(result: Result<Progress, ProviderError>) -> String {
    match result {
        Err(ProviderError::Retryable(why)) => why,
        other => panic!("expected Retryable, got {other:?}"),
    }
}

fn permanent<T: std::fmt::Debug>(result: Result<T, ProviderError>) -> String {
    match result {
        Err(ProviderError::Permanent(why)) => why,
        other => panic!("expected Permanent, got {other:?}"),
    }
}

const THROTTLING: &str = r#"<ErrorResponse xmlns="http://elasticache.amazonaws.com/doc/2015-02-02/">
  <Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>
  <RequestId>7a62c49f-347e-4fc4-9331-6e8e7a96aa73</RequestId>
</ErrorResponse>"#;

// ------------------------------------------------------------ progress

#[tokio::test]
async fn progress_counts_the_available_nodes_while_the_group_is_creating() {
    let (id, _) = ids();
    let rules = [
        describe_group(group("creating", 3)),
        member(format!("{id}-001"), "available"),
        member(format!("{id}-002"), "available"),
        member(format!("{id}-003"), "creating"),
    ];
    let provider = provider_on(mocked(&rules.iter().collect::<Vec<_>>()), secrets_with_admin().await);

    let Progress::Working { detail } = provider.progress(INSTANCE).await.unwrap() else { panic!("done") };
    assert_eq!(detail, format!("creating replication group {id}: 2 of 3 nodes available"));
}

/// ElastiCache API reference, ReplicationGroup.PendingModifiedValues: "A
/// group of settings to be applied to the replication group, either
/// immediately or during the next maintenance window." Just after a modify
/// the group can still say `available`; with changes pending it is not done.
#[tokio::test]
async fn an_available_group_with_changes_pending_is_still_being_changed() {
    let (id, _) = ids();
    let mut pending = group("available", 1);
    pending.pending_modified_values = Some(
        ReplicationGroupPendingModifiedValues::builder()
            .automatic_failover_status(aws_sdk_elasticache::types::PendingAutomaticFailoverStatus::Enabled)
            .build(),
    );
    let provider = provider_on(mocked(&[&describe_group(pending)]), secrets_with_admin().await);
    assert_eq!(
        provider.progress(INSTANCE).await,
        Ok(Progress::Working {
            detail: format!("available replication group {id}, with changes pending: automatic failover")
        })
    );
    let mut settled = group("available", 1);
    settled.pending_modified_values = Some(ReplicationGroupPendingModifiedValues::builder().build());
    let provider = provider_on(mocked(&[&describe_group(settled)]), secrets_with_admin().await);
    assert_eq!(provider.progress(INSTANCE).await, Ok(Progress::Done), "nothing pending is done");
}

#[tokio::test]
async fn a_group_that_failed_to_create_fails_the_operation_naming_the_status() {
    let provider =
        provider_on(mocked(&[&describe_group(group("create-failed", 1))]), secrets_with_admin().await);

    let why = permanent(provider.progress(INSTANCE).await);
    assert!(why.ends_with("is create-failed"), "{why}");
}

#[tokio::test]
async fn progress_of_a_cache_that_does_not_exist_names_the_replication_group() {
    let provider =
        provider_on(mocked(&[&no_group(), &no_cluster(), &no_serverless()]), secrets_with_admin().await);

    let why = permanent(provider.progress(INSTANCE).await);
    assert!(why.starts_with(&format!("no replication group {}", ids().0)), "{why}");
}

#[tokio::test]
async fn throttling_is_retryable_and_named() {
    let throttled = mock!(Client::describe_replication_groups)
        .sequence()
        .http_status(400, Some(THROTTLING.into()))
        .build();
    let provider = provider_on(mocked(&[&throttled]), secrets_with_admin().await);

    let why = retryable(provider.progress(INSTANCE).await);
    assert_eq!(why, "DescribeReplicationGroups failed: Throttling: Rate exceeded");
}

#[tokio::test]
async fn a_memcached_endpoint_is_its_configuration_endpoint_with_every_node() {
    let (id, _) = ids();
    let node = |n: &str| {
        aws_sdk_elasticache::types::CacheNode::builder()
            .cache_node_id(n)
            .cache_node_status("available")
            .endpoint(
                AwsEndpoint::builder()
                    .address(format!("{id}.{n}.use1.cache.amazonaws.com"))
                    .port(11211)
                    .build(),
            )
            .build()
    };
    let cluster = CacheCluster::builder()
        .cache_cluster_id(&id)
        .cache_cluster_status("available")
        .engine("memcached")
        .cache_nodes(node("0001"))
        .cache_nodes(node("0002"))
        .configuration_endpoint(
            AwsEndpoint::builder()
                .address(format!("{id}.abc123.cfg.use1.cache.amazonaws.com"))
                .port(11211)
                .build(),
        )
        .transit_encryption_enabled(true)
        .build();
    let describe = mock!(Client::describe_cache_clusters)
        .then_output(move || DescribeCacheClustersOutput::builder().cache_clusters(cluster.clone()).build());
    let provider = provider_on(mocked(&[&no_group(), &describe]), secrets_with_admin().await);

    let endpoint = provider.endpoint(INSTANCE).await.unwrap();
    assert_eq!(
        endpoint,
        Endpoint {
            host: format!("{id}.abc123.cfg.use1.cache.amazonaws.com"),
            port: 11211,
            tls: true,
            nodes: vec![
                format!("{id}.0001.use1.cache.amazonaws.com:11211"),
                format!("{id}.0002.use1.cache.amazonaws.com:11211")
            ],
            reader: None,
            cluster_mode: false,
            ca_certificate: None,
        }
    );
    // What the alarms watch: each node of the cluster.
    let nodes = provider.nodes(INSTANCE).await.unwrap();
    let nodes: Vec<(String, Option<String>)> = nodes.into_iter().map(|n| (n.cluster_id, n.node_id)).collect();
    assert_eq!(nodes, [(id.clone(), Some("0001".to_string())), (id.clone(), Some("0002".to_string()))]);
}

// ------------------------------------------------------------ create

/// CreateUser answering that the user exists (an earlier attempt made it).
fn users_exist() -> Rule {
    mock!(Client::create_user).then_error(|| {
        CreateUserError::UserAlreadyExistsFault(
            UserAlreadyExistsFault::builder().meta(meta("UserAlreadyExists", "User already exists.")).build(),
        )
    })
}

/// CreateUserGroup answering that the group exists (an earlier attempt made it).
fn user_group_exists() -> Rule {
    mock!(Client::create_user_group).then_error(|| {
        CreateUserGroupError::UserGroupAlreadyExistsFault(
            UserGroupAlreadyExistsFault::builder().meta(meta("UserGroupAlreadyExists", "exists")).build(),
        )
    })
}

/// Rules under which everything before CreateReplicationGroup succeeds.
fn users_and_group_ok(user_group_status: &'static str) -> Vec<Rule> {
    vec![
        no_group(),
        mock!(Client::create_user).then_output(|| CreateUserOutput::builder().status("active").build()),
        mock!(Client::create_user_group).then_output(move || {
            CreateUserGroupOutput::builder().status(user_group_status).engine("redis").build()
        }),
    ]
}

#[tokio::test]
async fn missing_capacity_fails_create_naming_the_fault_in_aws_terms() {
    let capacity = mock!(Client::create_replication_group).then_error(|| {
        let message = "cache.t4g.small is not available in us-east-1a";
        CreateReplicationGroupError::InsufficientCacheClusterCapacityFault(
            InsufficientCacheClusterCapacityFault::builder()
                .message(message)
                .meta(meta("InsufficientCacheClusterCapacity", message))
                .build(),
        )
    });
    let mut rules = users_and_group_ok("active");
    rules.push(capacity);
    let provider = provider_on(mocked(&rules.iter().collect::<Vec<_>>()), secrets_with_admin().await);

    let why = permanent(provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await);
    assert_eq!(
        why,
        "CreateReplicationGroup failed: InsufficientCacheClusterCapacity: cache.t4g.small is not available in us-east-1a"
    );
}

#[tokio::test]
async fn a_user_group_still_being_created_holds_the_replication_group_back() {
    let create = mock!(Client::create_replication_group)
        .then_output(|| CreateReplicationGroupOutput::builder().build());
    let mut rules = users_and_group_ok("creating");
    rules.push(create.clone());
    let provider = provider_on(mocked(&rules.iter().collect::<Vec<_>>()), secrets_with_admin().await);

    let why = retryable(provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await);
    assert!(why.contains("is creating"), "{why}");
    assert_eq!(create.num_calls(), 0);
}

#[tokio::test]
async fn a_user_group_an_earlier_attempt_made_without_a_spare_gets_it_before_the_cache_is_created() {
    let names = crate::elasticache::names::Names::new("osb");
    let (default_user, admin_user) = (names.default_user(INSTANCE), names.admin_user(INSTANCE));
    let spare = names.binding_user(INSTANCE, "s-1");
    let user_exists = users_exist();
    let group_exists = user_group_exists();
    let user_group = mock!(Client::describe_user_groups).then_output(move || {
        DescribeUserGroupsOutput::builder()
            .user_groups(user_group("active", &[&default_user, &admin_user], &[]))
            .build()
    });
    let wanted = spare.clone();
    let add = mock!(Client::modify_user_group)
        .match_requests(move |req| req.user_ids_to_add() == [wanted.clone()])
        .then_output(|| ModifyUserGroupOutput::builder().status("modifying").build());
    let create = mock!(Client::create_replication_group)
        .then_output(|| CreateReplicationGroupOutput::builder().build());
    let client = mocked(&[&no_group(), &user_exists, &group_exists, &user_group, &add, &create]);
    let provider = provider_on(client, secrets_with_admin().await);
    let mut s = spec(INSTANCE, "elasticache-redis", "small");
    s.spare_users = vec![user(&["spare-password-000000000000000000000000"])];
    s.spare_users[0].username = "s-1".into();

    let why = retryable(provider.create(&s).await);

    assert!(why.contains(&spare) && why.contains("once it is active"), "{why}");
    assert_eq!((add.num_calls(), create.num_calls()), (1, 0));
}

#[tokio::test]
async fn everything_a_racing_attempt_made_first_is_adopted() {
    let describe = mock!(Client::describe_replication_groups)
        .sequence()
        .error(group_not_found)
        .output(|| {
            DescribeReplicationGroupsOutput::builder().replication_groups(group("creating", 1)).build()
        })
        .repeatedly()
        .build();
    let user_exists = users_exist();
    let group_exists = user_group_exists();
    let names = crate::elasticache::names::Names::new("osb");
    let (default_user, admin_user) = (names.default_user(INSTANCE), names.admin_user(INSTANCE));
    let user_group = mock!(Client::describe_user_groups).then_output(move || {
        DescribeUserGroupsOutput::builder()
            .user_groups(user_group("active", &[&default_user, &admin_user], &[]))
            .build()
    });
    let rg_exists = mock!(Client::create_replication_group).then_error(|| {
        CreateReplicationGroupError::ReplicationGroupAlreadyExistsFault(
            ReplicationGroupAlreadyExistsFault::builder()
                .meta(meta("ReplicationGroupAlreadyExists", "Replication group already exists."))
                .build(),
        )
    });
    let client = mocked(&[&describe, &ours(), &user_exists, &group_exists, &user_group, &rg_exists]);
    let provider = provider_on(client, secrets_with_admin().await);

    let progress = provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    assert!(matches!(progress, Progress::Working { .. }), "{progress:?}");
    assert_eq!((user_exists.num_calls(), rg_exists.num_calls()), (2, 1));
}

#[tokio::test]
async fn a_password_quoted_in_an_aws_error_never_reaches_the_description() {
    let secrets = secrets_with_admin().await;
    let admin = broker_core::ports::SecretStore::read(
        &*secrets,
        super::ADMIN_SECRET,
        broker_core::ports::Stage::Current,
    )
    .await
    .unwrap()
    .unwrap();
    let quoted = admin.expose_secret().to_string();
    let refused = mock!(Client::create_user)
        .match_requests(|req| req.user_name() == Some("broker-admin"))
        .then_error(move || {
            let message = format!("Invalid password {quoted}");
            CreateUserError::InvalidParameterValueException(
                InvalidParameterValueException::builder()
                    .message(&message)
                    .meta(meta("InvalidParameterValue", &message))
                    .build(),
            )
        });
    let default_ok = mock!(Client::create_user).then_output(|| CreateUserOutput::builder().build());
    let provider = provider_on(mocked(&[&no_group(), &refused, &default_ok]), secrets);

    let why = permanent(provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await);
    assert_eq!(why, "CreateUser failed: InvalidParameterValue: Invalid password [redacted]");
}

// ------------------------------------------------------------ modify and delete

#[tokio::test]
async fn modifying_a_group_that_became_busy_is_retryable() {
    let (id, _) = ids();
    let busy = mock!(Client::modify_replication_group).then_error(|| {
        let message = "Replication group must be in available state to modify.";
        ModifyReplicationGroupError::InvalidReplicationGroupStateFault(
            InvalidReplicationGroupStateFault::builder()
                .message(message)
                .meta(meta("InvalidReplicationGroupState", message))
                .build(),
        )
    });
    let tags = mock!(Client::add_tags_to_resource).then_output(|| AddTagsToResourceOutput::builder().build());
    let rules = [describe_group(group("available", 1)), member(format!("{id}-001"), "available"), tags, busy];
    let provider = provider_on(mocked(&rules.iter().collect::<Vec<_>>()), secrets_with_admin().await);

    let why = retryable(provider.modify(&spec(INSTANCE, "elasticache-redis", "medium")).await);
    assert!(why.starts_with("ModifyReplicationGroup failed: InvalidReplicationGroupState"), "{why}");
}

/// moto keeps a group's log delivery as created and ignores a change: the
/// change is asserted here, with the log group made before it.
#[tokio::test]
async fn turning_logs_on_makes_the_log_group_first_then_one_modify_with_json_to_it() {
    use aws_sdk_cloudwatchlogs::operation::create_log_group::CreateLogGroupOutput;
    use aws_sdk_cloudwatchlogs::operation::put_retention_policy::PutRetentionPolicyOutput;
    let (id, _) = ids();
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = order.clone();
    let modify = mock!(Client::modify_replication_group)
        .match_requests(move |req| {
            seen.lock().unwrap().push("ModifyReplicationGroup".into());
            req.apply_immediately() == Some(true)
        })
        .then_output(|| ModifyReplicationGroupOutput::builder().build());
    let tags = mock!(Client::add_tags_to_resource).then_output(|| AddTagsToResourceOutput::builder().build());
    let rules = [describe_group(group("available", 1)), member(format!("{id}-001"), "available"), tags];
    let mut all: Vec<&Rule> = rules.iter().collect();
    all.push(&modify);
    let seen = order.clone();
    let create = aws_smithy_mocks::mock!(aws_sdk_cloudwatchlogs::Client::create_log_group)
        .match_requests(move |req| {
            seen.lock().unwrap().push(format!("CreateLogGroup {}", req.log_group_name().unwrap_or_default()));
            req.tags().is_some_and(|t| t.get("broker").map(String::as_str) == Some("osb"))
        })
        .then_output(|| CreateLogGroupOutput::builder().build());
    let retention = aws_smithy_mocks::mock!(aws_sdk_cloudwatchlogs::Client::put_retention_policy)
        .match_requests(|req| req.retention_in_days() == Some(14))
        .then_output(|| PutRetentionPolicyOutput::builder().build());
    let logs = aws_smithy_mocks::mock_client!(
        aws_sdk_cloudwatchlogs,
        aws_smithy_mocks::RuleMode::MatchAny,
        [&create, &retention]
    );
    let provider = provider_on(mocked(&all), secrets_with_admin().await)
        .with_logs(crate::elasticache::LogSettings { client: logs, retention_days: 14 });

    let mut s = spec(INSTANCE, "elasticache-redis", "small");
    s.log_delivery = vec![LogType::SlowLog, LogType::EngineLog];
    let Progress::Working { detail } = provider.modify(&s).await.unwrap() else { panic!("nothing to do") };
    assert_eq!(detail, format!("replication group {id}: modifying log delivery none → slow-log, engine-log"));
    assert_eq!(
        *order.lock().unwrap(),
        [format!("CreateLogGroup /elasticache/{id}"), "ModifyReplicationGroup".to_string()],
        "the log group exists before the cache is told to write to it"
    );
    assert_eq!((create.num_calls(), retention.num_calls(), modify.num_calls()), (1, 1, 1));
}

#[tokio::test]
async fn a_group_that_is_not_available_is_left_alone_until_it_is() {
    let modify = mock!(Client::modify_replication_group)
        .then_output(|| ModifyReplicationGroupOutput::builder().build());
    let provider = provider_on(
        mocked(&[&describe_group(group("snapshotting", 1)), &modify]),
        secrets_with_admin().await,
    );

    let why = retryable(provider.modify(&spec(INSTANCE, "elasticache-redis", "medium")).await);
    assert!(why.contains("is snapshotting"), "{why}");
    assert_eq!(modify.num_calls(), 0);
}

#[tokio::test]
async fn a_group_still_creating_is_deleted_once_it_is_available() {
    let delete = mock!(Client::delete_replication_group)
        .then_output(|| DeleteReplicationGroupOutput::builder().build());
    let provider =
        provider_on(mocked(&[&describe_group(group("creating", 1)), &delete]), secrets_with_admin().await);

    let Progress::Working { detail } = provider.delete(INSTANCE, Some(DEPROVISION)).await.unwrap() else {
        panic!("done")
    };
    assert!(detail.ends_with("is creating; it is deleted once that ends"), "{detail}");
    assert_eq!(delete.num_calls(), 0);
}

/// The final snapshot name of [`INSTANCE`] under the prefix `osb`.
fn final_snapshot() -> String {
    crate::elasticache::names::Names::new("osb").final_snapshot(INSTANCE, DEPROVISION)
}

#[tokio::test]
async fn the_delete_request_names_a_final_snapshot_only_when_asked_for_one() {
    let (id, _) = ids();
    let name = final_snapshot();
    let wanted = name.clone();
    let with_snapshot = mock!(Client::delete_replication_group)
        .match_requests(move |req| req.final_snapshot_identifier() == Some(wanted.as_str()))
        .then_output(|| DeleteReplicationGroupOutput::builder().build());
    let without_snapshot = mock!(Client::delete_replication_group)
        .match_requests(|req| req.final_snapshot_identifier().is_none())
        .then_output(|| DeleteReplicationGroupOutput::builder().build());
    let provider = provider_on(
        mocked(&[
            &describe_group(group("available", 1)),
            &ours(),
            &no_snapshots(),
            &no_serverless_snapshots(),
            &with_snapshot,
            &without_snapshot,
        ]),
        secrets_with_admin().await,
    );

    let Progress::Working { detail } = provider.delete(INSTANCE, Some(DEPROVISION)).await.unwrap() else {
        panic!("done")
    };
    assert_eq!(detail, format!("deleting replication group {id} after its final snapshot {name}"));
    assert_eq!((with_snapshot.num_calls(), without_snapshot.num_calls()), (1, 0));

    let Progress::Working { detail } = provider.delete(INSTANCE, None).await.unwrap() else { panic!("done") };
    assert_eq!(detail, format!("deleting replication group {id}"));
    assert_eq!((with_snapshot.num_calls(), without_snapshot.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_final_snapshot_an_earlier_attempt_took_does_not_fail_the_retried_delete() {
    let name = final_snapshot();
    let wanted = name.clone();
    let exists = mock!(Client::delete_replication_group)
        .match_requests(move |req| req.final_snapshot_identifier() == Some(wanted.as_str()))
        .then_error(|| {
            let message = "Snapshot with specified name already exists.";
            DeleteReplicationGroupError::SnapshotAlreadyExistsFault(
                SnapshotAlreadyExistsFault::builder()
                    .message(message)
                    .meta(meta("SnapshotAlreadyExistsFault", message))
                    .build(),
            )
        });
    let without_snapshot = mock!(Client::delete_replication_group)
        .match_requests(|req| req.final_snapshot_identifier().is_none())
        .then_output(|| DeleteReplicationGroupOutput::builder().build());
    let provider = provider_on(
        mocked(&[
            &describe_group(group("available", 1)),
            &ours(),
            &no_snapshots(),
            &no_serverless_snapshots(),
            &exists,
            &without_snapshot,
        ]),
        secrets_with_admin().await,
    );

    let Progress::Working { detail } = provider.delete(INSTANCE, Some(DEPROVISION)).await.unwrap() else {
        panic!("done")
    };
    assert!(detail.ends_with(&format!("after its final snapshot {name}")), "{detail}");
    assert_eq!((exists.num_calls(), without_snapshot.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_final_snapshot_over_the_quota_fails_the_delete_naming_the_fault() {
    let quota = mock!(Client::delete_replication_group).then_error(|| {
        let message = "The request cannot be processed because it would exceed the snapshot quota.";
        DeleteReplicationGroupError::SnapshotQuotaExceededFault(
            SnapshotQuotaExceededFault::builder()
                .message(message)
                .meta(meta("SnapshotQuotaExceededFault", message))
                .build(),
        )
    });
    let provider = provider_on(
        mocked(&[
            &describe_group(group("available", 1)),
            &ours(),
            &no_snapshots(),
            &no_serverless_snapshots(),
            &quota,
        ]),
        secrets_with_admin().await,
    );

    let why = permanent(provider.delete(INSTANCE, Some(DEPROVISION)).await);
    assert!(why.starts_with("DeleteReplicationGroup failed: SnapshotQuotaExceededFault"), "{why}");
    assert_eq!(quota.num_calls(), 1, "not sent again without the snapshot");
}

#[tokio::test]
async fn a_memcached_cluster_is_deleted_without_a_snapshot_even_when_one_is_asked_for() {
    let (id, _) = ids();
    let cluster = CacheCluster::builder()
        .cache_cluster_id(&id)
        .cache_cluster_status("available")
        .engine("memcached")
        .arn(format!("arn:aws:elasticache:us-east-1:123456789012:cluster:{id}"))
        .build();
    let describe = mock!(Client::describe_cache_clusters)
        .then_output(move || DescribeCacheClustersOutput::builder().cache_clusters(cluster.clone()).build());
    let delete = mock!(Client::delete_cache_cluster)
        .match_requests(|req| req.final_snapshot_identifier().is_none())
        .then_output(|| DeleteCacheClusterOutput::builder().build());
    let provider =
        provider_on(mocked(&[&no_group(), &describe, &ours(), &delete]), secrets_with_admin().await);

    let Progress::Working { detail } = provider.delete(INSTANCE, Some(DEPROVISION)).await.unwrap() else {
        panic!("done")
    };
    assert_eq!(detail, format!("deleting cache cluster {id}"));
    assert_eq!(delete.num_calls(), 1);
}

// ------------------------------------------------------------ users

#[tokio::test]
async fn a_user_waits_while_its_user_group_is_modifying() {
    let (_, user_id) = ids();
    let user = active_user(&user_id);
    let users = mock!(Client::describe_users)
        .then_output(move || DescribeUsersOutput::builder().users(user.clone()).build());
    let uid = user_id.clone();
    let modifying = mock!(Client::describe_user_groups).then_output(move || {
        DescribeUserGroupsOutput::builder().user_groups(user_group("modifying", &["osb-d"], &[&uid])).build()
    });
    let provider = provider_on(
        mocked(&[&describe_group(group("available", 1)), &users, &modifying]),
        secrets_with_admin().await,
    );

    let Progress::Working { detail } = provider.user_progress(INSTANCE, "b-1").await.unwrap() else {
        panic!("done while the user group is modifying")
    };
    assert!(detail.contains("modifying"), "{detail}");
}

#[tokio::test]
async fn a_retried_put_user_adds_the_user_to_its_group_only_once() {
    let (_, user_id) = ids();
    let existing = active_user(&user_id);
    let users = mock!(Client::describe_users)
        .sequence()
        .error(user_not_found)
        .output(move || DescribeUsersOutput::builder().users(existing.clone()).build())
        .repeatedly()
        .build();
    let create =
        mock!(Client::create_user).then_output(|| CreateUserOutput::builder().status("active").build());
    let modify_user =
        mock!(Client::modify_user).then_output(|| ModifyUserOutput::builder().status("modifying").build());
    let uid = user_id.clone();
    let groups = mock!(Client::describe_user_groups)
        .sequence()
        .output(|| {
            DescribeUserGroupsOutput::builder().user_groups(user_group("active", &["osb-d"], &[])).build()
        })
        .output(move || {
            DescribeUserGroupsOutput::builder()
                .user_groups(user_group("modifying", &["osb-d"], &[&uid]))
                .build()
        })
        .repeatedly()
        .build();
    let add = mock!(Client::modify_user_group)
        .then_output(|| ModifyUserGroupOutput::builder().status("modifying").build());
    let client =
        mocked(&[&describe_group(group("available", 1)), &users, &create, &modify_user, &groups, &add]);
    let provider = provider_on(client, secrets_with_admin().await);

    provider.put_user(INSTANCE, &user(&["first-password-0123456789"])).await.unwrap();
    provider.put_user(INSTANCE, &user(&["first-password-0123456789"])).await.unwrap();

    assert_eq!(create.num_calls(), 1, "created once");
    assert_eq!(modify_user.num_calls(), 1, "reset the second time");
    assert_eq!(add.num_calls(), 1, "added to the user group once");
}

#[tokio::test]
async fn a_user_needs_one_or_two_passwords() {
    let provider = provider_on(mocked(&[&describe_group(group("available", 1))]), secrets_with_admin().await);

    for passwords in
        [&[][..], &["a-password-0123456789", "b-password-0123456789", "c-password-0123456789"][..]]
    {
        let why = permanent(provider.put_user(INSTANCE, &user(passwords)).await);
        assert!(why.contains("one or two passwords"), "{why}");
    }
}

// ------------------------------------------------------------ rotation

/// The replication group of a Redis OSS 5 instance (an AUTH token, no user
/// group) in `status`.
fn token_group(status: &str) -> ReplicationGroup {
    let mut group = group(status, 1);
    group.user_group_ids = None;
    group.auth_token_enabled = Some(true);
    group
}

fn secrets(values: &[&str]) -> Vec<SecretString> {
    values.iter().map(|v| SecretString::from(v.to_string())).collect()
}

fn describe_user(user: User) -> Rule {
    mock!(Client::describe_users)
        .then_output(move || DescribeUsersOutput::builder().users(user.clone()).build())
}

#[tokio::test]
async fn an_auth_token_is_not_changed_while_the_group_is_busy() {
    let (id, _) = ids();
    let modify = mock!(Client::modify_replication_group)
        .then_output(|| ModifyReplicationGroupOutput::builder().build());
    let provider = provider_on(
        mocked(&[&describe_group(token_group("snapshotting")), &modify]),
        secrets_with_admin().await,
    );

    let why = retryable(
        provider.set_passwords(INSTANCE, &Principal::Admin, &secrets(&["new-token-0123456789"])).await,
    );

    assert!(why.starts_with(&format!("replication group {id} is snapshotting")), "{why}");
    assert_eq!(modify.num_calls(), 0);
}

#[tokio::test]
async fn two_passwords_rotate_the_auth_token_at_once_and_one_sets_it() {
    let strategy = |wanted: AuthTokenUpdateStrategyType| {
        mock!(Client::modify_replication_group)
            .match_requests(move |req| {
                req.auth_token() == Some("new-token-0123456789")
                    && req.auth_token_update_strategy() == Some(&wanted)
                    && req.apply_immediately() == Some(true)
            })
            .then_output(|| ModifyReplicationGroupOutput::builder().build())
    };
    let (rotate, set) =
        (strategy(AuthTokenUpdateStrategyType::Rotate), strategy(AuthTokenUpdateStrategyType::Set));
    let rules = [describe_group(token_group("available")), rotate.clone(), set.clone()];
    let provider = provider_on(mocked(&rules.iter().collect::<Vec<_>>()), secrets_with_admin().await);

    let both = secrets(&["new-token-0123456789", "old-token-0123456789"]);
    provider.set_passwords(INSTANCE, &Principal::Admin, &both).await.unwrap();
    assert_eq!((rotate.num_calls(), set.num_calls()), (1, 0));
    provider.set_passwords(INSTANCE, &Principal::Admin, &both[..1]).await.unwrap();
    assert_eq!((rotate.num_calls(), set.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_token_quoted_back_by_modify_replication_group_is_blanked_out() {
    let refused = mock!(Client::modify_replication_group).then_error(|| {
        let message = "Invalid AUTH token new-token-0123456789";
        ModifyReplicationGroupError::InvalidParameterValueException(
            InvalidParameterValueException::builder()
                .message(message)
                .meta(meta("InvalidParameterValue", message))
                .build(),
        )
    });
    let provider = provider_on(
        mocked(&[&describe_group(token_group("available")), &refused]),
        secrets_with_admin().await,
    );

    let err = provider
        .set_passwords(
            INSTANCE,
            &Principal::Admin,
            &secrets(&["new-token-0123456789", "old-token-0123456789"]),
        )
        .await
        .unwrap_err();

    assert_eq!(
        err,
        ProviderError::Permanent(
            "ModifyReplicationGroup failed: InvalidParameterValue: Invalid AUTH token [redacted]".into()
        )
    );
    assert!(!format!("{err:?}").contains("token-0123456789"));
}

#[tokio::test]
async fn a_password_quoted_back_by_modify_user_is_blanked_out() {
    let refused = mock!(Client::modify_user).then_error(|| {
        let message = "Invalid password old-password-0123456789";
        ModifyUserError::InvalidParameterValueException(
            InvalidParameterValueException::builder()
                .message(message)
                .meta(meta("InvalidParameterValue", message))
                .build(),
        )
    });
    let provider =
        provider_on(mocked(&[&describe_group(group("available", 1)), &refused]), secrets_with_admin().await);

    let why = permanent(
        provider
            .set_passwords(
                INSTANCE,
                &Principal::User("b-1".into()),
                &secrets(&["new-password-0123456789", "old-password-0123456789"]),
            )
            .await,
    );

    assert_eq!(why, "ModifyUser failed: InvalidParameterValue: Invalid password [redacted]");
}

#[tokio::test]
async fn setting_the_passwords_of_a_user_that_is_gone_fails_naming_it() {
    let (_, user_id) = ids();
    let gone = mock!(Client::modify_user).then_error(|| {
        ModifyUserError::UserNotFoundFault(
            UserNotFoundFault::builder()
                .message("User not found")
                .meta(meta("UserNotFound", "User not found"))
                .build(),
        )
    });
    let provider =
        provider_on(mocked(&[&describe_group(group("available", 1)), &gone]), secrets_with_admin().await);

    let why = permanent(
        provider
            .set_passwords(INSTANCE, &Principal::User("b-1".into()), &secrets(&["new-password-0123456789"]))
            .await,
    );

    assert!(why.starts_with(&format!("user {user_id} of cache user b-1 does not exist")), "{why}");
}

#[tokio::test]
async fn passwords_are_in_effect_once_the_user_is_active_with_that_many_and_its_group_active() {
    let (_, user_id) = ids();
    let with = |status: &str, count: i32| {
        let mut user = active_user(&user_id);
        user.status = Some(status.into());
        user.authentication = Some(
            Authentication::builder().r#type(AuthenticationType::Password).password_count(count).build(),
        );
        user
    };
    let two = secrets(&["new-password-0123456789", "old-password-0123456789"]);
    let principal = Principal::User("b-1".into());
    let progress = |user: User, group_status: &'static str| {
        let rules = [
            describe_group(group("available", 1)),
            describe_user(user),
            mock!(Client::describe_user_groups).then_output(move || {
                DescribeUserGroupsOutput::builder().user_groups(user_group(group_status, &[], &[])).build()
            }),
        ];
        mocked(&rules.iter().collect::<Vec<_>>())
    };
    let secrets_store = secrets_with_admin().await;
    let at = |client| provider_on(client, secrets_store.clone());

    let modifying =
        at(progress(with("modifying", 1), "active")).passwords_progress(INSTANCE, &principal, &two).await;
    assert_eq!(modifying, Ok(Progress::Working { detail: "user b-1 is modifying".into() }));
    let one = at(progress(with("active", 1), "active")).passwords_progress(INSTANCE, &principal, &two).await;
    assert_eq!(one, Ok(Progress::Working { detail: "user b-1 holds 1 password, 2 expected".into() }));
    let group_busy =
        at(progress(with("active", 2), "modifying")).passwords_progress(INSTANCE, &principal, &two).await;
    let (id, _) = ids();
    assert_eq!(
        group_busy,
        Ok(Progress::Working { detail: format!("user group {id} of user b-1 is modifying") })
    );
    let done = at(progress(with("active", 2), "active")).passwords_progress(INSTANCE, &principal, &two).await;
    assert_eq!(done, Ok(Progress::Done));
}

#[tokio::test]
async fn an_auth_token_change_is_in_effect_once_nothing_is_pending() {
    let (id, _) = ids();
    let mut rotating = token_group("modifying");
    rotating.pending_modified_values = Some(
        ReplicationGroupPendingModifiedValues::builder()
            .auth_token_status(AuthTokenUpdateStatus::Rotating)
            .build(),
    );
    let one = secrets(&["new-token-0123456789"]);
    let secrets_store = secrets_with_admin().await;
    let progress = |group: ReplicationGroup| {
        let provider = provider_on(mocked(&[&describe_group(group)]), secrets_store.clone());
        let one = one.clone();
        async move { provider.passwords_progress(INSTANCE, &Principal::Admin, &one).await }
    };

    assert_eq!(
        progress(rotating).await,
        Ok(Progress::Working { detail: format!("replication group {id} is modifying: AUTH token rotating") })
    );
    assert_eq!(
        progress(token_group("modifying")).await,
        Ok(Progress::Working { detail: format!("replication group {id} is modifying") })
    );
    assert_eq!(progress(token_group("available")).await, Ok(Progress::Done));
}

// ------------------------------------------------------------ what AWS would refuse

/// ElastiCache User Guide, "Role-Based Access Control (RBAC)"
/// (Clusters.RBAC): "User groups configured for the VALKEY engine can only
/// contain users that use an authentication mechanism (password or IAM)".
/// Valkey's disabled `default` user is made with a password; Redis OSS's
/// keeps NoPasswordRequired.
#[tokio::test]
async fn the_default_user_of_a_valkey_user_group_has_a_password_and_of_a_redis_one_none() {
    for (service, plan, engine, with_password) in
        [("elasticache-valkey", "staging", "valkey", true), ("elasticache-redis", "small", "redis", false)]
    {
        let compliant = mock!(Client::create_user)
            .match_requests(move |req| {
                req.user_name() == Some("default")
                    && req.engine() == Some(engine)
                    && req.access_string() == Some("off -@all")
                    && if with_password {
                        req.passwords().len() == 1
                            && req.passwords()[0].len() >= 32
                            && req.no_password_required() != Some(true)
                    } else {
                        req.passwords().is_empty() && req.no_password_required() == Some(true)
                    }
            })
            .then_output(|| CreateUserOutput::builder().status("active").build());
        let mut rules = vec![compliant.clone()];
        rules.extend(users_and_group_ok("active"));
        rules.push(
            mock!(Client::create_replication_group)
                .then_output(|| CreateReplicationGroupOutput::builder().build()),
        );
        let provider = provider_on(mocked(&rules.iter().collect::<Vec<_>>()), secrets_with_admin().await);

        provider.create(&spec(INSTANCE, service, plan)).await.unwrap();

        assert_eq!(compliant.num_calls(), 1, "{engine}: the default user's CreateUser breaks the rule");
    }
}

/// "Supported ElastiCache for Memcached versions"
/// (supported-engine-versions-mc): ElastiCache names Memcached releases in
/// full (1.6.22, 1.6.17, 1.6.12, 1.6.6), and in-transit encryption needs
/// 1.6.12 or later. The plan's "1.6" is sent as the newest full release.
#[tokio::test]
async fn a_memcached_cluster_is_created_with_a_full_release_that_encrypts_in_transit() {
    let compliant = mock!(Client::create_cache_cluster)
        .match_requests(|req| {
            req.engine_version() == Some("1.6.22")
                && req.transit_encryption_enabled() == Some(true)
                && broker_core::domain::params::compare_versions(req.engine_version().unwrap_or(""), "1.6.12")
                    .is_ge()
        })
        .then_output(|| CreateCacheClusterOutput::builder().build());
    let provider = provider_on(mocked(&[&compliant]), secrets_with_admin().await);

    provider.create(&spec(INSTANCE, "elasticache-memcached", "small")).await.unwrap();

    assert_eq!(compliant.num_calls(), 1);
}

/// ElastiCache User Guide, "Supported engines and versions": Redis OSS
/// before 6 is named in full, and "Modifying the AUTH token on an existing
/// cluster" (auth-update): ROTATE and SET need 5.0.6. A plan's "5.0" is
/// created as 5.0.6.
#[tokio::test]
async fn a_redis_5_group_is_created_as_5_0_6_whose_auth_token_can_rotate() {
    let compliant = mock!(Client::create_replication_group)
        .match_requests(|req| req.engine_version() == Some("5.0.6") && req.auth_token().is_some())
        .then_output(|| CreateReplicationGroupOutput::builder().build());
    let provider = provider_on(mocked(&[&no_group(), &compliant]), secrets_with_admin().await);
    let mut s = spec(INSTANCE, "elasticache-redis", "small");
    s.engine_version = "5.0".into();

    provider.create(&s).await.unwrap();

    assert_eq!(compliant.num_calls(), 1);
}

/// ElastiCache User Guide, "Upgrading engine versions" (VersionManagement):
/// a new major version comes with a parameter group of its family, cluster
/// mode or not. Redis OSS 6.2 to 7.1 without cluster mode sends
/// `default.redis7`.
#[tokio::test]
async fn a_major_upgrade_without_cluster_mode_sends_the_parameter_group_of_the_new_family() {
    let (id, _) = ids();
    let member_id = format!("{id}-001");
    let wanted = member_id.clone();
    let on_6_2 = mock!(Client::describe_cache_clusters)
        .match_requests(move |req| req.cache_cluster_id() == Some(wanted.as_str()))
        .then_output(move || {
            DescribeCacheClustersOutput::builder()
                .cache_clusters(
                    CacheCluster::builder()
                        .cache_cluster_id(&member_id)
                        .cache_cluster_status("available")
                        .engine("redis")
                        .engine_version("6.2.6")
                        .cache_node_type("cache.t4g.small")
                        .num_cache_nodes(1)
                        .build(),
                )
                .build()
        });
    let compliant = mock!(Client::modify_replication_group)
        .match_requests(|req| {
            req.engine_version() == Some("7.1") && req.cache_parameter_group_name() == Some("default.redis7")
        })
        .then_output(|| ModifyReplicationGroupOutput::builder().build());
    let tags = mock!(Client::add_tags_to_resource).then_output(|| AddTagsToResourceOutput::builder().build());
    let rules = [describe_group(group("available", 1)), on_6_2, tags, compliant.clone()];
    let provider = provider_on(mocked(&rules.iter().collect::<Vec<_>>()), secrets_with_admin().await);

    let progress = provider.modify(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();

    assert!(matches!(progress, Progress::Working { .. }), "{progress:?}");
    assert_eq!(compliant.num_calls(), 1);
}

// ------------------------------------------------------------ ownership

/// A cache under the instance's name whose `broker-instance-id` tag names
/// another instance (or none) is someone else's: a create does not adopt it
/// and a delete does not delete it, and neither says whose it is.
#[tokio::test]
async fn a_cache_another_instance_owns_is_neither_adopted_nor_deleted() {
    const OTHER: &str = "0d9e3c1a-other-instance";
    for tags in [
        tagged_for(OTHER),
        mock!(Client::list_tags_for_resource).then_output(|| {
            ListTagsForResourceOutput::builder()
                .tag_list(Tag::builder().key("team").value("x").build())
                .build()
        }),
    ] {
        let create = mock!(Client::create_replication_group)
            .then_output(|| CreateReplicationGroupOutput::builder().build());
        let delete = mock!(Client::delete_replication_group)
            .then_output(|| DeleteReplicationGroupOutput::builder().build());
        let provider = provider_on(
            mocked(&[&describe_group(group("available", 1)), &tags, &create, &delete]),
            secrets_with_admin().await,
        );
        let why = permanent(provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await);
        let (id, _) = ids();
        assert_eq!(
            why,
            format!(
                "replication group {id} exists already and its broker-cache tag names another \
                 instance's cache; the broker leaves it alone"
            )
        );
        assert!(!why.contains(OTHER), "{why}");
        let why = permanent(provider.delete(INSTANCE, Some(DEPROVISION)).await);
        assert!(why.contains("names another instance's cache"), "{why}");
        assert_eq!((create.num_calls(), delete.num_calls()), (0, 0));
        assert_eq!(tags.num_calls(), 2, "looked at its tags each time");
    }
}

/// A warm-pool cache keeps its key in `broker-cache` while
/// `broker-instance-id` moves to the instance that claimed it: the key
/// decides whose the cache is. Retagging sends the tenant's tags, keeps
/// the key, and touches only a cache the key owns.
#[tokio::test]
async fn a_claimed_pool_cache_is_owned_by_its_key_and_retagged_for_its_tenant() {
    let claimed = mock!(Client::list_tags_for_resource).then_output(|| {
        ListTagsForResourceOutput::builder()
            .tag_list(Tag::builder().key("broker-cache").value(INSTANCE).build())
            .tag_list(Tag::builder().key("broker-instance-id").value("the-tenant-instance").build())
            .build()
    });
    let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = sent.clone();
    let add_tags = mock!(Client::add_tags_to_resource)
        .match_requests(move |req| {
            let tags: Vec<(String, String)> = req
                .tags()
                .iter()
                .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
                .collect();
            seen.lock().unwrap().push(tags);
            true
        })
        .then_output(|| AddTagsToResourceOutput::builder().build());
    let delete = mock!(Client::delete_replication_group)
        .then_output(|| DeleteReplicationGroupOutput::builder().build());
    let provider = provider_on(
        mocked(&[
            &describe_group(group("available", 1)),
            &claimed,
            &add_tags,
            &no_snapshots(),
            &no_serverless_snapshots(),
            &delete,
        ]),
        secrets_with_admin().await,
    );
    let mut s = spec(INSTANCE, "elasticache-redis", "small");
    s.tags = vec![
        ("broker-instance-id".into(), "the-tenant-instance".into()),
        ("organization".into(), "org-1".into()),
        ("broker-cache".into(), "not-the-key".into()),
    ];
    assert_eq!(provider.retag(&s).await, Ok(Progress::Done));
    let tags = sent.lock().unwrap().pop().expect("AddTagsToResource sent");
    for want in
        [("broker-instance-id", "the-tenant-instance"), ("organization", "org-1"), ("broker-cache", INSTANCE)]
    {
        assert!(tags.contains(&(want.0.to_string(), want.1.to_string())), "{want:?} in {tags:?}");
    }
    assert!(!tags.iter().any(|(_, v)| v == "not-the-key"), "the key tag is the provider's: {tags:?}");
    // Deleting it is the key's decision too.
    assert!(provider.delete(INSTANCE, None).await.is_ok());
    assert_eq!(delete.num_calls(), 1);

    // A cache whose key tag names another key is not retagged.
    let other = tagged_for("0d9e3c1a-other-instance");
    let add_tags =
        mock!(Client::add_tags_to_resource).then_output(|| AddTagsToResourceOutput::builder().build());
    let provider = provider_on(
        mocked(&[&describe_group(group("available", 1)), &other, &add_tags]),
        secrets_with_admin().await,
    );
    let why = permanent(provider.retag(&s).await);
    assert!(why.contains("the broker leaves it alone"), "{why}");
    assert_eq!(add_tags.num_calls(), 0);
}
