//! The native probe of `bench/native_probe.py`: what the sidecar's text scanning would cost in
//! Rust. Not part of the sidecar. Two regex engines from crates.io behind a Python call:
//! fancy-regex (look-around and back-references, as the sidecar's patterns use) and the regex
//! crate (finite automata, no look-around), plus a call that does nothing (the cost of crossing
//! from Python into Rust with a str).

use pyo3::prelude::*;

/// A pattern compiled by fancy-regex.
#[pyclass]
struct Fancy {
    re: fancy_regex::Regex,
}

#[pymethods]
impl Fancy {
    #[new]
    fn new(pattern: &str) -> PyResult<Self> {
        fancy_regex::Regex::new(pattern)
            .map(|re| Fancy { re })
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    }

    /// Every match's (start, end), in bytes (characters for ASCII text).
    fn spans(&self, text: &str) -> Vec<(usize, usize)> {
        self.re
            .find_iter(text)
            .filter_map(|m| m.ok())
            .map(|m| (m.start(), m.end()))
            .collect()
    }

    /// How many matches (the engine's own cost: no list is built).
    fn count(&self, text: &str) -> usize {
        self.re.find_iter(text).filter(|m| m.is_ok()).count()
    }
}

/// A pattern compiled by the regex crate.
#[pyclass]
struct Plain {
    re: regex::Regex,
}

#[pymethods]
impl Plain {
    #[new]
    fn new(pattern: &str) -> PyResult<Self> {
        regex::Regex::new(pattern)
            .map(|re| Plain { re })
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    }

    /// Every match's (start, end), in bytes (characters for ASCII text).
    fn spans(&self, text: &str) -> Vec<(usize, usize)> {
        self.re.find_iter(text).map(|m| (m.start(), m.end())).collect()
    }

    /// How many matches (the engine's own cost: no list is built).
    fn count(&self, text: &str) -> usize {
        self.re.find_iter(text).count()
    }
}

/// Takes a str and does nothing with it.
#[pyfunction]
fn noop(text: &str) -> usize {
    text.len()
}

#[pymodule]
fn sluice_native_probe(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Fancy>()?;
    m.add_class::<Plain>()?;
    m.add_function(wrap_pyfunction!(noop, m)?)?;
    Ok(())
}
