//! The broker's core: the OSB wire types and error catalog, the domain
//! (plans, instances, bindings, operations), the catalog, the ports the
//! broker and worker depend on, and the broker, worker and rotation logic
//! over them. No AWS SDK, no SQLite, no HTTP server: adapters and wiring
//! live in the crates that depend on this one.
//!
//! Inside, layers point down only: `broker` -> `domain` + `ports`; `worker`
//! and `rotation` -> `domain` + `ports`; `invocation` -> `worker` + `rotation`.

pub mod broker;
pub mod catalog;
pub mod domain;
pub mod invocation;
pub mod logging;
pub mod osb;
pub mod ports;
pub mod reconcile;
pub mod rotation;
pub mod services;
pub mod worker;
