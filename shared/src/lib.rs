//! The broker's library: OSB wire types and HTTP API, the domain (plans, instances,
//! bindings, operations), the broker and worker logic, the ports they depend on,
//! and the adapters behind those ports.
//!
//! Layers point down only: `api` -> `broker` -> `domain` + `ports`; `worker` and
//! `rotation` -> `domain` + `ports`; `adapters` implement `ports`; `laptop` and
//! `aws_mode` wire it all together.

pub mod adapters;
pub mod api;
#[cfg(feature = "aws")]
pub mod aws_mode;
pub mod broker;
pub mod catalog;
pub mod domain;
pub mod laptop;
pub mod osb;
pub mod ports;
pub mod rotation;
pub mod sqs;
pub mod worker;

#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "aws-testing")]
pub mod testing_aws;
