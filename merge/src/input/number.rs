//! Exact conversions between the microsecond numbers of Chrome JSON and
//! integer nanoseconds.
//!
//! JSON `ts` values are written as decimal microseconds (`43.826000000000001`,
//! `9.9999999999999995e-07`, `1795384060465391.136`). Going through `f64`
//! would lose nanoseconds on epoch-sized values (a double has 15-16
//! significant digits), so the number's text is read as a decimal and rounded
//! to the nearest nanosecond (halves away from zero) with integer arithmetic.

use crate::input::json_scan::{self, Scan};

/// Significant digits kept exactly; later digits only decide rounding.
const MAX_DIGITS: u32 = 36;

/// Converts the text of a JSON number of microseconds to nanoseconds.
/// Accepts an optional surrounding pair of quotes (some writers quote
/// numbers). Returns `None` for text that is not a number or whose value
/// does not fit in an `i64` of nanoseconds.
pub fn micros_text_to_nanos(text: &str) -> Option<i64> {
    decimal_text_scaled(text, 3)
}

/// Reads decimal text and returns `round(value * 10^exp10)` exactly.
pub fn decimal_text_scaled(text: &str, exp10: i64) -> Option<i64> {
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    let bytes = text.as_bytes();
    short_plain_decimal(bytes, exp10).or_else(|| any_decimal(bytes, exp10))
}

/// An optional `-` or `+` at `bytes[*i]`, stepped over: true for `-`.
fn sign(bytes: &[u8], i: &mut usize) -> bool {
    match bytes.get(*i) {
        Some(&c @ (b'-' | b'+')) => {
            *i += 1;
            c == b'-'
        }
        _ => false,
    }
}

/// Any JSON number (and a few lenient forms: `+1`, `.5`), in u128
/// arithmetic with up to 36 significant digits.
fn any_decimal(bytes: &[u8], exp10: i64) -> Option<i64> {
    let mut i = 0;
    let negative = sign(bytes, &mut i);
    let mut mantissa: u128 = 0;
    let mut kept_digits = 0u32;
    // Decimal exponent of the mantissa's last kept digit.
    let mut exponent: i64 = 0;
    let mut any_digit = false;

    let mut take_digit = |digit: u8, after_point: bool, exponent: &mut i64| {
        if kept_digits < MAX_DIGITS {
            if mantissa != 0 || digit != 0 {
                kept_digits += 1;
            }
            mantissa = mantissa * 10 + u128::from(digit);
            if after_point {
                *exponent -= 1;
            }
        } else {
            if !after_point {
                *exponent += 1;
            }
        }
    };

    while let Some(&b) = bytes.get(i) {
        if !b.is_ascii_digit() {
            break;
        }
        take_digit(b - b'0', false, &mut exponent);
        any_digit = true;
        i += 1;
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        while let Some(&b) = bytes.get(i) {
            if !b.is_ascii_digit() {
                break;
            }
            take_digit(b - b'0', true, &mut exponent);
            any_digit = true;
            i += 1;
        }
    }
    if !any_digit {
        return None;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        let exp_negative = sign(bytes, &mut i);
        let start = i;
        let mut exp: i64 = 0;
        while let Some(&b) = bytes.get(i) {
            if !b.is_ascii_digit() {
                break;
            }
            // Saturate: anything this large is out of range either way.
            exp = (exp * 10 + i64::from(b - b'0')).min(1_000_000);
            i += 1;
        }
        if i == start {
            return None;
        }
        exponent += if exp_negative { -exp } else { exp };
    }
    if i != bytes.len() {
        return None;
    }

    let scale = exponent + exp10;
    let magnitude: u128 = if mantissa == 0 {
        0
    } else if scale >= 0 {
        let factor = 10u128.checked_pow(u32::try_from(scale).ok()?)?;
        mantissa.checked_mul(factor)?
    } else {
        let divisor_exp = u32::try_from(-scale).ok()?;
        if divisor_exp > 38 {
            0
        } else {
            let divisor = 10u128.pow(divisor_exp);
            let quotient = mantissa / divisor;
            let remainder = mantissa % divisor;
            // Halves round away from zero. Dropped digits cannot turn a
            // below-half remainder into a half: the divisor is even.
            quotient + u128::from(remainder * 2 >= divisor)
        }
    };
    let magnitude = i64::try_from(magnitude).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Powers of ten that fit a `u64`.
const POW10: [u64; 19] = {
    let mut table = [1u64; 19];
    let mut k = 1;
    while k < 19 {
        table[k] = table[k - 1] * 10;
        k += 1;
    }
    table
};

/// The common case, `[-]digits[.digits]` with at most 18 digits, in u64
/// arithmetic; `None` sends anything else to the general path.
fn short_plain_decimal(bytes: &[u8], exp10: i64) -> Option<i64> {
    let plain = PlainDecimal::read(bytes, 0);
    (plain.end == bytes.len()).then(|| plain.scaled(exp10))?
}

/// The run of `[-]digits[.digits]` that starts at some offset: where it
/// stops, and its digits as one mantissa (which wraps past 19 digits:
/// [`PlainDecimal::scaled`] refuses more than 18).
struct PlainDecimal {
    end: usize,
    negative: bool,
    int_digits: usize,
    point: bool,
    fraction_digits: usize,
    mantissa: u64,
}

impl PlainDecimal {
    #[inline]
    fn read(bytes: &[u8], at: usize) -> Self {
        let negative = bytes.get(at) == Some(&b'-');
        let mut i = at + usize::from(negative);
        let mut mantissa: u64 = 0;
        let int_start = i;
        while let Some(&b) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
            i += 1;
        }
        let int_digits = i - int_start;
        let point = bytes.get(i) == Some(&b'.');
        let mut fraction_digits = 0;
        if point {
            i += 1;
            while let Some(&b) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
                i += 1;
                fraction_digits += 1;
            }
        }
        PlainDecimal {
            end: i,
            negative,
            int_digits,
            point,
            fraction_digits,
            mantissa,
        }
    }

    /// `±mantissa * 10^(exp10 - fraction digits)`, rounded (halves away
    /// from zero); `None` without digits or with more than 18.
    #[inline]
    fn scaled(&self, exp10: i64) -> Option<i64> {
        let digits = self.int_digits + self.fraction_digits;
        if digits == 0 || digits > 18 {
            return None;
        }
        let scale = exp10 - self.fraction_digits as i64;
        let magnitude = if scale >= 0 {
            self.mantissa
                .checked_mul(*POW10.get(usize::try_from(scale).ok()?)?)?
        } else {
            let divisor = *POW10.get(usize::try_from(-scale).ok()?)?;
            // Halves round away from zero.
            self.mantissa / divisor + u64::from((self.mantissa % divisor) * 2 >= divisor)
        };
        let magnitude = i64::try_from(magnitude).ok()?;
        Some(if self.negative { -magnitude } else { magnitude })
    }
}

/// Scans the JSON number of microseconds at `at` (as
/// [`json_scan::scan_number`] does, with the same outcome) and, for the
/// usual `[-]digits[.digits]` of at most 18 digits, converts it to
/// nanoseconds on the way, so the event's `ts` and `dur` are read once.
/// `None` for the value: any other form, to convert from its text.
#[inline]
pub fn scan_micros(bytes: &[u8], at: usize) -> (Scan, Option<i64>) {
    let plain = PlainDecimal::read(bytes, at);
    let int_start = at + usize::from(plain.negative);
    // Forms JSON refuses or spells otherwise (and a number the text may
    // still continue): the general scanner decides, and says why.
    let unusual = plain.int_digits == 0
        || (plain.int_digits > 1 && bytes[int_start] == b'0')
        || (plain.point && plain.fraction_digits == 0)
        || matches!(bytes.get(plain.end), None | Some(b'e' | b'E'));
    if unusual {
        return (json_scan::scan_number(bytes, at), None);
    }
    (Scan::Done(plain.end), plain.scaled(3))
}

/// Appends `nanos` as decimal microseconds with exactly three decimals
/// (`-1.005`, `1795384060465391.136`), the exact inverse of
/// [`micros_text_to_nanos`].
pub fn push_nanos_as_micros(out: &mut Vec<u8>, nanos: i64) {
    let magnitude = nanos.unsigned_abs();
    if nanos < 0 {
        out.push(b'-');
    }
    let mut buffer = itoa::Buffer::new();
    out.extend_from_slice(buffer.format(magnitude / 1000).as_bytes());
    let frac = (magnitude % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// Reads a JSON number of whole units (or a quoted one) as `i64`, rounding
/// any fraction.
pub fn integer_text(text: &str) -> Option<i64> {
    decimal_text_scaled(text, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jax_style_floats_round_to_the_written_nanosecond() {
        assert_eq!(micros_text_to_nanos("43.826000000000001"), Some(43_826));
        assert_eq!(micros_text_to_nanos("101.65000000000001"), Some(101_650));
        assert_eq!(micros_text_to_nanos("143.81999999999999"), Some(143_820));
        assert_eq!(micros_text_to_nanos("9.9999999999999995e-07"), Some(0));
        assert_eq!(micros_text_to_nanos("1e-06"), Some(0));
        assert_eq!(micros_text_to_nanos("0.0005"), Some(1));
        assert_eq!(micros_text_to_nanos("0.00049"), Some(0));
        assert_eq!(micros_text_to_nanos("16570.254000000001"), Some(16_570_254));
        assert_eq!(micros_text_to_nanos("30.5"), Some(30_500));
        assert_eq!(micros_text_to_nanos("27282"), Some(27_282_000));
    }

    #[test]
    fn epoch_sized_values_keep_every_nanosecond() {
        // 1.795e15 us has 19 significant digits: more than a double holds.
        assert_eq!(
            micros_text_to_nanos("1795384060465391.136"),
            Some(1_795_384_060_465_391_136)
        );
        assert_eq!(
            micros_text_to_nanos("1.795384060465391136e15"),
            Some(1_795_384_060_465_391_136)
        );
    }

    #[test]
    fn signs_exponents_and_quotes() {
        assert_eq!(micros_text_to_nanos("-1.5"), Some(-1_500));
        assert_eq!(micros_text_to_nanos("-0.0005"), Some(-1));
        assert_eq!(micros_text_to_nanos("2E3"), Some(2_000_000));
        assert_eq!(micros_text_to_nanos("2e+3"), Some(2_000_000));
        assert_eq!(micros_text_to_nanos("\"12.5\""), Some(12_500));
        assert_eq!(micros_text_to_nanos("0"), Some(0));
        assert_eq!(micros_text_to_nanos(".5"), Some(500));
    }

    #[test]
    fn junk_and_overflow_are_none() {
        for text in [
            "", "-", "abc", "1.2.3", "1e", "1e+", "12x", "NaN", "\"\"", "1e400",
        ] {
            assert_eq!(micros_text_to_nanos(text), None, "{text:?}");
        }
        assert_eq!(micros_text_to_nanos("1e-400"), Some(0));
        assert_eq!(micros_text_to_nanos("9223372036854775.807"), Some(i64::MAX));
        assert_eq!(micros_text_to_nanos("9223372036854775.808"), None);
    }

    #[test]
    fn many_digits_do_not_overflow_the_mantissa() {
        let long = format!("1.{}", "9".repeat(60));
        assert_eq!(micros_text_to_nanos(&long), Some(2_000));
        let long_int = format!("{}.5", "1".repeat(17));
        assert_eq!(micros_text_to_nanos(&long_int), None);
    }

    #[test]
    fn the_fast_path_agrees_with_the_general_one() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let digits = (seed % 19) as usize + 1;
            let point = (seed >> 8) as usize % (digits + 1);
            let mut text: String = (0..digits)
                .map(|k| char::from(b'0' + ((seed >> (k % 60)) % 10) as u8))
                .collect();
            if point < digits {
                text.insert(point, '.');
            }
            if seed & 1 == 1 {
                text.insert(0, '-');
            }
            for exp10 in [0, 3, -2] {
                assert_eq!(
                    short_plain_decimal(text.as_bytes(), exp10)
                        .or_else(|| any_decimal(text.as_bytes(), exp10)),
                    any_decimal(text.as_bytes(), exp10),
                    "{text} * 10^{exp10}"
                );
            }
        }
    }

    #[test]
    fn scanning_converts_as_the_text_reader_does() {
        for text in [
            "43.826",
            "0",
            "-0.0005",
            "9991719.94",
            "27282",
            "1795384060465391.136",
            "9223372036854775.807",
            "9223372036854775.808",
            "123456789012345678.9",
            "1e3",
            "-2E-3",
            "0.5e1",
            "00",
            "01.5",
            "1.",
            "-",
            "-.5",
            ".5",
            "1.x",
            "--1",
            "12345678901234567890123",
        ] {
            let text_then_end = format!("{text},");
            let (scan, nanos) = scan_micros(text_then_end.as_bytes(), 0);
            assert_eq!(
                scan,
                json_scan::scan_number(text_then_end.as_bytes(), 0),
                "{text}"
            );
            if let (Scan::Done(end), Some(nanos)) = (scan, nanos) {
                assert_eq!(
                    Some(nanos),
                    micros_text_to_nanos(&text_then_end[..end]),
                    "{text}"
                );
            }
            // At the end of the text a number may go on.
            assert_eq!(
                scan_micros(text.as_bytes(), 0).0,
                json_scan::scan_number(text.as_bytes(), 0)
            );
        }
        assert_eq!(
            scan_micros(b"9991719.94}", 0),
            (Scan::Done(10), Some(9_991_719_940))
        );
        assert_eq!(
            scan_micros(b"1e3,", 0),
            (Scan::Done(3), None),
            "read from its text"
        );
    }

    #[test]
    fn formatting_is_the_exact_inverse() {
        for nanos in [
            0,
            1,
            999,
            1_000,
            43_826,
            -1_500,
            -1,
            1_795_384_060_465_391_136,
        ] {
            let mut out = Vec::new();
            push_nanos_as_micros(&mut out, nanos);
            let text = String::from_utf8(out).unwrap();
            assert_eq!(micros_text_to_nanos(&text), Some(nanos), "{text}");
        }
        let mut out = Vec::new();
        push_nanos_as_micros(&mut out, -1_500);
        assert_eq!(out, b"-1.500");
    }
}
