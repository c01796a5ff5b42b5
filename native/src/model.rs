//! The features of the learned prompt-injection signal (`injection_model.py`: `features` and
//! the sum of their weights in `Model.logit`) for ASCII text, where `\w+` is
//! `[A-Za-z0-9_]+`. The Python module is the reference and keeps the arithmetic: this returns
//! the integer sum of the weights of the distinct features and how many there are.
//!
//! No allocation per feature: a word is a slice of the text and a flag (negated: `!word`), a
//! pair two of them; distinct features are told apart in a set of those, and a pair's weight
//! is looked up by its text spelled into one reused buffer.

use std::collections::{HashMap, HashSet};

use rustc_hash::{FxHashMap, FxHashSet};

pub struct WordModel {
    /// Feature text (`word`, `!word`, `a b`, `!a !b`, ...) → weight.
    weights: FxHashMap<Box<[u8]>, i64>,
    negations: FxHashSet<Box<[u8]>>,
    scope: usize,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

type Word<'t> = (&'t [u8], bool);

impl WordModel {
    /// The model of a weights file (`injection_model.json`: `bias`, `min_features`,
    /// `weights`): `(bias, min_features, model)`.
    pub fn from_file(path: &str, negations: Vec<String>, scope: usize) -> Result<(f64, i64, WordModel), String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format!("{path}: {e}"))?;
        let bias = doc["bias"].as_f64().ok_or_else(|| format!("{path}: no number at bias"))?;
        let min_features = doc["min_features"].as_i64().ok_or_else(|| format!("{path}: no integer at min_features"))?;
        let table = doc["weights"].as_object().ok_or_else(|| format!("{path}: no object at weights"))?;
        let mut weights: FxHashMap<Box<[u8]>, i64> = FxHashMap::default();
        weights.reserve(table.len());
        for (feature, weight) in table {
            let w = weight.as_i64().ok_or_else(|| format!("{path}: weights[{feature:?}] is not an integer"))?;
            weights.insert(feature.as_bytes().into(), w);
        }
        let negations = negations.into_iter().map(|n| n.into_bytes().into_boxed_slice()).collect();
        Ok((bias, min_features, WordModel { weights, negations, scope }))
    }

    pub fn new(weights: HashMap<String, i64>, negations: Vec<String>, scope: usize) -> WordModel {
        WordModel {
            weights: weights.into_iter().map(|(k, v)| (k.into_bytes().into_boxed_slice(), v)).collect(),
            negations: negations.into_iter().map(|n| n.into_bytes().into_boxed_slice()).collect(),
            scope,
        }
    }

    fn spell(buf: &mut Vec<u8>, (word, negated): Word<'_>) {
        if negated {
            buf.push(b'!');
        }
        buf.extend_from_slice(word);
    }

    /// `(sum of the weights of the distinct features, their number)` of ASCII `text`.
    pub fn total(&self, text: &[u8]) -> (i64, usize) {
        let mut raw: Vec<&[u8]> = Vec::new();
        let mut i = 0;
        while i < text.len() {
            if is_word(text[i]) {
                let start = i;
                while i < text.len() && is_word(text[i]) {
                    i += 1;
                }
                raw.push(&text[start..i]);
            } else {
                i += 1;
            }
        }
        self.total_words(&raw)
    }

    /// The same for any text, given its ASCII twin (one byte per character of `text`, a word
    /// character where Python's Unicode `\w` has one): words are the runs of characters whose
    /// twin is a word character, taken from `text` (UTF-8; lone surrogates as three bytes).
    pub fn total_twin(&self, text: &[u8], twin: &[u8]) -> Option<(i64, usize)> {
        let mut raw: Vec<&[u8]> = Vec::new();
        let mut start: Option<usize> = None;
        let mut ch = 0usize;
        for (b, &byte) in text.iter().enumerate() {
            if (byte & 0xC0) == 0x80 {
                continue; // inside a character
            }
            let word = is_word(*twin.get(ch)?);
            match (word, start) {
                (true, None) => start = Some(b),
                (false, Some(s)) => {
                    raw.push(&text[s..b]);
                    start = None;
                }
                _ => {}
            }
            ch += 1;
        }
        if ch != twin.len() {
            return None;
        }
        if let Some(s) = start {
            raw.push(&text[s..]);
        }
        Some(self.total_words(&raw))
    }

    /// The same for a text's words (`\w+`, in order), found by the caller.
    pub fn total_words(&self, raw: &[&[u8]]) -> (i64, usize) {
        let mut words: Vec<Word<'_>> = Vec::with_capacity(raw.len());
        let mut scope = 0;
        for &w in raw {
            // `_mark_negated`: a negation opens a scope of `scope` words marked `!`
            if self.negations.contains(w) {
                scope = self.scope;
                words.push((w, false));
            } else if scope > 0 {
                scope -= 1;
                words.push((w, true));
            } else {
                words.push((w, false));
            }
        }
        let mut buf: Vec<u8> = Vec::with_capacity(64);
        let mut total = 0i64;
        // The sets of what a text holds hash with std's keyed SipHash: their keys are the
        // client's words, which must not be able to make a set degenerate (FxHash is for the
        // model's own keys).
        let mut seen_words: HashSet<Word<'_>> = HashSet::with_capacity(words.len());
        for &w in &words {
            if seen_words.insert(w) {
                buf.clear();
                Self::spell(&mut buf, w);
                total += self.weights.get(buf.as_slice()).copied().unwrap_or(0);
            }
        }
        let mut seen_pairs: HashSet<(Word<'_>, Word<'_>)> = HashSet::with_capacity(words.len());
        for pair in words.windows(2) {
            if seen_pairs.insert((pair[0], pair[1])) {
                buf.clear();
                Self::spell(&mut buf, pair[0]);
                buf.push(b' ');
                Self::spell(&mut buf, pair[1]);
                total += self.weights.get(buf.as_slice()).copied().unwrap_or(0);
            }
        }
        // A word feature and a pair feature never have the same text (a pair holds a space).
        (total, seen_words.len() + seen_pairs.len())
    }
}
