//! One test suite per port, run against every adapter of that port: each
//! adapter's tests call the port's macro with a function that opens a fresh
//! adapter, and get one `#[tokio::test]` per case. What only one adapter
//! can show (SQLite's two connections, DynamoDB's raw items and indexes)
//! stays in that adapter's own tests.

pub mod provider;
pub mod queue;
pub mod secrets;
pub mod store;
