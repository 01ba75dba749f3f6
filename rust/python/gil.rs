//! Releasing the GIL around every wait of the bindings.

use pyo3::prelude::*;

use super::wake_relay::Rhythm;

/// Runs `f` with the GIL released. Every wait of the bindings goes through here, so a thread
/// that keeps a baton hands it over whenever it lets the GIL go, whatever it waits for.
pub(crate) fn release_gil<T: Send>(py: Python<'_>, f: impl Send + FnOnce() -> T) -> T {
    py.detach(|| {
        Rhythm::hand_over_kept();
        f()
    })
}
