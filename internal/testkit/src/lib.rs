//! Test fixtures for `fitz`:
//!
//! * [`fixture`]: the embedded broker on free ports, or an external one from
//!   `FITZ_BROKER_*` variables;
//! * [`Proxy`]: a live TCP proxy that cuts, blackholes, delays or refuses
//!   connections;
//! * [`jwt`]: HS256 tokens for the authenticated broker;
//! * [`peer`]: scripted in-process brokers for faults a real broker cannot
//!   produce.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fixture;
pub mod jwt;
pub mod peer;
pub mod proxy;

pub use fixture::Brokers;
pub use proxy::{Direction, Proxy, ProxyHandle};
