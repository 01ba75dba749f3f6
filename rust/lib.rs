//! Dynamic batching core.
//!
//! The modules at the top level are pure Rust: the batch policy, the dispatch rules, the pending
//! queue, per-call outcome tracking, statistics, and the two schedulers that tie them together: a
//! blocking one for worker threads and one that an event loop drives.
//! The Python bindings live in [`python`], compiled only with the `python` feature, so that
//! `cargo test` needs no libpython.

pub mod adaptive;
pub mod admission;
pub mod call;
pub mod costs;
pub mod late_timer;
pub mod loop_scheduler;
pub mod pending;
pub mod policy;
pub mod reentry;
pub mod relay;
pub mod rules;
pub mod scheduler;
pub mod stats;
pub mod sync;

#[cfg(all(test, loom))]
mod loom_tests;

#[cfg(feature = "python")]
mod python;
