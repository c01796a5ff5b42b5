//! Where the prompt-injection families' anchors occur (`injection.py`: `_scan_anchors`), for
//! ASCII text (the Python side hands non-ASCII text over as its ASCII twin): at each word start
//! (a word character after a non-word one, or at the start), the longest of the anchor and
//! persona words that the text there begins with (a byte trie: what the pattern
//! `_ANCHOR_SCAN_BODY` finds with its prefix-factored alternation, whose greedy optional
//! branches give the longest), or a standalone `2`; then the `[` positions and every
//! occurrence of the other anchors.

use std::collections::HashMap;

/// A trie node: children by byte (few per node: a short list), and the word ending here.
#[derive(Default)]
struct Node {
    children: Vec<(u8, u32)>,
    word: Option<u32>,
}

pub struct AnchorScan {
    nodes: Vec<Node>,
    /// Per word of the trie (and the standalone `2`, last): the indices of the anchors it
    /// starts with, and whether a persona cue may start there.
    words: Vec<(Vec<usize>, bool)>,
    /// The standalone `2`'s entry in `words`, if it has one.
    two: Option<usize>,
    /// Anchors by index.
    pub anchors: Vec<String>,
    /// Indices of the anchors that do not start with a letter or digit (found anywhere).
    others: Vec<usize>,
}

/// Anchor index → ascending positions; persona cue positions, ascending.
pub type Found = (Vec<(usize, Vec<usize>)>, Vec<usize>);

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl AnchorScan {
    pub fn new(
        at_start: HashMap<String, (Vec<String>, bool)>,
        others: Vec<String>,
    ) -> Result<AnchorScan, String> {
        let mut anchors: Vec<String> = Vec::new();
        let index = |a: &str, anchors: &mut Vec<String>| -> usize {
            match anchors.iter().position(|x| x == a) {
                Some(i) => i,
                None => {
                    anchors.push(a.to_string());
                    anchors.len() - 1
                }
            }
        };
        let mut nodes = vec![Node::default()];
        let mut words = Vec::new();
        let mut two = None;
        let mut entries: Vec<_> = at_start.into_iter().collect();
        entries.sort(); // anchor indices in a fixed order, whatever the dict's
        for (word, (names, cue)) in entries {
            if !word.is_ascii() || word.is_empty() || !is_word(word.as_bytes()[0]) {
                return Err(format!(
                    "anchor word {word:?} is not ASCII starting with a word character"
                ));
            }
            let ids = names.iter().map(|n| index(n, &mut anchors)).collect();
            words.push((ids, cue));
            let id = (words.len() - 1) as u32;
            if word == "2" {
                two = Some(id as usize);
                continue;
            }
            let mut node = 0usize;
            for &b in word.as_bytes() {
                node = match nodes[node].children.iter().find(|c| c.0 == b) {
                    Some(&(_, next)) => next as usize,
                    None => {
                        nodes.push(Node::default());
                        let next = nodes.len() - 1;
                        nodes[node].children.push((b, next as u32));
                        next
                    }
                };
            }
            nodes[node].word = Some(id);
        }
        let others = others.iter().map(|a| index(a, &mut anchors)).collect();
        Ok(AnchorScan {
            nodes,
            words,
            two,
            anchors,
            others,
        })
    }

    /// The word of `words` found at `at` (the start of a word), if any.
    fn word_at(&self, text: &[u8], at: usize) -> Option<usize> {
        if let Some(two) = self.two {
            if text[at] == b'2' && (at + 1 == text.len() || !is_word(text[at + 1])) {
                return Some(two);
            }
        }
        let mut node = 0usize;
        let mut found = None;
        for &b in &text[at..] {
            match self.nodes[node].children.iter().find(|c| c.0 == b) {
                Some(&(_, next)) => node = next as usize,
                None => break,
            }
            if let Some(w) = self.nodes[node].word {
                found = Some(w as usize);
            }
        }
        found
    }

    /// `_scan_anchors(text)` of an ASCII text.
    pub fn scan(&self, text: &[u8]) -> Found {
        let mut positions: Vec<Vec<usize>> = vec![Vec::new(); self.anchors.len()];
        let mut order: Vec<usize> = Vec::new();
        let mut persona: Vec<usize> = Vec::new();
        for at in 0..text.len() {
            // a word start: Python matches the character before it in " " + text
            if !is_word(text[at]) || (at > 0 && is_word(text[at - 1])) {
                continue;
            }
            if let Some(w) = self.word_at(text, at) {
                let (ids, cue) = &self.words[w];
                for &i in ids {
                    if positions[i].is_empty() {
                        order.push(i);
                    }
                    positions[i].push(at);
                }
                if *cue {
                    persona.push(at);
                }
            }
        }
        let mut brackets = false;
        for (i, &b) in text.iter().enumerate() {
            if b == b'[' {
                persona.push(i);
                brackets = true;
            }
        }
        if brackets {
            persona.sort_unstable();
        }
        for &i in &self.others {
            let needle = self.anchors[i].as_bytes();
            if needle.is_empty() || needle.len() > text.len() {
                continue;
            }
            let first = needle[0];
            for start in 0..=text.len() - needle.len() {
                if text[start] == first && &text[start..start + needle.len()] == needle {
                    if positions[i].is_empty() {
                        order.push(i);
                    }
                    positions[i].push(start);
                }
            }
        }
        let found = order
            .into_iter()
            .map(|i| (i, std::mem::take(&mut positions[i])))
            .collect();
        (found, persona)
    }
}
