//! The provider against moto in server mode, with the user-group calls moto
//! lacks answered by [`FakeRbac`].
//!
//! moto quirks these tests live with: everything is `available` at once; a
//! deleted replication group or cache cluster stays `deleting` for ever (the
//! tests say when it is gone, through an interceptor answering
//! ReplicationGroupNotFound); the member clusters of a replication group
//! cannot be described; a deleted user is described once as `deleting`, then
//! not found; DeleteReplicationGroup accepts a `FinalSnapshotIdentifier` but
//! takes no snapshot (the tests look at the request instead).

use std::sync::{Arc, Mutex};

use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_elasticache::config::{ConfigBag, Intercept};
use aws_sdk_elasticache::error::BoxError;
use aws_sdk_elasticache::operation::create_user::CreateUserInput;
use aws_sdk_elasticache::operation::delete_replication_group::DeleteReplicationGroupInput;
use aws_sdk_elasticache::types::{AuthenticationType, AutomaticFailoverStatus, ReplicationGroup, User};
use secrecy::SecretString;

use super::{DEPROVISION, FakeRbac, INSTANCE, secrets_with_admin, settings, spec};
use crate::elasticache::{ElastiCacheProvider, LogSettings};
use crate::sdk_config_for_endpoint;
use broker_core::domain::credentials::{PASSWORD_LEN, generate_password};
use broker_core::domain::{CacheUser, LogType, ResourceKind};
use broker_core::ports::{CacheProvider, Inventory, Principal, Progress, ProviderError, Removal};
use broker_testing::MotoServer;
use broker_testing::aws::{FakeAuthTokens, GoneGroups, moto_elasticache_config};

/// moto, a provider on it, and what the tests look through.
struct World {
    _moto: MotoServer,
    /// A plain client on moto, to look at what the provider made.
    aws: Client,
    rbac: FakeRbac,
    /// The AUTH-token changes moto ignores.
    tokens: FakeAuthTokens,
    provider: ElastiCacheProvider,
    /// The user id of every CreateUser the provider sent.
    created_users: Arc<Mutex<Vec<String>>>,
    /// Every DeleteReplicationGroup the provider sent: the group and the
    /// final snapshot it asked for.
    deleted_groups: DeletedGroups,
    /// Replication groups to report gone, since moto never finishes deleting.
    gone: GoneGroups,
    /// CloudWatch Logs on moto, where the caches' log groups are.
    logs: aws_sdk_cloudwatchlogs::Client,
}

/// Records the user id of every CreateUser request.
#[derive(Debug)]
struct RecordCreateUser(Arc<Mutex<Vec<String>>>);

impl Intercept for RecordCreateUser {
    fn name(&self) -> &'static str {
        "RecordCreateUser"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(input) = context.input().downcast_ref::<CreateUserInput>() {
            self.0.lock().unwrap().push(input.user_id().unwrap_or_default().to_string());
        }
        Ok(())
    }
}

/// (replication group, final snapshot) of every DeleteReplicationGroup sent.
type DeletedGroups = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Records the group and final snapshot of every DeleteReplicationGroup.
#[derive(Debug)]
struct RecordDeleteGroup(DeletedGroups);

impl Intercept for RecordDeleteGroup {
    fn name(&self) -> &'static str {
        "RecordDeleteGroup"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(input) = context.input().downcast_ref::<DeleteReplicationGroupInput>() {
            self.0.lock().unwrap().push((
                input.replication_group_id().unwrap_or_default().to_string(),
                input.final_snapshot_identifier().map(str::to_string),
            ));
        }
        Ok(())
    }
}

async fn world() -> World {
    let moto = MotoServer::start();
    let config = sdk_config_for_endpoint(&moto.endpoint).await;
    let aws = Client::new(&config);

    let gone: GoneGroups = Arc::default();
    let created_users: Arc<Mutex<Vec<String>>> = Arc::default();
    let deleted_groups: DeletedGroups = Arc::default();
    let rbac = FakeRbac::new();
    let tokens = FakeAuthTokens::new();
    let client = Client::from_conf(
        moto_elasticache_config(&config, gone.clone(), &rbac, &tokens)
            .interceptor(RecordCreateUser(created_users.clone()))
            .interceptor(RecordDeleteGroup(deleted_groups.clone()))
            .build(),
    );

    let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
    let provider = ElastiCacheProvider::new(client, secrets_with_admin().await, settings())
        .with_rbac_client(rbac.client.clone())
        .with_logs(LogSettings { client: logs.clone(), retention_days: 14 });
    World { _moto: moto, aws, rbac, tokens, provider, created_users, deleted_groups, gone, logs }
}

impl World {
    async fn group(&self, id: &str) -> ReplicationGroup {
        let out = self.aws.describe_replication_groups().replication_group_id(id).send().await.unwrap();
        out.replication_groups()[0].clone()
    }

    async fn user(&self, id: &str) -> Option<User> {
        match self.aws.describe_users().user_id(id).send().await {
            Ok(out) => out.users().first().cloned(),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_user_not_found_fault()) => None,
            Err(e) => panic!("DescribeUsers {id}: {e:?}"),
        }
    }

    async fn tags(&self, arn: &str) -> Vec<(String, String)> {
        let out = self.aws.list_tags_for_resource().resource_name(arn).send().await.unwrap();
        out.tag_list()
            .iter()
            .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
            .collect()
    }

    /// Calls `delete` until it is done (see [`super::delete_until_done`]).
    async fn delete_until_done(&self, instance_id: &str, final_snapshot: Option<&str>) -> Vec<String> {
        super::delete_until_done(&self.provider, &self.gone, instance_id, final_snapshot).await
    }
}

fn binding_user(passwords: usize) -> CacheUser {
    CacheUser {
        username: "b-3f0c2a".into(),
        passwords: (0..passwords).map(|_| generate_password(PASSWORD_LEN)).collect::<Vec<SecretString>>(),
        access_string: "~* &* +@all -@dangerous".into(),
    }
}

#[tokio::test]
async fn a_redis_instance_becomes_one_encrypted_tagged_replication_group_named_after_the_instance() {
    let w = world().await;
    let progress = w.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    assert!(matches!(progress, Progress::Working { .. }), "{progress:?}");

    let id = w.provider.cache_id(INSTANCE);
    assert!(id.starts_with("osb-") && id.len() == 4 + 21, "{id}");
    let group = w.group(&id).await;
    assert_eq!(group.engine(), Some("redis"));
    assert_eq!(group.cache_node_type(), Some("cache.t4g.small"));
    assert_eq!(group.member_clusters().len(), 1);
    assert_eq!(group.cluster_enabled(), Some(false));
    assert_eq!(group.transit_encryption_enabled(), Some(true));
    assert_eq!(group.at_rest_encryption_enabled(), Some(true));
    assert_eq!(group.kms_key_id(), Some("alias/osb-cache"));
    assert_eq!(group.snapshot_retention_limit(), Some(3));
    assert_eq!(group.snapshot_window(), Some("03:00-05:00"));
    assert_eq!(group.user_group_ids(), std::slice::from_ref(&id));

    let tags = w.tags(group.arn().unwrap()).await;
    for tag in [
        ("broker", "osb"),
        ("broker-plan", "small"),
        ("broker-instance-id", INSTANCE),
        ("organization", "org-1"),
    ] {
        assert!(tags.contains(&(tag.0.to_string(), tag.1.to_string())), "{tag:?} in {tags:?}");
    }
}

/// A replication group under the instance's name that was not made for it
/// (here by hand, with another instance's tag) stays as it is: the create is
/// refused for good and so is the delete, and the users are not touched.
#[tokio::test]
async fn a_replication_group_tagged_for_another_instance_is_left_alone() {
    let w = world().await;
    let id = w.provider.cache_id(INSTANCE);
    w.aws
        .create_replication_group()
        .replication_group_id(&id)
        .replication_group_description("someone else's")
        .engine("redis")
        .cache_node_type("cache.t4g.micro")
        .num_cache_clusters(1)
        .tags(aws_sdk_elasticache::types::Tag::builder().key("broker-instance-id").value("other").build())
        .send()
        .await
        .unwrap();

    let err = w.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap_err();
    let ProviderError::Permanent(why) = err else { panic!("{err:?}") };
    assert!(why.contains(&format!("replication group {id} exists already")), "{why}");
    let err = w.provider.delete(INSTANCE, None).await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent(_)), "{err:?}");
    assert_eq!(w.group(&id).await.status(), Some("available"), "not deleted");
    assert_eq!(w.group(&id).await.description(), Some("someone else's"));
}

#[tokio::test]
async fn the_user_group_holds_a_disabled_default_user_and_the_admin_user() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();

    let default_id = format!("osb-d-{}", &w.provider.cache_id(INSTANCE)[4..]);
    let admin_id = format!("osb-a-{}", &w.provider.cache_id(INSTANCE)[4..]);
    let default = w.user(&default_id).await.expect("default user");
    assert_eq!(default.user_name(), Some("default"));
    assert_eq!(default.access_string(), Some("off -@all"));
    assert_eq!(default.authentication().and_then(|a| a.r#type()), Some(&AuthenticationType::NoPassword));
    let admin = w.user(&admin_id).await.expect("admin user");
    assert_eq!(admin.user_name(), Some("broker-admin"));
    assert_eq!(admin.authentication().and_then(|a| a.password_count()), Some(1));
    assert_eq!(w.rbac.members(&w.provider.cache_id(INSTANCE)), Some(vec![default_id, admin_id]));
}

#[tokio::test]
async fn spare_users_are_made_with_their_passwords_and_put_in_the_user_group_it_creates() {
    let w = world().await;
    let mut spec = spec(INSTANCE, "elasticache-redis", "small");
    spec.spare_users = vec![
        CacheUser { username: "s-1".into(), ..binding_user(1) },
        CacheUser { username: "s-2".into(), ..binding_user(1) },
    ];
    w.provider.create(&spec).await.unwrap();

    let members = w.rbac.members(&w.provider.cache_id(INSTANCE)).unwrap();
    for name in ["s-1", "s-2"] {
        let id = w.provider.binding_user_id(INSTANCE, name);
        assert!(members.contains(&id), "{name} ({id}) is in the user group from the start: {members:?}");
        let user = w.user(&id).await.expect("made in ElastiCache");
        assert_eq!(user.user_name(), Some(name));
        assert_eq!(user.access_string(), Some("on ~* &* +@all -@dangerous"));
        assert_eq!(user.authentication().and_then(|a| a.password_count()), Some(1));
    }
    // A retry makes none of them again.
    w.provider.create(&spec).await.unwrap();
    assert_eq!(w.created_users.lock().unwrap().len(), 4, "default, admin and two spares, once each");
}

#[tokio::test]
async fn a_user_the_cache_is_gone_without_is_deleted_by_its_name() {
    let w = world().await;
    // GIVEN a binding user made but never added to a user group (a crash in
    // between), and no cache at all
    let id = w.provider.binding_user_id(INSTANCE, "s-9");
    w.aws
        .create_user()
        .user_id(&id)
        .user_name("s-9")
        .engine("redis")
        .access_string("on ~* +@all")
        .passwords(secrecy::ExposeSecret::expose_secret(&generate_password(PASSWORD_LEN)))
        .send()
        .await
        .unwrap();
    // WHEN it is deleted THEN it is gone, and deleting again is done at once
    let mut steps = 0;
    while w.provider.delete_user(INSTANCE, "s-9").await.unwrap() != Progress::Done {
        steps += 1;
        assert!(steps < 10, "delete_user never finished");
    }
    assert!(w.user(&id).await.is_none(), "the user is left behind");
    assert_eq!(w.provider.delete_user(INSTANCE, "s-9").await.unwrap(), Progress::Done);
}

#[tokio::test]
async fn creating_twice_adopts_the_first_replication_group_and_its_users() {
    let w = world().await;
    let spec = spec(INSTANCE, "elasticache-redis", "small");
    w.provider.create(&spec).await.unwrap();
    w.provider.create(&spec).await.unwrap();

    let groups = w.aws.describe_replication_groups().send().await.unwrap();
    assert_eq!(groups.replication_groups().len(), 1);
    assert_eq!(w.created_users.lock().unwrap().len(), 2, "the default and admin users, once each");
}

#[tokio::test]
async fn a_created_group_is_done_and_answers_on_its_primary_endpoint_with_tls() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-valkey", "dev")).await.unwrap();

    assert_eq!(w.provider.progress(INSTANCE).await.unwrap(), Progress::Done);
    let endpoint = w.provider.endpoint(INSTANCE).await.unwrap();
    assert!(endpoint.host.starts_with(&format!("master.{}", w.provider.cache_id(INSTANCE))), "{endpoint:?}");
    assert_eq!((endpoint.port, endpoint.tls), (6379, true));
    assert_eq!(w.group(&w.provider.cache_id(INSTANCE)).await.engine(), Some("valkey"));
}

#[tokio::test]
async fn a_cluster_mode_plan_becomes_three_shards_of_a_primary_and_a_replica() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-redis", "cluster-3x2")).await.unwrap();

    let group = w.group(&w.provider.cache_id(INSTANCE)).await;
    assert_eq!(group.cluster_enabled(), Some(true));
    assert_eq!(group.node_groups().len(), 3);
    assert!(group.node_groups().iter().all(|g| g.node_group_members().len() == 2));
    assert_eq!(group.member_clusters().len(), 6);
    assert_eq!(group.automatic_failover(), Some(&AutomaticFailoverStatus::Enabled));
    let endpoint = w.provider.endpoint(INSTANCE).await.unwrap();
    assert!(endpoint.host.starts_with("clustercfg."), "the configuration endpoint: {endpoint:?}");
    // What the alarms watch: the six member clusters, one node each.
    let nodes = w.provider.nodes(INSTANCE).await.unwrap();
    let mut members: Vec<String> = group.member_clusters().to_vec();
    members.sort();
    assert_eq!(nodes.iter().map(|n| n.cluster_id.clone()).collect::<Vec<_>>(), members);
    assert!(nodes.iter().all(|n| n.node_id.is_none()));
    assert_eq!(w.provider.nodes("never-provisioned").await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_memcached_plan_becomes_a_two_node_cache_cluster_without_users() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-memcached", "small")).await.unwrap();

    let id = w.provider.cache_id(INSTANCE);
    let out = w.aws.describe_cache_clusters().cache_cluster_id(&id).send().await.unwrap();
    let cluster = &out.cache_clusters()[0];
    assert_eq!(cluster.engine(), Some("memcached"));
    assert_eq!(cluster.num_cache_nodes(), Some(2));
    assert_eq!(cluster.cache_node_type(), Some("cache.t4g.small"));
    assert_eq!(cluster.transit_encryption_enabled(), Some(true));
    assert_eq!(cluster.cache_subnet_group_name(), Some("osb-memcached"));
    assert_eq!(w.provider.progress(INSTANCE).await.unwrap(), Progress::Done);

    assert_eq!(w.provider.put_user(INSTANCE, &binding_user(1)).await.unwrap(), Progress::Done);
    assert!(w.created_users.lock().unwrap().is_empty());
    assert_eq!(w.rbac.members(&id), None);
    let Progress::Working { detail } = w.provider.delete(INSTANCE, None).await.unwrap() else {
        panic!("done at once")
    };
    assert_eq!(detail, format!("deleting cache cluster {id}"));
}

#[tokio::test]
async fn a_binding_user_is_created_once_and_then_reset_through_modify_user() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    let user_id = w.provider.binding_user_id(INSTANCE, "b-3f0c2a");

    w.provider.put_user(INSTANCE, &binding_user(1)).await.unwrap();
    let user = w.user(&user_id).await.expect("binding user in moto");
    assert_eq!(user.user_name(), Some("b-3f0c2a"));
    assert_eq!(user.access_string(), Some("on ~* &* +@all -@dangerous"));
    assert_eq!(user.authentication().and_then(|a| a.password_count()), Some(1));
    assert!(w.rbac.members(&w.provider.cache_id(INSTANCE)).unwrap().contains(&user_id));
    assert_eq!(w.provider.user_progress(INSTANCE, "b-3f0c2a").await.unwrap(), Progress::Done);

    w.provider.put_user(INSTANCE, &binding_user(2)).await.unwrap();
    let state = w.rbac.state.lock().unwrap();
    assert_eq!(state.user_changes, [(user_id.clone(), 2, "on ~* &* +@all -@dangerous".to_string())]);
    let added: Vec<_> = state.group_changes.iter().filter(|c| c.1.contains(&user_id)).collect();
    assert_eq!(added.len(), 1, "added to the user group once: {:?}", state.group_changes);
    assert_eq!(w.created_users.lock().unwrap().iter().filter(|u| **u == user_id).count(), 1);
}

#[tokio::test]
async fn unbinding_takes_the_user_out_of_the_group_and_deletes_it() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    w.provider.put_user(INSTANCE, &binding_user(1)).await.unwrap();
    let user_id = w.provider.binding_user_id(INSTANCE, "b-3f0c2a");

    let mut steps = 0;
    while w.provider.delete_user(INSTANCE, "b-3f0c2a").await.unwrap() != Progress::Done {
        steps += 1;
        assert!(steps < 10, "delete_user never finished");
    }
    let removed: Vec<_> = w
        .rbac
        .state
        .lock()
        .unwrap()
        .group_changes
        .iter()
        .filter(|c| c.2 == [user_id.clone()])
        .cloned()
        .collect();
    assert_eq!(removed.len(), 1);
    assert!(!w.rbac.members(&w.provider.cache_id(INSTANCE)).unwrap().contains(&user_id));
    assert!(w.user(&user_id).await.is_none(), "deleted in moto");
    assert_eq!(w.provider.delete_user(INSTANCE, "b-3f0c2a").await.unwrap(), Progress::Done, "and again");
}

#[tokio::test]
async fn deleting_waits_for_the_group_then_removes_every_user_and_the_user_group() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    w.provider.put_user(INSTANCE, &binding_user(1)).await.unwrap();
    let id = w.provider.cache_id(INSTANCE);

    let details = w.delete_until_done(INSTANCE, None).await;
    assert_eq!(details[0], format!("deleting replication group {id}"));
    assert_eq!(*w.deleted_groups.lock().unwrap(), [(id.clone(), None)], "no final snapshot asked for");
    assert!(details.iter().any(|d| d.starts_with("deleting user group")), "{details:?}");
    assert_eq!(w.rbac.members(&id), None, "the user group is gone");
    assert!(w.user(&w.provider.binding_user_id(INSTANCE, "b-3f0c2a")).await.is_none());
    assert!(w.user(&format!("osb-a-{}", &id[4..])).await.is_none());
    // moto shows a deleted user once as `deleting`, then never again.
    let default = w.user(&format!("osb-d-{}", &id[4..])).await;
    assert!(default.as_ref().is_none_or(|u| u.status() == Some("deleting")), "{default:?}");
    assert_eq!(w.provider.delete(INSTANCE, None).await.unwrap(), Progress::Done, "and again");
}

#[tokio::test]
async fn deleting_with_a_final_snapshot_asks_for_it_by_the_deprovisions_snapshot_name_once() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-valkey", "staging")).await.unwrap();
    let id = w.provider.cache_id(INSTANCE);
    let key = crate::elasticache::names::hash(DEPROVISION.as_bytes());
    let snapshot = format!("osb-final-{}-{key}", &id[4..]);

    let details = w.delete_until_done(INSTANCE, Some(DEPROVISION)).await;
    assert_eq!(details[0], format!("deleting replication group {id} after its final snapshot {snapshot}"));
    assert_eq!(*w.deleted_groups.lock().unwrap(), [(id.clone(), Some(snapshot))], "one request");
    assert_eq!(w.provider.delete(INSTANCE, Some(DEPROVISION)).await.unwrap(), Progress::Done, "and again");
}

#[tokio::test]
async fn moving_to_a_bigger_plan_changes_the_node_type_snapshots_and_plan_tag() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    let medium = spec(INSTANCE, "elasticache-redis", "medium");

    let Progress::Working { detail } = w.provider.modify(&medium).await.unwrap() else {
        panic!("nothing changed")
    };
    assert!(detail.contains("node type cache.t4g.small → cache.m7g.large"), "{detail}");
    let group = w.group(&w.provider.cache_id(INSTANCE)).await;
    assert_eq!(group.cache_node_type(), Some("cache.m7g.large"));
    assert_eq!(group.snapshot_retention_limit(), Some(7));
    assert!(w.tags(group.arn().unwrap()).await.contains(&("broker-plan".into(), "medium".into())));
    assert_eq!(w.provider.modify(&medium).await.unwrap(), Progress::Done, "nothing left to change");
}

// ------------------------------------------------------------ rotation

fn passwords(n: usize) -> Vec<SecretString> {
    (0..n).map(|_| generate_password(PASSWORD_LEN)).collect()
}

#[tokio::test]
async fn the_admin_of_an_rbac_instance_gets_exactly_the_passwords_given_through_modify_user() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    let admin_id = format!("osb-a-{}", &w.provider.cache_id(INSTANCE)[4..]);
    let (new, old) = (passwords(1).remove(0), passwords(1).remove(0));
    let both = [new.clone(), old];

    let progress = w.provider.set_passwords(INSTANCE, &Principal::Admin, &both).await.unwrap();
    assert_eq!(
        progress,
        Progress::Working { detail: format!("setting 2 passwords of the admin credential ({admin_id})") }
    );
    assert_eq!(w.rbac.calls().last().unwrap(), &format!("ModifyUser {admin_id} passwords=2"));
    assert_eq!(
        w.provider.passwords_progress(INSTANCE, &Principal::Admin, &both).await.unwrap(),
        Progress::Done
    );
    let Progress::Working { detail } =
        w.provider.passwords_progress(INSTANCE, &Principal::Admin, std::slice::from_ref(&new)).await.unwrap()
    else {
        panic!("the old password is still there")
    };
    assert_eq!(detail, "admin user broker-admin holds 2 passwords, 1 expected");

    w.provider.set_passwords(INSTANCE, &Principal::Admin, std::slice::from_ref(&new)).await.unwrap();
    assert_eq!(
        w.provider.passwords_progress(INSTANCE, &Principal::Admin, &[new]).await.unwrap(),
        Progress::Done
    );
    let state = w.rbac.state.lock().unwrap();
    let changes: Vec<_> =
        state.user_changes.iter().map(|(id, n, access)| (id.as_str(), *n, access.as_str())).collect();
    assert_eq!(
        changes,
        [(admin_id.as_str(), 2, ""), (admin_id.as_str(), 1, "")],
        "the access string is left alone"
    );
}

#[tokio::test]
async fn a_binding_users_passwords_are_set_on_its_own_user() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-valkey", "dev")).await.unwrap();
    w.provider.put_user(INSTANCE, &binding_user(1)).await.unwrap();
    let user_id = w.provider.binding_user_id(INSTANCE, "b-3f0c2a");
    let principal = Principal::User("b-3f0c2a".into());
    let two = passwords(2);

    w.provider.set_passwords(INSTANCE, &principal, &two).await.unwrap();

    assert_eq!(w.rbac.calls().last().unwrap(), &format!("ModifyUser {user_id} passwords=2"));
    assert_eq!(w.provider.passwords_progress(INSTANCE, &principal, &two).await.unwrap(), Progress::Done);
    let user = w.user(&user_id).await.unwrap();
    assert_eq!(user.user_name(), Some("b-3f0c2a"), "the rest of the answer is moto's");
}

#[tokio::test]
async fn a_user_created_again_after_a_rotation_is_described_as_moto_has_it() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    w.provider.put_user(INSTANCE, &binding_user(1)).await.unwrap();
    let principal = Principal::User("b-3f0c2a".into());
    w.provider.set_passwords(INSTANCE, &principal, &passwords(2)).await.unwrap();
    while w.provider.delete_user(INSTANCE, "b-3f0c2a").await.unwrap() != Progress::Done {}

    w.provider.put_user(INSTANCE, &binding_user(1)).await.unwrap();

    let user = w.user(&w.provider.binding_user_id(INSTANCE, "b-3f0c2a")).await.unwrap();
    assert_eq!(user.authentication().and_then(|a| a.password_count()), Some(1));
}

#[tokio::test]
async fn the_auth_token_of_a_redis_5_instance_is_rotated_then_set() {
    let w = world().await;
    let mut spec = spec(INSTANCE, "elasticache-redis", "small");
    spec.engine_version = "5.0.6".into();
    w.provider.create(&spec).await.unwrap();
    let id = w.provider.cache_id(INSTANCE);
    assert!(w.group(&id).await.user_group_ids().is_empty(), "no users before Redis OSS 6");
    let (new, old) = (passwords(1).remove(0), passwords(1).remove(0));

    let Progress::Working { detail } =
        w.provider.set_passwords(INSTANCE, &Principal::Admin, &[new.clone(), old.clone()]).await.unwrap()
    else {
        panic!("done at once")
    };
    assert_eq!(detail, format!("rotating (old and new accepted) the AUTH token of replication group {id}"));
    let both = [new.clone(), old];
    assert_eq!(
        w.provider.passwords_progress(INSTANCE, &Principal::Admin, &both).await.unwrap(),
        Progress::Done
    );
    w.provider.set_passwords(INSTANCE, &Principal::Admin, std::slice::from_ref(&new)).await.unwrap();

    assert_eq!(w.tokens.changes(), [(id.clone(), "ROTATE".to_string()), (id, "SET".to_string())]);
    assert_eq!(
        w.provider.passwords_progress(INSTANCE, &Principal::Admin, &[new]).await.unwrap(),
        Progress::Done
    );
    assert!(w.rbac.calls().is_empty(), "no user group, no ModifyUser");
}

#[tokio::test]
async fn a_binding_user_on_a_cache_without_users_has_no_password_to_change() {
    let w = world().await;
    let mut spec = spec(INSTANCE, "elasticache-redis", "small");
    spec.engine_version = "5.0.6".into();
    w.provider.create(&spec).await.unwrap();

    let principal = Principal::User("b-3f0c2a".into());
    let err = w.provider.set_passwords(INSTANCE, &principal, &passwords(1)).await.unwrap_err();

    assert!(matches!(&err, ProviderError::Permanent(why) if why.contains("has no users")), "{err:?}");
    assert!(w.tokens.changes().is_empty());
}

#[tokio::test]
async fn memcached_and_a_missing_cache_have_no_passwords_to_change() {
    let w = world().await;
    let missing = w.provider.set_passwords(INSTANCE, &Principal::Admin, &passwords(1)).await.unwrap_err();
    assert!(matches!(&missing, ProviderError::Permanent(why) if why.starts_with("no replication group")));
    w.provider.create(&spec(INSTANCE, "elasticache-memcached", "small")).await.unwrap();

    let err = w.provider.set_passwords(INSTANCE, &Principal::Admin, &passwords(2)).await.unwrap_err();
    let progress = w.provider.passwords_progress(INSTANCE, &Principal::Admin, &passwords(2)).await;

    assert!(
        matches!(&err, ProviderError::Permanent(why) if why.contains("Memcached, which has no passwords")),
        "{err:?}"
    );
    assert_eq!(progress, Err(err));
}

#[tokio::test]
async fn none_three_or_an_empty_password_are_refused_before_any_call() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    let calls_before = w.rbac.calls().len();

    for bad in [vec![], passwords(3), vec![SecretString::from("")]] {
        let err = w.provider.set_passwords(INSTANCE, &Principal::Admin, &bad).await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::Permanent(why) if why.contains("one or two passwords")),
            "{err:?}"
        );
    }
    assert_eq!(w.rbac.calls().len(), calls_before);
}

/// The provider contract on moto, with the user-group calls from
/// [`FakeRbac`] and deletions that end at the next look.
mod contract {
    use super::*;
    use broker_core::ports::CacheSpec;
    use broker_testing::aws::{DeletionsFinishAtOnce, FakeAuthTokens, moto_elasticache_config};
    use broker_testing::contract::provider::Backend;

    struct Redis;

    impl Backend for Redis {
        fn spec(&self, instance_id: &str) -> CacheSpec {
            spec(instance_id, "elasticache-redis", "small")
        }
    }

    async fn open() -> (Arc<ElastiCacheProvider>, Redis, (MotoServer, FakeRbac)) {
        let moto = MotoServer::start();
        let config = sdk_config_for_endpoint(&moto.endpoint).await;
        let gone: GoneGroups = Arc::default();
        let rbac = FakeRbac::new();
        let client = Client::from_conf(
            moto_elasticache_config(&config, gone.clone(), &rbac, &FakeAuthTokens::new())
                .interceptor(DeletionsFinishAtOnce(gone))
                .build(),
        );
        let provider = ElastiCacheProvider::new(client, secrets_with_admin().await, settings())
            .with_rbac_client(rbac.client.clone());
        (Arc::new(provider), Redis, (moto, rbac))
    }

    broker_testing::provider_contract!(open);
}

/// The orphan sweep's listing and deletion on moto: what the live cache
/// accounts for is never listed; a deprovisioned instance's replication
/// group, user group and users and a Memcached cluster are, and are deleted
/// (the group with a final snapshot); a resource with the broker's shape of
/// name but without its tag is left alone.
#[tokio::test]
async fn the_sweep_lists_what_no_live_cache_accounts_for_and_deletes_only_what_is_tagged_ours() {
    use broker_core::domain::ResourceKind;
    use broker_core::ports::{Claim, Inventory, Removal};

    let w = world().await;
    const DEAD: &str = "0d9e3c1a-deprovisioned-instance";
    const DEAD_MEMCACHED: &str = "5a7b1c2d-deprovisioned-memcached";
    w.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    w.provider.put_user(INSTANCE, &binding_user(1)).await.unwrap();
    w.provider.create(&spec(DEAD, "elasticache-redis", "small")).await.unwrap();
    w.provider.create(&spec(DEAD_MEMCACHED, "elasticache-memcached", "small")).await.unwrap();
    // Someone else's group under a name of the broker's shape, untagged.
    let foreign = w.provider.cache_id("someone-elses-key");
    w.aws
        .create_replication_group()
        .replication_group_id(&foreign)
        .replication_group_description("not the broker's")
        .engine("redis")
        .cache_node_type("cache.t4g.micro")
        .num_cache_clusters(1)
        .send()
        .await
        .unwrap();
    let live: broker_core::ports::LiveCaches = [INSTANCE.to_string()].into();
    let ids = |page: broker_core::ports::LeftoverPage| {
        let mut ids: Vec<String> = page.leftovers.iter().map(|l| l.id.clone()).collect();
        ids.sort();
        ids
    };

    let groups = w.provider.leftovers(ResourceKind::ReplicationGroup, None, &live).await.unwrap();
    let mut want = vec![w.provider.cache_id(DEAD), foreign.clone()];
    want.sort();
    assert_eq!(ids(groups.clone()), want, "the live group is not listed");
    let clusters = w.provider.leftovers(ResourceKind::CacheCluster, None, &live).await.unwrap();
    assert_eq!(
        ids(clusters.clone()),
        [w.provider.cache_id(DEAD_MEMCACHED)],
        "member clusters go with their group"
    );
    let user_groups = w.provider.leftovers(ResourceKind::UserGroup, None, &live).await.unwrap();
    assert_eq!(ids(user_groups.clone()), [w.provider.cache_id(DEAD)]);
    let users = w.provider.leftovers(ResourceKind::User, None, &live).await.unwrap();
    let names = crate::elasticache::names::Names::new("osb");
    let mut want =
        vec![names.admin_user(DEAD), names.default_user(DEAD), names.binding_user(INSTANCE, "b-3f0c2a")];
    want.sort();
    assert_eq!(ids(users.clone()), want, "the live cache's admin and default users are its own");
    // moto keeps no user groups, so the live binding's user looks outside
    // its group: the sweep checks it against the instance's bindings.
    let binding = users.leftovers.iter().find(|l| l.id == names.binding_user(INSTANCE, "b-3f0c2a")).unwrap();
    assert_eq!(binding.claim, Claim::UserOf { key: INSTANCE.into(), username: "b-3f0c2a".into() });
    let dead_admin = users.leftovers.iter().find(|l| l.id == names.admin_user(DEAD)).unwrap();
    assert_eq!(dead_admin.claim, Claim::Nobody);

    for l in groups.leftovers.iter().chain(&clusters.leftovers).chain(&user_groups.leftovers) {
        let want = if l.id == foreign { Removal::NotOurs } else { Removal::Removed };
        assert_eq!(w.provider.remove(l).await.unwrap(), want, "{}", l.id);
    }
    for l in users.leftovers.iter().filter(|l| l.claim == Claim::Nobody) {
        assert_eq!(w.provider.remove(l).await.unwrap(), Removal::Removed, "{}", l.id);
    }
    let deleted = w.deleted_groups.lock().unwrap().clone();
    let dead_group = w.provider.cache_id(DEAD);
    assert_eq!(
        deleted,
        [(dead_group.clone(), Some(format!("{dead_group}-orphan")))],
        "a final snapshot, and not the foreign group"
    );
    assert!(w.rbac.calls().contains(&format!("DeleteUserGroup {dead_group}")), "{:?}", w.rbac.calls());
    assert!(w.user(&names.admin_user(INSTANCE)).await.is_some(), "the live cache's users stay");
    let gone_or_deleting = |u: Option<User>| u.is_none_or(|u| u.status() == Some("deleting"));
    assert!(gone_or_deleting(w.user(&names.admin_user(DEAD)).await));
    // What is being deleted is not listed again.
    let groups = w.provider.leftovers(ResourceKind::ReplicationGroup, None, &live).await.unwrap();
    assert_eq!(ids(groups), [foreign]);
    assert_eq!(w.group(&w.provider.cache_id(INSTANCE)).await.status(), Some("available"));
}

/// The log groups under `prefix` and their retention.
async fn log_groups(logs: &aws_sdk_cloudwatchlogs::Client, prefix: &str) -> Vec<(String, Option<i32>)> {
    let out = logs.describe_log_groups().log_group_name_prefix(prefix).send().await.unwrap();
    out.log_groups()
        .iter()
        .map(|g| (g.log_group_name().unwrap_or_default().to_string(), g.retention_in_days()))
        .collect()
}

#[tokio::test]
async fn logs_go_to_a_log_group_of_the_caches_own_made_before_it_and_deleted_after_it() {
    let w = world().await;
    let mut s = spec(INSTANCE, "elasticache-redis", "small");
    s.log_delivery = vec![LogType::SlowLog, LogType::EngineLog];
    w.provider.create(&s).await.unwrap();
    let id = w.provider.cache_id(INSTANCE);
    let log_group = w.provider.log_group(INSTANCE);
    assert_eq!(log_group, format!("/elasticache/{id}"));
    assert_eq!(log_groups(&w.logs, "/elasticache/").await, [(log_group.clone(), Some(14))]);
    let arn = format!("arn:aws:logs:us-east-1:123456789012:log-group:{log_group}");
    let tags = w.logs.list_tags_for_resource().resource_arn(&arn).send().await.unwrap();
    let tags = tags.tags().cloned().unwrap_or_default();
    assert_eq!(tags.get("broker").map(String::as_str), Some("osb"), "{tags:?}");
    assert_eq!(tags.get("broker-cache").map(String::as_str), Some(INSTANCE), "{tags:?}");
    assert_eq!(tags.get("organization").map(String::as_str), Some("org-1"), "{tags:?}");

    // The replication group delivers both logs there, in JSON.
    let group = w.group(&id).await;
    let configs = group.log_delivery_configurations();
    assert_eq!(configs.len(), 2, "{configs:?}");
    for c in configs {
        assert_eq!(c.log_format(), Some(&aws_sdk_elasticache::types::LogFormat::Json));
        assert_eq!(c.destination_type(), Some(&aws_sdk_elasticache::types::DestinationType::CloudWatchLogs));
        let to =
            c.destination_details().and_then(|d| d.cloud_watch_logs_details()).and_then(|d| d.log_group());
        assert_eq!(to, Some(log_group.as_str()));
    }
    // What is delivered is what the spec asks: nothing to modify; a second
    // create adopts the group and keeps one log group.
    assert_eq!(w.provider.modify(&s).await.unwrap(), Progress::Done);
    w.provider.create(&s).await.unwrap();
    assert_eq!(log_groups(&w.logs, "/elasticache/").await.len(), 1);

    // The log group goes once the cache is gone, and deleting again is fine.
    w.delete_until_done(INSTANCE, None).await;
    assert!(log_groups(&w.logs, "/elasticache/").await.is_empty());
    assert_eq!(w.provider.delete(INSTANCE, None).await.unwrap(), Progress::Done);
}

#[tokio::test]
async fn a_cache_without_log_delivery_has_no_log_group() {
    let w = world().await;
    w.provider.create(&spec(INSTANCE, "elasticache-redis", "small")).await.unwrap();
    assert!(log_groups(&w.logs, "/elasticache/").await.is_empty());
    let group = w.group(&w.provider.cache_id(INSTANCE)).await;
    assert!(group.log_delivery_configurations().is_empty());
}

#[tokio::test]
async fn the_sweep_lists_log_groups_no_live_cache_has_and_deletes_only_the_brokers() {
    let w = world().await;
    let mut s = spec(INSTANCE, "elasticache-redis", "small");
    s.log_delivery = vec![LogType::SlowLog];
    w.provider.create(&s).await.unwrap();
    let dead = w.provider.log_group("an-instance-deprovisioned-long-ago");
    let foreign = w.provider.log_group("a-group-someone-made");
    let mut tagged = std::collections::HashMap::new();
    tagged.insert("broker".to_string(), "osb".to_string());
    w.logs.create_log_group().log_group_name(&dead).set_tags(Some(tagged)).send().await.unwrap();
    w.logs.create_log_group().log_group_name(&foreign).send().await.unwrap();
    w.logs.create_log_group().log_group_name("/elasticache/osb-by-hand").send().await.unwrap();

    let live: broker_core::ports::LiveCaches = [INSTANCE.to_string()].into();
    let page = w.provider.leftovers(ResourceKind::LogGroup, None, &live).await.unwrap();
    let mut ids: Vec<&str> = page.leftovers.iter().map(|l| l.id.as_str()).collect();
    ids.sort();
    let mut want = [dead.as_str(), foreign.as_str()];
    want.sort();
    assert_eq!(ids, want, "the live cache's group and names not of the broker's shape are left out");
    for leftover in &page.leftovers {
        let want = if leftover.id == dead { Removal::Removed } else { Removal::NotOurs };
        assert_eq!(w.provider.remove(leftover).await.unwrap(), want, "{}", leftover.id);
    }
    let left: Vec<String> = log_groups(&w.logs, "/elasticache/").await.into_iter().map(|(n, _)| n).collect();
    assert!(!left.contains(&dead) && left.contains(&foreign), "{left:?}");
}
