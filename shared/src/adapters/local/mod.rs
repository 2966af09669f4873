//! Laptop-mode adapters: everything under one state directory, no AWS account.
//! `store` (SQLite), `queue` (durable SQLite job queue), `secrets` (SQLite
//! secret store with version stages), `provider` (real redis-server,
//! valkey-server and memcached processes on free 127.0.0.1 ports).

pub mod provider;
pub mod queue;
pub mod secrets;
pub mod store;
