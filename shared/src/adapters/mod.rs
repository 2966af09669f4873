//! Implementations of the ports: `local` for laptop mode (embedded store,
//! durable local queue, local secret store, real local cache processes).

pub mod local;
