//! A streaming reader of Chrome JSON traces.
//!
//! The decompressed text flows through a window of a few MiB, checked as
//! UTF-8 once as it arrives. Each element of `traceEvents` is scanned in
//! place by [`crate::input::json_scan`]: the grammar is checked and every value is
//! kept as its raw JSON text borrowed from the window (no `Value` tree, no
//! copies). When an element runs past the end of the window, the window is
//! refilled and that one element scanned again. So a 1 GB trace is read in
//! bounded memory and the caller sees each event once.

use std::borrow::Cow;
use std::io::{self, Read};
use std::ops::ControlFlow;

use crate::input::json_scan::{
    self, scan_string, scan_string_escapes, scan_value, skip_ws, RawText, Scan, Why,
};
use crate::input::number;

/// Window size; it grows only for a single element larger than it.
const WINDOW: usize = 4 << 20;
/// Bytes asked of the source per read call.
const READ_CHUNK: usize = 256 << 10;

/// One element of `traceEvents`, every value as its raw JSON text (with
/// what the scanner learnt of it on the way: a string's escapes, a time's
/// value).
#[derive(Debug, Default)]
pub struct RawEvent<'a> {
    pub ph: Option<&'a str>,
    pub name: Option<RawText<'a>>,
    pub cat: Option<RawText<'a>>,
    pub ts: Option<Micros<'a>>,
    pub dur: Option<Micros<'a>>,
    pub pid: Option<&'a str>,
    pub tid: Option<&'a str>,
    pub id: Option<&'a str>,
    pub args: Option<&'a str>,
    /// Keys this reader does not interpret (`bp`, `s`, `cname`, ...), in order.
    pub others: Vec<(Cow<'a, str>, &'a str)>,
}

impl RawEvent<'_> {
    /// `{}`: XProf ends its array with one.
    pub fn is_empty(&self) -> bool {
        self.ph.is_none()
            && self.name.is_none()
            && self.cat.is_none()
            && self.ts.is_none()
            && self.dur.is_none()
            && self.pid.is_none()
            && self.tid.is_none()
            && self.id.is_none()
            && self.args.is_none()
            && self.others.is_empty()
    }

    /// The phase letter(s): `X`, `M`, `B`, ...
    pub fn phase(&self) -> &str {
        self.ph
            .map(|raw| {
                raw.strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or(raw)
            })
            .unwrap_or("")
    }
}

/// A `ts` or `dur`: its JSON text, and its nanoseconds when the scanner
/// read them on the way (the usual plain decimals), so they are read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Micros<'a> {
    pub raw: &'a str,
    nanos: Option<i64>,
}

impl<'a> Micros<'a> {
    /// A value to convert from its text when asked.
    pub fn of(raw: &'a str) -> Self {
        Micros { raw, nanos: None }
    }

    /// Its nanoseconds; `None` when it is not a number or out of range.
    pub fn nanos(&self) -> Option<i64> {
        self.nanos
            .or_else(|| number::micros_text_to_nanos(self.raw))
    }
}

/// An element of `traceEvents` as the caller sees it.
pub enum Element<'a, 'b> {
    Event(&'b RawEvent<'a>),
    /// Valid JSON that is not an object (a number, an array, ...).
    NotAnObject,
}

/// Top-level facts found around the event array.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceFooter {
    /// Kineto's `baseTimeNanoseconds`.
    pub base_time_ns: Option<i64>,
    /// Elements of `traceEvents` seen.
    pub elements: u64,
    /// The callback asked to stop before the end.
    pub stopped: bool,
}

/// Why a trace could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The source failed (for gzip input: corrupt data).
    Io(io::Error),
    Empty,
    Truncated {
        events: u64,
    },
    Syntax {
        offset: u64,
        message: String,
    },
    NotATrace(String),
}

/// Reads a Chrome JSON trace, calling `on_element` for every element of its
/// `traceEvents` array (or of a bare top-level array), in order.
pub fn read_trace<R, F>(source: R, on_element: F) -> Result<TraceFooter, ReadError>
where
    R: Read,
    F: FnMut(Element<'_, '_>) -> ControlFlow<()>,
{
    read_trace_windowed(source, WINDOW, on_element)
}

fn read_trace_windowed<R, F>(
    source: R,
    window: usize,
    mut on_element: F,
) -> Result<TraceFooter, ReadError>
where
    R: Read,
    F: FnMut(Element<'_, '_>) -> ControlFlow<()>,
{
    let mut stream = Window::new(source, window);
    let mut footer = TraceFooter::default();
    match stream.peek_significant()? {
        None => Err(ReadError::Empty),
        Some(b'[') => {
            stream.advance(1);
            stream.read_events(&mut footer, &mut on_element)?;
            if !footer.stopped {
                stream.expect_end()?;
            }
            Ok(footer)
        }
        Some(b'{') => {
            stream.advance(1);
            stream.read_top_object(&mut footer, &mut on_element)?;
            Ok(footer)
        }
        Some(other) => Err(ReadError::NotATrace(format!(
            "it starts with {:?}, not a JSON object or array",
            char::from(other)
        ))),
    }
}

/// Decompressed text not yet consumed, refilled on demand.
///
/// The source reads straight into `buffer` (no copy between the decoder and
/// the scanner); only the bytes a read added are checked as UTF-8.
struct Window<R> {
    source: R,
    /// `buffer[..checked]` is the text, checked UTF-8; `buffer[checked..filled]`
    /// is read but not yet text (a character cut by a read); `buffer[pos..checked]`
    /// is not consumed yet.
    buffer: Vec<u8>,
    checked: usize,
    filled: usize,
    pos: usize,
    /// Refill target: the window grows past it only for one huge element.
    capacity: usize,
    eof: bool,
    /// Stream offset of invalid UTF-8 that stops the text there.
    bad_utf8_at: Option<u64>,
    /// Stream offset of `buffer[0]`.
    base: u64,
}

/// How scanning one value from the window went.
enum Scanned<T> {
    Done(T, usize),
    NeedMore,
    Invalid(usize, Why),
}

impl<T> From<Scan> for Scanned<T> {
    /// The outcomes that carry no value.
    fn from(scan: Scan) -> Self {
        match scan {
            Scan::Invalid(at, why) => Scanned::Invalid(at, why),
            Scan::NeedMore | Scan::Done(_) => Scanned::NeedMore,
        }
    }
}

impl<R: Read> Window<R> {
    fn new(source: R, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Window {
            source,
            buffer: Vec::new(),
            checked: 0,
            filled: 0,
            pos: 0,
            capacity,
            eof: false,
            bad_utf8_at: None,
            base: 0,
        }
    }

    /// The checked text, consumed part included.
    fn text(&self) -> &str {
        let checked = &self.buffer[..self.checked];
        // SAFETY: `refill` is the only writer of `buffer` and `checked`: it
        // moves `checked` past bytes only after `str::from_utf8` accepted
        // them, and drops consumed text only up to a character boundary
        // (asserted there), so `buffer[..checked]` is always whole UTF-8.
        unsafe { std::str::from_utf8_unchecked(checked) }
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    fn rest(&self) -> &[u8] {
        &self.buffer[self.pos..self.checked]
    }

    /// Reads more input; false when nothing more can be had.
    fn refill(&mut self) -> Result<bool, ReadError> {
        if self.pos > 0 {
            // What stays must start a character to remain text (see `text`).
            assert!(self.text().is_char_boundary(self.pos));
            self.buffer.copy_within(self.pos..self.filled, 0);
            self.checked -= self.pos;
            self.filled -= self.pos;
            self.base += self.pos as u64;
            self.pos = 0;
        }
        if self.bad_utf8_at.is_some() || (self.eof && self.filled == self.checked) {
            return Ok(false);
        }
        // Read at least as much as is already waiting, so a huge element
        // doubles the window instead of growing it chunk by chunk.
        let want = self
            .capacity
            .saturating_sub(self.checked)
            .max(self.checked)
            .max(1);
        let target = self.filled + want;
        while self.filled < target {
            // The buffer grows with what is read, so a small trace never
            // pays for a big window.
            let room = target.min(self.filled + READ_CHUNK);
            if self.buffer.len() < room {
                self.buffer.resize(room, 0);
            }
            match self.source.read(&mut self.buffer[self.filled..room]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        let before = self.checked;
        match std::str::from_utf8(&self.buffer[self.checked..self.filled]) {
            Ok(_) => self.checked = self.filled,
            Err(e) => {
                // A character cut by the read stays unchecked for the next one.
                self.checked += e.valid_up_to();
                if e.error_len().is_some() || self.eof {
                    self.bad_utf8_at = Some(self.base + self.checked as u64);
                }
            }
        }
        Ok(self.checked > before)
    }

    /// The next byte that is not JSON whitespace (or a BOM), not consumed.
    fn peek_significant(&mut self) -> Result<Option<u8>, ReadError> {
        loop {
            self.pos = skip_ws(&self.buffer[..self.checked], self.pos);
            if let Some(&b) = self.rest().first() {
                if self.base == 0 && self.pos == 0 && self.text().starts_with('\u{feff}') {
                    // A byte order mark, only at the very start.
                    self.pos += '\u{feff}'.len_utf8();
                    continue;
                }
                return Ok(Some(b));
            }
            if !self.refill()? {
                return match self.bad_utf8_at {
                    Some(at) => Err(bad_utf8(at)),
                    None => Ok(None),
                };
            }
        }
    }

    /// Scans one value at the current position with `scan` (given the
    /// unconsumed text), refilling the window and scanning again while the
    /// value runs past its end. `Ok(None)`: the input ends inside it.
    fn scan_with<T>(
        &mut self,
        mut scan: impl FnMut(&str) -> Scanned<T>,
    ) -> Result<Option<T>, ReadError> {
        loop {
            match scan(&self.text()[self.pos..]) {
                Scanned::Done(value, used) => {
                    self.pos += used;
                    return Ok(Some(value));
                }
                Scanned::NeedMore => {
                    if !self.refill()? {
                        return match self.bad_utf8_at {
                            Some(at) => Err(bad_utf8(at)),
                            None => Ok(None),
                        };
                    }
                }
                Scanned::Invalid(at, why) => return Err(self.syntax_error(at, why.message())),
            }
        }
    }

    fn syntax_error(&self, at: usize, why: &str) -> ReadError {
        ReadError::Syntax {
            offset: self.base + (self.pos + at) as u64,
            message: why.to_string(),
        }
    }

    /// Consumes `expected` after optional whitespace.
    fn expect(&mut self, expected: u8, events: u64, what: &'static str) -> Result<(), ReadError> {
        match self.peek_significant()? {
            Some(b) if b == expected => {
                self.advance(1);
                Ok(())
            }
            None => Err(ReadError::Truncated { events }),
            Some(_) => Err(self.syntax_error(0, what)),
        }
    }

    /// Only whitespace may follow the trace.
    fn expect_end(&mut self) -> Result<(), ReadError> {
        match self.peek_significant()? {
            None => Ok(()),
            Some(_) => Err(self.syntax_error(0, "unexpected text after the end of the trace")),
        }
    }

    /// Reads `{ ... }` at the top level: finds `traceEvents` and the keys
    /// worth keeping, skipping every other value.
    fn read_top_object<F>(
        &mut self,
        footer: &mut TraceFooter,
        on_element: &mut F,
    ) -> Result<(), ReadError>
    where
        F: FnMut(Element<'_, '_>) -> ControlFlow<()>,
    {
        let mut saw_events = false;
        if self.peek_significant()? == Some(b'}') {
            self.advance(1);
        } else {
            loop {
                let events = footer.elements;
                let truncated = || ReadError::Truncated { events };
                if self.peek_significant()? != Some(b'"') {
                    return match self.peek_significant()? {
                        None => Err(truncated()),
                        Some(_) => {
                            Err(self.syntax_error(0, "expected a key in the top-level object"))
                        }
                    };
                }
                let key = self
                    .scan_with(|rest| match scan_string(rest.as_bytes(), 0) {
                        Scan::Done(end) => {
                            Scanned::Done(RawText::of(&rest[..end]).text().into_owned(), end)
                        }
                        other => other.into(),
                    })?
                    .ok_or_else(truncated)?;
                self.expect(b':', events, "expected ':' after a key")?;
                if key == "traceEvents" {
                    match self.peek_significant()? {
                        Some(b'[') => {
                            self.advance(1);
                            saw_events = true;
                            self.read_events(footer, on_element)?;
                            if footer.stopped {
                                return Ok(());
                            }
                        }
                        None => return Err(truncated()),
                        Some(_) => {
                            return Err(ReadError::NotATrace(
                                "its \"traceEvents\" is not an array".into(),
                            ))
                        }
                    }
                } else {
                    self.peek_significant()?;
                    let base = self
                        .scan_with(|rest| match scan_value(rest.as_bytes(), 0) {
                            Scan::Done(end) => Scanned::Done(
                                (key == "baseTimeNanoseconds")
                                    .then(|| number::integer_text(&rest[..end]))
                                    .flatten(),
                                end,
                            ),
                            other => other.into(),
                        })?
                        .ok_or_else(truncated)?;
                    if base.is_some() {
                        footer.base_time_ns = base;
                    }
                }
                match self.peek_significant()? {
                    Some(b',') => self.advance(1),
                    Some(b'}') => {
                        self.advance(1);
                        break;
                    }
                    None => return Err(truncated()),
                    Some(_) => {
                        return Err(
                            self.syntax_error(0, "expected ',' or '}' in the top-level object")
                        )
                    }
                }
            }
        }
        if !saw_events {
            return Err(ReadError::NotATrace(
                "it has no \"traceEvents\" array".into(),
            ));
        }
        self.expect_end()
    }

    /// Reads array elements up to and including the closing `]`.
    fn read_events<F>(
        &mut self,
        footer: &mut TraceFooter,
        on_element: &mut F,
    ) -> Result<(), ReadError>
    where
        F: FnMut(Element<'_, '_>) -> ControlFlow<()>,
    {
        if self.peek_significant()? == Some(b']') {
            self.advance(1);
            return Ok(());
        }
        loop {
            let events = footer.elements;
            if self.peek_significant()?.is_none() {
                return Err(ReadError::Truncated { events });
            }
            let mut flow = ControlFlow::Continue(());
            let scanned = self.scan_with(|rest| match scan_event(rest) {
                Scanned::Done(Some(event), used) => {
                    flow = on_element(Element::Event(&event));
                    Scanned::Done((), used)
                }
                Scanned::Done(None, used) => {
                    flow = on_element(Element::NotAnObject);
                    Scanned::Done((), used)
                }
                Scanned::NeedMore => Scanned::NeedMore,
                Scanned::Invalid(at, why) => Scanned::Invalid(at, why),
            })?;
            if scanned.is_none() {
                return Err(ReadError::Truncated { events });
            }
            footer.elements += 1;
            if flow.is_break() {
                footer.stopped = true;
                return Ok(());
            }
            // Most traces have no blanks between events.
            if self.rest().first() == Some(&b',') {
                self.advance(1);
                continue;
            }
            match self.peek_significant()? {
                Some(b',') => self.advance(1),
                Some(b']') => {
                    self.advance(1);
                    return Ok(());
                }
                None => {
                    return Err(ReadError::Truncated {
                        events: footer.elements,
                    })
                }
                Some(_) => {
                    return Err(self.syntax_error(0, "expected ',' or ']' between trace events"))
                }
            }
        }
    }
}

/// Scans one element of `traceEvents` at the start of `text`: an object
/// becomes a [`RawEvent`] borrowing from `text`; anything else is skipped
/// (`None`).
fn scan_event(text: &str) -> Scanned<Option<RawEvent<'_>>> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'{') {
        return match scan_value(bytes, 0) {
            Scan::Done(end) => Scanned::Done(None, end),
            other => other.into(),
        };
    }
    let mut event = RawEvent::default();
    let mut i = skip_ws(bytes, 1);
    match bytes.get(i) {
        None => return Scanned::NeedMore,
        Some(b'}') => return Scanned::Done(Some(event), i + 1),
        Some(_) => {}
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return Scanned::Invalid(i, Why::KeyExpected);
        }
        let key_start = i;
        let mut key_escaped = false;
        let (key_end, field) = match known_key(bytes, i) {
            Some((end, field)) => (end, Some(field)),
            None => match scan_string_escapes(bytes, i, &mut key_escaped) {
                Scan::Done(end) => (end, None),
                other => return other.into(),
            },
        };
        i = skip_ws(bytes, key_end);
        match bytes.get(i) {
            None => return Scanned::NeedMore,
            Some(b':') => {}
            Some(_) => return Scanned::Invalid(i, Why::ColonExpected),
        }
        let field = match field {
            Some(field) => Some(field),
            None if key_escaped => text
                .get(key_start..key_end)
                .map(|raw| RawText::scanned(raw, true).text())
                .and_then(|key| Field::of(key.as_bytes())),
            None => Field::of(&bytes[key_start + 1..key_end - 1]),
        };
        let value_start = skip_ws(bytes, i + 1);
        // Strings and numbers, nearly every value, skip the general scanner;
        // times are converted as they are scanned.
        let mut value_escaped = false;
        let mut nanos = None;
        let scanned = match bytes.get(value_start) {
            Some(b'"') => scan_string_escapes(bytes, value_start, &mut value_escaped),
            Some(b'0'..=b'9' | b'-') if matches!(field, Some(Field::Ts | Field::Dur)) => {
                let (scan, value) = number::scan_micros(bytes, value_start);
                nanos = value;
                scan
            }
            Some(b'0'..=b'9' | b'-') => json_scan::scan_number(bytes, value_start),
            _ => scan_value(bytes, value_start),
        };
        let value_end = match scanned {
            Scan::Done(end) => end,
            other => return other.into(),
        };
        let Some(value) = slice_text(text, value_start, value_end) else {
            return Scanned::Invalid(value_start, Why::NotText);
        };
        // A repeated key: the last one wins, as in most JSON readers.
        match field {
            Some(Field::Ph) => event.ph = Some(value),
            Some(Field::Name) => event.name = Some(RawText::scanned(value, value_escaped)),
            Some(Field::Cat) => event.cat = Some(RawText::scanned(value, value_escaped)),
            Some(Field::Ts) => event.ts = Some(Micros { raw: value, nanos }),
            Some(Field::Dur) => event.dur = Some(Micros { raw: value, nanos }),
            Some(Field::Pid) => event.pid = Some(value),
            Some(Field::Tid) => event.tid = Some(value),
            Some(Field::Id) => event.id = Some(value),
            Some(Field::Args) => event.args = Some(value),
            None => {
                let key = text
                    .get(key_start..key_end)
                    .map(|raw| RawText::scanned(raw, key_escaped).text())
                    .unwrap_or_default();
                event.others.push((key, value));
            }
        }
        // Most members are followed by `,"`: the next key, no blanks.
        if bytes.get(value_end) == Some(&b',') && bytes.get(value_end + 1) == Some(&b'"') {
            i = value_end + 1;
            continue;
        }
        i = value_end;
        match next_member(bytes, &mut i) {
            Some(Scanned::Done((), end)) => return Scanned::Done(Some(event), end),
            Some(Scanned::NeedMore) => return Scanned::NeedMore,
            Some(Scanned::Invalid(at, why)) => return Scanned::Invalid(at, why),
            None => {}
        }
    }
}

/// The event keys merge reads.
#[derive(Clone, Copy)]
enum Field {
    Ph,
    Name,
    Cat,
    Ts,
    Dur,
    Pid,
    Tid,
    Id,
    Args,
}

impl Field {
    fn of(key: &[u8]) -> Option<Field> {
        Some(match key {
            b"ph" => Field::Ph,
            b"name" => Field::Name,
            b"cat" => Field::Cat,
            b"ts" => Field::Ts,
            b"dur" => Field::Dur,
            b"pid" => Field::Pid,
            b"tid" => Field::Tid,
            b"id" => Field::Id,
            b"args" => Field::Args,
            _ => return None,
        })
    }
}

/// Recognises a known key (quotes included, no escapes) at `at` from the
/// next eight bytes at once: the end of the key and its field.
fn known_key(bytes: &[u8], at: usize) -> Option<(usize, Field)> {
    const fn word(key: &[u8]) -> u64 {
        let mut value = 0u64;
        let mut k = 0;
        while k < key.len() {
            value |= (key[k] as u64) << (8 * k);
            k += 1;
        }
        value
    }
    const MASK4: u64 = 0xFFFF_FFFF;
    const MASK5: u64 = 0xFF_FFFF_FFFF;
    const MASK6: u64 = 0xFFFF_FFFF_FFFF;
    let chunk = bytes.get(at..)?.first_chunk::<8>()?;
    let w = u64::from_le_bytes(*chunk);
    let (len, field) = match (w & MASK4, w & MASK5, w & MASK6) {
        (x, _, _) if x == word(b"\"ph\"") => (4, Field::Ph),
        (x, _, _) if x == word(b"\"ts\"") => (4, Field::Ts),
        (x, _, _) if x == word(b"\"id\"") => (4, Field::Id),
        (_, x, _) if x == word(b"\"pid\"") => (5, Field::Pid),
        (_, x, _) if x == word(b"\"tid\"") => (5, Field::Tid),
        (_, x, _) if x == word(b"\"dur\"") => (5, Field::Dur),
        (_, x, _) if x == word(b"\"cat\"") => (5, Field::Cat),
        (_, _, x) if x == word(b"\"name\"") => (6, Field::Name),
        (_, _, x) if x == word(b"\"args\"") => (6, Field::Args),
        _ => return None,
    };
    Some((at + len, field))
}

/// `text[start..end]` for offsets the scanner found; `None` when they are
/// not character boundaries in order. Written out because the generic
/// `str::get` stays out of line in the event loop.
#[inline(always)]
fn slice_text(text: &str, start: usize, end: usize) -> Option<&str> {
    if start <= end && text.is_char_boundary(start) && text.is_char_boundary(end) {
        // SAFETY: both ends are character boundaries of `text` (so within
        // it) and in order: what `str::get` checks before the same call.
        Some(unsafe { text.get_unchecked(start..end) })
    } else {
        None
    }
}

/// After a member's value: `,` moves `i` to the next key (`None`), `}` ends
/// the object.
fn next_member(bytes: &[u8], i: &mut usize) -> Option<Scanned<()>> {
    let at = skip_ws(bytes, *i);
    match bytes.get(at) {
        None => Some(Scanned::NeedMore),
        Some(b',') => {
            *i = skip_ws(bytes, at + 1);
            if *i >= bytes.len() {
                Some(Scanned::NeedMore)
            } else {
                None
            }
        }
        Some(b'}') => Some(Scanned::Done((), at + 1)),
        Some(_) => Some(Scanned::Invalid(at, Why::SeparatorExpected)),
    }
}

fn bad_utf8(offset: u64) -> ReadError {
    ReadError::Syntax {
        offset,
        message: "the text is not valid UTF-8 here".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(text: &str) -> Result<(Vec<String>, TraceFooter), ReadError> {
        let mut seen = Vec::new();
        let footer = read_trace(text.as_bytes(), |element| {
            seen.push(match element {
                Element::Event(e) if e.is_empty() => "{}".to_string(),
                Element::Event(e) => format!(
                    "{}:{}",
                    e.phase(),
                    e.name.map(|n| n.text().into_owned()).unwrap_or_default()
                ),
                Element::NotAnObject => "!".to_string(),
            });
            ControlFlow::Continue(())
        })?;
        Ok((seen, footer))
    }

    #[test]
    fn reads_jax_style_objects_with_a_trailing_empty_element() {
        let (seen, footer) = collect(
            r#"{"displayTimeUnit":"ns","metadata":{"highres-ticks":true},"traceEvents":[
                {"ph":"M","pid":701,"name":"process_name","args":{"name":"/host:CPU"}},
                {"ph":"X","pid":701,"tid":1,"ts":43.826000000000001,"dur":30.5,"name":"a\"b"},
                {}]}"#,
        )
        .unwrap();
        assert_eq!(seen, ["M:process_name", "X:a\"b", "{}"]);
        assert_eq!(footer.elements, 3);
        assert_eq!(footer.base_time_ns, None);
    }

    #[test]
    fn finds_kineto_base_time_after_the_events_and_bare_arrays() {
        let (_, footer) = collect(
            r#"{"schemaVersion":1,"traceEvents":[{"ph":"X","name":"k"}],"baseTimeNanoseconds":1763850000123456789}"#,
        )
        .unwrap();
        assert_eq!(footer.base_time_ns, Some(1_763_850_000_123_456_789));
        let (seen, _) = collect("\u{feff}[{\"ph\":\"i\",\"name\":\"x\"}, 3 ]").unwrap();
        assert_eq!(seen, ["i:x", "!"]);
    }

    #[test]
    fn elements_larger_than_the_window_are_read_whole() {
        let big = "y".repeat(WINDOW * 2 + 17);
        let text = format!(r#"[{{"ph":"X","name":"{big}"}},{{"ph":"X","name":"z"}}]"#);
        let (seen, _) = collect(&text).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], "X:z");
    }

    #[test]
    fn bad_inputs_are_classified() {
        assert!(matches!(collect(""), Err(ReadError::Empty)));
        assert!(matches!(collect("  \n"), Err(ReadError::Empty)));
        assert!(matches!(
            collect(r#"{"traceEvents":[{"ph":"X"},{"ph":"#),
            Err(ReadError::Truncated { events: 1 })
        ));
        assert!(matches!(
            collect(r#"{"traceEvents":["#),
            Err(ReadError::Truncated { events: 0 })
        ));
        assert!(matches!(
            collect(r#"{"a":1}"#),
            Err(ReadError::NotATrace(_))
        ));
        assert!(matches!(
            collect(r#"{"traceEvents":3}"#),
            Err(ReadError::NotATrace(_))
        ));
        assert!(matches!(collect("42"), Err(ReadError::NotATrace(_))));
        assert!(matches!(
            collect(r#"{"traceEvents":[{"ph":"X"} {"ph":"X"}]}"#),
            Err(ReadError::Syntax { .. })
        ));
        assert!(matches!(
            collect(r#"{"traceEvents":[]} trailing"#),
            Err(ReadError::Syntax { .. })
        ));
        assert!(matches!(
            collect("{\"traceEvents\":[\n  {\"ph\":\"X\",\n \"ts\":12x}]}"),
            Err(ReadError::Syntax { .. })
        ));
        let bad_utf8 = read_trace(
            &b"[{\"name\":\"a\xff\"}]"[..],
            |_| ControlFlow::Continue(()),
        );
        assert!(
            matches!(bad_utf8, Err(ReadError::Syntax { offset: 11, .. })),
            "{bad_utf8:?}"
        );
    }

    #[test]
    fn every_window_size_reads_the_same_values() {
        // Tiny windows put every value at the window's edge at some point.
        let text = r#"{"displayTimeUnit":"ns","traceEvents":[{"ph":"X","ts":12345.678,"name":"a\u0041é日本"},{"ph":"M","args":{"k":[1,2]}},{}],"baseTimeNanoseconds":1763850000123456789}"#;
        for window in 1..text.len() + 2 {
            let mut seen = Vec::new();
            let footer = read_trace_windowed(text.as_bytes(), window, |element| {
                if let Element::Event(e) = element {
                    seen.push((
                        e.ts.map(|t| (t.raw.to_string(), t.nanos())),
                        e.name.map(|n| n.text().into_owned()),
                        e.args.map(|a| a.to_string()),
                    ));
                }
                ControlFlow::Continue(())
            })
            .unwrap();
            assert_eq!(
                footer.base_time_ns,
                Some(1_763_850_000_123_456_789),
                "window {window}"
            );
            assert_eq!(footer.elements, 3);
            assert_eq!(
                seen[0].0,
                Some(("12345.678".to_string(), Some(12_345_678))),
                "window {window}"
            );
            assert_eq!(seen[0].1.as_deref(), Some("aAé日本"));
            assert_eq!(seen[1].2.as_deref(), Some(r#"{"k":[1,2]}"#));
        }
    }
}
