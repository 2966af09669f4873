//! The orphan sweep's listing against aws-smithy-mocks, for what moto does
//! not show: users that a live user group holds (moto has no user groups),
//! page markers passed on, resources being deleted, and tags that are not
//! the broker's or a resource gone before its tags were read.

use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::operation::delete_user::DeleteUserOutput;
use aws_sdk_elasticache::operation::describe_replication_groups::DescribeReplicationGroupsOutput;
use aws_sdk_elasticache::operation::describe_users::DescribeUsersOutput;
use aws_sdk_elasticache::operation::list_tags_for_resource::{
    ListTagsForResourceError, ListTagsForResourceOutput,
};
use aws_sdk_elasticache::types::error::UserNotFoundFault;
use aws_sdk_elasticache::types::{ReplicationGroup, Tag, User};
use aws_smithy_mocks::mock;

use super::{INSTANCE, meta, mocked, provider_on, secrets_with_admin};
use crate::elasticache::names::Names;
use broker_core::domain::ResourceKind;
use broker_core::ports::{Claim, Inventory, Leftover, LiveCaches, Removal};

const DEAD: &str = "0d9e3c1a-deprovisioned-instance";

fn user(id: &str, name: &str, groups: &[&str], status: &str) -> User {
    User::builder()
        .user_id(id)
        .user_name(name)
        .status(status)
        .engine("redis")
        .set_user_group_ids(Some(groups.iter().map(|g| g.to_string()).collect()))
        .arn(format!("arn:aws:elasticache:us-east-1:123456789012:user:{id}"))
        .build()
}

fn group(id: &str, status: &str) -> ReplicationGroup {
    ReplicationGroup::builder()
        .replication_group_id(id)
        .status(status)
        .arn(format!("arn:aws:elasticache:us-east-1:123456789012:replicationgroup:{id}"))
        .build()
}

#[tokio::test]
async fn users_a_live_user_group_holds_are_its_caches_and_the_rest_are_listed_by_whose_they_may_be() {
    let names = Names::new("osb");
    let live_group = names.cache(INSTANCE);
    let dead_group = names.cache(DEAD);
    let users = [
        user(&names.binding_user(INSTANCE, "b-in-group"), "b-in-group", &[&live_group], "active"),
        user(&names.binding_user(INSTANCE, "b-outside"), "b-outside", &[], "active"),
        user(&names.binding_user(DEAD, "b-1"), "b-1", &[&dead_group], "active"),
        user(&names.binding_user(DEAD, "b-2"), "b-2", &[], "deleting"),
        user(&names.admin_user(INSTANCE), "broker-admin", &[&live_group], "active"),
        user("default", "default", &[], "active"),
        user("osb-u-made-by-hand", "someone", &[], "active"),
    ];
    let first_page = users[..4].to_vec();
    let second_page = users[4..].to_vec();
    let page_1 = mock!(Client::describe_users)
        .match_requests(|r| r.marker().is_none() && r.max_records() == Some(100))
        .then_output(move || {
            DescribeUsersOutput::builder().set_users(Some(first_page.clone())).marker("page-2").build()
        });
    let page_2 = mock!(Client::describe_users)
        .match_requests(|r| r.marker() == Some("page-2"))
        .then_output(move || DescribeUsersOutput::builder().set_users(Some(second_page.clone())).build());
    let provider = provider_on(mocked(&[&page_1, &page_2]), secrets_with_admin().await);
    let live: LiveCaches = [INSTANCE.to_string()].into();

    let first = provider.leftovers(ResourceKind::User, None, &live).await.unwrap();
    assert_eq!(first.next.as_deref(), Some("page-2"));
    let claims: Vec<(String, Claim)> = first.leftovers.into_iter().map(|l| (l.id, l.claim)).collect();
    assert_eq!(
        claims,
        [
            (
                names.binding_user(INSTANCE, "b-outside"),
                Claim::UserOf { key: INSTANCE.into(), username: "b-outside".into() }
            ),
            (names.binding_user(DEAD, "b-1"), Claim::Nobody),
        ],
        "the live group's user and the user being deleted are not listed"
    );
    let second = provider.leftovers(ResourceKind::User, Some("page-2"), &live).await.unwrap();
    assert_eq!(
        second,
        Default::default(),
        "the live admin, AWS's default and a hand-made user are not listed"
    );
}

#[tokio::test]
async fn a_resource_whose_tags_are_not_the_brokers_is_left_alone_and_one_gone_is_gone() {
    let names = Names::new("osb");
    let ours = names.binding_user(DEAD, "b-1");
    let theirs = names.binding_user(DEAD, "b-2");
    let gone = names.binding_user(DEAD, "b-3");
    let arn = |id: &str| format!("arn:aws:elasticache:us-east-1:123456789012:user:{id}");
    let (ours_arn, theirs_arn, gone_arn) = (arn(&ours), arn(&theirs), arn(&gone));
    let tagged_ours = mock!(Client::list_tags_for_resource)
        .match_requests(move |r| r.resource_name() == Some(ours_arn.as_str()))
        .then_output(|| {
            ListTagsForResourceOutput::builder()
                .tag_list(Tag::builder().key("broker").value("osb").build())
                .build()
        });
    let tagged_theirs = mock!(Client::list_tags_for_resource)
        .match_requests(move |r| r.resource_name() == Some(theirs_arn.as_str()))
        .then_output(|| {
            ListTagsForResourceOutput::builder()
                .tag_list(Tag::builder().key("broker").value("osb-team-b").build())
                .build()
        });
    let tags_gone = mock!(Client::list_tags_for_resource)
        .match_requests(move |r| r.resource_name() == Some(gone_arn.as_str()))
        .then_error(|| {
            ListTagsForResourceError::UserNotFoundFault(
                UserNotFoundFault::builder().meta(meta("UserNotFound", "User not found")).build(),
            )
        });
    let delete =
        mock!(Client::delete_user).then_output(|| DeleteUserOutput::builder().status("deleting").build());
    let provider =
        provider_on(mocked(&[&tagged_ours, &tagged_theirs, &tags_gone, &delete]), secrets_with_admin().await);
    let leftover = |id: &str| Leftover {
        kind: ResourceKind::User,
        id: id.to_string(),
        reference: arn(id),
        claim: Claim::Nobody,
    };
    assert_eq!(provider.remove(&leftover(&theirs)).await.unwrap(), Removal::NotOurs);
    assert_eq!(provider.remove(&leftover(&gone)).await.unwrap(), Removal::Gone);
    assert_eq!(delete.num_calls(), 0, "nothing deleted that is not tagged ours");
    assert_eq!(provider.remove(&leftover(&ours)).await.unwrap(), Removal::Removed);
    assert_eq!(delete.num_calls(), 1);
}

#[tokio::test]
async fn a_replication_group_being_deleted_or_of_another_shape_is_not_listed() {
    let names = Names::new("osb");
    let groups = vec![
        group(&names.cache(DEAD), "available"),
        group(&names.cache("another-dead-instance"), "deleting"),
        group(&names.cache(INSTANCE), "available"),
        group(&Names::new("osb-b").cache(DEAD), "available"),
        group("osb-made-by-hand", "available"),
    ];
    let describe = mock!(Client::describe_replication_groups)
        .match_requests(|r| r.replication_group_id().is_none() && r.max_records() == Some(100))
        .then_output(move || {
            DescribeReplicationGroupsOutput::builder().set_replication_groups(Some(groups.clone())).build()
        });
    let provider = provider_on(mocked(&[&describe]), secrets_with_admin().await);
    let live: LiveCaches = [INSTANCE.to_string()].into();
    let page = provider.leftovers(ResourceKind::ReplicationGroup, None, &live).await.unwrap();
    let ids: Vec<&str> = page.leftovers.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, [names.cache(DEAD)]);
    assert_eq!(
        page.leftovers[0].reference,
        format!("arn:aws:elasticache:us-east-1:123456789012:replicationgroup:{}", names.cache(DEAD))
    );
    assert_eq!(page.next, None);
}
