//! The Python face of the core: thin wrappers that convert arguments, release the GIL while
//! waiting and turn outcomes into Python values and exceptions.

mod batch;
mod entry;
mod errors;
mod gil;
mod in_flight;
mod interrupt;
mod loop_queue;
mod options;
mod processor;
mod settle;
mod stats;
mod wake_relay;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("BatchedError", py.get_type::<errors::BatchedError>())?;
    m.add(
        "ProcessorClosedError",
        py.get_type::<errors::ProcessorClosedError>(),
    )?;
    m.add("QueueFullError", py.get_type::<errors::QueueFullError>())?;
    m.add_class::<processor::Processor>()?;
    m.add_class::<entry::Pinned>()?;
    m.add_class::<entry::CallEntry>()?;
    m.add_class::<options::Options>()?;
    m.add_class::<stats::BatchStats>()?;
    m.add_class::<stats::BatchSettings>()?;
    m.add_class::<batch::Batch>()?;
    m.add_class::<processor::Ticket>()?;
    m.add_class::<loop_queue::LoopQueue>()?;
    m.add_function(wrap_pyfunction!(processor::reset_after_fork, m)?)?;
    interrupt::remember_main_thread(py)?;
    Ok(())
}
