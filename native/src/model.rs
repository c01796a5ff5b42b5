//! The features of the learned prompt-injection signal (`injection_model.py`: `features` and
//! the sum of their weights in `Model.logit`) for ASCII text, where `\w+` is
//! `[A-Za-z0-9_]+`. The Python module is the reference and keeps the arithmetic: this returns
//! the integer sum of the weights of the distinct features and how many there are.

use std::collections::{HashMap, HashSet};

pub struct WordModel {
    weights: HashMap<Vec<u8>, i64>,
    negations: HashSet<Vec<u8>>,
    scope: usize,
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl WordModel {
    pub fn new(weights: HashMap<String, i64>, negations: Vec<String>, scope: usize) -> WordModel {
        WordModel {
            weights: weights.into_iter().map(|(k, v)| (k.into_bytes(), v)).collect(),
            negations: negations.into_iter().map(String::into_bytes).collect(),
            scope,
        }
    }

    /// `(sum of the weights of the distinct features, their number)` of ASCII `text`.
    pub fn total(&self, text: &[u8]) -> (i64, usize) {
        let mut words: Vec<Vec<u8>> = Vec::new();
        let mut i = 0;
        while i < text.len() {
            if is_word(text[i]) {
                let start = i;
                while i < text.len() && is_word(text[i]) {
                    i += 1;
                }
                words.push(text[start..i].to_vec());
            } else {
                i += 1;
            }
        }
        if words.iter().any(|w| self.negations.contains(w)) {
            let mut scope = 0;
            for w in words.iter_mut() {
                if self.negations.contains(w.as_slice()) {
                    scope = self.scope;
                } else if scope > 0 {
                    scope -= 1;
                    w.insert(0, b'!');
                }
            }
        }
        let mut found: HashSet<Vec<u8>> = HashSet::with_capacity(words.len() * 2);
        for pair in words.windows(2) {
            let mut joined = Vec::with_capacity(pair[0].len() + 1 + pair[1].len());
            joined.extend_from_slice(&pair[0]);
            joined.push(b' ');
            joined.extend_from_slice(&pair[1]);
            found.insert(joined);
        }
        for w in words {
            found.insert(w);
        }
        let total = found.iter().map(|f| self.weights.get(f).copied().unwrap_or(0)).sum();
        (total, found.len())
    }
}
