//! The Open Service Broker API v2.17 as data: request and response bodies,
//! headers, and the error catalog (each error with its status code and OSB
//! error key). Nothing here touches the store or a cache.

pub mod error;
pub mod headers;
pub mod types;

pub use error::OsbError;
