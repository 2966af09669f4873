//! The store in AWS: one DynamoDB table holds the catalog (services, plans) and
//! the state (instances, bindings, operations), with the same semantics as the
//! laptop's SQLite store.
//!
//! # Table design
//!
//! Keys `pk` (S) and `sk` (S); one global secondary index `gsi1` (`gsi1pk` S,
//! `gsi1sk` S, projection ALL); TTL on `expires_at` (N, epoch seconds).
//!
//! | record    | `pk`                     | `sk`           | `gsi1pk` / `gsi1sk`                  |
//! | --------- | ------------------------ | -------------- | ------------------------------------ |
//! | service   | `CATALOG`                | `SERVICE#<id>` |                                      |
//! | plan      | `CATALOG`                | `PLAN#<id>`    |                                      |
//! | instance  | `INSTANCE#<id>`          | `INSTANCE`     | `INSTANCES` / `<id>`                 |
//! | binding   | `INSTANCE#<instance id>` | `BINDING#<id>` |                                      |
//! | operation | `OPERATION#<id>`         | `OPERATION`    | `OPERATIONS_IN_PROGRESS` / `<id>` \* |
//! | warm pool | `POOLS`                  | `POOL#<plan id>` |                                    |
//! | sweep     | `SWEEP`                  | `SWEEP`        |                                      |
//!
//! \* only while the operation is in progress.
//!
//! Every listing is a Query, never a Scan: the catalog and an instance's
//! bindings each share a partition (the catalog is sorted by name in memory,
//! as the SQLite store lists it), and `instances()` and
//! `operations_in_progress()` read the index. The operations' index entry is
//! sparse: a finished operation is written without `gsi1pk`/`gsi1sk`, so it
//! drops out of the index, which stays as small as the work in flight. Index
//! reads are eventually consistent (DynamoDB offers nothing else on a GSI);
//! every other read is strongly consistent, so a caller that lost a race
//! re-reads the winner.
//!
//! Each item is the record as `serde_dynamo` encodes it, merged with the key
//! attributes. The record's own `version` (N) and `expires_at` (N) therefore
//! sit at the top level, where condition expressions and TTL find them. No
//! secret is ever stored: records hold only references to the secret store.
//!
//! # Writes
//!
//! As in the SQLite store, every write of a versioned record is conditional: a
//! new record is put with `attribute_not_exists(pk)` at version 1 (a failed
//! condition is [`StoreError::AlreadyExists`]); a changed record is put with
//! `#v = :expected` at the next version (a failed condition is
//! [`StoreError::Conflict`]). A whole item is always put, never updated in
//! place, so what is stored is exactly the record. A record and its operation
//! go together in one `TransactWriteItems`, whose cancellation reasons name the
//! item whose condition failed; a single record is one conditional `PutItem`.
//! Every other failure is [`StoreError::Unavailable`], naming the DynamoDB
//! action, the table and the error code. The caller's `version` fields move
//! only after DynamoDB accepted the write.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    KeysAndAttributes, Projection, ProjectionType, Put, ScalarAttributeType, TimeToLiveSpecification,
    TimeToLiveStatus, TransactWriteItem,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use broker_core::domain::{Binding, Instance, Operation, Plan, Pool, Service, Sweep};
use broker_core::ports::{CatalogStore, PoolChange, StateStore, StoreError};

type Item = HashMap<String, AttributeValue>;

const PK: &str = "pk";
const SK: &str = "sk";
const GSI1: &str = "gsi1";
const GSI1PK: &str = "gsi1pk";
const GSI1SK: &str = "gsi1sk";
const VERSION: &str = "version";
const EXPIRES_AT: &str = "expires_at";

const CATALOG: &str = "CATALOG";
const SERVICE_PREFIX: &str = "SERVICE#";
const PLAN_PREFIX: &str = "PLAN#";
const BINDING_PREFIX: &str = "BINDING#";
const INSTANCES: &str = "INSTANCES";
const OPERATIONS_IN_PROGRESS: &str = "OPERATIONS_IN_PROGRESS";

/// How long `create_table` waits for a new table to become ACTIVE.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// The store of the Lambda functions: one DynamoDB table (see the module docs
/// for its layout). Clones share the client's connection pool.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// A store over `table`, which [`create_table`] (or the deployment
    /// template) has made with this module's keys, index and TTL.
    pub fn new(client: Client, table: impl Into<String>) -> DynamoStore {
        DynamoStore { client, table: table.into() }
    }
}

/// Creates the table with its keys, the `gsi1` index and TTL on `expires_at`,
/// billed per request, for tests and local tools (deployments declare the
/// table in their template). Idempotent: an existing table is fine, and TTL is
/// turned on only when it is not on already.
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let string_attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| not_built("an attribute definition", &e))
    };
    let key = |name: &str, key_type: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .map_err(|e| not_built("a key schema element", &e))
    };
    let index = GlobalSecondaryIndex::builder()
        .index_name(GSI1)
        .key_schema(key(GSI1PK, KeyType::Hash)?)
        .key_schema(key(GSI1SK, KeyType::Range)?)
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
        .map_err(|e| not_built("the gsi1 index", &e))?;
    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute(PK)?)
        .attribute_definitions(string_attribute(SK)?)
        .attribute_definitions(string_attribute(GSI1PK)?)
        .attribute_definitions(string_attribute(GSI1SK)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .global_secondary_indexes(index)
        .send()
        .await;
    match created.map_err(|e| e.into_service_error()) {
        Ok(_) | Err(CreateTableError::ResourceInUseException(_)) => {}
        Err(e) => return Err(unavailable(table, "CreateTable", &e)),
    }

    // TTL can be set only on an ACTIVE table; a new one is CREATING at first.
    client.wait_until_table_exists().table_name(table).wait(TABLE_ACTIVE_TIMEOUT).await.map_err(|e| {
        StoreError::Unavailable(format!(
            "DynamoDB table {table} did not become ACTIVE: {}",
            DisplayErrorContext(&e)
        ))
    })?;

    // UpdateTimeToLive refuses to enable TTL that is already enabled, so look
    // first. moto answers DISABLED with no attribute name for a new table, and
    // DynamoDB may answer ENABLING for a while: both are handled here.
    let described = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| unavailable(table, "DescribeTimeToLive", &e.into_service_error()))?;
    let ttl = described.time_to_live_description();
    let status = ttl.and_then(|d| d.time_to_live_status());
    let attribute = ttl.and_then(|d| d.attribute_name());
    match status {
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) if attribute == Some(EXPIRES_AT) => {
            return Ok(());
        }
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) => {
            return Err(StoreError::Unavailable(format!(
                "DynamoDB table {table} has TTL on {}, not on {EXPIRES_AT}",
                attribute.unwrap_or("an unnamed attribute")
            )));
        }
        _ => {}
    }
    let spec = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(EXPIRES_AT)
        .build()
        .map_err(|e| not_built("the TTL specification", &e))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(|e| unavailable(table, "UpdateTimeToLive", &e.into_service_error()))?;
    Ok(())
}

// ---------------------------------------------------------------- errors

/// A failed AWS call, named the way AWS names it: the action, the table, the
/// error code and DynamoDB's message. DynamoDB's messages describe requests,
/// and the items hold no secrets, so the message is safe to pass on. Errors
/// with no code (timeouts, connection failures) are described by their chain.
/// A request DynamoDB refuses as wrong (ValidationException: an item over
/// 400 KB, a key too long) or not allowed (AccessDeniedException) is
/// [`StoreError::Refused`]: sending it again fails again.
fn unavailable<E>(table: &str, action: &str, err: &E) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error,
{
    let message = format!("DynamoDB {action} on table {table} failed: {}", super::aws_terms(err));
    match err.code() {
        Some("ValidationException" | "AccessDeniedException") => StoreError::Refused(message),
        _ => StoreError::Unavailable(message),
    }
}

fn not_built(what: &str, err: &aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Unavailable(format!("cannot build {what} for DynamoDB: {err}"))
}

// ---------------------------------------------------------------- items

/// Encodes `record` and adds its key (and index) attributes.
fn to_item<T: Serialize>(
    record: &T,
    keys: Vec<(&'static str, String)>,
    what: &str,
) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::aws_sdk_dynamodb_1::to_item(record)
        .map_err(|_| StoreError::Unavailable(format!("cannot encode {what} as a DynamoDB item")))?;
    for (name, value) in keys {
        item.insert(name.to_string(), AttributeValue::S(value));
    }
    Ok(item)
}

/// Decodes a record, ignoring the key attributes. serde's messages may quote
/// pieces of the item, so only what could not be read is reported.
fn from_item<T: DeserializeOwned>(item: Item, what: &str) -> Result<T, StoreError> {
    serde_dynamo::aws_sdk_dynamodb_1::from_item(item)
        .map_err(|_| StoreError::Unavailable(format!("stored {what} cannot be read")))
}

fn instance_key(id: &str) -> (String, String) {
    (format!("INSTANCE#{id}"), "INSTANCE".to_string())
}

fn binding_key(instance_id: &str, id: &str) -> (String, String) {
    (format!("INSTANCE#{instance_id}"), format!("{BINDING_PREFIX}{id}"))
}

fn operation_key(id: &str) -> (String, String) {
    (format!("OPERATION#{id}"), "OPERATION".to_string())
}

const POOLS: &str = "POOLS";
const POOL_PREFIX: &str = "POOL#";

/// Every pool shares one partition, so the reconciler lists them in one Query.
fn pool_key(plan_id: &str) -> (String, String) {
    (POOLS.to_string(), format!("{POOL_PREFIX}{plan_id}"))
}

/// The orphan sweep's one record.
fn sweep_key() -> (String, String) {
    ("SWEEP".to_string(), "SWEEP".to_string())
}

// ---------------------------------------------------------------- versioned records

/// A record written under optimistic concurrency: what it is called in errors,
/// its version, and the key and index attributes of its item.
trait Versioned: Serialize + Clone {
    fn what(&self) -> String;
    fn set_version(&mut self, version: u64);
    fn keys(&self) -> Vec<(&'static str, String)>;
}

impl Versioned for Instance {
    fn what(&self) -> String {
        format!("service instance {}", self.id)
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn keys(&self) -> Vec<(&'static str, String)> {
        let (pk, sk) = instance_key(&self.id);
        vec![(PK, pk), (SK, sk), (GSI1PK, INSTANCES.to_string()), (GSI1SK, self.id.clone())]
    }
}

impl Versioned for Binding {
    fn what(&self) -> String {
        format!("service binding {} of service instance {}", self.id, self.instance_id)
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn keys(&self) -> Vec<(&'static str, String)> {
        let (pk, sk) = binding_key(&self.instance_id, &self.id);
        vec![(PK, pk), (SK, sk)]
    }
}

impl Versioned for Operation {
    fn what(&self) -> String {
        format!("operation {}", self.id)
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn keys(&self) -> Vec<(&'static str, String)> {
        let (pk, sk) = operation_key(&self.id);
        let mut keys = vec![(PK, pk), (SK, sk)];
        // Writing the whole item without these is what removes a finished
        // operation from the index.
        if !self.is_finished() {
            keys.push((GSI1PK, OPERATIONS_IN_PROGRESS.to_string()));
            keys.push((GSI1SK, self.id.clone()));
        }
        keys
    }
}

impl Versioned for Pool {
    fn what(&self) -> String {
        format!("the warm pool of plan {}", self.plan_id)
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn keys(&self) -> Vec<(&'static str, String)> {
        let (pk, sk) = pool_key(&self.plan_id);
        vec![(PK, pk), (SK, sk)]
    }
}

impl Versioned for Sweep {
    fn what(&self) -> String {
        "the orphan sweep's record".to_string()
    }
    fn set_version(&mut self, version: u64) {
        self.version = version;
    }
    fn keys(&self) -> Vec<(&'static str, String)> {
        let (pk, sk) = sweep_key();
        vec![(PK, pk), (SK, sk)]
    }
}

/// What a conditional put expects to find.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// No item with this key.
    Absent,
    /// The item at this version.
    Version(u64),
}

/// One conditional put: the whole item, what must hold for it, and the version
/// the record has once it is written.
struct Write {
    item: Item,
    expect: Expect,
    what: String,
    version: u64,
}

impl Write {
    /// A new record, at version 1.
    fn insert<T: Versioned>(record: &T) -> Result<Write, StoreError> {
        let mut record = record.clone();
        record.set_version(1);
        let what = record.what();
        let item = to_item(&record, record.keys(), &what)?;
        Ok(Write { item, expect: Expect::Absent, what, version: 1 })
    }

    /// A changed record, if it is still at `expected`; stored at the version it
    /// will have.
    fn update<T: Versioned>(record: &T, expected: u64) -> Result<Write, StoreError> {
        let what = record.what();
        let next = expected.checked_add(1).ok_or_else(|| StoreError::Conflict(what.clone()))?;
        let mut record = record.clone();
        record.set_version(next);
        let item = to_item(&record, record.keys(), &what)?;
        Ok(Write { item, expect: Expect::Version(expected), what, version: next })
    }

    /// An operation: a new one (version 0, never stored) is inserted, a
    /// stored one updated from its version.
    fn operation(operation: &Operation) -> Result<Write, StoreError> {
        match operation.version {
            0 => Write::insert(operation),
            expected => Write::update(operation, expected),
        }
    }

    /// What a failed condition means for this write.
    fn lost(expect: Expect, what: String) -> StoreError {
        match expect {
            Expect::Absent => StoreError::AlreadyExists(what),
            Expect::Version(_) => StoreError::Conflict(what),
        }
    }
}

/// The condition expression of a write, with its names and values (none for
/// an insert: DynamoDB refuses empty maps).
type Condition = (String, Option<HashMap<String, String>>, Option<Item>);

fn condition(expect: Expect) -> Condition {
    match expect {
        Expect::Absent => (format!("attribute_not_exists({PK})"), None, None),
        Expect::Version(expected) => (
            "#v = :expected".to_string(),
            Some(HashMap::from([("#v".to_string(), VERSION.to_string())])),
            Some(HashMap::from([(":expected".to_string(), AttributeValue::N(expected.to_string()))])),
        ),
    }
}

// ---------------------------------------------------------------- calls

impl DynamoStore {
    async fn get<T: DeserializeOwned>(
        &self,
        (pk, sk): (String, String),
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        let item = self.get_item(AttributeValue::S(pk), AttributeValue::S(sk)).await?;
        item.map(|item| from_item(item, what)).transpose()
    }

    /// The item under (`pk`, `sk`) as the table holds it (a consistent read).
    async fn get_item(&self, pk: AttributeValue, sk: AttributeValue) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, pk)
            .key(SK, sk)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable(&self.table, "GetItem", &e.into_service_error()))?;
        Ok(out.item)
    }

    /// Two items in one BatchGetItem (consistent reads), in the order asked.
    /// A key DynamoDB leaves unprocessed (throttled) is read on its own.
    async fn get_together(
        &self,
        wanted: [((String, String), &str); 2],
    ) -> Result<[Option<Item>; 2], StoreError> {
        let key = |(pk, sk): &(String, String)| {
            HashMap::from([
                (PK.to_string(), AttributeValue::S(pk.clone())),
                (SK.to_string(), AttributeValue::S(sk.clone())),
            ])
        };
        let keys = KeysAndAttributes::builder()
            .keys(key(&wanted[0].0))
            .keys(key(&wanted[1].0))
            .consistent_read(true)
            .build()
            .map_err(|e| not_built(&format!("the read of {} and {}", wanted[0].1, wanted[1].1), &e))?;
        let out = self
            .client
            .batch_get_item()
            .request_items(&self.table, keys)
            .send()
            .await
            .map_err(|e| unavailable(&self.table, "BatchGetItem", &e.into_service_error()))?;
        let unprocessed = out.unprocessed_keys.as_ref().is_some_and(|u| !u.is_empty());
        let mut items = out.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default();
        let mut found = [None, None];
        for (slot, ((pk, sk), _)) in found.iter_mut().zip(&wanted) {
            let at = items.iter().position(|item| {
                item.get(PK) == Some(&AttributeValue::S(pk.clone()))
                    && item.get(SK) == Some(&AttributeValue::S(sk.clone()))
            });
            *slot = match at {
                Some(at) => Some(items.swap_remove(at)),
                None if unprocessed => {
                    self.get_item(AttributeValue::S(pk.clone()), AttributeValue::S(sk.clone())).await?
                }
                None => None,
            };
        }
        Ok(found)
    }

    /// Every item of partition `pk` whose sort key starts with `prefix`, in
    /// sort-key order.
    async fn query_partition<T: DeserializeOwned>(
        &self,
        pk: &str,
        prefix: &str,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_string()))
            .expression_attribute_values(":prefix", AttributeValue::S(prefix.to_string()));
        self.all(query, what).await
    }

    /// Every item under `gsi1pk` in the index, in `gsi1sk` (id) order.
    async fn query_index<T: DeserializeOwned>(&self, gsi1pk: &str, what: &str) -> Result<Vec<T>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(GSI1)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", GSI1PK)
            .expression_attribute_values(":pk", AttributeValue::S(gsi1pk.to_string()));
        self.all(query, what).await
    }

    /// Runs `query` through every page.
    async fn all<T: DeserializeOwned>(
        &self,
        query: QueryFluentBuilder,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        let items = query
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| unavailable(&self.table, "Query", &e.into_service_error()))?;
        items.into_iter().map(|item| from_item(item, what)).collect()
    }

    /// Whether the table holds exactly `items`. A write whose answer was lost
    /// (a timeout, or a 5xx after DynamoDB had written) is sent again by the
    /// SDK and then fails its own condition: finding its own items in place
    /// means it was written, not that someone else won.
    async fn holds(&self, items: &[&Item]) -> Result<bool, StoreError> {
        for item in items {
            let (Some(pk), Some(sk)) = (item.get(PK), item.get(SK)) else { return Ok(false) };
            if self.get_item(pk.clone(), sk.clone()).await?.as_ref() != Some(*item) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Puts `item` unconditionally: the catalog's operator writes.
    async fn put(&self, item: Item) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| unavailable(&self.table, "PutItem", &e.into_service_error()))?;
        Ok(())
    }

    /// Makes every write or none. One write is a conditional PutItem (half the
    /// cost of a transaction); more go in one TransactWriteItems, whose
    /// cancellation reasons say, item by item, which condition failed.
    async fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut writes = writes;
        if writes.len() == 1
            && let Some(Write { item, expect, what, .. }) = writes.pop()
        {
            let (expression, names, values) = condition(expect);
            let written = item.clone();
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(expression)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .send()
                .await;
            return match put.map_err(|e| e.into_service_error()) {
                Ok(_) => Ok(()),
                Err(PutItemError::ConditionalCheckFailedException(_)) => {
                    if self.holds(&[&written]).await? {
                        Ok(())
                    } else {
                        Err(Write::lost(expect, what))
                    }
                }
                Err(e) => Err(unavailable(&self.table, "PutItem", &e)),
            };
        }

        let mut losses = Vec::with_capacity(writes.len());
        let mut items = Vec::with_capacity(writes.len());
        let written: Vec<Item> = writes.iter().map(|w| w.item.clone()).collect();
        for Write { item, expect, what, .. } in writes {
            let (expression, names, values) = condition(expect);
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(expression)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values)
                .build()
                .map_err(|e| not_built(&format!("the put of {what}"), &e))?;
            items.push(TransactWriteItem::builder().put(put).build());
            losses.push((expect, what));
        }
        // The SDK gives the transaction a client request token, so its own
        // retries of a transaction that did commit are answered as a success.
        let transaction = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
        match transaction.map_err(|e| e.into_service_error()) {
            Ok(_) => Ok(()),
            Err(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                let failed = cancelled
                    .cancellation_reasons()
                    .iter()
                    .position(|reason| reason.code() == Some("ConditionalCheckFailed"));
                match failed {
                    Some(_) if self.holds(&written.iter().collect::<Vec<_>>()).await? => Ok(()),
                    Some(n) if n < losses.len() => {
                        let (expect, what) = losses.swap_remove(n);
                        Err(Write::lost(expect, what))
                    }
                    // Cancelled for another reason (a conflicting transaction
                    // in flight, throttling): retrying may help.
                    _ => Err(unavailable(&self.table, "TransactWriteItems", &cancelled)),
                }
            }
            Err(e) => Err(unavailable(&self.table, "TransactWriteItems", &e)),
        }
    }

    /// The first write of a record and its operation; `replacing` reuses the
    /// item of a deleted or failed record from its version, so versions keep
    /// counting and anyone still holding the old record loses.
    async fn create_with_operation<T: Versioned>(
        &self,
        record: &T,
        operation: &Operation,
        replacing: Option<u64>,
    ) -> Result<(u64, u64), StoreError> {
        let record_write = match replacing {
            None => Write::insert(record)?,
            Some(expected) => Write::update(record, expected)?,
        };
        let operation_write = Write::insert(operation)?;
        let versions = (record_write.version, operation_write.version);
        self.write(vec![record_write, operation_write]).await?;
        Ok(versions)
    }

    /// A record at its loaded version and, if given, its operation: both or
    /// neither.
    async fn save_with_operation<T: Versioned>(
        &self,
        record: &T,
        expected: u64,
        operation: Option<&Operation>,
    ) -> Result<(u64, Option<u64>), StoreError> {
        let record_write = Write::update(record, expected)?;
        let record_version = record_write.version;
        let mut writes = vec![record_write];
        let mut operation_version = None;
        if let Some(op) = operation {
            let op_write = Write::operation(op)?;
            operation_version = Some(op_write.version);
            writes.push(op_write);
        }
        self.write(writes).await?;
        Ok((record_version, operation_version))
    }
}

// ---------------------------------------------------------------- catalog

fn service_item(service: &Service) -> Result<Item, StoreError> {
    let keys = vec![(PK, CATALOG.to_string()), (SK, format!("{SERVICE_PREFIX}{}", service.id))];
    to_item(service, keys, &format!("service {}", service.id))
}

fn plan_item(plan: &Plan) -> Result<Item, StoreError> {
    let keys = vec![(PK, CATALOG.to_string()), (SK, format!("{PLAN_PREFIX}{}", plan.id))];
    to_item(plan, keys, &format!("plan {}", plan.id))
}

#[async_trait]
impl CatalogStore for DynamoStore {
    async fn services(&self) -> Result<Vec<Service>, StoreError> {
        let mut services: Vec<Service> = self.query_partition(CATALOG, SERVICE_PREFIX, "service").await?;
        // The sort key orders by id; the catalog is listed by name, as the
        // SQLite store lists it, so the platform sees a stable order.
        services.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(services)
    }

    async fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        let mut plans: Vec<Plan> = self.query_partition(CATALOG, PLAN_PREFIX, "plan").await?;
        plans.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        Ok(plans)
    }

    async fn seed(&self, services: &[Service], plans: &[Plan]) -> Result<usize, StoreError> {
        let items = services.iter().map(service_item).chain(plans.iter().map(plan_item));
        let mut inserted = 0;
        for item in items {
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item?))
                .condition_expression(format!("attribute_not_exists({PK})"))
                .send()
                .await;
            match put.map_err(|e| e.into_service_error()) {
                Ok(_) => inserted += 1,
                // Already there, perhaps changed by an operator: left alone.
                Err(PutItemError::ConditionalCheckFailedException(_)) => {}
                Err(e) => return Err(unavailable(&self.table, "PutItem", &e)),
            }
        }
        Ok(inserted)
    }

    async fn put_service(&self, service: &Service) -> Result<(), StoreError> {
        self.put(service_item(service)?).await
    }

    async fn put_plan(&self, plan: &Plan) -> Result<(), StoreError> {
        self.put(plan_item(plan)?).await
    }
}

// ---------------------------------------------------------------- state

#[async_trait]
impl StateStore for DynamoStore {
    async fn instance(&self, id: &str) -> Result<Option<Instance>, StoreError> {
        self.get(instance_key(id), &format!("service instance {id}")).await
    }

    async fn instances(&self) -> Result<Vec<Instance>, StoreError> {
        self.query_index(INSTANCES, "service instance").await
    }

    async fn create_instance(
        &self,
        instance: &mut Instance,
        operation: &mut Operation,
        replacing: Option<u64>,
    ) -> Result<(), StoreError> {
        let (iv, ov) = self.create_with_operation(&*instance, &*operation, replacing).await?;
        instance.version = iv;
        operation.version = ov;
        Ok(())
    }

    async fn save_instance(
        &self,
        instance: &mut Instance,
        operation: Option<&mut Operation>,
    ) -> Result<(), StoreError> {
        let (iv, ov) = self.save_with_operation(&*instance, instance.version, operation.as_deref()).await?;
        instance.version = iv;
        if let (Some(operation), Some(ov)) = (operation, ov) {
            operation.version = ov;
        }
        Ok(())
    }

    async fn binding(&self, instance_id: &str, binding_id: &str) -> Result<Option<Binding>, StoreError> {
        let what = format!("service binding {binding_id} of service instance {instance_id}");
        self.get(binding_key(instance_id, binding_id), &what).await
    }

    /// One BatchGetItem (consistent reads) for both items, which share the
    /// instance's partition: a fetch of a binding is one read, not two.
    async fn binding_and_instance(
        &self,
        instance_id: &str,
        binding_id: &str,
    ) -> Result<(Option<Binding>, Option<Instance>), StoreError> {
        let binding_is = format!("service binding {binding_id} of service instance {instance_id}");
        let instance_is = format!("service instance {instance_id}");
        let [binding, instance] = self
            .get_together([
                (binding_key(instance_id, binding_id), &binding_is),
                (instance_key(instance_id), &instance_is),
            ])
            .await?;
        Ok((
            binding.map(|item| from_item(item, &binding_is)).transpose()?,
            instance.map(|item| from_item(item, &instance_is)).transpose()?,
        ))
    }

    async fn bindings(&self, instance_id: &str) -> Result<Vec<Binding>, StoreError> {
        let (pk, _) = instance_key(instance_id);
        self.query_partition(&pk, BINDING_PREFIX, "service binding").await
    }

    async fn create_binding(
        &self,
        binding: &mut Binding,
        operation: &mut Operation,
        replacing: Option<u64>,
    ) -> Result<(), StoreError> {
        let (bv, ov) = self.create_with_operation(&*binding, &*operation, replacing).await?;
        binding.version = bv;
        operation.version = ov;
        Ok(())
    }

    async fn save_binding(
        &self,
        binding: &mut Binding,
        operation: Option<&mut Operation>,
    ) -> Result<(), StoreError> {
        let (bv, ov) = self.save_with_operation(&*binding, binding.version, operation.as_deref()).await?;
        binding.version = bv;
        if let (Some(operation), Some(ov)) = (operation, ov) {
            operation.version = ov;
        }
        Ok(())
    }

    async fn claim_spare(
        &self,
        instance: &mut Instance,
        spares_op: Option<&mut Operation>,
        binding: &mut Binding,
        bind_op: &mut Operation,
        replacing: Option<u64>,
    ) -> Result<(), StoreError> {
        let instance_write = Write::update(&*instance, instance.version)?;
        let spares_write = spares_op.as_deref().map(Write::insert).transpose()?;
        let binding_write = match replacing {
            None => Write::insert(&*binding)?,
            Some(expected) => Write::update(&*binding, expected)?,
        };
        let op_write = Write::insert(&*bind_op)?;
        let (iv, sv, bv, ov) = (
            instance_write.version,
            spares_write.as_ref().map(|w| w.version),
            binding_write.version,
            op_write.version,
        );
        let mut writes = vec![instance_write, binding_write, op_write];
        writes.extend(spares_write);
        self.write(writes).await?;
        instance.version = iv;
        if let (Some(s), Some(sv)) = (spares_op, sv) {
            s.version = sv;
        }
        binding.version = bv;
        bind_op.version = ov;
        Ok(())
    }

    async fn pool(&self, plan_id: &str) -> Result<Option<Pool>, StoreError> {
        self.get(pool_key(plan_id), &format!("the warm pool of plan {plan_id}")).await
    }

    async fn pools(&self) -> Result<Vec<Pool>, StoreError> {
        self.query_partition(POOLS, POOL_PREFIX, "warm pool").await
    }

    async fn save_pool(&self, pool: &mut Pool, change: PoolChange<'_>) -> Result<(), StoreError> {
        let pool_write = match pool.version {
            0 => Write::insert(&*pool)?,
            expected => Write::update(&*pool, expected)?,
        };
        let mut versions = vec![pool_write.version];
        let mut writes = vec![pool_write];
        let mut push = |write: Write| {
            versions.push(write.version);
            writes.push(write);
        };
        match &change {
            PoolChange::Nothing => {}
            PoolChange::Add { member, operation } => {
                push(Write::insert(&**member)?);
                push(Write::insert(&**operation)?);
            }
            PoolChange::Retire { member, operation } => {
                push(Write::update(&**member, member.version)?);
                push(Write::insert(&**operation)?);
            }
            PoolChange::Claim { member, instance, provision, tagging, replacing } => {
                push(Write::update(&**member, member.version)?);
                push(match replacing {
                    None => Write::insert(&**instance)?,
                    Some(expected) => Write::update(&**instance, *expected)?,
                });
                push(Write::insert(&**provision)?);
                push(Write::insert(&**tagging)?);
            }
        }
        self.write(writes).await?;
        pool.version = versions[0];
        match change {
            PoolChange::Nothing => {}
            PoolChange::Add { member, operation } | PoolChange::Retire { member, operation } => {
                member.version = versions[1];
                operation.version = versions[2];
            }
            PoolChange::Claim { member, instance, provision, tagging, .. } => {
                member.version = versions[1];
                instance.version = versions[2];
                provision.version = versions[3];
                tagging.version = versions[4];
            }
        }
        Ok(())
    }

    async fn sweep(&self) -> Result<Option<Sweep>, StoreError> {
        self.get(sweep_key(), "the orphan sweep's record").await
    }

    async fn save_sweep(&self, sweep: &mut Sweep) -> Result<(), StoreError> {
        let write = match sweep.version {
            0 => Write::insert(&*sweep)?,
            expected => Write::update(&*sweep, expected)?,
        };
        let version = write.version;
        self.write(vec![write]).await?;
        sweep.version = version;
        Ok(())
    }

    async fn operation(&self, id: &str) -> Result<Option<Operation>, StoreError> {
        self.get(operation_key(id), &format!("operation {id}")).await
    }

    /// With the operation named (as platforms poll, `?operation=`), one
    /// BatchGetItem for both items; without, the instance names it. No
    /// instance, no operation, as the port says.
    async fn instance_and_operation(
        &self,
        instance_id: &str,
        operation_id: Option<&str>,
    ) -> Result<(Option<Instance>, Option<Operation>), StoreError> {
        let Some(operation_id) = operation_id else {
            let Some(instance) = self.instance(instance_id).await? else {
                return Ok((None, None));
            };
            let operation = self.operation(&instance.last_operation_id).await?;
            return Ok((Some(instance), operation));
        };
        let instance_is = format!("service instance {instance_id}");
        let operation_is = format!("operation {operation_id}");
        let [instance, operation] = self
            .get_together([
                (instance_key(instance_id), &instance_is),
                (operation_key(operation_id), &operation_is),
            ])
            .await?;
        let Some(instance) = instance else {
            return Ok((None, None));
        };
        Ok((
            Some(from_item(instance, &instance_is)?),
            operation.map(|item| from_item(item, &operation_is)).transpose()?,
        ))
    }

    /// Read from the sparse index, which is eventually consistent: an
    /// operation finished a moment ago may still be listed. Callers re-read
    /// the operation before acting on it, and skip a finished one.
    async fn operations_in_progress(&self) -> Result<Vec<Operation>, StoreError> {
        self.query_index(OPERATIONS_IN_PROGRESS, "operation").await
    }

    async fn save_operation(&self, operation: &mut Operation) -> Result<(), StoreError> {
        let write = Write::update(&*operation, operation.version)?;
        let version = write.version;
        self.write(vec![write]).await?;
        operation.version = version;
        Ok(())
    }

    /// Does nothing and returns 0: DynamoDB's TTL deletes items whose
    /// `expires_at` has passed (within a day or two, in the background, at no
    /// write cost), so there is nothing for the broker to purge.
    async fn purge_expired(&self, _now: i64) -> Result<usize, StoreError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests;
