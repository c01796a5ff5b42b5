//! `sluice_native`: the sidecar's native text scanner, a Python extension module.
//!
//! Owns the classes the sidecar's guardrails use when this module is installed (and replace
//! with their Python twins when it is not, or for policies with deny patterns):
//!
//! * `Engine`: `Scanner.find` of `sluice_sidecar/guardrails/detectors.py` for the built-in
//!   detectors (`scan.rs`: the detectors' own pattern sources compiled by PCRE2 with its JIT,
//!   the validators of `validate.rs`), in Python's character positions.
//! * `WordModel`: the features and weights of the learned injection signal
//!   (`injection_model.py`) for ASCII text (`model.rs`).
//! * `AnchorScan`: where the injection families' anchors occur in ASCII text
//!   (`injection.py`'s `_scan_anchors`; `anchors.rs`).
//! * `Redactor`: `HoldbackRedactor` of `holdback.py` over one stream: deltas batched, the held
//!   text rescanned per batch (`Scanner.settled` and `Scanner.find` of the held window, the
//!   rescan that the Python `StreamScan` is property-tested equal to), redacted text released
//!   as soon as no match can still span it. One call per delta.
//!
//! Positions cross the boundary as Python's (characters); inside, text is UTF-8 and positions
//! are bytes. The Python implementation is the reference: `tests/unit/test_native_scan.py`
//! holds the two equal on generated text, any split of it into deltas included.

mod anchors;
mod model;
mod scan;
mod validate;

use std::borrow::Cow;
use std::collections::HashMap;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use scan::{Context, DetectorSpec, Found};

/// Released text kept as left context for the next scan (`holdback._CONTEXT`).
const CONTEXT: usize = 64;

/// Character ↔ byte positions of one text (UTF-8, lone surrogates as their three bytes: a
/// character is a byte that is not a continuation byte). Identity for ASCII text; otherwise a
/// table of the characters before each byte, made on first use.
struct Index<'a> {
    text: &'a [u8],
    ascii: bool,
    before: std::cell::OnceCell<Vec<u32>>,
}

impl<'a> Index<'a> {
    fn new(text: &'a [u8]) -> Index<'a> {
        Index {
            text,
            ascii: text.is_ascii(),
            before: std::cell::OnceCell::new(),
        }
    }

    fn table(&self) -> &[u32] {
        self.before.get_or_init(|| {
            let mut out = Vec::with_capacity(self.text.len() + 1);
            let mut n = 0u32;
            for &b in self.text {
                out.push(n);
                if (b & 0xC0) != 0x80 {
                    n += 1;
                }
            }
            out.push(n);
            out
        })
    }

    fn to_char(&self, byte: usize) -> usize {
        if self.ascii {
            byte
        } else {
            self.table()[byte] as usize
        }
    }

    fn to_byte(&self, ch: usize) -> usize {
        if self.ascii {
            return ch.min(self.text.len());
        }
        // the first byte with `ch` characters before it that starts a character (or the end)
        let table = self.table();
        let mut b = table.partition_point(|&n| (n as usize) < ch);
        while b < self.text.len() && (self.text[b] & 0xC0) == 0x80 {
            b += 1;
        }
        b.min(self.text.len())
    }

    fn chars(&self) -> usize {
        if self.ascii {
            self.text.len()
        } else {
            self.table()[self.text.len()] as usize
        }
    }
}

fn chars(text: &[u8]) -> usize {
    text.iter().filter(|&&b| (b & 0xC0) != 0x80).count()
}

/// A Python str as UTF-8 bytes; lone surrogates (which Python strings may hold, and UTF-8
/// may not) as their three bytes.
fn utf8<'a>(text: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, [u8]>> {
    match text.to_str() {
        Ok(s) => Ok(Cow::Borrowed(s.as_bytes())),
        Err(_) => {
            let b = text.call_method1("encode", ("utf-8", "surrogatepass"))?;
            Ok(Cow::Owned(b.extract::<Vec<u8>>()?))
        }
    }
}

/// `utf8`'s inverse.
fn string<'py>(py: Python<'py>, text: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    match std::str::from_utf8(text) {
        Ok(s) => Ok(PyString::new(py, s).into_any()),
        Err(_) => PyBytes::new(py, text).call_method1("decode", ("utf-8", "surrogatepass")),
    }
}

#[pyclass(module = "sluice_native", frozen)]
struct Engine {
    inner: scan::Engine,
    card_words: Py<PyAny>,
    phone_words: Py<PyAny>,
    span: Py<PyAny>,
}

impl Engine {
    /// `inner.find` with the context-word callbacks of this engine; a callback's exception
    /// or a matching error becomes a Python exception.
    fn search(
        &self,
        py: Python<'_>,
        text: &[u8],
        pos: usize,
        extents: Option<&mut Vec<(usize, usize)>>,
    ) -> PyResult<Vec<Found>> {
        let spans = self.search_raw(py, text, pos, extents)?;
        Ok(self.inner.resolve(sorted(spans), self.inner.entities.len()))
    }

    /// `search` before the spans are sorted and resolved.
    fn search_raw(
        &self,
        py: Python<'_>,
        text: &[u8],
        pos: usize,
        extents: Option<&mut Vec<(usize, usize)>>,
    ) -> PyResult<Vec<Found>> {
        let mut failed: Option<PyErr> = None;
        let mut words = |ctx: Context, before: &[u8]| -> bool {
            let f = match ctx {
                Context::Card => &self.card_words,
                Context::Phone => &self.phone_words,
            };
            match string(py, before)
                .and_then(|b| f.call1(py, (b,)))
                .and_then(|r| r.is_truthy(py))
            {
                Ok(ok) => ok,
                Err(e) => {
                    failed.get_or_insert(e);
                    false
                }
            }
        };
        let found = self.inner.find_raw(text, pos, extents, &mut words);
        if let Some(e) = failed {
            return Err(e);
        }
        found.map_err(|e| PyRuntimeError::new_err(format!("native scan failed: {e}")))
    }

    fn span<'py>(
        &self,
        py: Python<'py>,
        start: usize,
        end: usize,
        entity: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.span
            .bind(py)
            .call1((start, end, self.inner.entities[entity].as_str()))
    }
}

fn sorted(mut spans: Vec<Found>) -> Vec<Found> {
    scan::sort_spans(&mut spans);
    spans
}

#[pymethods]
impl Engine {
    /// `detectors`: per detector `(entity, validator, pattern, run, hint, trigger or None)`;
    /// `tails`: `Scanner._tails`; `any_pattern`: `_ANY`; `separators`: `_PHONE_SEPARATORS`;
    /// `card_words(before)`, `phone_words(before)`: the context-word checks; `span`: the
    /// `Span` class.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        detectors: Vec<(String, String, String, String, String, Option<String>)>,
        tails: Vec<(String, usize)>,
        any_pattern: &str,
        separators: &str,
        iban_lengths: HashMap<String, usize>,
        context_before: usize,
        card_words: Py<PyAny>,
        phone_words: Py<PyAny>,
        span: Py<PyAny>,
    ) -> PyResult<Engine> {
        let specs = detectors
            .into_iter()
            .map(|(entity, kind, pattern, run, hint, trigger)| DetectorSpec {
                entity,
                kind,
                pattern,
                run,
                hint,
                trigger,
            })
            .collect();
        let inner = scan::Engine::new(
            specs,
            tails,
            any_pattern,
            separators,
            iban_lengths,
            context_before,
        )
        .map_err(PyValueError::new_err)?;
        Ok(Engine {
            inner,
            card_words,
            phone_words,
            span,
        })
    }

    /// `Scanner.find(text, pos, extents)`: spans (of the `span` class) from character `pos`;
    /// every candidate's raw extent is appended to `extents` when it is given.
    #[pyo3(signature = (text, pos=0, extents=None))]
    fn find<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyString>,
        pos: usize,
        extents: Option<Bound<'py, PyList>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let text = utf8(text)?;
        let text = &*text;
        let index = Index::new(text);
        let mut raw: Vec<(usize, usize)> = Vec::new();
        let found = self.search(
            py,
            text,
            index.to_byte(pos),
            extents.as_ref().map(|_| &mut raw),
        )?;
        let out = PyList::empty(py);
        for (s, e, entity) in found {
            out.append(self.span(py, index.to_char(s), index.to_char(e), entity)?)?;
        }
        if let Some(list) = extents {
            for (s, e) in raw {
                list.append((index.to_char(s), index.to_char(e)))?;
            }
        }
        Ok(out)
    }

    /// A streaming redactor over this engine: `labels` the entities replaced (None: all).
    /// With deny patterns: `deny(text, pos)` gives their matches in `text` from character
    /// `pos` as `(start, end, index into deny_labels)`, in the order `Scanner.find` adds them,
    /// and `window` is `Scanner.window` (the longest match they are assumed to have).
    #[pyo3(signature = (labels=None, batch=32, deny=None, deny_labels=Vec::new(), window=0))]
    fn redactor(
        slf: Py<Engine>,
        labels: Option<Vec<String>>,
        batch: usize,
        deny: Option<Py<PyAny>>,
        deny_labels: Vec<String>,
        window: usize,
    ) -> Redactor {
        let mut names: Vec<String> = slf.get().inner.entities.clone();
        let builtin = names.len();
        names.extend(deny_labels);
        let shown = labels.map(|wanted| {
            names
                .iter()
                .map(|e| wanted.iter().any(|n| n == e))
                .collect()
        });
        Redactor {
            engine: slf,
            names,
            builtin,
            deny,
            window: if window == 0 { 1 } else { window },
            shown,
            batch: batch.max(1),
            buf: Vec::new(),
            pos: 0,
            base: 0,
            unscanned: Vec::new(),
            unscanned_chars: 0,
            room: batch.max(1),
            closed: false,
        }
    }
}

/// `HoldbackRedactor` for one stream (see the module's docstring).
#[pyclass(module = "sluice_native")]
struct Redactor {
    engine: Py<Engine>,
    /// Entity names by index: the engine's, then the deny patterns' labels.
    names: Vec<String>,
    /// How many of `names` are the engine's.
    builtin: usize,
    /// The deny patterns' search (Python regexes), if the policy has any.
    deny: Option<Py<PyAny>>,
    /// `Scanner.window`, with deny patterns.
    window: usize,
    /// Per entity: replaced (None: every entity is).
    shown: Option<Vec<bool>>,
    batch: usize,
    /// Left context and pending raw text.
    buf: Vec<u8>,
    /// Where the pending text starts in `buf` (bytes).
    pos: usize,
    /// The stream position (characters) of `buf`'s first character.
    base: usize,
    /// Received, waiting for a batch.
    unscanned: Vec<u8>,
    unscanned_chars: usize,
    /// `batch` minus the characters waiting (0 once closed).
    room: usize,
    #[pyo3(get)]
    closed: bool,
}

fn empty(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
    PyTuple::new(
        py,
        [
            PyString::new(py, "").into_any(),
            PyTuple::empty(py).into_any(),
        ],
    )
}

impl Redactor {
    /// `Scanner.find(buf, pos, extents)`: the engine's candidates and the deny patterns'
    /// matches, sorted and resolved together.
    fn find(
        &self,
        py: Python<'_>,
        mut extents: Option<&mut Vec<(usize, usize)>>,
    ) -> PyResult<Vec<Found>> {
        let engine = self.engine.get();
        let mut spans = engine.search_raw(py, &self.buf, self.pos, extents.as_deref_mut())?;
        if let Some(deny) = &self.deny {
            let index = Index::new(&self.buf);
            let found: Vec<(usize, usize, usize)> = deny
                .call1(py, (string(py, &self.buf)?, index.to_char(self.pos)))?
                .extract(py)?;
            for (s, e, label) in found {
                if label >= self.names.len() - self.builtin {
                    return Err(PyValueError::new_err("a deny match named no deny label"));
                }
                let (s, e) = (index.to_byte(s), index.to_byte(e));
                spans.push((s, e, self.builtin + label));
                if let Some(x) = extents.as_deref_mut() {
                    x.push((s, e));
                }
            }
        }
        Ok(engine.inner.resolve(sorted(spans), self.names.len()))
    }

    /// Release `buf[pos..cut]` (bytes) with `spans` (bytes in `buf`) applied.
    fn release<'py>(
        &mut self,
        py: Python<'py>,
        cut: usize,
        spans: &[Found],
    ) -> PyResult<Bound<'py, PyTuple>> {
        let engine = self.engine.get();
        let index = Index::new(&self.buf);
        let mut text: Vec<u8> = Vec::with_capacity(cut - self.pos);
        let mut at = self.pos;
        // merge: overlapping spans joined, labelled by the first (spans are sorted by start,
        // longest first)
        let mut merged: Vec<Found> = Vec::new();
        for &(s, e, entity) in spans {
            if let Some(shown) = &self.shown {
                if !shown[entity] {
                    continue;
                }
            }
            match merged.last_mut() {
                Some(last) if s < last.1 => {
                    if e > last.1 {
                        last.1 = e;
                    }
                }
                _ => merged.push((s, e, entity)),
            }
        }
        for (s, e, entity) in merged {
            text.extend_from_slice(&self.buf[at..s]);
            if entity < self.builtin {
                text.push(b'[');
                text.extend_from_slice(self.names[entity].as_bytes());
                text.push(b']');
            } else {
                text.extend_from_slice(b"[REDACTED]"); // a deny pattern's match
            }
            at = e;
        }
        text.extend_from_slice(&self.buf[at..cut]);
        let out_spans = PyTuple::new(
            py,
            spans
                .iter()
                .map(|&(s, e, entity)| {
                    let (s, e) = (self.base + index.to_char(s), self.base + index.to_char(e));
                    engine
                        .span
                        .bind(py)
                        .call1((s, e, self.names[entity].as_str()))
                })
                .collect::<PyResult<Vec<_>>>()?,
        )?;
        let cut_chars = index.to_char(cut);
        let keep_chars = cut_chars.saturating_sub(CONTEXT);
        let keep = index.to_byte(keep_chars);
        self.buf.drain(..keep);
        self.pos = cut - keep;
        self.base += keep_chars;
        PyTuple::new(py, [string(py, &text)?, out_spans.into_any()])
    }
}

#[pymethods]
impl Redactor {
    /// Characters received but not released yet.
    #[getter]
    fn pending(&self) -> usize {
        chars(&self.buf[self.pos..]) + self.unscanned_chars
    }

    /// `HoldbackRedactor.step`: `(released text, spans found in it)`.
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        chunk: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let chunk = utf8(chunk)?;
        let chunk = &*chunk;
        let size = if chunk.is_ascii() {
            chunk.len()
        } else {
            chars(chunk)
        };
        if 0 < size && size < self.room {
            self.room -= size;
            self.unscanned.extend_from_slice(chunk);
            self.unscanned_chars += size;
            return empty(py);
        }
        if self.closed {
            return Err(PyRuntimeError::new_err("push after close"));
        }
        self.buf.extend_from_slice(&self.unscanned);
        self.buf.extend_from_slice(chunk);
        self.unscanned.clear();
        self.unscanned_chars = 0;
        self.room = self.batch;
        let engine = self.engine.get();
        let index = Index::new(&self.buf);
        let chars = index.chars();
        let mut settled = engine.inner.settled(&self.buf, chars);
        if self.deny.is_some() {
            settled = settled.min(chars.saturating_sub(self.window)); // the deny window
        }
        let settled = index.to_byte(settled);
        if settled <= self.pos {
            return empty(py);
        }
        let mut extents: Vec<(usize, usize)> = Vec::new();
        let spans = self.find(py, Some(&mut extents))?;
        let mut cut = settled;
        if !extents.is_empty() {
            extents.retain(|e| e.0 < settled);
            extents.sort_unstable();
            let mut merged: Vec<(usize, usize)> = Vec::new();
            for (s, e) in extents {
                match merged.last_mut() {
                    Some(last) if s < last.1 => {
                        if e > last.1 {
                            last.1 = e;
                        }
                    }
                    _ => merged.push((s, e)),
                }
            }
            for (s, e) in merged {
                if s < cut && cut < e {
                    cut = s;
                    break;
                }
            }
            if cut <= self.pos {
                return empty(py);
            }
        }
        let kept: Vec<Found> = spans.into_iter().filter(|s| s.0 < cut).collect();
        self.release(py, cut, &kept)
    }

    /// `HoldbackRedactor.close`: everything still held, redacted (`rest`: text the caller's
    /// decoder still held, appended unscanned).
    #[pyo3(signature = (rest=""))]
    fn close<'py>(&mut self, py: Python<'py>, rest: &str) -> PyResult<Bound<'py, PyTuple>> {
        self.buf.extend_from_slice(&self.unscanned);
        self.buf.extend_from_slice(rest.as_bytes());
        self.unscanned.clear();
        self.unscanned_chars = 0;
        self.room = 0;
        self.closed = true;
        if self.pos == self.buf.len() {
            return empty(py);
        }
        let spans = self.find(py, None)?;
        let end = self.buf.len();
        self.release(py, end, &spans)
    }
}

/// The learned injection signal's features and weights (`model.rs`).
#[pyclass(module = "sluice_native", frozen)]
struct WordModel {
    inner: model::WordModel,
}

#[pymethods]
impl WordModel {
    /// `weights`: feature → integer weight; `negations`, `scope`: `injection_model`'s.
    #[new]
    fn new(weights: HashMap<String, i64>, negations: Vec<String>, scope: usize) -> WordModel {
        WordModel {
            inner: model::WordModel::new(weights, negations, scope),
        }
    }

    /// How many features have a weight.
    #[getter]
    fn features(&self) -> usize {
        self.inner.features()
    }

    /// `(bias, min_features, model)` of a weights file (`injection_model.json`), read here:
    /// the weights never become a Python dict.
    #[staticmethod]
    fn load(path: &str, negations: Vec<String>, scope: usize) -> PyResult<(f64, i64, WordModel)> {
        let (bias, min_features, inner) =
            model::WordModel::from_file(path, negations, scope).map_err(PyValueError::new_err)?;
        Ok((bias, min_features, WordModel { inner }))
    }

    /// `(sum of the weights of the distinct features, their number)` of an ASCII text; None
    /// for any other text (the Python path's).
    fn total(&self, text: &Bound<'_, PyString>) -> Option<(i64, usize)> {
        let s = text.to_str().ok()?;
        s.is_ascii().then(|| self.inner.total(s.as_bytes()))
    }

    /// The same for any text given its ASCII twin (`injection_model.ascii_twin`: one
    /// character for one, a word character where Python's `\w` has one); None when the twin
    /// is not one character per character of the text.
    fn total_twin(
        &self,
        text: &Bound<'_, PyString>,
        twin: &Bound<'_, PyString>,
    ) -> PyResult<Option<(i64, usize)>> {
        let text = utf8(text)?;
        let twin = utf8(twin)?;
        Ok(self.inner.total_twin(&text, &twin))
    }
}

/// Where the injection families' anchors occur (`anchors.rs`).
#[pyclass(module = "sluice_native", frozen)]
struct AnchorScan {
    inner: anchors::AnchorScan,
}

#[pymethods]
impl AnchorScan {
    /// `at_start`: `_AT_START` (word → anchors it starts with, persona cue); `others`:
    /// `_OTHER_ANCHORS`.
    #[new]
    fn new(
        at_start: HashMap<String, (Vec<String>, bool)>,
        others: Vec<String>,
    ) -> PyResult<AnchorScan> {
        let inner = anchors::AnchorScan::new(at_start, others).map_err(PyValueError::new_err)?;
        Ok(AnchorScan { inner })
    }

    /// `_scan_anchors(text)` of an ASCII text: `({anchor: [position, ...]}, [persona cue
    /// position, ...])`; None for any other text (the Python path's).
    fn scan<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyString>,
    ) -> PyResult<Option<(Bound<'py, pyo3::types::PyDict>, Vec<usize>)>> {
        let s = match text.to_str() {
            Ok(s) if s.is_ascii() => s,
            _ => return Ok(None),
        };
        let (found, persona) = self.inner.scan(s.as_bytes());
        let out = pyo3::types::PyDict::new(py);
        for (i, at) in found {
            out.set_item(self.inner.anchors[i].as_str(), at)?;
        }
        Ok(Some((out, persona)))
    }
}

#[pymodule]
fn sluice_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<Engine>()?;
    m.add_class::<Redactor>()?;
    m.add_class::<WordModel>()?;
    m.add_class::<AnchorScan>()?;
    Ok(())
}
