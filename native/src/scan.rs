//! The search: `Engine::find` is `Scanner.find` of `sluice_sidecar/guardrails/detectors.py`
//! for the built-in detectors (no deny patterns), over UTF-8 text (a lone
//! surrogate as its three bytes), in bytes. The
//! patterns are the Python detectors' own sources (compiled by PCRE2, whose backtracking gives
//! the same matches as Python's `re` for these patterns), handed over by the Python side at
//! construction; the validators are `validate.rs`. Same order of work as the Python: the
//! `_ANY` gate, each detector's hint over the text from `pos`, detectors with a trigger scanned
//! window by window around each trigger, then the spans sorted and resolved.

use std::collections::HashMap;
use std::sync::Mutex;

use pcre2::bytes::{CaptureLocations, Regex, RegexBuilder};

use crate::validate;

/// Which validator a detector runs (`detectors.py`: `_card`, `_iban`, ...).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Card,
    Iban,
    Ssn,
    Phone,
    PhoneLoose,
    Ipv4,
    Ipv6,
    Email,
    Key,
}

impl Kind {
    pub fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "card" => Kind::Card,
            "iban" => Kind::Iban,
            "ssn" => Kind::Ssn,
            "phone" => Kind::Phone,
            "phone_loose" => Kind::PhoneLoose,
            "ipv4" => Kind::Ipv4,
            "ipv6" => Kind::Ipv6,
            "email" => Kind::Email,
            "key" => Kind::Key,
            _ => return None,
        })
    }
}

/// A detector's cheap necessary condition over the text from `pos` (`Detector.hint`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Hint {
    None,
    Digit,
    Dot,
    Ipv6,
    At,
}

impl Hint {
    pub fn parse(name: &str) -> Option<Hint> {
        Some(match name {
            "" => Hint::None,
            "digit" => Hint::Digit,
            "dot" => Hint::Dot,
            "ipv6" => Hint::Ipv6,
            "at" => Hint::At,
            _ => return None,
        })
    }

    fn holds(self, rest: &[u8]) -> bool {
        match self {
            Hint::None => true,
            Hint::Digit => rest.iter().any(u8::is_ascii_digit),
            Hint::Dot => rest.contains(&b'.'),
            Hint::At => rest.contains(&b'@'),
            Hint::Ipv6 => {
                rest.windows(2).any(|w| w == b"::")
                    || rest.iter().filter(|&&c| c == b':').count() >= 7
            }
        }
    }
}

/// A set of ASCII characters (a detector's run class).
#[derive(Clone)]
pub struct Run([bool; 128]);

impl Run {
    pub fn new(chars: &str) -> Run {
        let mut set = [false; 128];
        for b in chars.bytes() {
            if b < 128 {
                set[b as usize] = true;
            }
        }
        Run(set)
    }

    #[inline]
    pub fn has(&self, b: u8) -> bool {
        b < 128 && self.0[b as usize]
    }
}

/// Where the context words are looked for: before a bare 12-digit card, or a loose phone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Context {
    Card,
    Phone,
}

/// The context-word check (`_CARD_WORDS` / `_PHONE_WORDS` over the characters before a
/// match): Unicode regular expressions, so the Python side answers it.
pub type Words<'a> = dyn FnMut(Context, &[u8]) -> bool + 'a;

pub struct Detector {
    pub entity: usize,
    kind: Kind,
    pattern: Regex,
    run: Run,
    hint: Hint,
    trigger: Option<Regex>,
    /// Capture group indices the validator reads (by kind; `usize::MAX` when unused).
    groups: [usize; 5],
    /// The capture slots of the validators that read groups, kept: making them makes a match
    /// data block and a JIT stack. (Callers hold the GIL, so the lock is never contended.)
    locations: Mutex<Option<CaptureLocations>>,
}

pub struct Engine {
    pub entities: Vec<String>,
    detectors: Vec<Detector>,
    tails: Vec<(Run, usize)>,
    any: Regex,
    separators: Regex,
    iban_lengths: HashMap<Vec<u8>, usize>,
    context_before: usize,
    iban: usize,
    card: usize,
    shape_only: [usize; 2],
}

/// A span or candidate in byte offsets: `(start, end, entity index)`.
pub type Found = (usize, usize, usize);

/// A pattern under PCRE2 with its JIT, on its default stack (32 KB: the built-in patterns have
/// bounded repetition; a text that overflows it gets an error, and the Python side then scans
/// that text in Python).
///
/// Byte mode, not UTF mode: UTF mode checks the whole subject's encoding at every match call
/// (60 % of a scan's instructions). It gives the same matches here because every character
/// class and literal of these patterns is ASCII and none is negated (`[^…]`) or `.`: a byte of a
/// multi-byte character is in none of them, exactly as the character is in none of them, so a
/// match never starts, ends or looks around differently, and lookbehinds, which step back over
/// ASCII characters only when they can match at all, see the same. A pattern that breaks this
/// rule is refused (and the Python side then scans in Python).
fn compile(source: &str) -> Result<Regex, String> {
    if !source.is_ascii() || source.contains("[^") || has_bare_dot(source) {
        return Err(format!(
            "the pattern {source:?} is not ASCII-only without negated classes or `.`"
        ));
    }
    RegexBuilder::new()
        .utf(false)
        .jit_if_available(true)
        .build(source)
        .map_err(|e| format!("{e} in the pattern {source:?}"))
}

/// Whether `source` has a `.` outside a character class that is not escaped.
fn has_bare_dot(source: &str) -> bool {
    let bytes = source.as_bytes();
    let (mut i, mut in_class) = (0, false);
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'.' if !in_class => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

pub struct DetectorSpec {
    pub entity: String,
    pub kind: String,
    pub pattern: String,
    pub run: String,
    pub hint: String,
    pub trigger: Option<String>,
}

fn group(re: &Regex, name: &str) -> usize {
    re.capture_names()
        .iter()
        .position(|n| n.as_deref() == Some(name))
        .unwrap_or(usize::MAX)
}

impl Engine {
    pub fn new(
        specs: Vec<DetectorSpec>,
        tails: Vec<(String, usize)>,
        any: &str,
        separators: &str,
        iban_lengths: HashMap<String, usize>,
        context_before: usize,
    ) -> Result<Engine, String> {
        let mut entities: Vec<String> = Vec::new();
        let mut detectors = Vec::new();
        for spec in specs {
            let entity = match entities.iter().position(|e| *e == spec.entity) {
                Some(i) => i,
                None => {
                    entities.push(spec.entity.clone());
                    entities.len() - 1
                }
            };
            let kind = Kind::parse(&spec.kind)
                .ok_or_else(|| format!("unknown validator {:?}", spec.kind))?;
            let hint =
                Hint::parse(&spec.hint).ok_or_else(|| format!("unknown hint {:?}", spec.hint))?;
            let pattern = compile(&spec.pattern)?;
            let groups = match kind {
                Kind::Phone => [
                    group(&pattern, "intl"),
                    group(&pattern, "trunk"),
                    group(&pattern, "ptrunk"),
                    usize::MAX,
                    usize::MAX,
                ],
                Kind::PhoneLoose => [
                    group(&pattern, "ext"),
                    usize::MAX,
                    usize::MAX,
                    usize::MAX,
                    usize::MAX,
                ],
                Kind::Ssn => [2, 3, usize::MAX, usize::MAX, usize::MAX],
                Kind::Key => [
                    group(&pattern, "sk"),
                    group(&pattern, "body"),
                    usize::MAX,
                    usize::MAX,
                    usize::MAX,
                ],
                _ => [usize::MAX; 5],
            };
            let trigger = match spec.trigger {
                Some(t) => Some(compile(&t)?),
                None => None,
            };
            let locations =
                Mutex::new((groups[0] != usize::MAX).then(|| pattern.capture_locations()));
            detectors.push(Detector {
                entity,
                kind,
                pattern,
                run: Run::new(&spec.run),
                hint,
                trigger,
                groups,
                locations,
            });
        }
        let index = |name: &str| {
            entities
                .iter()
                .position(|e| e == name)
                .unwrap_or(usize::MAX)
        };
        let (iban, card) = (index("IBAN"), index("CREDIT_CARD"));
        let shape_only = [index("PHONE"), index("US_SSN")];
        Ok(Engine {
            detectors,
            tails: tails
                .into_iter()
                .map(|(run, reach)| (Run::new(&run), reach))
                .collect(),
            any: compile(any)?,
            separators: compile(separators)?,
            iban_lengths: iban_lengths
                .into_iter()
                .map(|(k, v)| (k.into_bytes(), v))
                .collect(),
            context_before,
            iban,
            card,
            shape_only,
            entities,
        })
    }

    /// `Scanner.find(text, pos, extents)` in byte offsets, before its spans are sorted
    /// (`sort_spans`) and resolved (`resolve`): the caller adds the deny patterns' first, as
    /// `Scanner.find` does. Every candidate's raw extent goes to `extents` when it is given.
    pub fn find_raw(
        &self,
        text: &[u8],
        pos: usize,
        mut extents: Option<&mut Vec<(usize, usize)>>,
        words: &mut Words<'_>,
    ) -> Result<Vec<Found>, String> {
        let bytes = text;
        let mut spans: Vec<Found> = Vec::new();
        if self.detectors.is_empty()
            || !self
                .any
                .is_match_at(bytes, pos)
                .map_err(|e| e.to_string())?
        {
            return Ok(spans);
        }
        let rest = &bytes[pos..];
        let mut hints: [Option<bool>; 5] = [None; 5];
        for det in &self.detectors {
            let slot = det.hint as usize;
            let ok = *hints[slot].get_or_insert_with(|| det.hint.holds(rest));
            if !ok {
                continue;
            }
            match &det.trigger {
                None => self.scan(
                    det,
                    text,
                    pos,
                    bytes.len(),
                    &mut spans,
                    extents.as_deref_mut(),
                    words,
                )?,
                Some(trigger) => {
                    let mut at = pos;
                    while at <= bytes.len() {
                        let t = match trigger.find_at(bytes, at) {
                            Ok(Some(t)) => t,
                            Ok(None) => break,
                            Err(e) => return Err(e.to_string()),
                        };
                        let mut start = t.start();
                        while start > at && det.run.has(bytes[start - 1]) {
                            start -= 1;
                        }
                        let mut end = t.end();
                        while end < bytes.len() && det.run.has(bytes[end]) {
                            end += 1;
                        }
                        // Python's endpos `end + 1`: the character after the run is visible.
                        let stop = next_char(bytes, end);
                        self.scan(
                            det,
                            text,
                            start,
                            stop,
                            &mut spans,
                            extents.as_deref_mut(),
                            words,
                        )?;
                        if end >= bytes.len() {
                            break;
                        }
                        at = stop;
                    }
                }
            }
        }
        Ok(spans)
    }

    #[allow(clippy::too_many_arguments)]
    fn scan(
        &self,
        det: &Detector,
        text: &[u8],
        start: usize,
        end: usize,
        spans: &mut Vec<Found>,
        mut extents: Option<&mut Vec<(usize, usize)>>,
        words: &mut Words<'_>,
    ) -> Result<(), String> {
        let end = end.min(text.len());
        let subject = &text[..end];
        let mut at = start;
        let mut guard = det.locations.lock().unwrap_or_else(|e| e.into_inner());
        let locs = &mut *guard;
        while at <= end {
            let found = match locs.as_mut() {
                Some(l) => det
                    .pattern
                    .captures_read_at(l, subject, at)
                    .map(|m| m.map(|m| (m.start(), m.end()))),
                None => det
                    .pattern
                    .find_at(subject, at)
                    .map(|m| m.map(|m| (m.start(), m.end()))),
            };
            let (ms, me) = match found {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            };
            let got = self.validate(det, text, ms, me, locs.as_ref(), words);
            if let Some((s, e)) = got {
                spans.push((s, e, det.entity));
            }
            if let Some(x) = extents.as_deref_mut() {
                x.push((ms, me));
            }
            // (no built-in pattern matches empty text; Python's finditer would step on)
            at = if me == ms { next_char(subject, me) } else { me };
        }
        Ok(())
    }

    fn before<'t>(&self, text: &'t [u8], start: usize) -> &'t [u8] {
        let bytes = text;
        let mut b = start;
        let mut n = 0;
        while b > 0 && n < self.context_before {
            b -= 1;
            while b > 0 && (bytes[b] & 0xC0) == 0x80 {
                b -= 1;
            }
            n += 1;
        }
        &text[b..start]
    }

    fn validate(
        &self,
        det: &Detector,
        text: &[u8],
        start: usize,
        end: usize,
        locs: Option<&CaptureLocations>,
        words: &mut Words<'_>,
    ) -> Option<(usize, usize)> {
        let bytes = text;
        let m = &bytes[start..end];
        let grp = |i: usize| -> Option<(usize, usize)> {
            if i == usize::MAX {
                return None;
            }
            locs.and_then(|l| l.get(i))
        };
        match det.kind {
            Kind::Card => {
                let digits = validate::without_separators(m);
                if validate::card_ok(&digits) && validate::card_groups_ok(m) {
                    if m.len() == 12 && !words(Context::Card, self.before(text, start)) {
                        return None;
                    }
                    return Some((start, end));
                }
                for i in (1..m.len()).rev() {
                    if m[i] == b' ' || m[i] == b'-' {
                        let prefix = &m[..i];
                        let digits = validate::without_separators(prefix);
                        if digits.len() < 12 {
                            break;
                        }
                        if validate::card_ok(&digits) && validate::card_groups_ok(prefix) {
                            return Some((start, start + i));
                        }
                    }
                }
                None
            }
            Kind::Iban => {
                let length = *self.iban_lengths.get(m.get(..2)?)?;
                let mut count = 0;
                for (i, &ch) in m.iter().enumerate() {
                    if ch != b' ' {
                        count += 1;
                        if count == length {
                            let cut = i + 1;
                            if cut < m.len() && m[cut] != b' ' {
                                return None;
                            }
                            let compact: Vec<u8> =
                                m[..cut].iter().copied().filter(|&c| c != b' ').collect();
                            return if validate::iban_ok(&compact, &self.iban_lengths) {
                                Some((start, start + cut))
                            } else {
                                None
                            };
                        }
                    }
                }
                None
            }
            Kind::Ssn => {
                let g = grp(det.groups[0])?;
                let s = grp(det.groups[1])?;
                let ok =
                    validate::ssn_ok(&bytes[start..start + 3], &bytes[g.0..g.1], &bytes[s.0..s.1]);
                ok.then_some((start, end))
            }
            Kind::Phone => {
                if let Some((bs, be)) = grp(det.groups[0]) {
                    let body = &bytes[bs..be];
                    let digits = validate::digit_count(body);
                    if !(8..=15).contains(&digits) || self.has_separators(body) {
                        return None;
                    }
                    let opened = body.iter().filter(|&&c| c == b'(').count();
                    let closed = body.iter().filter(|&&c| c == b')').count();
                    if opened != closed || opened > 1 {
                        return None;
                    }
                    if opened > 0 {
                        let o = body.iter().position(|&c| c == b'(')?;
                        let c = body.iter().position(|&c| c == b')')?;
                        if o > c {
                            return None;
                        }
                    }
                } else if let Some((ps, pe)) = grp(det.groups[2]).filter(|g| g.1 > g.0) {
                    let n = validate::digit_count(&bytes[ps..pe]);
                    if !(8..=13).contains(&n) {
                        return None;
                    }
                } else if let Some((ts, te)) = grp(det.groups[1]) {
                    let n = 1 + validate::digit_count(&bytes[ts..te]);
                    if !(8..=13).contains(&n) {
                        return None;
                    }
                }
                Some((start, end))
            }
            Kind::PhoneLoose => {
                let cut = grp(det.groups[0]).map_or(end, |e| e.0);
                let t = &bytes[start..cut];
                let digits = validate::digit_count(t);
                if !(8..=15).contains(&digits) || self.has_separators(t) {
                    return None;
                }
                let opened = t.iter().filter(|&&c| c == b'(').count();
                if opened != t.iter().filter(|&&c| c == b')').count() {
                    return None;
                }
                if t.iter().filter(|&&c| c == b'.').count() == 1 && digits == t.len() - 1 {
                    return None;
                }
                if !words(Context::Phone, self.before(text, start)) {
                    return None;
                }
                Some((start, end))
            }
            Kind::Ipv4 => validate::ipv4_ok(m).then_some((start, end)),
            Kind::Ipv6 => validate::ipv6_ok(m).then_some((start, end)),
            Kind::Email => validate::email(m).map(|skip| (start + skip, end)),
            Kind::Key => {
                if grp(det.groups[0]).is_some() {
                    let (bs, be) = grp(det.groups[1])?;
                    if !validate::key_ok(&bytes[bs..be]) {
                        return None;
                    }
                }
                Some((start, end))
            }
        }
    }

    /// `_PHONE_SEPARATORS.search(text.replace(") ", ")"))`.
    fn has_separators(&self, text: &[u8]) -> bool {
        let mut joined = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            joined.push(text[i]);
            if text[i] == b')' && i + 1 < text.len() && text[i + 1] == b' ' {
                i += 2;
            } else {
                i += 1;
            }
        }
        matches!(self.separators.is_match(&joined), Ok(true))
    }

    /// `_resolve`: drop spans that say nothing new (inside an earlier span of their entity, or
    /// a phone/SSN inside a card or IBAN, a card inside an IBAN).
    /// (`entities`: how many entity indices the spans may use: this engine's, then the deny
    /// patterns' labels of a redactor.)
    pub fn resolve(&self, spans: Vec<Found>, entities: usize) -> Vec<Found> {
        if spans.len() < 2 {
            return spans;
        }
        let mut reach: Vec<Option<usize>> = vec![None; entities];
        let get = |reach: &Vec<Option<usize>>, e: usize| -> Option<usize> {
            reach.get(e).copied().flatten()
        };
        let mut out = Vec::with_capacity(spans.len());
        for span in spans {
            let end = span.1;
            if get(&reach, span.2).is_some_and(|r| r >= end)
                || get(&reach, self.iban).is_some_and(|r| r >= end)
            {
                continue;
            }
            if self.shape_only.contains(&span.2) && get(&reach, self.card).is_some_and(|r| r >= end)
            {
                continue;
            }
            out.push(span);
            let r = &mut reach[span.2];
            *r = Some(r.map_or(end, |x| x.max(end)));
        }
        out
    }

    /// `Scanner.settled` (no deny window) of `text`, in characters; `chars` is its length in
    /// characters. Run characters are ASCII, so a trailing run's length in bytes is its length
    /// in characters.
    pub fn settled(&self, text: &[u8], chars: usize) -> usize {
        let mut out = chars;
        for (run, reach) in &self.tails {
            let floor = chars.saturating_sub(*reach);
            let mut b = text.len();
            while b > 0 && run.has(text[b - 1]) {
                b -= 1;
            }
            let tail = chars - (text.len() - b);
            let tail = if tail > floor { tail } else { floor };
            out = out.min(tail);
        }
        out
    }
}

/// Sorted as `Scanner.find` sorts: by start, the longest first; stable.
pub fn sort_spans(spans: &mut [Found]) {
    spans.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
}

/// The byte offset just past the character at `at` (or `at + 1` at the end, as Python's
/// positions past the end).
pub fn next_char(bytes: &[u8], at: usize) -> usize {
    if at >= bytes.len() {
        return at + 1;
    }
    let mut b = at + 1;
    while b < bytes.len() && (bytes[b] & 0xC0) == 0x80 {
        b += 1;
    }
    b
}
