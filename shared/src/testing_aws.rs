//! A stand-in for the ElastiCache user-group calls moto does not implement
//! (CreateUserGroup, DescribeUserGroups, ModifyUserGroup, DeleteUserGroup,
//! ModifyUser), built from aws-smithy-mocks rules over shared state, for the
//! provider's tests and the AWS-mode end-to-end test. Compiled only with the
//! `aws-testing` feature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::error::ErrorMetadata;
use aws_sdk_elasticache::operation::create_user_group::{CreateUserGroupError, CreateUserGroupOutput};
use aws_sdk_elasticache::operation::delete_user_group::{DeleteUserGroupError, DeleteUserGroupOutput};
use aws_sdk_elasticache::operation::describe_replication_groups::DescribeReplicationGroupsError;
use aws_sdk_elasticache::operation::describe_user_groups::{
    DescribeUserGroupsError, DescribeUserGroupsOutput,
};
use aws_sdk_elasticache::operation::modify_user::ModifyUserOutput;
use aws_sdk_elasticache::operation::modify_user_group::{ModifyUserGroupError, ModifyUserGroupOutput};
use aws_sdk_elasticache::types::UserGroup;
use aws_sdk_elasticache::types::error::{
    ReplicationGroupNotFoundFault, UserGroupAlreadyExistsFault, UserGroupNotFoundFault,
};
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
    /// Every ModifyUser: (user id, number of passwords, access string).
    pub user_changes: Vec<(String, usize, String)>,
}

/// A stand-in for the user-group calls moto lacks (CreateUserGroup,
/// DescribeUserGroups, ModifyUserGroup, DeleteUserGroup, ModifyUser), built
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
            if st.groups.contains_key(&id) {
                let fault = UserGroupAlreadyExistsFault::builder()
                    .message("User group already exists")
                    .meta(meta("UserGroupAlreadyExists", "User group already exists"))
                    .build();
                return MockResponse::Error(CreateUserGroupError::UserGroupAlreadyExistsFault(fault));
            }
            st.groups.insert(id.clone(), req.user_ids().to_vec());
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
            match s.lock().unwrap().groups.get(&id) {
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
            match s.lock().unwrap().groups.remove(&id) {
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
            s.lock().unwrap().user_changes.push((id.clone(), req.passwords().len(), access.clone()));
            ModifyUserOutput::builder()
                .user_id(id)
                .status("modifying")
                .engine("redis")
                .access_string(access)
                .build()
        });

        let client = mocked(&[&create, &describe, &modify, &delete, &modify_user]);
        FakeRbac { client, state }
    }

    pub fn members(&self, group: &str) -> Option<Vec<String>> {
        self.state.lock().unwrap().groups.get(group).cloned()
    }
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

/// Replication groups to report as gone.
pub type GoneGroups = Arc<Mutex<std::collections::HashSet<String>>>;

/// An interceptor for a client on moto that answers DescribeReplicationGroups
/// for the groups in `gone` with ReplicationGroupNotFound, and passes every
/// other call through: moto never finishes a deletion (a deleted group stays
/// `deleting`), so a test says when AWS would have.
pub fn finished_deletions(gone: GoneGroups) -> MockResponseInterceptor {
    let rule = mock!(Client::describe_replication_groups)
        .match_requests(move |req| {
            req.replication_group_id().is_some_and(|id| gone.lock().unwrap().contains(id))
        })
        .then_compute_response(|req| {
            let message =
                format!("Replication group {} not found.", req.replication_group_id().unwrap_or_default());
            MockResponse::Error(DescribeReplicationGroupsError::ReplicationGroupNotFoundFault(
                ReplicationGroupNotFoundFault::builder()
                    .message(&message)
                    .meta(meta("ReplicationGroupNotFoundFault", &message))
                    .build(),
            ))
        });
    MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny).with_rule(&rule).allow_passthrough()
}
