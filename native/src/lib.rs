//! Sluice's native text scanner (stub while the engine lands).
use pyo3::prelude::*;

#[pymodule]
fn sluice_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
