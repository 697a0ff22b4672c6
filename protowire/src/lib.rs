//! The protobuf wire format written directly: varints, field keys,
//! varint / fixed64 / length-delimited fields, and the byte sizes of each,
//! so hot messages can be sized arithmetically and written in one pass.
//! Both of rankline's hand-written encoders use it: the Perfetto packets of
//! `rankline-merge` and the XSpace writer of `rankline-xplane`.

/// Wire types (the low three bits of a key).
pub const WIRE_VARINT: u32 = 0;
pub const WIRE_FIXED64: u32 = 1;
pub const WIRE_LEN: u32 = 2;

/// Bytes a varint takes.
pub fn varint_len(value: u64) -> usize {
    // 1 byte per started group of 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A field's key as a varint value.
pub fn key(field: u32, wire: u32) -> u64 {
    u64::from(field << 3 | wire)
}

/// Bytes of a field's key.
pub fn key_len(field: u32) -> usize {
    varint_len(key(field, 0))
}

pub fn put_varint_field(out: &mut Vec<u8>, field: u32, value: u64) {
    put_varint(out, key(field, WIRE_VARINT));
    put_varint(out, value);
}

/// Bytes of a varint field.
pub fn varint_field_len(field: u32, value: u64) -> usize {
    key_len(field) + varint_len(value)
}

pub fn put_fixed64_field(out: &mut Vec<u8>, field: u32, value: u64) {
    put_varint(out, key(field, WIRE_FIXED64));
    out.extend_from_slice(&value.to_le_bytes());
}

/// Writes the key and length of a length-delimited field; the caller
/// writes exactly `len` bytes next.
pub fn put_len_header(out: &mut Vec<u8>, field: u32, len: usize) {
    put_varint(out, key(field, WIRE_LEN));
    put_varint(out, len as u64);
}

/// Bytes of a length-delimited field with a `len`-byte payload.
pub fn len_field_len(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

pub fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_parts_field(out, field, &[bytes]);
}

/// A length-delimited field whose payload is `parts` one after another.
pub fn put_parts_field(out: &mut Vec<u8>, field: u32, parts: &[&[u8]]) {
    put_len_header(out, field, parts.iter().map(|part| part.len()).sum());
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// An int64 field, left out when 0 as proto3 does.
pub fn put_int_field(out: &mut Vec<u8>, field: u32, value: i64) {
    if value != 0 {
        put_varint_field(out, field, value as u64);
    }
}

/// Writes `field` as a nested message built by `build` into `scratch`.
pub fn put_message(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    field: u32,
    build: impl FnOnce(&mut Vec<u8>),
) {
    let start = scratch.len();
    build(scratch);
    put_bytes_field(out, field, &scratch[start..]);
    scratch.truncate(start);
}

/// A message of at most 64 bytes built on the stack: the fixed fields of a
/// hot packet (merge's largest, a slice begin's, take at most 59: two length
/// headers of up to 6 bytes and eight varint fields, timestamp, clock,
/// sequence, flags, type, track, name and category), written without a
/// bounds check or a growth check per byte, then appended to a buffer in
/// one copy.
pub struct SmallMessage {
    bytes: [u8; 64],
    len: usize,
}

impl Default for SmallMessage {
    fn default() -> Self {
        SmallMessage::new()
    }
}

impl SmallMessage {
    pub fn new() -> Self {
        SmallMessage {
            bytes: [0; 64],
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn varint(&mut self, mut value: u64) {
        // A local cursor: updating `self.len` byte by byte would make every
        // store wait on the previous one. Indexes masked to the array: no
        // bounds check per byte (callers stay within 64 bytes).
        let mut len = self.len;
        while value >= 0x80 {
            self.bytes[len % 64] = (value as u8) | 0x80;
            len += 1;
            value >>= 7;
        }
        self.bytes[len % 64] = value as u8;
        self.len = len + 1;
    }

    #[inline]
    pub fn varint_field(&mut self, field: u32, value: u64) {
        self.varint(key(field, WIRE_VARINT));
        self.varint(value);
    }

    /// The key and length of a length-delimited field; its payload follows
    /// in whatever is appended next.
    #[inline]
    pub fn len_header(&mut self, field: u32, len: usize) {
        self.varint(key(field, WIRE_LEN));
        self.varint(len as u64);
    }

    /// Appends the bytes written so far. Copying the whole fixed-size array
    /// and cutting it back is a few vector moves; copying `len` bytes would
    /// be a call to memcpy per packet.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        let end = out.len() + self.len;
        out.extend_from_slice(&self.bytes);
        out.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_the_encoding() {
        for value in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), varint_len(value), "{value}");
        }
        assert_eq!(key_len(87), 2);
        assert_eq!(key_len(15), 1);
        assert_eq!(key_len(16), 2);
    }

    #[test]
    fn a_small_message_writes_what_the_vector_writer_writes() {
        let mut small = SmallMessage::new();
        small.len_header(1, 300);
        small.varint_field(8, u64::MAX);
        small.varint_field(2, 150);
        let mut out = vec![0xAA];
        small.append_to(&mut out);

        let mut expected = vec![0xAA];
        put_len_header(&mut expected, 1, 300);
        put_varint_field(&mut expected, 8, u64::MAX);
        put_varint_field(&mut expected, 2, 150);
        assert_eq!(out, expected);
        assert_eq!(small.len(), expected.len() - 1);
    }
}
