//! Protobuf field readers.
//!
//! prost decodes whole messages from memory; an XSpace can be 500 MB, so
//! readers walk it field by field instead: [`FieldReader`] over any reader,
//! descending into the length-delimited fields they care about
//! ([`FieldReader::nested`]) and skipping the rest without buffering them
//! (by seeking, for files); [`SliceReader`] over one message already in
//! memory (an XLine), handing out its payloads without copying them.

use std::io::{self, BufReader, Read, Seek, SeekFrom};

use crate::XplaneError;

/// A field's wire value. Length-delimited payloads are not read yet: the
/// caller reads, descends into, or skips exactly `len` bytes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireValue {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Len(u64),
}

/// One field header (and its value, unless length-delimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub number: u32,
    pub value: WireValue,
}

/// Reads protobuf fields one at a time from any reader.
pub struct FieldReader<R> {
    inner: R,
    consumed: u64,
}

impl<R: Read> FieldReader<R> {
    pub fn new(inner: R) -> Self {
        FieldReader { inner, consumed: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.consumed
    }

    /// The next field header, or `None` at a clean end of input.
    pub fn next_field(&mut self) -> Result<Option<Field>, XplaneError> {
        let at = self.consumed;
        let key = match self.varint_or_eof()? {
            Some(key) => key,
            None => return Ok(None),
        };
        let (number, wire) = split_key(key, at)?;
        let value = match wire {
            WireType::Varint => WireValue::Varint(self.varint()?),
            WireType::Fixed64 => {
                let mut buf = [0u8; 8];
                self.read_exact(&mut buf)?;
                WireValue::Fixed64(u64::from_le_bytes(buf))
            }
            WireType::Len => WireValue::Len(self.varint()?),
            WireType::Fixed32 => {
                let mut buf = [0u8; 4];
                self.read_exact(&mut buf)?;
                WireValue::Fixed32(u32::from_le_bytes(buf))
            }
        };
        Ok(Some(Field { number, value }))
    }

    /// Reads a length-delimited payload into memory. The buffer grows as
    /// bytes arrive, so a damaged length that claims gigabytes costs only
    /// what the input really holds.
    pub fn read_bytes(&mut self, len: u64) -> Result<Vec<u8>, XplaneError> {
        const FIRST_RESERVE: u64 = 1 << 20;
        let mut buf = Vec::with_capacity(len.min(FIRST_RESERVE) as usize);
        let read = (&mut self.inner).take(len).read_to_end(&mut buf)? as u64;
        self.consumed += read;
        if read < len {
            return Err(truncated(self.consumed));
        }
        Ok(buf)
    }

    /// Skips a length-delimited payload without keeping it.
    pub fn skip(&mut self, len: u64) -> Result<(), XplaneError> {
        let copied = io::copy(&mut (&mut self.inner).take(len), &mut io::sink())?;
        self.consumed += copied;
        if copied < len {
            return Err(truncated(self.consumed));
        }
        Ok(())
    }

    /// A reader over the next `len` bytes (a nested message). Consume or
    /// [`FieldReader::finish`] it before using this reader again.
    pub fn nested(&mut self, len: u64) -> FieldReader<io::Take<&mut R>> {
        self.consumed += len;
        FieldReader::new((&mut self.inner).take(len))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), XplaneError> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                truncated(self.consumed)
            } else {
                XplaneError::Io(e)
            }
        })?;
        self.consumed += buf.len() as u64;
        Ok(())
    }

    fn varint(&mut self) -> Result<u64, XplaneError> {
        self.varint_or_eof()?
            .ok_or_else(|| truncated(self.consumed))
    }

    fn varint_or_eof(&mut self) -> Result<Option<u64>, XplaneError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let mut byte = [0u8; 1];
            match self.inner.read(&mut byte) {
                Ok(0) if shift == 0 => return Ok(None),
                Ok(0) => return Err(truncated(self.consumed)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(XplaneError::Io(e)),
            }
            self.consumed += 1;
            if shift == 63 && byte[0] > 1 {
                break;
            }
            value |= u64::from(byte[0] & 0x7f) << shift;
            if byte[0] < 0x80 {
                return Ok(Some(value));
            }
        }
        Err(XplaneError::Malformed(format!(
            "varint longer than 10 bytes at byte {}",
            self.consumed
        )))
    }
}

impl<R: Read + Seek> FieldReader<BufReader<R>> {
    /// Skips `len` bytes by seeking, so a file's skipped parts are never
    /// read. The caller checks that they exist (seeking past the end of a
    /// file is not an error).
    pub fn seek_past(&mut self, len: u64) -> Result<(), XplaneError> {
        let offset = i64::try_from(len)
            .map_err(|_| XplaneError::Malformed(format!("field of {len} bytes")))?;
        self.inner.seek_relative(offset)?;
        self.consumed += len;
        Ok(())
    }

    /// Moves to byte `at` of the input.
    pub fn seek_to(&mut self, at: u64) -> Result<(), XplaneError> {
        if at != self.consumed {
            self.inner.seek(SeekFrom::Start(at))?;
            self.consumed = at;
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at the current position.
    pub fn read_into(&mut self, buf: &mut [u8]) -> Result<(), XplaneError> {
        self.read_exact(buf)
    }
}

impl<R: Read> FieldReader<io::Take<R>> {
    /// Skips whatever is left of a nested message.
    pub fn finish(mut self) -> Result<(), XplaneError> {
        let left = self.inner.limit();
        self.skip(left)
    }
}

fn truncated(at: u64) -> XplaneError {
    XplaneError::Malformed(format!("input ends in the middle of a field at byte {at}"))
}

/// The four wire types protobuf writers use (groups are long obsolete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireType {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

/// A field key's number and wire type; `at` (the key's byte) is for errors.
#[inline]
fn split_key(key: u64, at: u64) -> Result<(u32, WireType), XplaneError> {
    let number = u32::try_from(key >> 3)
        .map_err(|_| XplaneError::Malformed(format!("field number too large at byte {at}")))?;
    if number == 0 {
        return Err(XplaneError::Malformed(format!(
            "field number 0 at byte {at}"
        )));
    }
    let wire = match key & 7 {
        0 => WireType::Varint,
        1 => WireType::Fixed64,
        2 => WireType::Len,
        5 => WireType::Fixed32,
        other => {
            return Err(XplaneError::Malformed(format!(
                "unsupported wire type {other} for field {number} at byte {at}"
            )))
        }
    };
    Ok((number, wire))
}

/// The varint at `bytes[at..]` and the offset after it; `None` when it
/// does not end within 10 bytes and the slice (the slow path then says
/// why). Bits past 64 are dropped, as [`SliceReader`]'s long varints do.
#[inline(always)]
fn varint_at(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *bytes.get(at)?;
    if first < 0x80 {
        return Some((u64::from(first), at + 1));
    }
    let mut value = u64::from(first & 0x7f);
    for (i, &byte) in bytes.get(at + 1..)?.iter().take(9).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * (i + 1));
        if byte < 0x80 {
            return Some((value, at + i + 2));
        }
    }
    None
}

/// A field's value in memory; length-delimited payloads are borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SliceValue<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl SliceValue<'_> {
    /// A varint as protobuf's `int64` (two's complement), 0 otherwise.
    pub fn as_i64(&self) -> i64 {
        match *self {
            SliceValue::Varint(v) => v as i64,
            _ => 0,
        }
    }
}

/// Reads the fields of one message held in memory, without copying.
#[derive(Debug, Clone)]
pub struct SliceReader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Where `bytes` starts in the file, for error messages.
    base: u64,
}

impl<'a> SliceReader<'a> {
    /// A reader over `bytes`, which start at byte `base` of the input.
    #[inline]
    pub fn new(bytes: &'a [u8], base: u64) -> Self {
        SliceReader { bytes, at: 0, base }
    }

    /// Bytes read so far.
    #[inline]
    pub fn position(&self) -> usize {
        self.at
    }

    /// The next field, or `None` at the end of the message. Always inlined
    /// into the callers' loops (it runs a few dozen times per event), where
    /// the result stays in registers: a one-byte key (fields 1 to 15) of a
    /// varint or length-delimited field whose varints end in the message
    /// is decoded here; anything else (other wire types, long keys,
    /// damage) by [`SliceReader::next_field_slow`], which has the same
    /// result.
    #[inline(always)]
    pub fn next_field(&mut self) -> Result<Option<(u32, SliceValue<'a>)>, XplaneError> {
        let Some(&key) = self.bytes.get(self.at) else {
            return Ok(None);
        };
        if (0x08..0x80).contains(&key) {
            let number = u32::from(key >> 3);
            if key & 7 == 0 {
                if let Some((value, end)) = varint_at(self.bytes, self.at + 1) {
                    self.at = end;
                    return Ok(Some((number, SliceValue::Varint(value))));
                }
            } else if key & 7 == 2 {
                if let Some((len, start)) = varint_at(self.bytes, self.at + 1) {
                    if len <= (self.bytes.len() - start) as u64 {
                        let end = start + len as usize;
                        self.at = end;
                        return Ok(Some((number, SliceValue::Bytes(&self.bytes[start..end]))));
                    }
                }
            }
        }
        self.next_field_slow()
    }

    /// [`SliceReader::next_field`] for any field, with every check.
    #[inline(never)]
    pub fn next_field_slow(&mut self) -> Result<Option<(u32, SliceValue<'a>)>, XplaneError> {
        if self.at == self.bytes.len() {
            return Ok(None);
        }
        let key_at = self.file_offset();
        let (number, wire) = split_key(self.varint()?, key_at)?;
        // An if-chain, most frequent first: a jump table here is
        // mispredicted on most fields.
        let value = if wire == WireType::Varint {
            SliceValue::Varint(self.varint()?)
        } else if wire == WireType::Len {
            let len = self.varint()?;
            let len = usize::try_from(len).map_err(|_| self.truncated())?;
            if len > self.bytes.len() - self.at {
                return Err(self.truncated());
            }
            let payload = &self.bytes[self.at..self.at + len];
            self.at += len;
            SliceValue::Bytes(payload)
        } else if wire == WireType::Fixed64 {
            SliceValue::Fixed64(u64::from_le_bytes(self.take_array()?))
        } else {
            SliceValue::Fixed32(u32::from_le_bytes(self.take_array()?))
        };
        Ok(Some((number, value)))
    }

    #[inline]
    fn file_offset(&self) -> u64 {
        self.base + self.at as u64
    }

    #[cold]
    fn truncated(&self) -> XplaneError {
        XplaneError::Malformed(format!(
            "a message ends in the middle of a field at byte {}",
            self.file_offset()
        ))
    }

    #[inline]
    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], XplaneError> {
        let bytes = self
            .bytes
            .get(self.at..self.at + N)
            .ok_or_else(|| self.truncated())?;
        self.at += N;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    /// Most varints in a trace (field keys, small ids) are one byte.
    #[inline]
    fn varint(&mut self) -> Result<u64, XplaneError> {
        match self.bytes.get(self.at) {
            Some(&byte) if byte < 0x80 => {
                self.at += 1;
                Ok(u64::from(byte))
            }
            _ => self.long_varint(),
        }
    }

    fn long_varint(&mut self) -> Result<u64, XplaneError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or_else(|| self.truncated())?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(XplaneError::Malformed(format!(
            "varint longer than 10 bytes at byte {}",
            self.file_offset()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn walks_and_skips_nested_messages() {
        let space = crate::XSpace {
            planes: vec![
                crate::XPlane {
                    id: 7,
                    name: "big".into(),
                    ..Default::default()
                },
                crate::XPlane {
                    id: 9,
                    name: "small".into(),
                    ..Default::default()
                },
            ],
            hostnames: vec!["h".into()],
            ..Default::default()
        };
        let bytes = space.encode_to_vec();
        let mut reader = FieldReader::new(&bytes[..]);
        let mut names = vec![];
        while let Some(field) = reader.next_field().unwrap() {
            match (field.number, field.value) {
                (1, WireValue::Len(len)) => {
                    let mut plane = reader.nested(len);
                    while let Some(f) = plane.next_field().unwrap() {
                        match (f.number, f.value) {
                            (2, WireValue::Len(n)) => {
                                names
                                    .push(String::from_utf8(plane.read_bytes(n).unwrap()).unwrap());
                                break;
                            }
                            (_, WireValue::Len(n)) => plane.skip(n).unwrap(),
                            _ => {}
                        }
                    }
                    plane.finish().unwrap();
                }
                (4, WireValue::Len(len)) => reader.skip(len).unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(names, ["big", "small"]);
        assert_eq!(reader.position(), bytes.len() as u64);
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let space = crate::XSpace {
            hostnames: vec!["hostname".into()],
            ..Default::default()
        };
        let bytes = space.encode_to_vec();
        let mut reader = FieldReader::new(&bytes[..bytes.len() - 2]);
        let field = reader.next_field().unwrap().unwrap();
        let WireValue::Len(len) = field.value else {
            panic!("expected a length")
        };
        assert!(matches!(reader.skip(len), Err(XplaneError::Malformed(_))));
    }
}
