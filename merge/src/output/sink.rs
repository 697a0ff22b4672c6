//! Where converted ranks go: one output file shared by the rank workers.
//!
//! `.pftrace` pieces are appended as they come (packets of different
//! sequences may interleave), except those of a rank that can still fail
//! after its first piece. Those, and `.json` / `.json.gz` ranks, are staged
//! (in memory up to a size, then in an unnamed file beside the output) and
//! appended when the rank succeeded, so a rank that fails halfway leaves
//! nothing behind. Gzip output is compressed in parallel the way pigz does
//! it: each piece is a raw deflate stream ended by a sync flush (byte
//! aligned, never final, no back-references into other pieces), pieces are
//! concatenated behind one gzip header, and their CRCs are combined.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use flate2::{Compress, Compression, FlushCompress};
use tempfile::{NamedTempFile, SpooledTempFile};

/// Staged rank text stays in memory up to this size, then spills to disk.
const SPOOL_IN_MEMORY: usize = 32 << 20;
/// Staged packets (an xplane rank's, written as it is read) spill past
/// this: its memory bound counts on about one output chunk, not more.
pub const PACKET_STAGE_IN_MEMORY: usize = 4 << 20;
/// gzip member header: magic, deflate, no flags, no mtime, no extra flags,
/// unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// A final, empty, fixed-Huffman deflate block: ends the stream.
const DEFLATE_FINAL_EMPTY_BLOCK: [u8; 2] = [0x03, 0x00];

/// Takes finished pieces of output from any thread.
pub trait ChunkSink: Sync {
    fn write_chunk(&self, bytes: &[u8]) -> io::Result<()>;
}

/// The output file, written under a temporary name beside the final one and
/// renamed into place only when the whole merge succeeded.
pub struct OutputFile {
    file: Mutex<File>,
    temp: tempfile::TempPath,
    path: PathBuf,
    /// Where staged ranks spill: beside the output, where there is room
    /// for it.
    dir: PathBuf,
}

impl OutputFile {
    pub fn create(path: &Path) -> io::Result<Self> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let temp = NamedTempFile::with_prefix_in(".rankline-merge-", dir)?;
        let (file, temp) = temp.into_parts();
        Ok(OutputFile {
            file: Mutex::new(file),
            temp,
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        })
    }

    /// A stage for one rank's output, to [`append`](Self::append) once the
    /// rank succeeded: in memory up to `in_memory` bytes, then in an
    /// unnamed file beside the output.
    pub fn stage(&self, in_memory: usize) -> SpooledTempFile {
        SpooledTempFile::new_in(in_memory, &self.dir)
    }

    /// Appends a stage's contents to the output.
    pub fn append(&self, mut stage: SpooledTempFile) -> io::Result<()> {
        stage.seek(SeekFrom::Start(0))?;
        self.with_file(|file| io::copy(&mut stage, file).map(drop))
    }

    /// Moves the finished file into place; returns its size.
    pub fn commit(self) -> io::Result<u64> {
        let file = self.file.into_inner().unwrap_or_else(|e| e.into_inner());
        // Temporary files are private; the output is an ordinary file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        let size = file.metadata()?.len();
        drop(file);
        self.temp.persist(&self.path).map_err(|e| e.error)?;
        Ok(size)
    }

    pub fn with_file<T>(&self, f: impl FnOnce(&mut File) -> io::Result<T>) -> io::Result<T> {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut file)
    }
}

impl ChunkSink for OutputFile {
    fn write_chunk(&self, bytes: &[u8]) -> io::Result<()> {
        self.with_file(|file| file.write_all(bytes))
    }
}

/// A rank's own file (a Perfetto archive member) or stage.
impl<W: Write + Send> ChunkSink for Mutex<W> {
    fn write_chunk(&self, bytes: &[u8]) -> io::Result<()> {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(bytes)
    }
}

/// A JSON text output, plain or gzipped.
pub struct TextOutput {
    out: OutputFile,
    gzip: Option<Mutex<GzipState>>,
}

/// The running CRC and length of everything written to the gzip member.
struct GzipState {
    crc: crc32fast::Hasher,
    len: u64,
}

impl TextOutput {
    pub fn create(path: &Path, gzip: bool) -> io::Result<Self> {
        let out = OutputFile::create(path)?;
        if gzip {
            out.write_chunk(&GZIP_HEADER)?;
        }
        Ok(TextOutput {
            out,
            gzip: gzip.then(|| {
                Mutex::new(GzipState {
                    crc: crc32fast::Hasher::new(),
                    len: 0,
                })
            }),
        })
    }

    /// A stage for one rank's text.
    pub fn stage(&self) -> Stage {
        Stage {
            spool: self.out.stage(SPOOL_IN_MEMORY),
            gzip: self.gzip.is_some(),
            dir: self.out.dir.clone(),
            len: 0,
        }
    }

    /// Writes `text` right away (the header and trailer).
    pub fn write_now(&self, text: &[u8]) -> io::Result<()> {
        let mut stage = self.stage();
        stage.push(text)?;
        self.commit_stage(stage, &[])
    }

    /// Appends a finished stage, with `edits` applied, to the output.
    pub fn commit_stage(&self, stage: Stage, edits: &[Edit]) -> io::Result<()> {
        let (spool, crc, len) = stage.finish(edits)?;
        // Held while appending: the CRCs combine in the file's order.
        let mut gzip = self
            .gzip
            .as_ref()
            .map(|g| g.lock().unwrap_or_else(|e| e.into_inner()));
        self.out.append(spool)?;
        if let Some(state) = gzip.as_mut() {
            state.crc.combine(&crc);
            state.len += len;
        }
        Ok(())
    }

    /// Ends the gzip member (if any) and moves the file into place.
    pub fn commit(self) -> io::Result<u64> {
        if let Some(state) = self.gzip {
            let state = state.into_inner().unwrap_or_else(|e| e.into_inner());
            let mut trailer = DEFLATE_FINAL_EMPTY_BLOCK.to_vec();
            trailer.extend_from_slice(&state.crc.finalize().to_le_bytes());
            // ISIZE is the length modulo 2^32.
            trailer.extend_from_slice(&(state.len as u32).to_le_bytes());
            self.out.write_chunk(&trailer)?;
        }
        self.out.commit()
    }
}

/// A change to a rank's staged text, made as it is committed: `remove`
/// bytes at offset `at` give way to `insert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub at: u64,
    pub remove: u64,
    pub insert: Vec<u8>,
}

/// One rank's text, staged as written. It is compressed (when the output
/// is gzipped) only once the rank is complete, because the rank may still
/// edit what it wrote: which track an event lands on is known only after
/// all of the rank's events were seen.
pub struct Stage {
    spool: SpooledTempFile,
    gzip: bool,
    dir: PathBuf,
    len: u64,
}

impl Stage {
    pub fn push(&mut self, text: &[u8]) -> io::Result<()> {
        self.len += text.len() as u64;
        self.spool.write_all(text)
    }

    /// Bytes pushed so far: the offset of the next byte pushed.
    pub fn written(&self) -> u64 {
        self.len
    }

    /// The text with `edits` (in offset order, not overlapping) applied,
    /// compressed for a gzipped output; its CRC and length.
    fn finish(mut self, edits: &[Edit]) -> io::Result<(SpooledTempFile, crc32fast::Hasher, u64)> {
        if !self.gzip && edits.is_empty() {
            return Ok((self.spool, crc32fast::Hasher::new(), self.len));
        }
        self.spool.seek(SeekFrom::Start(0))?;
        let out = SpooledTempFile::new_in(SPOOL_IN_MEMORY, &self.dir);
        let mut sink = Finished {
            out,
            deflate: self.gzip.then(|| Compress::new(Compression::fast(), false)),
            crc: crc32fast::Hasher::new(),
            len: 0,
            compressed: Vec::new(),
        };
        copy_edited(&mut self.spool, edits, &mut sink)?;
        if let Some(deflate) = &mut sink.deflate {
            deflate_into(deflate, &[], &mut sink.compressed, FlushCompress::Sync)?;
            sink.out.write_all(&sink.compressed)?;
        }
        Ok((sink.out, sink.crc, sink.len))
    }
}

/// Copies `source` to `sink` with `edits` applied.
fn copy_edited(source: &mut impl Read, edits: &[Edit], sink: &mut impl Write) -> io::Result<()> {
    let mut at = 0;
    for edit in edits {
        let kept = edit
            .at
            .checked_sub(at)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "edits out of order"))?;
        io::copy(&mut source.take(kept), sink)?;
        io::copy(&mut source.take(edit.remove), &mut io::sink())?;
        sink.write_all(&edit.insert)?;
        at = edit.at + edit.remove;
    }
    io::copy(source, sink)?;
    Ok(())
}

/// Where a finished stage's text goes: compressed or as it is.
struct Finished {
    out: SpooledTempFile,
    deflate: Option<Compress>,
    crc: crc32fast::Hasher,
    len: u64,
    compressed: Vec<u8>,
}

impl Write for Finished {
    fn write(&mut self, text: &[u8]) -> io::Result<usize> {
        self.len += text.len() as u64;
        match &mut self.deflate {
            None => self.out.write_all(text)?,
            Some(deflate) => {
                self.crc.update(text);
                deflate_into(deflate, text, &mut self.compressed, FlushCompress::None)?;
                self.out.write_all(&self.compressed)?;
                self.compressed.clear();
            }
        }
        Ok(text.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compresses all of `input` into `out`; with a sync flush, until the
/// compressor has emitted everything.
fn deflate_into(
    deflate: &mut Compress,
    input: &[u8],
    out: &mut Vec<u8>,
    flush: FlushCompress,
) -> io::Result<()> {
    let mut consumed = 0;
    loop {
        if out.capacity() - out.len() < 32 << 10 {
            out.reserve(input.len() / 2 + (64 << 10));
        }
        let before = deflate.total_in();
        deflate
            .compress_vec(&input[consumed..], out, flush)
            .map_err(io::Error::other)?;
        consumed += (deflate.total_in() - before) as usize;
        // Spare room left means the compressor had nothing more to give.
        if consumed == input.len() && out.len() < out.capacity() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_all(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    #[test]
    fn parallel_gzip_pieces_make_one_valid_member() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json.gz");
        let output = TextOutput::create(&path, true).unwrap();
        output.write_now(b"[").unwrap();
        let pieces: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                format!("{{\"piece\":{i},\"pad\":\"{}\"}},", "x".repeat(100_000 * i)).into_bytes()
            })
            .collect();
        std::thread::scope(|scope| {
            for piece in &pieces {
                let output = &output;
                scope.spawn(move || {
                    let mut stage = output.stage();
                    for part in piece.chunks(7_777) {
                        stage.push(part).unwrap();
                    }
                    output.commit_stage(stage, &[]).unwrap();
                });
            }
        });
        output.write_now(b"0]").unwrap();
        output.commit().unwrap();

        let mut text = String::new();
        flate2::read::GzDecoder::new(&read_all(&path)[..])
            .read_to_string(&mut text)
            .unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), 5);
    }

    #[test]
    fn the_output_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        let output = TextOutput::create(&path, false).unwrap();
        output.write_now(b"[]").unwrap();
        assert!(!path.exists());
        assert_eq!(output.commit().unwrap(), 2);
        assert_eq!(read_all(&path), b"[]");
        let abandoned = TextOutput::create(&dir.path().join("y.json"), false).unwrap();
        drop(abandoned);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the temporary file is removed");
    }
}
