//! Reading a trace's time base: Kineto's top-level `baseTimeNanoseconds`
//! (what a PyTorch trace's `ts` counts from, FORMATS.md), found by
//! streaming the text, never by parsing or loading the whole JSON. The one
//! reader the agent (for the sidecar) and merge (for traces without one)
//! both use, so they cannot disagree.

use std::io::{self, Read};

use memchr::memmem;

const KEY: &[u8] = b"\"baseTimeNanoseconds\"";
/// Enough to hold the key, blanks and a signed 20-digit number across a refill.
const CARRY: usize = 128;

/// Finds Kineto's `"baseTimeNanoseconds": N` anywhere in `reader`'s text (it
/// is written after the events). The last one wins, since the top-level key
/// follows every event. `N` is read as a JSON integer: an optional `-`, then
/// digits; anything else (a string, a fraction's part after the point) is
/// not a base.
pub fn scan_kineto_base(reader: &mut dyn Read) -> io::Result<Option<i64>> {
    let finder = memmem::Finder::new(KEY);
    let mut buf = vec![0u8; 1 << 20];
    let mut carried = 0;
    let mut found = None;
    loop {
        let n = reader.read(&mut buf[carried..])?;
        let filled = carried + n;
        let window = &buf[..filled];
        for at in finder.find_iter(window) {
            if let Some(value) = number_after_key(&window[at + KEY.len()..], n == 0) {
                found = Some(value);
            }
        }
        if n == 0 {
            return Ok(found);
        }
        let keep = filled.min(CARRY);
        buf.copy_within(filled - keep..filled, 0);
        carried = keep;
    }
}

/// `: 123` → 123, `: -5` → -5, when the number is complete within `rest`.
fn number_after_key(rest: &[u8], at_end: bool) -> Option<i64> {
    let skip_blanks = |bytes: &[u8]| -> usize {
        bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(bytes.len())
    };
    let mut at = skip_blanks(rest);
    if rest.get(at) != Some(&b':') {
        return None;
    }
    at += 1;
    at += skip_blanks(&rest[at..]);
    let sign = usize::from(rest.get(at) == Some(&b'-'));
    let digits = rest[at + sign..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let end = at + sign + digits;
    if digits == 0 || (end == rest.len() && !at_end) {
        return None;
    }
    std::str::from_utf8(&rest[at..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &[u8]) -> Option<i64> {
        scan_kineto_base(&mut &text[..]).unwrap()
    }

    #[test]
    fn the_base_is_found_after_the_events() {
        let text =
            br#"{"traceEvents":[{"name":"x"}], "baseTimeNanoseconds" : 1763850000123456789}"#;
        assert_eq!(scan(text), Some(1_763_850_000_123_456_789));
        assert_eq!(scan(b"{\"traceEvents\":[]}"), None);
    }

    #[test]
    fn the_last_base_wins() {
        let text = br#"{"baseTimeNanoseconds":1,"traceEvents":[],"baseTimeNanoseconds":2}"#;
        assert_eq!(scan(text), Some(2));
    }

    #[test]
    fn negative_numbers_follow_json_and_garbage_is_no_base() {
        assert_eq!(scan(br#"{"baseTimeNanoseconds": -5}"#), Some(-5));
        assert_eq!(scan(br#"{"baseTimeNanoseconds": - 5}"#), None);
        assert_eq!(scan(br#"{"baseTimeNanoseconds": "5"}"#), None);
        assert_eq!(scan(br#"{"baseTimeNanoseconds": -}"#), None);
        assert_eq!(
            scan(br#"{"baseTimeNanoseconds": 99999999999999999999}"#),
            None
        );
    }

    #[test]
    fn a_key_or_number_split_across_reads_is_found_once() {
        // A reader that returns 7 bytes at a time splits the key and number.
        struct Chunks<'a>(&'a [u8]);
        impl Read for Chunks<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(7).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let text = br#"{"traceEvents":[],"baseTimeNanoseconds":-1763850000123456789}"#;
        assert_eq!(
            scan_kineto_base(&mut Chunks(text)).unwrap(),
            Some(-1_763_850_000_123_456_789)
        );
        let prefix = "x".repeat((1 << 20) - 10);
        let text = format!(r#"{prefix}"baseTimeNanoseconds":42}}"#);
        assert_eq!(scan(text.as_bytes()), Some(42));
    }
}
