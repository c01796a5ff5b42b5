//! The validators of the built-in detectors: the checks that turn a candidate match into a
//! span or reject it as a look-alike. Each one is the Rust twin of the function of the same
//! name in `sluice_sidecar/guardrails/detectors.py`, which is the reference: the property tests
//! (`tests/unit/test_native_scan.py`) hold the two equal. Candidates are ASCII (every built-in
//! pattern matches ASCII characters only), so these work on bytes.

use std::collections::HashMap;

pub fn luhn_ok(digits: &[u8]) -> bool {
    let mut total = 0u32;
    for (i, &ch) in digits.iter().rev().enumerate() {
        let mut d = (ch - b'0') as u32;
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        total += d;
    }
    total.is_multiple_of(10)
}

fn num(digits: &[u8]) -> u32 {
    digits
        .iter()
        .fold(0, |acc, &c| acc * 10 + (c - b'0') as u32)
}

pub fn card_prefix_ok(digits: &[u8]) -> bool {
    let n = digits.len();
    let (p2, p3, p4) = (num(&digits[..2]), num(&digits[..3]), num(&digits[..4]));
    if digits[0] == b'4' {
        return n == 13 || n == 16 || n == 19;
    }
    if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) {
        return n == 16;
    }
    if p2 == 34 || p2 == 37 {
        return n == 15;
    }
    if p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) || p2 == 62 {
        return (16..=19).contains(&n);
    }
    if (3528..=3589).contains(&p4) {
        return (16..=19).contains(&n);
    }
    if p4 == 2131 || p4 == 1800 {
        return n == 15;
    }
    if (300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39 {
        return (14..=19).contains(&n);
    }
    if matches!(p2, 50 | 56 | 57 | 58 | 67) || p4 == 6304 || p4 == 6390 {
        return (12..=19).contains(&n);
    }
    false
}

pub fn ean13_ok(digits: &[u8]) -> bool {
    let total: u32 = digits
        .iter()
        .enumerate()
        .map(|(i, &c)| (c - b'0') as u32 * if i % 2 == 1 { 3 } else { 1 })
        .sum();
    total.is_multiple_of(10)
}

pub fn card_ok(digits: &[u8]) -> bool {
    let n = digits.len();
    (12..=19).contains(&n)
        && card_prefix_ok(digits)
        && luhn_ok(digits)
        && !(n == 13 && ean13_ok(digits))
}

/// Printed cards start with a group of four and have no group longer than six.
pub fn card_groups_ok(text: &[u8]) -> bool {
    let groups: Vec<&[u8]> = text.split(|&c| c == b' ' || c == b'-').collect();
    groups.len() == 1 || (groups[0].len() == 4 && groups.iter().all(|g| g.len() <= 6))
}

pub fn without_separators(text: &[u8]) -> Vec<u8> {
    text.iter()
        .copied()
        .filter(|&c| c != b' ' && c != b'-')
        .collect()
}

/// `compact` (no spaces) has its country's length, two check digits and mod-97 == 1.
pub fn iban_ok(compact: &[u8], lengths: &HashMap<Vec<u8>, usize>) -> bool {
    if compact.len() < 4 || lengths.get(&compact[..2]) != Some(&compact.len()) {
        return false;
    }
    if !compact[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut rem: u64 = 0;
    for &ch in compact[4..].iter().chain(compact[..4].iter()) {
        let v = match ch {
            b'0'..=b'9' => (ch - b'0') as u64,
            b'A'..=b'Z' => (ch - b'A') as u64 + 10,
            b'a'..=b'z' => (ch - b'a') as u64 + 10,
            _ => return false,
        };
        rem = if v < 10 {
            (rem * 10 + v) % 97
        } else {
            (rem * 100 + v) % 97
        };
    }
    rem == 1
}

pub fn ssn_ok(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    let a = num(area);
    a != 0 && a != 666 && a < 900 && group != b"00" && serial != b"0000"
}

/// Python's `ipaddress.IPv6Address` for text of hex digits and colons (what the IPv6 pattern
/// matches), after the cheap checks of `ipv6_ok`.
pub fn ipv6_ok(candidate: &[u8]) -> bool {
    let has_double = candidate.windows(2).any(|w| w == b"::");
    let colons = candidate.iter().filter(|&&c| c == b':').count();
    if !has_double && colons != 7 {
        return false;
    }
    if candidate
        .iter()
        .filter(|&&c| c != b':' && c != b'.')
        .count()
        < 4
    {
        return false;
    }
    ipv6_parses(candidate)
}

/// `ipaddress.IPv6Address._ip_int_from_string` of Python 3.11, for hex digits and colons.
fn ipv6_parses(text: &[u8]) -> bool {
    if text.is_empty() {
        return false;
    }
    let parts: Vec<&[u8]> = text.split(|&c| c == b':').collect();
    const MIN_PARTS: usize = 3;
    if parts.len() < MIN_PARTS {
        return false;
    }
    // (no IPv4 tail: the pattern has no dots)
    const MAX_PARTS: usize = 9; // _HEXTET_COUNT + 1
    if parts.len() > MAX_PARTS {
        return false;
    }
    let mut skip_index: Option<usize> = None;
    for (i, part) in parts.iter().enumerate().take(parts.len() - 1).skip(1) {
        if part.is_empty() {
            if skip_index.is_some() {
                return false; // more than one '::'
            }
            skip_index = Some(i);
        }
    }
    if let Some(skip) = skip_index {
        let mut hi = skip;
        let mut lo = parts.len() - skip - 1;
        if parts[0].is_empty() {
            if hi != 1 {
                return false; // ^: requires ^::
            }
            hi -= 1;
        }
        if parts[parts.len() - 1].is_empty() {
            if lo != 1 {
                return false; // :$ requires ::$
            }
            lo -= 1;
        }
        if hi + lo > 7 {
            return false; // nothing left for "::" to stand for
        }
        parts[..hi]
            .iter()
            .chain(parts[parts.len() - lo..].iter())
            .all(|p| hextet_ok(p))
    } else {
        if parts.len() != 8 {
            return false;
        }
        if parts[0].is_empty() || parts[parts.len() - 1].is_empty() {
            return false;
        }
        parts.iter().all(|p| hextet_ok(p))
    }
}

fn hextet_ok(p: &[u8]) -> bool {
    !p.is_empty() && p.len() <= 4 && p.iter().all(u8::is_ascii_hexdigit)
}

pub fn ipv4_ok(text: &[u8]) -> bool {
    text.split(|&c| c == b'.').all(|octet| {
        !octet.is_empty() && num(octet) <= 255 && !(octet.len() > 1 && octet[0] == b'0')
    })
}

/// The span of an e-mail candidate once leading dots of its local part are dropped, or None.
pub fn email(text: &[u8]) -> Option<usize> {
    let at = text.iter().position(|&c| c == b'@')?;
    let local = &text[..at];
    let skip = local.iter().take_while(|&&c| c == b'.').count();
    let local = &local[skip..];
    if local.is_empty() || local.ends_with(b".") || local.windows(2).any(|w| w == b"..") {
        return None;
    }
    Some(skip)
}

pub fn key_ok(body: &[u8]) -> bool {
    body.iter().any(u8::is_ascii_digit) && body.iter().any(u8::is_ascii_alphabetic)
}

pub fn digit_count(text: &[u8]) -> usize {
    text.iter().filter(|c| c.is_ascii_digit()).count()
}
