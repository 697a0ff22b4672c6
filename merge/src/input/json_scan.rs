//! A validating JSON scanner over text that may stop mid-value.
//!
//! Trace events are small flat objects; finding where each value starts and
//! ends (checking the grammar on the way) is all merge needs, and doing only
//! that is several times faster than building them through serde. Every
//! function reports `NeedMore` when the text ends before the value does, so
//! the caller can refill its window and scan again. String contents are
//! checked for escapes but not unescaped ([`RawText::text`] does that when asked).

use std::borrow::Cow;

/// Deeper nesting than this is refused (serde_json's own limit is 128).
const MAX_DEPTH: u32 = 128;

/// The outcome of scanning one token or value (small enough to come back
/// in registers: this is the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The value ends at this offset (exclusive).
    Done(usize),
    /// The text ends before the value does.
    NeedMore,
    /// Not JSON: at this offset, because of this.
    Invalid(usize, Why),
}

/// Why text is not JSON (or not a trace event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    BadUnicodeEscape,
    BadEscape,
    BadNumber,
    BadLiteral,
    TooDeep,
    ValueExpected,
    SeparatorExpected,
    KeyExpected,
    ColonExpected,
    NotText,
}

impl Why {
    pub fn message(self) -> &'static str {
        match self {
            Why::BadUnicodeEscape => "bad \\u escape in a string",
            Why::BadEscape => "bad escape in a string",
            Why::BadNumber => "bad number",
            Why::BadLiteral => "bad literal (true, false or null)",
            Why::TooDeep => "nested too deep",
            Why::ValueExpected => "expected a value",
            Why::SeparatorExpected => "expected ',' or the end of an object or array",
            Why::KeyExpected => "expected a key",
            Why::ColonExpected => "expected ':' after a key",
            Why::NotText => "a value that is not text",
        }
    }
}

/// The offset of the first non-whitespace byte at or after `at`.
pub fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(at) {
        at += 1;
    }
    at
}

/// Scans the string starting at `at` (a `"`).
pub fn scan_string(bytes: &[u8], at: usize) -> Scan {
    scan_string_escapes(bytes, at, &mut false)
}

/// Scans the string starting at `at` (a `"`); sets `escaped` when it has
/// escapes.
#[inline]
pub fn scan_string_escapes(bytes: &[u8], at: usize, escaped: &mut bool) -> Scan {
    let mut i = at + 1;
    loop {
        let Some(found) = find_quote_or_backslash(bytes.get(i..).unwrap_or_default()) else {
            return Scan::NeedMore;
        };
        i += found;
        if bytes[i] == b'"' {
            return Scan::Done(i + 1);
        }
        *escaped = true;
        match bytes.get(i + 1) {
            None => return Scan::NeedMore,
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
            Some(b'u') => {
                for k in i + 2..i + 6 {
                    match bytes.get(k) {
                        None => return Scan::NeedMore,
                        Some(b) if b.is_ascii_hexdigit() => {}
                        Some(_) => return Scan::Invalid(k, Why::BadUnicodeEscape),
                    }
                }
                i += 6;
            }
            Some(_) => return Scan::Invalid(i + 1, Why::BadEscape),
        }
    }
}

/// Where the next `"` or `\\` is, eight bytes at a time (trace strings
/// are short: a word-at-a-time check beats vectorized search's setup).
fn find_quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut i = 0;
    while let Some(chunk) = bytes[i..].first_chunk::<8>() {
        let word = u64::from_le_bytes(*chunk);
        let hits = has_zero_byte(word ^ (ONES * u64::from(b'"')))
            | has_zero_byte(word ^ (ONES * u64::from(b'\\')));
        if hits != 0 {
            // The lowest flagged byte is always a true match.
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
        .map(|found| i + found)
}

/// Scans a number starting at `at`.
pub fn scan_number(bytes: &[u8], at: usize) -> Scan {
    let digits_from = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = at;
    if i < bytes.len() && bytes[i] == b'-' {
        i += 1;
    }
    if i >= bytes.len() {
        return Scan::NeedMore;
    }
    match bytes[i] {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits_from(i + 1),
        _ => return Scan::Invalid(i, Why::BadNumber),
    }
    if i < bytes.len() && bytes[i] == b'.' {
        let start = i + 1;
        i = digits_from(start);
        if i == start {
            return if i >= bytes.len() {
                Scan::NeedMore
            } else {
                Scan::Invalid(i, Why::BadNumber)
            };
        }
    }
    if i < bytes.len() && bytes[i] | 0x20 == b'e' {
        i += 1;
        if i < bytes.len() && matches!(bytes[i], b'+' | b'-') {
            i += 1;
        }
        let start = i;
        i = digits_from(start);
        if i == start {
            return if i >= bytes.len() {
                Scan::NeedMore
            } else {
                Scan::Invalid(i, Why::BadNumber)
            };
        }
    }
    // A number that reaches the end of the text may go on after it.
    if i >= bytes.len() {
        Scan::NeedMore
    } else {
        Scan::Done(i)
    }
}

fn scan_literal(bytes: &[u8], at: usize, word: &'static [u8]) -> Scan {
    let available = &bytes[at..bytes.len().min(at + word.len())];
    if !word.starts_with(available) {
        Scan::Invalid(at, Why::BadLiteral)
    } else if available.len() < word.len() {
        Scan::NeedMore
    } else {
        Scan::Done(at + word.len())
    }
}

/// Scans one JSON value (any kind, nested) starting at `at`, checking its
/// grammar. Leading whitespace is skipped.
pub fn scan_value(bytes: &[u8], at: usize) -> Scan {
    // One bit per open container: 1 for an object, 0 for an array.
    let mut stack: u128 = 0;
    let mut depth: u32 = 0;
    let mut i = at;
    'value: loop {
        i = skip_ws(bytes, i);
        let Some(&b) = bytes.get(i) else {
            return Scan::NeedMore;
        };
        let scanned = match b {
            b'"' => scan_string(bytes, i),
            b'-' | b'0'..=b'9' => scan_number(bytes, i),
            b't' => scan_literal(bytes, i, b"true"),
            b'f' => scan_literal(bytes, i, b"false"),
            b'n' => scan_literal(bytes, i, b"null"),
            b'{' | b'[' => {
                if depth >= MAX_DEPTH {
                    return Scan::Invalid(i, Why::TooDeep);
                }
                let object = b == b'{';
                stack = stack << 1 | u128::from(object);
                depth += 1;
                i = skip_ws(bytes, i + 1);
                match bytes.get(i) {
                    None => return Scan::NeedMore,
                    Some(b'}') if object => {}
                    Some(b']') if !object => {}
                    Some(_) if object => match object_key(bytes, i) {
                        Scan::Done(after) => {
                            i = after;
                            continue 'value;
                        }
                        other => return other,
                    },
                    Some(_) => continue 'value,
                }
                // An empty container.
                stack >>= 1;
                depth -= 1;
                Scan::Done(i + 1)
            }
            _ => return Scan::Invalid(i, Why::ValueExpected),
        };
        i = match scanned {
            Scan::Done(end) => end,
            other => return other,
        };
        // After a value: close containers or move to the next element.
        loop {
            if depth == 0 {
                return Scan::Done(i);
            }
            i = skip_ws(bytes, i);
            let object = stack & 1 == 1;
            match bytes.get(i) {
                None => return Scan::NeedMore,
                Some(b',') if object => match object_key(bytes, skip_ws(bytes, i + 1)) {
                    Scan::Done(after) => {
                        i = after;
                        continue 'value;
                    }
                    other => return other,
                },
                Some(b',') => {
                    i += 1;
                    continue 'value;
                }
                Some(b'}') if object => {}
                Some(b']') if !object => {}
                Some(_) => return Scan::Invalid(i, Why::SeparatorExpected),
            }
            stack >>= 1;
            depth -= 1;
            i += 1;
        }
    }
}

/// `"key" :` at `at`; returns the offset after the colon.
fn object_key(bytes: &[u8], at: usize) -> Scan {
    match bytes.get(at) {
        None => return Scan::NeedMore,
        Some(b'"') => {}
        Some(_) => return Scan::Invalid(at, Why::KeyExpected),
    }
    let after = match scan_string(bytes, at) {
        Scan::Done(after) => skip_ws(bytes, after),
        other => return other,
    };
    match bytes.get(after) {
        None => Scan::NeedMore,
        Some(b':') => Scan::Done(after + 1),
        Some(_) => Scan::Invalid(after, Why::ColonExpected),
    }
}

/// A value's raw JSON text, knowing whether it is a string with escapes, so
/// its text is had without looking for them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawText<'a> {
    pub raw: &'a str,
    escaped: bool,
}

impl<'a> RawText<'a> {
    /// A value whose escapes are looked for now.
    pub fn of(raw: &'a str) -> Self {
        // No quote can be inside a well-formed string, so a hit is a backslash.
        let escaped = raw.strip_prefix('"').is_some_and(|rest| {
            find_quote_or_backslash(rest.strip_suffix('"').unwrap_or(rest).as_bytes()).is_some()
        });
        RawText { raw, escaped }
    }

    /// A value a scanner read: `escaped` when it is a string with escapes.
    pub fn scanned(raw: &'a str, escaped: bool) -> Self {
        RawText { raw, escaped }
    }

    /// A string's unescaped contents; any other value's JSON text.
    pub fn text(self) -> Cow<'a, str> {
        let raw = self.raw;
        let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
            return Cow::Borrowed(raw);
        };
        if !self.escaped {
            return Cow::Borrowed(inner);
        }
        serde_json::from_str::<String>(raw)
            .map(Cow::Owned)
            .unwrap_or(Cow::Borrowed(inner))
    }
}

/// The members of a complete JSON object, as (key, raw value text); stops at
/// anything that is not a well-formed object.
pub fn members(object: &str) -> Members<'_> {
    let bytes = object.as_bytes();
    let at = skip_ws(bytes, 0);
    let start = match bytes.get(at) {
        Some(b'{') => skip_ws(bytes, at + 1),
        _ => bytes.len(),
    };
    Members {
        text: object,
        at: start,
        done: bytes.get(start) == Some(&b'}') || start >= bytes.len(),
    }
}

/// Iterator returned by [`members`].
pub struct Members<'a> {
    text: &'a str,
    at: usize,
    done: bool,
}

impl<'a> Iterator for Members<'a> {
    type Item = (Cow<'a, str>, RawText<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.done = true;
        let bytes = self.text.as_bytes();
        if bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        let mut key_escaped = false;
        let Scan::Done(key_end) = scan_string_escapes(bytes, self.at, &mut key_escaped) else {
            return None;
        };
        let key = RawText::scanned(self.text.get(self.at..key_end)?, key_escaped).text();
        let colon = skip_ws(bytes, key_end);
        if bytes.get(colon) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(bytes, colon + 1);
        let mut value_escaped = false;
        let scanned = match bytes.get(value_start) {
            Some(b'"') => scan_string_escapes(bytes, value_start, &mut value_escaped),
            _ => scan_value(bytes, value_start),
        };
        let Scan::Done(value_end) = scanned else {
            return None;
        };
        let value = RawText::scanned(self.text.get(value_start..value_end)?, value_escaped);
        let next = skip_ws(bytes, value_end);
        match bytes.get(next) {
            Some(b',') => {
                self.at = skip_ws(bytes, next + 1);
                self.done = false;
            }
            Some(b'}') => {}
            _ => return None,
        }
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> Scan {
        scan_value(text.as_bytes(), 0)
    }

    #[test]
    fn values_are_scanned_to_their_end() {
        for (text, end) in [
            (r#""a\"b\\c\u00e9" "#, 15),
            ("-12.5e+3,", 8),
            ("0]", 1),
            ("true ", 4),
            ("null,", 4),
            (r#"{"a":[1,{"b":"}"}],"c":{}} x"#, 26),
            ("[ ] ", 3),
            ("{ }", 3),
        ] {
            assert_eq!(whole(text), Scan::Done(end), "{text}");
        }
    }

    #[test]
    fn cut_values_need_more_and_bad_ones_are_invalid() {
        for text in [
            "\"abc", "\"a\\", "\"\\u00", "12", "12.", "-", "1e", "tr", "{\"a\":1", "[1,", "{\"a\"",
            "{",
        ] {
            assert_eq!(whole(text), Scan::NeedMore, "{text}");
        }
        for text in [
            "[01]",
            "1.x",
            "\"\\x\"",
            "\"\\u00g0\"",
            "trux",
            "{1:2}",
            "[1 2]",
            "{\"a\" 1}",
            "}",
            "-x",
            "{\"a\":1]",
            "[1}",
        ] {
            assert!(
                matches!(whole(text), Scan::Invalid(..)),
                "{text}: {:?}",
                whole(text)
            );
        }
        let deep = "[".repeat(200);
        assert!(matches!(whole(&deep), Scan::Invalid(_, Why::TooDeep)));
    }

    #[test]
    fn every_prefix_of_a_value_needs_more() {
        let text = r#"{"k":[1.5e-3,"x\"y",true,null,{"z":-0}]}"#;
        for cut in 0..text.len() {
            assert_eq!(whole(&text[..cut]), Scan::NeedMore, "{}", &text[..cut]);
        }
        assert_eq!(whole(text), Scan::Done(text.len()));
    }

    #[test]
    fn quotes_and_backslashes_are_found_at_any_offset() {
        for len in 0..40 {
            for at in 0..len {
                for needle in [b'"', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = needle;
                    // Bytes that look like matches to a careless bit trick.
                    if at + 1 < len {
                        bytes[at + 1] = needle ^ 1;
                    }
                    assert_eq!(find_quote_or_backslash(&bytes), Some(at), "{len} {at}");
                }
            }
            assert_eq!(find_quote_or_backslash(&vec![0xC3; len]), None);
        }
    }

    #[test]
    fn members_walk_an_object() {
        let got: Vec<(String, String)> =
            members(r#" { "a" : "x\"y" , "b\u0041":[1, 2], "c":{"d":null}} "#)
                .map(|(k, v)| (k.into_owned(), v.raw.to_string()))
                .collect();
        assert_eq!(
            got,
            [
                ("a".to_string(), r#""x\"y""#.to_string()),
                ("bA".to_string(), "[1, 2]".to_string()),
                ("c".to_string(), r#"{"d":null}"#.to_string()),
            ]
        );
        let texts: Vec<String> = members(r#"{"a":"x\"y","b":"plain","c":3}"#)
            .map(|(_, v)| v.text().into_owned())
            .collect();
        assert_eq!(
            texts,
            ["x\"y", "plain", "3"],
            "escapes found while scanning"
        );
        assert_eq!(RawText::of(r#""x\ty""#).text(), "x\ty");
        assert_eq!(members("{}").count(), 0);
        assert_eq!(members("[1]").count(), 0);
        assert_eq!(members(r#"{"a":1,}"#).count(), 1);
        assert_eq!(RawText::of(r#""plain""#).text(), "plain");
        assert_eq!(RawText::of(r#""tab\tquote\"""#).text(), "tab\tquote\"");
        assert_eq!(
            RawText::of("12").text(),
            "12",
            "not a string: its JSON text"
        );
    }
}
