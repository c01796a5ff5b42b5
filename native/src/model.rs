//! The features of the learned prompt-injection signal (`injection_model.py`: `features` and
//! the sum of their weights in `Model.logit`) for ASCII text, where `\w+` is
//! `[A-Za-z0-9_]+`. The Python module is the reference and keeps the arithmetic: this returns
//! the integer sum of the weights of the distinct features and how many there are.
//!
//! No allocation per feature: a word is a slice of the text and a flag (negated: `!word`), a
//! pair two of them; distinct features are told apart in a set of those, and a pair's weight
//! is looked up by its text spelled into one reused buffer.
//!
//! The weights are a `Weights` table: every feature's text in one buffer and an open-addressing
//! index into it. The committed model's 8,000 features take about 0.25 MB that way, against
//! 0.7 MB as a map of boxed keys (a heap block per key, 24 bytes per bucket); the weights file
//! is read as a stream straight into it, never as a JSON tree.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::BuildHasher;

use rustc_hash::{FxBuildHasher, FxHashSet};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// Feature text (`word`, `!word`, `a b`, `!a !b`, ...) → weight, compact and read-only once
/// built. Lookups hash with FxHash: the keys are the model's own, so a client's text can only
/// choose what it looks up, and the index is at most half full (a probe run stays short).
#[derive(Default)]
pub struct Weights {
    /// Every feature's text, one after the other.
    text: Vec<u8>,
    /// Where feature `i` ends in `text` (it starts where `i - 1` ends).
    ends: Vec<u32>,
    weights: Vec<i64>,
    /// The low 32 bits of each feature's hash: a probe compares them before the text.
    hashes: Vec<u32>,
    /// Open addressing with linear probing: a feature's index + 1 in the slot its hash's top
    /// bits name, or the next free one; 0 is free. A power of two, at least twice `ends`.
    slots: Vec<u32>,
}

impl Weights {
    fn with_capacity(n: usize) -> Weights {
        let mut w = Weights::default();
        w.ends.reserve_exact(n);
        w.weights.reserve_exact(n);
        w.hashes.reserve_exact(n);
        w.slots = vec![0; (2 * n.max(4)).next_power_of_two()];
        w
    }

    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// The slot of `key`: where it is, or the free one where it would go.
    fn slot(&self, key: &[u8], hash: u64) -> usize {
        let mask = self.slots.len() - 1;
        let bits = self.slots.len().trailing_zeros();
        let mut at = (hash >> (64 - bits)) as usize;
        loop {
            match self.slots[at] {
                0 => return at,
                i if self.hashes[i as usize - 1] == hash as u32
                    && self.key(i as usize - 1) == key =>
                {
                    return at
                }
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Add or replace (a file that names a feature twice: the last weight, as Python's
    /// `json` reads it).
    fn insert(&mut self, key: &[u8], weight: i64) -> Result<(), String> {
        if 2 * (self.ends.len() + 1) > self.slots.len() {
            self.grow();
        }
        let hash = FxBuildHasher.hash_one(key);
        let at = self.slot(key, hash);
        if self.slots[at] != 0 {
            self.weights[self.slots[at] as usize - 1] = weight;
            return Ok(());
        }
        self.text.extend_from_slice(key);
        let end = u32::try_from(self.text.len()).map_err(|_| "the features' text is over 4 GB")?;
        self.ends.push(end);
        self.weights.push(weight);
        self.hashes.push(hash as u32);
        self.slots[at] = self.ends.len() as u32;
        Ok(())
    }

    fn grow(&mut self) {
        let size = (2 * self.slots.len()).max(8);
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        for i in old.into_iter().filter(|&i| i != 0) {
            let key = self.key(i as usize - 1);
            let at = self.slot(key, FxBuildHasher.hash_one(key));
            self.slots[at] = i;
        }
    }

    /// The weight of `key`.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        match self.slots[self.slot(key, FxBuildHasher.hash_one(key))] {
            0 => None,
            i => Some(self.weights[i as usize - 1]),
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }
}

/// The `weights` object of a weights file, read entry by entry into a `Weights`.
struct WeightsSeed;

impl<'de> DeserializeSeed<'de> for WeightsSeed {
    type Value = Weights;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Weights, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for WeightsSeed {
    type Value = Weights;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of feature -> integer weight")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Weights, A::Error> {
        let mut weights = Weights::with_capacity(map.size_hint().unwrap_or(8192));
        while let Some(feature) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let weight = map.next_value::<serde_json::Value>()?;
            let w = weight.as_i64().ok_or_else(|| {
                de::Error::custom(format!("weights[{feature:?}] is not an integer"))
            })?;
            weights
                .insert(feature.as_bytes(), w)
                .map_err(de::Error::custom)?;
        }
        Ok(weights)
    }
}

/// A weights file: `bias`, `min_features`, `weights`; every other field is skipped.
struct FileVisitor;

impl<'de> Visitor<'de> for FileVisitor {
    type Value = (Option<f64>, Option<i64>, Option<Weights>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut bias, mut min_features, mut weights) = (None, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "bias" => bias = map.next_value::<serde_json::Value>()?.as_f64(),
                "min_features" => min_features = map.next_value::<serde_json::Value>()?.as_i64(),
                "weights" => weights = Some(map.next_value_seed(WeightsSeed)?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((bias, min_features, weights))
    }
}

pub struct WordModel {
    weights: Weights,
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
    pub fn from_file(
        path: &str,
        negations: Vec<String>,
        scope: usize,
    ) -> Result<(f64, i64, WordModel), String> {
        let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
        let mut reader = serde_json::Deserializer::from_reader(std::io::BufReader::new(file));
        let (bias, min_features, weights) = reader
            .deserialize_map(FileVisitor)
            .map_err(|e| format!("{path}: {e}"))?;
        reader.end().map_err(|e| format!("{path}: {e}"))?;
        let bias = bias.ok_or_else(|| format!("{path}: no number at bias"))?;
        let min_features =
            min_features.ok_or_else(|| format!("{path}: no integer at min_features"))?;
        let weights = weights.ok_or_else(|| format!("{path}: no object at weights"))?;
        Ok((
            bias,
            min_features,
            WordModel::with(weights, negations, scope),
        ))
    }

    pub fn new(table: HashMap<String, i64>, negations: Vec<String>, scope: usize) -> WordModel {
        let mut weights = Weights::with_capacity(table.len());
        for (feature, w) in &table {
            weights
                .insert(feature.as_bytes(), *w)
                .expect("a model's features fit in 4 GB");
        }
        WordModel::with(weights, negations, scope)
    }

    fn with(weights: Weights, negations: Vec<String>, scope: usize) -> WordModel {
        let negations = negations
            .into_iter()
            .map(|n| n.into_bytes().into_boxed_slice())
            .collect();
        WordModel {
            weights,
            negations,
            scope,
        }
    }

    /// How many features have a weight.
    pub fn features(&self) -> usize {
        self.weights.len()
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
                total += self.weights.get(&buf).unwrap_or(0);
            }
        }
        let mut seen_pairs: HashSet<(Word<'_>, Word<'_>)> = HashSet::with_capacity(words.len());
        for pair in words.windows(2) {
            if seen_pairs.insert((pair[0], pair[1])) {
                buf.clear();
                Self::spell(&mut buf, pair[0]);
                buf.push(b' ');
                Self::spell(&mut buf, pair[1]);
                total += self.weights.get(&buf).unwrap_or(0);
            }
        }
        // A word feature and a pair feature never have the same text (a pair holds a space).
        (total, seen_words.len() + seen_pairs.len())
    }
}
