//! Stand-ins for what moto does not do in ElastiCache, for the provider's
//! tests and the AWS-mode end-to-end tests. Compiled only with the
//! `aws-testing` feature.
//!
//! - [`FakeRbac`]: the user-group calls and ModifyUser, as a separate client
//!   (aws-smithy-mocks rules over shared state), with an ordered call log;
//!   [`FakeRbac::modified_users`] makes DescribeUsers on moto agree with it.
//! - [`FakeAuthTokens`]: records the AUTH-token changes moto ignores and makes
//!   DescribeReplicationGroups show the token enabled.
//! - [`finished_deletions`]: ends the deletions moto never finishes, when a
//!   test says so or ([`DeletionsFinishAtOnce`]) as soon as one is asked for.
//! - [`elasticache_on_moto`] ([`moto_elasticache_config`]): a client on moto
//!   with all of the above.
//! - [`SecretIds`]: records the action and `SecretId` of every Secrets
//!   Manager request, to check how the broker names its secrets.
//!
//! The stand-ins never keep a password, only how many were sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::config::interceptors::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextMut,
};
use aws_sdk_elasticache::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_elasticache::error::{BoxError, ErrorMetadata};
use aws_sdk_elasticache::operation::create_user::CreateUserInput;
use aws_sdk_elasticache::operation::create_user_group::{CreateUserGroupError, CreateUserGroupOutput};
use aws_sdk_elasticache::operation::delete_replication_group::DeleteReplicationGroupInput;
use aws_sdk_elasticache::operation::delete_user::DeleteUserInput;
use aws_sdk_elasticache::operation::delete_user_group::{DeleteUserGroupError, DeleteUserGroupOutput};
use aws_sdk_elasticache::operation::describe_cache_clusters::{
    DescribeCacheClustersError, DescribeCacheClustersOutput,
};
use aws_sdk_elasticache::operation::describe_replication_groups::DescribeReplicationGroupsError;
use aws_sdk_elasticache::operation::describe_replication_groups::DescribeReplicationGroupsOutput;
use aws_sdk_elasticache::operation::describe_user_groups::{
    DescribeUserGroupsError, DescribeUserGroupsOutput,
};
use aws_sdk_elasticache::operation::describe_users::DescribeUsersOutput;
use aws_sdk_elasticache::operation::list_tags_for_resource::{
    ListTagsForResourceError, ListTagsForResourceOutput,
};
use aws_sdk_elasticache::operation::modify_replication_group::ModifyReplicationGroupInput;
use aws_sdk_elasticache::operation::modify_user::ModifyUserOutput;
use aws_sdk_elasticache::operation::modify_user_group::{ModifyUserGroupError, ModifyUserGroupOutput};
use aws_sdk_elasticache::types::error::{
    CacheClusterNotFoundFault, ReplicationGroupNotFoundFault, UserGroupAlreadyExistsFault,
    UserGroupNotFoundFault,
};
use aws_sdk_elasticache::types::{Authentication, AuthenticationType, Endpoint as AwsEndpoint, UserGroup};
use aws_smithy_mocks::{MockResponse, MockResponseInterceptor, Rule, RuleMode, mock, mock_client};

/// Error metadata as the wire carries it: the code and message of the fault.
pub fn meta(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

/// A mocked client answering with `rules` (the first that matches wins), with
/// the SDK's own retries off so an error reaches the provider at once.
pub fn mocked(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_elasticache, RuleMode::MatchAny, rules.iter().copied(), |c| c
        .retry_config(aws_sdk_elasticache::config::retry::RetryConfig::disabled()))
}

/// What the user-group stand-in has seen and holds.
#[derive(Debug, Default)]
pub struct RbacState {
    /// User group id → its user ids.
    pub groups: HashMap<String, Vec<String>>,
    /// Every ModifyUserGroup: (group, users added, users removed).
    pub group_changes: Vec<(String, Vec<String>, Vec<String>)>,
    /// Every ModifyUser: (user id, number of passwords, access string, empty
    /// when the call left it alone).
    pub user_changes: Vec<(String, usize, String)>,
    /// Every call that changes something, in order, as one line each:
    /// `CreateUserGroup <id> users=<a,b>`, `ModifyUserGroup <id> add=<..>
    /// remove=<..>`, `DeleteUserGroup <id>`, `ModifyUser <user id>
    /// passwords=<n>` (the count, never a password).
    pub calls: Vec<String>,
    /// User id → how many passwords its last ModifyUser gave it, until the
    /// user is created or deleted again (see [`FakeRbac::modified_users`]).
    pub passwords: HashMap<String, usize>,
    /// User group id → the tags it was created with.
    pub tags: HashMap<String, Vec<(String, String)>>,
    /// Cache parameter group name → its family and the parameters set on
    /// it (ModifyCacheParameterGroup), which moto lacks too.
    pub parameter_groups: HashMap<String, (String, std::collections::BTreeMap<String, String>)>,
    /// Serverless caches by name, and serverless snapshots by name, which
    /// moto lacks as well: available as soon as made, gone as soon as
    /// deleted, as moto has its caches.
    pub serverless: HashMap<String, aws_sdk_elasticache::types::ServerlessCache>,
    pub serverless_snapshots: HashMap<String, aws_sdk_elasticache::types::ServerlessCacheSnapshot>,
}

/// A stand-in for the user-group calls moto lacks (CreateUserGroup,
/// DescribeUserGroups, ModifyUserGroup, DeleteUserGroup, ModifyUser) and
/// the cache parameter group calls it lacks too (Create, Modify, Delete and
/// DescribeCacheParameterGroups), built
/// from aws-smithy-mocks rules over shared state. Responses have the shapes
/// of the ElastiCache API reference; like moto, changes settle at once, so a
/// group always describes as `active`.
pub struct FakeRbac {
    pub client: Client,
    pub state: Arc<Mutex<RbacState>>,
}

impl FakeRbac {
    pub fn new() -> FakeRbac {
        let state = Arc::new(Mutex::new(RbacState::default()));

        let s = state.clone();
        let create = mock!(Client::create_user_group).then_compute_response(move |req| {
            let id = req.user_group_id().unwrap_or_default().to_string();
            let mut st = s.lock().unwrap();
            st.calls.push(format!("CreateUserGroup {id} users={}", req.user_ids().join(",")));
            if st.groups.contains_key(&id) {
                let fault = UserGroupAlreadyExistsFault::builder()
                    .message("User group already exists")
                    .meta(meta("UserGroupAlreadyExists", "User group already exists"))
                    .build();
                return MockResponse::Error(CreateUserGroupError::UserGroupAlreadyExistsFault(fault));
            }
            st.groups.insert(id.clone(), req.user_ids().to_vec());
            let tags = req
                .tags()
                .iter()
                .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
                .collect();
            st.tags.insert(id.clone(), tags);
            MockResponse::Output(
                CreateUserGroupOutput::builder()
                    .user_group_id(&id)
                    .status("active")
                    .engine(req.engine().unwrap_or("redis"))
                    .set_user_ids(Some(req.user_ids().to_vec()))
                    .minimum_engine_version("6.0")
                    .arn(format!("arn:aws:elasticache:us-east-1:123456789012:usergroup:{id}"))
                    .build(),
            )
        });

        let s = state.clone();
        let describe = mock!(Client::describe_user_groups).then_compute_response(move |req| {
            let id = req.user_group_id().unwrap_or_default().to_string();
            let st = s.lock().unwrap();
            if id.is_empty() {
                // A listing: every group, in id order, on one page.
                let mut ids: Vec<&String> = st.groups.keys().collect();
                ids.sort();
                let groups = ids.into_iter().map(|g| active_group(g, &st.groups[g])).collect();
                return MockResponse::Output(
                    DescribeUserGroupsOutput::builder().set_user_groups(Some(groups)).build(),
                );
            }
            match st.groups.get(&id) {
                Some(users) => MockResponse::Output(
                    DescribeUserGroupsOutput::builder().user_groups(active_group(&id, users)).build(),
                ),
                None => {
                    MockResponse::Error(DescribeUserGroupsError::UserGroupNotFoundFault(group_not_found(&id)))
                }
            }
        });

        let s = state.clone();
        let modify = mock!(Client::modify_user_group).then_compute_response(move |req| {
            let id = req.user_group_id().unwrap_or_default().to_string();
            let mut st = s.lock().unwrap();
            let add = req.user_ids_to_add().to_vec();
            let remove = req.user_ids_to_remove().to_vec();
            st.group_changes.push((id.clone(), add.clone(), remove.clone()));
            st.calls.push(format!("ModifyUserGroup {id} add={} remove={}", add.join(","), remove.join(",")));
            let Some(users) = st.groups.get_mut(&id) else {
                return MockResponse::Error(ModifyUserGroupError::UserGroupNotFoundFault(group_not_found(
                    &id,
                )));
            };
            users.retain(|u| !remove.contains(u));
            for user in add {
                if !users.contains(&user) {
                    users.push(user);
                }
            }
            MockResponse::Output(
                ModifyUserGroupOutput::builder()
                    .user_group_id(&id)
                    .status("modifying")
                    .engine("redis")
                    .set_user_ids(Some(users.clone()))
                    .build(),
            )
        });

        let s = state.clone();
        let delete = mock!(Client::delete_user_group).then_compute_response(move |req| {
            let id = req.user_group_id().unwrap_or_default().to_string();
            let mut st = s.lock().unwrap();
            st.calls.push(format!("DeleteUserGroup {id}"));
            match st.groups.remove(&id) {
                Some(users) => MockResponse::Output(
                    DeleteUserGroupOutput::builder()
                        .user_group_id(&id)
                        .status("deleting")
                        .engine("redis")
                        .set_user_ids(Some(users))
                        .build(),
                ),
                None => {
                    MockResponse::Error(DeleteUserGroupError::UserGroupNotFoundFault(group_not_found(&id)))
                }
            }
        });

        let s = state.clone();
        let modify_user = mock!(Client::modify_user).then_compute_output(move |req| {
            let id = req.user_id().unwrap_or_default().to_string();
            let access = req.access_string().unwrap_or_default().to_string();
            // The passwords themselves are never kept, only how many came.
            let count = req.passwords().len();
            let mut st = s.lock().unwrap();
            st.user_changes.push((id.clone(), count, access.clone()));
            st.calls.push(format!("ModifyUser {id} passwords={count}"));
            if count > 0 {
                st.passwords.insert(id.clone(), count);
            }
            ModifyUserOutput::builder()
                .user_id(id)
                .status("modifying")
                .engine("redis")
                .access_string(access)
                .build()
        });

        let s = state.clone();
        let tags = mock!(Client::list_tags_for_resource).then_compute_response(move |req| {
            let arn = req.resource_name().unwrap_or_default();
            let id = arn.rsplit(':').next().unwrap_or_default().to_string();
            match s.lock().unwrap().tags.get(&id) {
                Some(tags) => MockResponse::Output(
                    ListTagsForResourceOutput::builder()
                        .set_tag_list(Some(
                            tags.iter()
                                .map(|(k, v)| {
                                    aws_sdk_elasticache::types::Tag::builder().key(k).value(v).build()
                                })
                                .collect(),
                        ))
                        .build(),
                ),
                None => MockResponse::Error(ListTagsForResourceError::UserGroupNotFoundFault(
                    group_not_found(&id),
                )),
            }
        });

        let [create_params, modify_params, delete_params, describe_params] = parameter_group_rules(&state);
        let serverless = serverless_rules(&state);
        let client = mocked(&[
            &create,
            &describe,
            &modify,
            &delete,
            &modify_user,
            &tags,
            &create_params,
            &modify_params,
            &delete_params,
            &describe_params,
            &serverless[0],
            &serverless[1],
            &serverless[2],
            &serverless[3],
            &serverless[4],
            &serverless[5],
            &serverless[6],
            &serverless[7],
        ]);
        FakeRbac { client, state }
    }

    pub fn members(&self, group: &str) -> Option<Vec<String>> {
        self.state.lock().unwrap().groups.get(group).cloned()
    }

    /// The call log so far (see [`RbacState::calls`]).
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// An interceptor for the main client (the one on moto) that makes
    /// DescribeUsers agree with this stand-in's ModifyUser, which moto never
    /// sees: each user ModifyUser gave passwords is described `active` with
    /// that many passwords (the rest of the answer is moto's). A CreateUser
    /// or DeleteUser of the user hands it back to moto alone.
    pub fn modified_users(&self) -> ModifiedUsers {
        ModifiedUsers(self.state.clone())
    }
}

/// See [`FakeRbac::modified_users`].
#[derive(Debug)]
pub struct ModifiedUsers(Arc<Mutex<RbacState>>);

impl Intercept for ModifiedUsers {
    fn name(&self) -> &'static str {
        "ModifiedUsers"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        let id = input
            .downcast_ref::<CreateUserInput>()
            .and_then(|i| i.user_id())
            .or_else(|| input.downcast_ref::<DeleteUserInput>().and_then(|i| i.user_id()));
        if let Some(id) = id {
            self.0.lock().unwrap().passwords.remove(id);
        }
        Ok(())
    }

    fn modify_before_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Ok(output)) = context.output_or_error_mut() else {
            return Ok(());
        };
        let Some(out) = output.downcast_mut::<DescribeUsersOutput>() else {
            return Ok(());
        };
        let state = self.0.lock().unwrap();
        for user in out.users.iter_mut().flatten() {
            if let Some(count) = user.user_id.as_deref().and_then(|id| state.passwords.get(id)) {
                user.status = Some("active".into());
                user.authentication = Some(
                    Authentication::builder()
                        .r#type(AuthenticationType::Password)
                        .password_count(i32::try_from(*count).unwrap_or(i32::MAX))
                        .build(),
                );
            }
        }
        Ok(())
    }
}

/// A stand-in for the AUTH-token changes moto ignores (its
/// ModifyReplicationGroup drops AuthToken and AuthTokenUpdateStrategy).
/// Add [`FakeAuthTokens::interceptor`] to the client on moto; it records
/// every ModifyReplicationGroup that carries an AUTH token, in order, and
/// DescribeReplicationGroups then shows those groups with
/// AuthTokenEnabled (moto already shows them `available`, as it applies
/// changes at once). It keeps no token.
#[derive(Debug, Clone, Default)]
pub struct FakeAuthTokens {
    changes: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeAuthTokens {
    pub fn new() -> FakeAuthTokens {
        FakeAuthTokens::default()
    }

    /// The interceptor to add to the client on moto.
    pub fn interceptor(&self) -> AuthTokenChanges {
        AuthTokenChanges(self.changes.clone())
    }

    /// Every AUTH-token change so far, in order: (replication group id,
    /// strategy as ElastiCache spells it: `ROTATE` or `SET`; `ROTATE` when
    /// the request named none, as ElastiCache defaults to it).
    pub fn changes(&self) -> Vec<(String, String)> {
        self.changes.lock().unwrap().clone()
    }
}

/// See [`FakeAuthTokens`].
#[derive(Debug)]
pub struct AuthTokenChanges(Arc<Mutex<Vec<(String, String)>>>);

impl Intercept for AuthTokenChanges {
    fn name(&self) -> &'static str {
        "AuthTokenChanges"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(input) = context.input().downcast_ref::<ModifyReplicationGroupInput>()
            && input.auth_token().is_some()
        {
            let strategy = input.auth_token_update_strategy().map_or("ROTATE", |s| s.as_str());
            self.0
                .lock()
                .unwrap()
                .push((input.replication_group_id().unwrap_or_default().to_string(), strategy.to_string()));
        }
        Ok(())
    }

    fn modify_before_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Ok(output)) = context.output_or_error_mut() else {
            return Ok(());
        };
        let Some(out) = output.downcast_mut::<DescribeReplicationGroupsOutput>() else {
            return Ok(());
        };
        let changes = self.0.lock().unwrap();
        for group in out.replication_groups.iter_mut().flatten() {
            let id = group.replication_group_id.as_deref().unwrap_or_default();
            if changes.iter().any(|(changed, _)| changed == id) {
                group.auth_token_enabled = Some(true);
            }
        }
        Ok(())
    }
}

/// An ElastiCache client on moto (`sdk` points at it) with the stand-ins a
/// test needs: the groups in `gone` reported deleted
/// ([`finished_deletions`]), DescribeUsers agreeing with `rbac`
/// ([`FakeRbac::modified_users`]) and AUTH-token changes recorded by
/// `tokens`. Give `rbac.client` to the provider as its RBAC client.
pub fn elasticache_on_moto(
    sdk: &aws_config::SdkConfig,
    gone: GoneGroups,
    rbac: &FakeRbac,
    tokens: &FakeAuthTokens,
) -> Client {
    Client::from_conf(moto_elasticache_config(sdk, gone, rbac, tokens).build())
}

/// The configuration of [`elasticache_on_moto`], for a test that adds
/// interceptors of its own before building the client.
pub fn moto_elasticache_config(
    sdk: &aws_config::SdkConfig,
    gone: GoneGroups,
    rbac: &FakeRbac,
    tokens: &FakeAuthTokens,
) -> aws_sdk_elasticache::config::Builder {
    aws_sdk_elasticache::config::Builder::from(sdk)
        .interceptor(finished_deletions(gone))
        .interceptor(rbac.modified_users())
        .interceptor(tokens.interceptor())
}
/// CreateCacheParameterGroup, ModifyCacheParameterGroup,
/// DeleteCacheParameterGroup and DescribeCacheParameterGroups over
/// `state.parameter_groups`, with the shapes and faults of the ElastiCache
/// API reference; each call logged in `state.calls`.
fn parameter_group_rules(state: &Arc<Mutex<RbacState>>) -> [Rule; 4] {
    use aws_sdk_elasticache::operation::create_cache_parameter_group::{
        CreateCacheParameterGroupError, CreateCacheParameterGroupOutput,
    };
    use aws_sdk_elasticache::operation::delete_cache_parameter_group::{
        DeleteCacheParameterGroupError, DeleteCacheParameterGroupOutput,
    };
    use aws_sdk_elasticache::operation::describe_cache_parameter_groups::{
        DescribeCacheParameterGroupsError, DescribeCacheParameterGroupsOutput,
    };
    use aws_sdk_elasticache::operation::modify_cache_parameter_group::{
        ModifyCacheParameterGroupError, ModifyCacheParameterGroupOutput,
    };
    use aws_sdk_elasticache::types::CacheParameterGroup;
    use aws_sdk_elasticache::types::error::{
        CacheParameterGroupAlreadyExistsFault, CacheParameterGroupNotFoundFault,
    };
    fn not_found(name: &str) -> CacheParameterGroupNotFoundFault {
        let message = format!("CacheParameterGroup {name} not found.");
        CacheParameterGroupNotFoundFault::builder()
            .message(&message)
            .meta(meta("CacheParameterGroupNotFound", &message))
            .build()
    }
    fn group(name: &str, family: &str) -> CacheParameterGroup {
        CacheParameterGroup::builder()
            .cache_parameter_group_name(name)
            .cache_parameter_group_family(family)
            .description("broker")
            .arn(format!("arn:aws:elasticache:us-east-1:123456789012:parametergroup:{name}"))
            .build()
    }
    let s = state.clone();
    let create = mock!(Client::create_cache_parameter_group).then_compute_response(move |req| {
        let name = req.cache_parameter_group_name().unwrap_or_default().to_string();
        let family = req.cache_parameter_group_family().unwrap_or_default().to_string();
        let mut st = s.lock().unwrap();
        st.calls.push(format!("CreateCacheParameterGroup {name} family={family}"));
        if st.parameter_groups.contains_key(&name) {
            let message = format!("Parameter group {name} already exists.");
            return MockResponse::Error(
                CreateCacheParameterGroupError::CacheParameterGroupAlreadyExistsFault(
                    CacheParameterGroupAlreadyExistsFault::builder()
                        .message(&message)
                        .meta(meta("CacheParameterGroupAlreadyExists", &message))
                        .build(),
                ),
            );
        }
        st.parameter_groups.insert(name.clone(), (family.clone(), Default::default()));
        MockResponse::Output(
            CreateCacheParameterGroupOutput::builder().cache_parameter_group(group(&name, &family)).build(),
        )
    });
    let s = state.clone();
    let modify = mock!(Client::modify_cache_parameter_group).then_compute_response(move |req| {
        let name = req.cache_parameter_group_name().unwrap_or_default().to_string();
        let mut st = s.lock().unwrap();
        let values: Vec<(String, String)> = req
            .parameter_name_values()
            .iter()
            .map(|p| {
                (
                    p.parameter_name().unwrap_or_default().into(),
                    p.parameter_value().unwrap_or_default().into(),
                )
            })
            .collect();
        st.calls.push(format!(
            "ModifyCacheParameterGroup {name} {}",
            values.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        ));
        let Some((_, parameters)) = st.parameter_groups.get_mut(&name) else {
            return MockResponse::Error(ModifyCacheParameterGroupError::CacheParameterGroupNotFoundFault(
                not_found(&name),
            ));
        };
        parameters.extend(values);
        MockResponse::Output(
            ModifyCacheParameterGroupOutput::builder().cache_parameter_group_name(name).build(),
        )
    });
    let s = state.clone();
    let delete = mock!(Client::delete_cache_parameter_group).then_compute_response(move |req| {
        let name = req.cache_parameter_group_name().unwrap_or_default().to_string();
        let mut st = s.lock().unwrap();
        st.calls.push(format!("DeleteCacheParameterGroup {name}"));
        match st.parameter_groups.remove(&name) {
            Some(_) => MockResponse::Output(DeleteCacheParameterGroupOutput::builder().build()),
            None => MockResponse::Error(DeleteCacheParameterGroupError::CacheParameterGroupNotFoundFault(
                not_found(&name),
            )),
        }
    });
    let s = state.clone();
    let describe = mock!(Client::describe_cache_parameter_groups).then_compute_response(move |req| {
        let mut st = s.lock().unwrap();
        let name = req.cache_parameter_group_name().map(str::to_string);
        st.calls.push(format!("DescribeCacheParameterGroups {}", name.clone().unwrap_or_default()));
        let mut names: Vec<&String> =
            st.parameter_groups.keys().filter(|n| name.as_ref().is_none_or(|w| w == *n)).collect();
        names.sort();
        if let Some(wanted) = &name
            && names.is_empty()
        {
            return MockResponse::Error(DescribeCacheParameterGroupsError::CacheParameterGroupNotFoundFault(
                not_found(wanted),
            ));
        }
        let groups = names.into_iter().map(|n| group(n, &st.parameter_groups[n].0)).collect();
        MockResponse::Output(
            DescribeCacheParameterGroupsOutput::builder().set_cache_parameter_groups(Some(groups)).build(),
        )
    });
    [create, modify, delete, describe]
}

/// The serverless calls over `state.serverless` and
/// `state.serverless_snapshots`: Create, Describe, Modify and Delete of
/// caches and of snapshots (ElastiCache API reference shapes; faults with
/// their wire codes). Each call logged in `state.calls`.
fn serverless_rules(state: &Arc<Mutex<RbacState>>) -> [Rule; 8] {
    use aws_sdk_elasticache::operation::create_serverless_cache::{
        CreateServerlessCacheError, CreateServerlessCacheOutput,
    };
    use aws_sdk_elasticache::operation::create_serverless_cache_snapshot::{
        CreateServerlessCacheSnapshotError, CreateServerlessCacheSnapshotOutput,
    };
    use aws_sdk_elasticache::operation::delete_serverless_cache::{
        DeleteServerlessCacheError, DeleteServerlessCacheOutput,
    };
    use aws_sdk_elasticache::operation::delete_serverless_cache_snapshot::{
        DeleteServerlessCacheSnapshotError, DeleteServerlessCacheSnapshotOutput,
    };
    use aws_sdk_elasticache::operation::describe_serverless_cache_snapshots::{
        DescribeServerlessCacheSnapshotsError, DescribeServerlessCacheSnapshotsOutput,
    };
    use aws_sdk_elasticache::operation::describe_serverless_caches::{
        DescribeServerlessCachesError, DescribeServerlessCachesOutput,
    };
    use aws_sdk_elasticache::operation::modify_serverless_cache::{
        ModifyServerlessCacheError, ModifyServerlessCacheOutput,
    };
    use aws_sdk_elasticache::primitives::DateTime;
    use aws_sdk_elasticache::types::error::{
        ServerlessCacheAlreadyExistsFault, ServerlessCacheNotFoundFault,
        ServerlessCacheSnapshotAlreadyExistsFault, ServerlessCacheSnapshotNotFoundFault,
    };
    use aws_sdk_elasticache::types::{
        Endpoint as AwsEndpoint, ServerlessCache, ServerlessCacheConfiguration, ServerlessCacheSnapshot,
    };
    fn not_found(name: &str) -> ServerlessCacheNotFoundFault {
        let message = format!("Serverless cache {name} not found.");
        ServerlessCacheNotFoundFault::builder()
            .message(&message)
            .meta(meta("ServerlessCacheNotFoundFault", &message))
            .build()
    }
    fn snapshot_not_found(name: &str) -> ServerlessCacheSnapshotNotFoundFault {
        let message = format!("Serverless cache snapshot {name} not found.");
        ServerlessCacheSnapshotNotFoundFault::builder()
            .message(&message)
            .meta(meta("ServerlessCacheSnapshotNotFoundFault", &message))
            .build()
    }
    let s = state.clone();
    let create = mock!(Client::create_serverless_cache).then_compute_response(move |req| {
        let name = req.serverless_cache_name().unwrap_or_default().to_string();
        let mut st = s.lock().unwrap();
        st.calls.push(format!(
            "CreateServerlessCache {name} engine={} major={} user_group={} restore={}",
            req.engine().unwrap_or_default(),
            req.major_engine_version().unwrap_or_default(),
            req.user_group_id().unwrap_or_default(),
            req.snapshot_arns_to_restore().join(",")
        ));
        if st.serverless.contains_key(&name) {
            let message = format!("Serverless cache {name} already exists.");
            return MockResponse::Error(CreateServerlessCacheError::ServerlessCacheAlreadyExistsFault(
                ServerlessCacheAlreadyExistsFault::builder()
                    .message(&message)
                    .meta(meta("ServerlessCacheAlreadyExistsFault", &message))
                    .build(),
            ));
        }
        let host = format!("{name}-abc123.serverless.use1.cache.amazonaws.com");
        let cache = ServerlessCache::builder()
            .serverless_cache_name(&name)
            .status("available")
            .engine(req.engine().unwrap_or("redis"))
            .major_engine_version(req.major_engine_version().unwrap_or("7"))
            .set_cache_usage_limits(req.cache_usage_limits().cloned())
            .set_security_group_ids(Some(req.security_group_ids().to_vec()))
            .set_subnet_ids(Some(req.subnet_ids().to_vec()))
            .set_user_group_id(req.user_group_id().map(str::to_string))
            .set_snapshot_retention_limit(req.snapshot_retention_limit())
            .set_daily_snapshot_time(req.daily_snapshot_time().map(str::to_string))
            .endpoint(AwsEndpoint::builder().address(&host).port(6379).build())
            .reader_endpoint(AwsEndpoint::builder().address(&host).port(6380).build())
            .arn(format!("arn:aws:elasticache:us-east-1:123456789012:serverlesscache:{name}"))
            .build();
        let tags: Vec<(String, String)> = req
            .tags()
            .iter()
            .map(|t| (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string()))
            .collect();
        st.tags.insert(name.clone(), tags);
        st.serverless.insert(name, cache.clone());
        MockResponse::Output(CreateServerlessCacheOutput::builder().serverless_cache(cache).build())
    });
    let s = state.clone();
    let describe = mock!(Client::describe_serverless_caches).then_compute_response(move |req| {
        let mut st = s.lock().unwrap();
        let name = req.serverless_cache_name().map(str::to_string);
        st.calls.push(format!("DescribeServerlessCaches {}", name.clone().unwrap_or_default()));
        match name {
            Some(name) => match st.serverless.get(&name) {
                Some(cache) => MockResponse::Output(
                    DescribeServerlessCachesOutput::builder().serverless_caches(cache.clone()).build(),
                ),
                None => MockResponse::Error(DescribeServerlessCachesError::ServerlessCacheNotFoundFault(
                    not_found(&name),
                )),
            },
            None => MockResponse::Output(
                DescribeServerlessCachesOutput::builder()
                    .set_serverless_caches(Some(st.serverless.values().cloned().collect()))
                    .build(),
            ),
        }
    });
    let s = state.clone();
    let modify = mock!(Client::modify_serverless_cache).then_compute_response(move |req| {
        let name = req.serverless_cache_name().unwrap_or_default().to_string();
        let mut st = s.lock().unwrap();
        st.calls.push(format!("ModifyServerlessCache {name}"));
        let Some(cache) = st.serverless.get_mut(&name) else {
            return MockResponse::Error(ModifyServerlessCacheError::ServerlessCacheNotFoundFault(not_found(
                &name,
            )));
        };
        let mut changed = cache.clone();
        if let Some(limits) = req.cache_usage_limits() {
            changed.cache_usage_limits = Some(limits.clone());
        }
        if let Some(days) = req.snapshot_retention_limit() {
            changed.snapshot_retention_limit = Some(days);
        }
        if let Some(time) = req.daily_snapshot_time() {
            changed.daily_snapshot_time = Some(time.to_string());
        }
        if let Some(engine) = req.engine() {
            changed.engine = Some(engine.to_string());
        }
        if let Some(major) = req.major_engine_version() {
            changed.major_engine_version = Some(major.to_string());
        }
        *cache = changed.clone();
        MockResponse::Output(ModifyServerlessCacheOutput::builder().serverless_cache(changed).build())
    });
    let s = state.clone();
    let delete = mock!(Client::delete_serverless_cache).then_compute_response(move |req| {
        let name = req.serverless_cache_name().unwrap_or_default().to_string();
        let mut st = s.lock().unwrap();
        st.calls.push(format!(
            "DeleteServerlessCache {name} final={}",
            req.final_snapshot_name().unwrap_or("none")
        ));
        let Some(mut cache) = st.serverless.remove(&name) else {
            return MockResponse::Error(DeleteServerlessCacheError::ServerlessCacheNotFoundFault(not_found(
                &name,
            )));
        };
        if let Some(snapshot) = req.final_snapshot_name() {
            st.serverless_snapshots.insert(snapshot.to_string(), serverless_snapshot(snapshot, &cache));
        }
        cache.status = Some("deleting".into());
        MockResponse::Output(DeleteServerlessCacheOutput::builder().serverless_cache(cache).build())
    });
    fn serverless_snapshot(name: &str, cache: &ServerlessCache) -> ServerlessCacheSnapshot {
        ServerlessCacheSnapshot::builder()
            .serverless_cache_snapshot_name(name)
            .arn(format!("arn:aws:elasticache:us-east-1:123456789012:serverlesscachesnapshot:{name}"))
            .snapshot_type("manual")
            .status("available")
            .create_time(DateTime::from_secs(1_800_000_000))
            .serverless_cache_configuration(
                ServerlessCacheConfiguration::builder()
                    .set_serverless_cache_name(cache.serverless_cache_name().map(str::to_string))
                    .set_engine(cache.engine().map(str::to_string))
                    .set_major_engine_version(cache.major_engine_version().map(str::to_string))
                    .build(),
            )
            .build()
    }
    let s = state.clone();
    let create_snapshot = mock!(Client::create_serverless_cache_snapshot).then_compute_response(move |req| {
        let name = req.serverless_cache_snapshot_name().unwrap_or_default().to_string();
        let cache_name = req.serverless_cache_name().unwrap_or_default().to_string();
        let mut st = s.lock().unwrap();
        st.calls.push(format!("CreateServerlessCacheSnapshot {name}"));
        if st.serverless_snapshots.contains_key(&name) {
            let message = format!("Serverless cache snapshot {name} already exists.");
            return MockResponse::Error(
                CreateServerlessCacheSnapshotError::ServerlessCacheSnapshotAlreadyExistsFault(
                    ServerlessCacheSnapshotAlreadyExistsFault::builder()
                        .message(&message)
                        .meta(meta("ServerlessCacheSnapshotAlreadyExistsFault", &message))
                        .build(),
                ),
            );
        }
        let Some(cache) = st.serverless.get(&cache_name).cloned() else {
            return MockResponse::Error(CreateServerlessCacheSnapshotError::ServerlessCacheNotFoundFault(
                not_found(&cache_name),
            ));
        };
        let snapshot = serverless_snapshot(&name, &cache);
        st.serverless_snapshots.insert(name, snapshot.clone());
        MockResponse::Output(
            CreateServerlessCacheSnapshotOutput::builder().serverless_cache_snapshot(snapshot).build(),
        )
    });
    let s = state.clone();
    let describe_snapshots =
        mock!(Client::describe_serverless_cache_snapshots).then_compute_response(move |req| {
            let mut st = s.lock().unwrap();
            st.calls.push("DescribeServerlessCacheSnapshots".to_string());
            if let Some(name) = req.serverless_cache_snapshot_name() {
                return match st.serverless_snapshots.get(name) {
                    Some(snapshot) => MockResponse::Output(
                        DescribeServerlessCacheSnapshotsOutput::builder()
                            .serverless_cache_snapshots(snapshot.clone())
                            .build(),
                    ),
                    None => MockResponse::Error(
                        DescribeServerlessCacheSnapshotsError::ServerlessCacheSnapshotNotFoundFault(
                            snapshot_not_found(name),
                        ),
                    ),
                };
            }
            let of = req.serverless_cache_name().map(str::to_string);
            let mut found: Vec<ServerlessCacheSnapshot> = st
                .serverless_snapshots
                .values()
                .filter(|snap| {
                    of.is_none()
                        || snap.serverless_cache_configuration().and_then(|c| c.serverless_cache_name())
                            == of.as_deref()
                })
                .cloned()
                .collect();
            found.sort_by(|a, b| a.serverless_cache_snapshot_name().cmp(&b.serverless_cache_snapshot_name()));
            MockResponse::Output(
                DescribeServerlessCacheSnapshotsOutput::builder()
                    .set_serverless_cache_snapshots(Some(found))
                    .build(),
            )
        });
    let s = state.clone();
    let delete_snapshot = mock!(Client::delete_serverless_cache_snapshot).then_compute_response(move |req| {
        let name = req.serverless_cache_snapshot_name().unwrap_or_default().to_string();
        let mut st = s.lock().unwrap();
        st.calls.push(format!("DeleteServerlessCacheSnapshot {name}"));
        match st.serverless_snapshots.remove(&name) {
            Some(mut snapshot) => {
                snapshot.status = Some("deleting".into());
                MockResponse::Output(
                    DeleteServerlessCacheSnapshotOutput::builder()
                        .serverless_cache_snapshot(snapshot)
                        .build(),
                )
            }
            None => {
                MockResponse::Error(DeleteServerlessCacheSnapshotError::ServerlessCacheSnapshotNotFoundFault(
                    snapshot_not_found(&name),
                ))
            }
        }
    });
    let s = state.clone();
    let tag = mock!(Client::add_tags_to_resource).then_compute_output(move |req| {
        let name = req.resource_name().unwrap_or_default().rsplit(':').next().unwrap_or_default().to_string();
        let mut st = s.lock().unwrap();
        st.calls.push(format!("AddTagsToResource {name}"));
        let tags = st.tags.entry(name).or_default();
        for t in req.tags() {
            let (k, v) = (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string());
            tags.retain(|(key, _)| *key != k);
            tags.push((k, v));
        }
        aws_sdk_elasticache::operation::add_tags_to_resource::AddTagsToResourceOutput::builder().build()
    });
    [create, describe, modify, delete, create_snapshot, describe_snapshots, delete_snapshot, tag]
}

fn active_group(id: &str, users: &[String]) -> UserGroup {
    UserGroup::builder()
        .user_group_id(id)
        .status("active")
        .engine("redis")
        .set_user_ids(Some(users.to_vec()))
        .minimum_engine_version("6.0")
        .replication_groups(id)
        .arn(format!("arn:aws:elasticache:us-east-1:123456789012:usergroup:{id}"))
        .build()
}

fn group_not_found(id: &str) -> UserGroupNotFoundFault {
    let message = format!("User group {id} not found.");
    UserGroupNotFoundFault::builder().message(&message).meta(meta("UserGroupNotFound", &message)).build()
}

impl Default for FakeRbac {
    fn default() -> Self {
        FakeRbac::new()
    }
}

/// Replication groups (and Memcached cache clusters) to report as gone.
pub type GoneGroups = Arc<Mutex<std::collections::HashSet<String>>>;

/// An interceptor for a client on moto that answers DescribeReplicationGroups
/// for the groups in `gone` with ReplicationGroupNotFound (and
/// DescribeCacheClusters for the clusters in it with CacheClusterNotFound),
/// and passes every other call through: moto never finishes a deletion (a
/// deleted group stays `deleting`), so a test says when AWS would have.
pub fn finished_deletions(gone: GoneGroups) -> MockResponseInterceptor {
    let gone_for_clusters = gone.clone();
    let rule = mock!(Client::describe_replication_groups)
        .match_requests(move |req| {
            req.replication_group_id().is_some_and(|id| gone.lock().unwrap().contains(id))
        })
        // Errors that do not depend on the request: a call whose (passed
        // through) HTTP answer was a 5xx is retried by the SDK, and the mock
        // answers a retry without its input.
        .then_error(|| {
            let message = "Replication group not found.";
            DescribeReplicationGroupsError::ReplicationGroupNotFoundFault(
                ReplicationGroupNotFoundFault::builder()
                    .message(message)
                    .meta(meta("ReplicationGroupNotFoundFault", message))
                    .build(),
            )
        });
    let gone_clusters = gone_for_clusters;
    let clusters = mock!(Client::describe_cache_clusters)
        .match_requests(move |req| {
            req.cache_cluster_id().is_some_and(|id| gone_clusters.lock().unwrap().contains(id))
        })
        .then_error(|| {
            let message = "CacheCluster not found.";
            DescribeCacheClustersError::CacheClusterNotFoundFault(
                CacheClusterNotFoundFault::builder()
                    .message(message)
                    .meta(meta("CacheClusterNotFound", message))
                    .build(),
            )
        });
    MockResponseInterceptor::new()
        .rule_mode(RuleMode::MatchAny)
        .with_rule(&rule)
        .with_rule(&clusters)
        .allow_passthrough()
}

/// An interceptor that puts every replication group a
/// DeleteReplicationGroup names into `gone`, so that with
/// [`finished_deletions`] on the same client the next look finds it deleted:
/// for tests that do not care how long a deletion takes.
#[derive(Debug)]
pub struct DeletionsFinishAtOnce(pub GoneGroups);

impl Intercept for DeletionsFinishAtOnce {
    fn name(&self) -> &'static str {
        "DeletionsFinishAtOnce"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(id) = context
            .input()
            .downcast_ref::<DeleteReplicationGroupInput>()
            .and_then(|input| input.replication_group_id())
        {
            self.0.lock().unwrap().insert(id.to_string());
        }
        Ok(())
    }
}

/// Records the action and `SecretId` (or `Name`) of every request a Secrets
/// Manager client sends, read from the JSON body as it goes on the wire: add
/// [`SecretIds::interceptor`] to the client. It never keeps a secret value.
#[derive(Debug, Clone, Default)]
pub struct SecretIds(Arc<Mutex<Vec<(String, String)>>>);

impl SecretIds {
    pub fn new() -> SecretIds {
        SecretIds::default()
    }

    pub fn interceptor(&self) -> SecretIdsInterceptor {
        SecretIdsInterceptor(self.0.clone())
    }

    /// Every request so far: (action, `SecretId` or `Name`).
    pub fn seen(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// See [`SecretIds`].
#[derive(Debug)]
pub struct SecretIdsInterceptor(Arc<Mutex<Vec<(String, String)>>>);

impl aws_sdk_secretsmanager::config::Intercept for SecretIdsInterceptor {
    fn name(&self) -> &'static str {
        "SecretIds"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_secretsmanager::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _components: &aws_sdk_secretsmanager::config::RuntimeComponents,
        _cfg: &mut aws_sdk_secretsmanager::config::ConfigBag,
    ) -> Result<(), aws_sdk_secretsmanager::error::BoxError> {
        let request = context.request();
        let action = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.strip_prefix("secretsmanager."))
            .unwrap_or("?")
            .to_string();
        let body: serde_json::Value =
            request.body().bytes().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
        let id = body.get("SecretId").or_else(|| body.get("Name")).and_then(|v| v.as_str());
        if let Some(id) = id {
            self.0.lock().unwrap().push((action, id.to_string()));
        }
        Ok(())
    }
}

/// Gives every Memcached cluster moto describes the configuration endpoint
/// ElastiCache gives it (`{id}.abc123.cfg.use1.cache.amazonaws.com:11211`,
/// the shape of the DescribeCacheClusters reference), and each of its nodes
/// an endpoint: moto gives them none.
#[derive(Debug)]
pub struct MemcachedEndpoints;

impl Intercept for MemcachedEndpoints {
    fn name(&self) -> &'static str {
        "MemcachedEndpoints"
    }

    fn modify_before_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Ok(output)) = context.output_or_error_mut() else {
            return Ok(());
        };
        let Some(out) = output.downcast_mut::<DescribeCacheClustersOutput>() else {
            return Ok(());
        };
        for cluster in out.cache_clusters.iter_mut().flatten() {
            if cluster.engine.as_deref() != Some("memcached") || cluster.configuration_endpoint.is_some() {
                continue;
            }
            let id = cluster.cache_cluster_id.clone().unwrap_or_default();
            cluster.configuration_endpoint = Some(
                AwsEndpoint::builder()
                    .address(format!("{id}.abc123.cfg.use1.cache.amazonaws.com"))
                    .port(11211)
                    .build(),
            );
            for (i, node) in cluster.cache_nodes.iter_mut().flatten().enumerate() {
                node.endpoint.get_or_insert_with(|| {
                    AwsEndpoint::builder()
                        .address(format!("{id}.abc123.{:04}.use1.cache.amazonaws.com", i + 1))
                        .port(11211)
                        .build()
                });
            }
        }
        Ok(())
    }
}
