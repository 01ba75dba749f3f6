//! Which processor, if any, the current thread is a worker of: a batch function that calls its
//! own processor from the worker thread would queue an item that only that worker can run, and
//! the worker is busy waiting for it. The bindings refuse such a call at once.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    // 0: not a worker. A plain integer rather than a pointer, so that a processor made after
    // another was freed (or after a fork) can never be taken for it.
    static SERVING: Cell<u64> = const { Cell::new(0) };
}

/// One processor's identity for [`WorkerMark::is_current_thread`]; unique within the process.
#[derive(Debug)]
pub struct WorkerMark(u64);

impl WorkerMark {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// Marks the current thread as one of this processor's workers, for good: worker threads
    /// serve one processor until they end.
    pub fn claim_current_thread(&self) {
        SERVING.with(|serving| serving.set(self.0));
    }

    /// Whether the current thread is one of this processor's workers. (One thread-local read:
    /// it sits on every call's path.)
    #[inline]
    pub fn is_current_thread(&self) -> bool {
        SERVING.with(|serving| serving.get() == self.0)
    }
}

impl Default for WorkerMark {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_claiming_thread_is_the_worker() {
        let mark = WorkerMark::new();
        assert!(!mark.is_current_thread());
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    mark.claim_current_thread();
                    assert!(mark.is_current_thread());
                })
                .join()
                .unwrap();
        });
        assert!(!mark.is_current_thread(), "another thread claimed it");
    }

    #[test]
    fn a_worker_of_one_processor_is_not_a_worker_of_another() {
        let first = WorkerMark::new();
        let second = WorkerMark::new();
        std::thread::spawn(move || {
            first.claim_current_thread();
            assert!(first.is_current_thread());
            assert!(!second.is_current_thread());
            second.claim_current_thread();
            assert!(second.is_current_thread());
            assert!(!first.is_current_thread());
        })
        .join()
        .unwrap();
    }
}
