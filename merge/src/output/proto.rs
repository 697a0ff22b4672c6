//! A minimal protobuf writer for the Perfetto messages merge emits.
//!
//! Hot packets (slice begin/end) are sized arithmetically and written in one
//! pass; the rare ones (descriptors, interned data) are built in a scratch
//! buffer. Field numbers are from `shared/docs/FORMATS.md`.

/// TracePacket fields.
pub mod packet {
    pub const TIMESTAMP: u32 = 8;
    pub const TRUSTED_PACKET_SEQUENCE_ID: u32 = 10;
    pub const TRACK_EVENT: u32 = 11;
    pub const INTERNED_DATA: u32 = 12;
    pub const SEQUENCE_FLAGS: u32 = 13;
    pub const TRACK_DESCRIPTOR: u32 = 60;
    pub const FIRST_PACKET_ON_SEQUENCE: u32 = 87;
    /// `Trace.packet`.
    pub const TRACE_PACKET: u32 = 1;
    pub const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
    pub const SEQ_NEEDS_INCREMENTAL_STATE: u64 = 2;
}

/// TrackEvent fields and types.
pub mod track_event {
    pub const CATEGORY_IIDS: u32 = 3;
    pub const DEBUG_ANNOTATIONS: u32 = 4;
    pub const TYPE: u32 = 9;
    pub const NAME_IID: u32 = 10;
    pub const TRACK_UUID: u32 = 11;
    pub const SLICE_BEGIN: u64 = 1;
    pub const SLICE_END: u64 = 2;
    pub const INSTANT: u64 = 3;
}

/// TrackDescriptor / ProcessDescriptor / ThreadDescriptor fields.
pub mod descriptor {
    pub const UUID: u32 = 1;
    pub const NAME: u32 = 2;
    pub const PROCESS: u32 = 3;
    pub const THREAD: u32 = 4;
    pub const PARENT_UUID: u32 = 5;
    pub const CHILD_ORDERING: u32 = 11;
    pub const SIBLING_ORDER_RANK: u32 = 12;
    pub const CHILD_ORDERING_EXPLICIT: u64 = 3;
    pub const PROCESS_PID: u32 = 1;
    pub const PROCESS_LEGACY_SORT_INDEX: u32 = 3;
    pub const PROCESS_NAME: u32 = 6;
    pub const THREAD_PID: u32 = 1;
    pub const THREAD_TID: u32 = 2;
    pub const THREAD_NAME: u32 = 5;
}

/// InternedData fields; every entry is `{iid = 1, name/str = 2}`.
pub mod interned {
    pub const EVENT_CATEGORIES: u32 = 1;
    pub const EVENT_NAMES: u32 = 2;
    pub const DEBUG_ANNOTATION_NAMES: u32 = 3;
    pub const DEBUG_ANNOTATION_STRING_VALUES: u32 = 29;
}

/// DebugAnnotation fields.
pub mod annotation {
    pub const NAME_IID: u32 = 1;
    pub const BOOL_VALUE: u32 = 2;
    pub const UINT_VALUE: u32 = 3;
    pub const INT_VALUE: u32 = 4;
    pub const DOUBLE_VALUE: u32 = 5;
    pub const STRING_VALUE: u32 = 6;
    pub const STRING_VALUE_IID: u32 = 17;
}

const WIRE_VARINT: u32 = 0;
const WIRE_FIXED64: u32 = 1;
const WIRE_LEN: u32 = 2;

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

fn key(field: u32, wire: u32) -> u64 {
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
    put_len_header(out, field, bytes.len());
    out.extend_from_slice(bytes);
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
}
