//! The DynamoDB store against moto in server mode (`cargo nextest run -p
//! broker-aws`): the store contract, and what only this adapter does (the
//! read-back of a write whose answer was lost, the index, the TTL attribute).

use super::*;
use crate::sdk_config_for_endpoint;
use broker_core::domain::{InstanceState, OperationKind};
use broker_testing::MotoServer;
use broker_testing::contract::store::{self as contract, binding, instance};
use broker_testing::records::op;

/// A store over a fresh table of its own on `moto`.
async fn store(moto: &MotoServer) -> DynamoStore {
    let client = Client::new(&sdk_config_for_endpoint(&moto.endpoint).await);
    let table = format!("broker-{}", uuid::Uuid::new_v4());
    create_table(&client, &table).await.expect("create the table");
    DynamoStore::new(client, table)
}

/// The item as DynamoDB holds it, attribute by attribute.
async fn raw(store: &DynamoStore, (pk, sk): (String, String)) -> Item {
    let out = store
        .client
        .get_item()
        .table_name(&store.table)
        .key(PK, AttributeValue::S(pk))
        .key(SK, AttributeValue::S(sk))
        .consistent_read(true)
        .send()
        .await
        .expect("get item");
    out.item.expect("the item exists")
}

/// A fresh table on a moto server of its own, for the store contract.
async fn open() -> (DynamoStore, MotoServer) {
    let moto = MotoServer::start();
    (store(&moto).await, moto)
}

broker_testing::store_contract!(open);

async fn created(store: &DynamoStore, id: &str) -> (Instance, Operation) {
    contract::created(store, id).await
}

/// A write whose answer was lost is sent again by the SDK and fails its
/// own condition; finding its own items in place, the store reports it
/// written. Anything else at that version is still a conflict.
#[tokio::test]
async fn a_write_sent_again_after_its_answer_was_lost_is_a_success_not_a_conflict() {
    let moto = MotoServer::start();
    let store = store(&moto).await;
    let (mut instance, mut operation) = created(&store, "i-1").await;

    // One item (PutItem): the operation alone.
    operation.description = "step two".into();
    let before = operation.version;
    store.save_operation(&mut operation).await.unwrap();
    let mut again = operation.clone();
    again.version = before;
    store.save_operation(&mut again).await.expect("its own write, sent again");
    assert_eq!(again.version, operation.version);
    let mut other = operation.clone();
    other.version = before;
    other.description = "someone else's step".into();
    assert!(matches!(store.save_operation(&mut other).await, Err(StoreError::Conflict(_))));

    // Two items (TransactWriteItems): the instance with its operation.
    let (instance_before, op_before) = (instance.version, operation.version);
    instance.state = InstanceState::Ready;
    operation.description = "done".into();
    store.save_instance(&mut instance, Some(&mut operation)).await.unwrap();
    let (mut i2, mut o2) = (instance.clone(), operation.clone());
    (i2.version, o2.version) = (instance_before, op_before);
    store.save_instance(&mut i2, Some(&mut o2)).await.expect("its own transaction, sent again");
    let (mut i3, mut o3) = (instance.clone(), operation.clone());
    (i3.version, o3.version) = (instance_before, op_before);
    o3.description = "someone else's".into();
    assert!(matches!(store.save_instance(&mut i3, Some(&mut o3)).await, Err(StoreError::Conflict(_))));
}

// What only DynamoDB shows: the items' attributes, its index and TTL.

#[tokio::test]
async fn instances_are_in_the_index_and_bindings_are_not() {
    let moto = MotoServer::start();
    let store = store(&moto).await;
    created(&store, "i-a").await;
    let mut bound = binding("i-a", "b-1");
    store.create_binding(&mut bound, &mut op(OperationKind::Bind, "i-a", Some("b-1")), None).await.unwrap();
    let item = raw(&store, instance_key("i-a")).await;
    assert_eq!(item.get(GSI1PK), Some(&AttributeValue::S(INSTANCES.into())));
    assert_eq!(item.get(GSI1SK), Some(&AttributeValue::S("i-a".into())));
    assert_eq!(item.get(VERSION), Some(&AttributeValue::N("1".into())));
    assert!(!raw(&store, binding_key("i-a", "b-1")).await.contains_key(GSI1PK));
}

#[tokio::test]
async fn a_finished_operation_leaves_the_index_and_carries_its_expiry_for_the_ttl() {
    let moto = MotoServer::start();
    let store = store(&moto).await;
    let (mut i, mut finished) = created(&store, "i-1").await;
    assert!(raw(&store, operation_key(&finished.id)).await.contains_key(GSI1PK));
    finished.fail(1_100, "create failed".into()).unwrap();
    i.state = InstanceState::ProvisionFailed;
    store.save_instance(&mut i, Some(&mut finished)).await.unwrap();
    let item = raw(&store, operation_key(&finished.id)).await;
    assert!(!item.contains_key(GSI1PK) && !item.contains_key(GSI1SK), "{item:?}");
    let expires_at = finished.expires_at.unwrap().to_string();
    assert_eq!(item.get(EXPIRES_AT), Some(&AttributeValue::N(expires_at)), "TTL removes it later");
}

#[tokio::test]
async fn an_instance_provisioned_again_drops_its_expiry() {
    let moto = MotoServer::start();
    let store = store(&moto).await;
    let (mut old, _) = created(&store, "i-1").await;
    old.state = InstanceState::Deleted;
    old.expires_at = Some(9_999);
    store.save_instance(&mut old, None).await.unwrap();
    assert!(raw(&store, instance_key("i-1")).await.contains_key(EXPIRES_AT));
    let mut again = instance("i-1");
    let mut o = op(OperationKind::Provision, "i-1", None);
    store.create_instance(&mut again, &mut o, Some(old.version)).await.unwrap();
    assert!(!raw(&store, instance_key("i-1")).await.contains_key(EXPIRES_AT), "TTL no longer applies");
}

#[tokio::test]
async fn stored_items_hold_secret_references_and_nothing_like_a_password() {
    let moto = MotoServer::start();
    let store = store(&moto).await;
    let (mut i, _) = created(&store, "i-1").await;
    let admin_ref = "arn:aws:secretsmanager:us-east-1:123456789012:secret:broker/i-1/admin-AbCdEf";
    i.admin_secret = Some(admin_ref.into());
    store.save_instance(&mut i, None).await.unwrap();
    let mut b = binding("i-1", "b-1");
    let user_ref = "arn:aws:secretsmanager:us-east-1:123456789012:secret:broker/i-1/b-1-GhIjKl";
    b.secret = Some(user_ref.into());
    store.create_binding(&mut b, &mut op(OperationKind::Bind, "i-1", Some("b-1")), None).await.unwrap();

    for (key, reference, field) in
        [(instance_key("i-1"), admin_ref, "admin_secret"), (binding_key("i-1", "b-1"), user_ref, "secret")]
    {
        let item = raw(&store, key).await;
        assert_eq!(item.get(field), Some(&AttributeValue::S(reference.into())), "only the reference");
        let mut strings = Vec::new();
        collect_strings("", &AttributeValue::M(item), &mut strings);
        for (name, value) in strings {
            let lower = name.to_ascii_lowercase();
            assert!(!["pass", "pwd", "token", "credential"].iter().any(|w| lower.contains(w)), "{name}");
            if lower.contains("secret") {
                assert_eq!(value, reference, "{name} holds a reference");
            }
            assert!(!looks_like_a_password(&value), "{name} = {value}");
        }
    }
}

/// Every string in `value` with the path of attribute names to it.
fn collect_strings(path: &str, value: &AttributeValue, out: &mut Vec<(String, String)>) {
    match value {
        AttributeValue::S(s) => out.push((path.to_string(), s.clone())),
        AttributeValue::Ss(ss) => out.extend(ss.iter().map(|s| (path.to_string(), s.clone()))),
        AttributeValue::L(list) => list.iter().for_each(|v| collect_strings(path, v, out)),
        AttributeValue::M(map) => {
            for (name, v) in map {
                collect_strings(&format!("{path}.{name}"), v, out);
            }
        }
        _ => {}
    }
}

/// What the broker's generated passwords look like: a long run of letters
/// and digits, mixing both (ids and references carry separators).
fn looks_like_a_password(s: &str) -> bool {
    s.len() >= 20
        && s.chars().all(|c| c.is_ascii_alphanumeric())
        && s.chars().any(|c| c.is_ascii_digit())
        && s.chars().any(|c| c.is_ascii_alphabetic())
}

#[tokio::test]
async fn purging_is_left_to_the_tables_ttl_on_expires_at() {
    let moto = MotoServer::start();
    let store = store(&moto).await;
    let (mut gone, _) = created(&store, "i-gone").await;
    gone.state = InstanceState::Deleted;
    gone.expires_at = Some(100);
    store.save_instance(&mut gone, None).await.unwrap();

    assert_eq!(store.purge_expired(150).await.unwrap(), 0);
    let item = raw(&store, instance_key("i-gone")).await;
    assert_eq!(item.get(EXPIRES_AT), Some(&AttributeValue::N("100".into())));
    let ttl = store.client.describe_time_to_live().table_name(&store.table).send().await.unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name(), Some(EXPIRES_AT));
}

#[tokio::test]
async fn creating_the_table_again_is_fine() {
    let moto = MotoServer::start();
    let store = store(&moto).await;
    created(&store, "i-1").await;
    create_table(&store.client, &store.table).await.unwrap();
    assert!(store.instance("i-1").await.unwrap().is_some(), "the table is kept");
}

/// DynamoDB Developer Guide, "Service, account, and table quotas": "The
/// maximum item size in DynamoDB is 400 KB". An item over it is a
/// ValidationException, which no retry cures: Refused, so the worker fails
/// the operation instead of retrying until its deadline.
#[tokio::test]
async fn an_item_dynamodb_refuses_as_invalid_is_refused_not_unavailable() {
    let (store, _moto) = open().await;
    let mut i = instance("i-1");
    i.context = serde_json::json!({ "blob": "x".repeat(500 * 1024) });
    let mut o = op(OperationKind::Provision, "i-1", None);
    let err = store.create_instance(&mut i, &mut o, None).await.unwrap_err();
    assert!(matches!(&err, StoreError::Refused(m) if m.contains("ValidationException")), "{err}");
    assert!(!err.is_race());
}

#[tokio::test]
async fn a_missing_table_is_unavailable_and_names_the_failed_call() {
    let moto = MotoServer::start();
    let client = Client::new(&sdk_config_for_endpoint(&moto.endpoint).await);
    let store = DynamoStore::new(client, "no-such-table");

    let err = store.instance("i-1").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("GetItem on table no-such-table")),
        "{err}"
    );
    assert!(err.to_string().contains("ResourceNotFoundException"), "{err}");
    assert!(!err.is_race());

    let (mut i, mut o) = (instance("i-1"), op(OperationKind::Provision, "i-1", None));
    let err = store.create_instance(&mut i, &mut o, None).await.unwrap_err();
    assert!(matches!(&err, StoreError::Unavailable(m) if m.contains("TransactWriteItems")), "{err}");
    assert_eq!((i.version, o.version), (0, 0));
}
