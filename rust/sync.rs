//! The synchronisation primitives the concurrent core is built on: the standard library's, or,
//! when compiled with `RUSTFLAGS="--cfg loom"`, loom's instrumented copies of them, so that the
//! loom models in `loom_tests` can explore every interleaving of the real code (see
//! `scripts/loom.sh`).
//!
//! Only the types that exist with the same API in both are re-exported here. Loom's
//! `Condvar::wait_timeout` never times out (it waits for a notification), so the models only
//! use the untimed waits.

#[cfg(loom)]
pub use loom::sync::{atomic, Condvar, Mutex, MutexGuard};

#[cfg(not(loom))]
pub use std::sync::{atomic, Condvar, Mutex, MutexGuard};

// Poisoning is the standard library's in both cases: loom's locks return std's `LockResult`.
pub use std::sync::PoisonError;

/// Marks where a `SeqCst` protocol needs the single total order of `SeqCst` operations: a
/// thread writes one atomic and then reads another, and relies on a thread doing the converse
/// seeing its write if it did not see the other's (the `waiting` count of [`crate::admission`]).
///
/// Outside loom this is nothing: the `SeqCst` accesses on either side already are in that
/// order. Loom treats `SeqCst` accesses as `AcqRel` (a documented limitation) and would report
/// such a protocol's impossible interleavings as lost wake-ups; it does model `SeqCst` fences,
/// so under loom this is one.
#[inline(always)]
pub fn seqcst_fence_for_loom() {
    #[cfg(loom)]
    atomic::fence(atomic::Ordering::SeqCst);
}
