//! Chrome trace JSON building blocks shared by the JAX and Kineto writers:
//! a gzip stream fed in large pieces, JSON strings, and microsecond numbers
//! with three decimals (nanosecond resolution) the way XProf and Kineto print them.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

/// Flush the text buffer into the compressor past this size.
const FLUSH_AT: usize = 1 << 16;

/// Builds a gzip-compressed JSON document in memory.
pub(crate) struct JsonOut {
    text: Vec<u8>,
    gz: GzEncoder<Vec<u8>>,
}

impl JsonOut {
    pub(crate) fn new(gzip_level: u32) -> JsonOut {
        JsonOut {
            text: Vec::with_capacity(FLUSH_AT + 4096),
            gz: GzEncoder::new(Vec::new(), Compression::new(gzip_level.min(9))),
        }
    }

    pub(crate) fn raw(&mut self, text: &str) {
        self.text.extend_from_slice(text.as_bytes());
    }

    /// A JSON string literal, quoted and escaped.
    pub(crate) fn string(&mut self, value: &str) {
        self.text.push(b'"');
        for &byte in value.as_bytes() {
            match byte {
                b'"' => self.text.extend_from_slice(b"\\\""),
                b'\\' => self.text.extend_from_slice(b"\\\\"),
                b'\n' => self.text.extend_from_slice(b"\\n"),
                b'\t' => self.text.extend_from_slice(b"\\t"),
                0..=0x1f => {
                    let _ = write!(self.text, "\\u{byte:04x}");
                }
                _ => self.text.push(byte),
            }
        }
        self.text.push(b'"');
    }

    pub(crate) fn int(&mut self, value: i64) {
        let _ = write!(self.text, "{value}");
    }

    /// `ns` as microseconds: `43.826`, `30.5`, `12`.
    pub(crate) fn micros(&mut self, ns: i64) {
        if ns < 0 {
            self.text.push(b'-');
        }
        let magnitude = ns.unsigned_abs();
        let (whole, frac) = (magnitude / 1000, magnitude % 1000);
        let _ = write!(self.text, "{whole}");
        if frac != 0 {
            let digits = [
                b'.',
                b'0' + (frac / 100) as u8,
                b'0' + (frac / 10 % 10) as u8,
                b'0' + (frac % 10) as u8,
            ];
            let significant = if frac % 100 == 0 {
                2
            } else if frac % 10 == 0 {
                3
            } else {
                4
            };
            self.text.extend_from_slice(&digits[..significant]);
        }
    }

    /// Hands the text so far to the compressor once there is enough of it.
    pub(crate) fn end_item(&mut self) -> std::io::Result<()> {
        if self.text.len() >= FLUSH_AT {
            self.gz.write_all(&self.text)?;
            self.text.clear();
        }
        Ok(())
    }

    /// The finished `.gz` bytes.
    pub(crate) fn finish(mut self) -> std::io::Result<Vec<u8>> {
        self.gz.write_all(&self.text)?;
        self.gz.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn render(build: impl FnOnce(&mut JsonOut)) -> String {
        let mut out = JsonOut::new(1);
        build(&mut out);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&out.finish().unwrap()[..])
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    #[test]
    fn micros_have_three_decimals_at_most() {
        let text = render(|out| {
            for ns in [43_826, 30_500, 12_000, 1, 0, -1_500] {
                out.micros(ns);
                out.raw(" ");
            }
        });
        assert_eq!(text, "43.826 30.5 12 0.001 0 -1.5 ");
    }

    #[test]
    fn strings_are_escaped() {
        let text = render(|out| out.string("a\"b\\c\n\u{1}é"));
        let back: String = serde_json::from_str(&text).unwrap();
        assert_eq!(back, "a\"b\\c\n\u{1}é");
    }
}
