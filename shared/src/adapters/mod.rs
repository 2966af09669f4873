//! Implementations of the ports: `local` for laptop mode (embedded store,
//! durable local queue, local secret store, real local cache processes) and
//! `aws` (feature `aws`) for Lambda.

#[cfg(feature = "aws")]
pub mod aws;
pub mod local;
