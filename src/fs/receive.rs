//! Assembling one incoming file: `FileStart`, `Chunk`s, `FileEnd` from one
//! peer become a temp file that replaces the real one only if its blake3
//! hash is the announced one (rule 3) and the path still holds what the
//! index expected (rule 6: a local edit made meanwhile is never lost).
//!
//! Owns: writing and verifying received bytes. Must not: decide whether the
//! content is wanted (the engine does, once per frame).

use crate::engine::Transfer;
use crate::fs::delta::{apply_segment, read_segment, segment_count, whole_copy_len, SEGMENT};
use crate::fs::store::Store;
use crate::fs::temp::TempFile;
use crate::wire::{ContentMode, Entry, Hash, RelPath};
use std::fs::File;

/// A file being received.
pub struct Incoming {
    pub entry: Entry,
    /// What the path must still hold when the new content replaces it.
    expected: Option<Entry>,
    /// `None` while discarding content that was not asked for.
    tmp: Option<TempFile>,
    /// For a delta: our copy it applies to, and its length.
    base: Option<(File, u64)>,
    pub transfer: Transfer,
    /// The engine asked for this content; its outcome must be reported.
    pub wanted: bool,
    hasher: blake3::Hasher,
    written: u64,
    segments: u64,
    pub wire_bytes: u64,
    error: Option<String>,
    /// A temp file of this transfer was dropped after the user moved it.
    temp_lost: bool,
}

impl Incoming {
    /// Start receiving `entry`. `expected`: `Ok` with what the path must
    /// still hold if the content was asked for, `Err` with why not.
    pub fn start(
        store: &Store,
        entry: Entry,
        content: ContentMode,
        expected: Result<Option<Entry>, String>,
        folder: Option<RelPath>,
        frame_bytes: usize,
    ) -> Incoming {
        let transfer = match content {
            ContentMode::Delta { .. } => Transfer::Delta,
            ContentMode::Full => Transfer::Full,
        };
        let mut inc = Incoming {
            entry,
            expected: None,
            tmp: None,
            base: None,
            transfer,
            wanted: expected.is_ok(),
            hasher: blake3::Hasher::new(),
            written: 0,
            segments: 0,
            wire_bytes: frame_bytes as u64,
            error: None,
            temp_lost: false,
        };
        let expected = match expected {
            Ok(e) => e,
            Err(reason) => {
                inc.error = Some(reason);
                return inc;
            }
        };
        if let ContentMode::Delta { base } = content {
            match &expected {
                Some(local) if local.hash == base => match store.full_path(&local.path).and_then(|p| {
                    File::open(&p).map_err(|e| crate::fs::store::StoreError::Io {
                        path: p.display().to_string(),
                        source: e,
                    })
                }) {
                    Ok(f) => inc.base = Some((f, local.size)),
                    Err(e) => inc.error = Some(format!("cannot open the delta's base: {e}")),
                },
                _ => inc.error = Some("our copy is not the delta's base".into()),
            }
        }
        if inc.error.is_none() {
            match store.create_temp_in(&inc.entry.path, folder.as_ref()) {
                Ok(t) => inc.tmp = Some(t),
                Err(e) => inc.error = Some(e.to_string()),
            }
        }
        inc.expected = expected;
        inc
    }

    /// Stop writing: the content is no longer wanted. Later chunks are
    /// ignored and the temp file is removed now.
    pub fn abandon(&mut self, reason: String) {
        self.error.get_or_insert(reason);
        self.discard_temp();
        self.base = None;
    }

    fn discard_temp(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            self.temp_lost |= !tmp.discard();
        }
    }

    /// The temp file being written, if any.
    pub fn temp_path(&self) -> Option<&std::path::Path> {
        self.tmp.as_ref().map(|t| t.path.as_path())
    }

    /// Whether a temp file of this transfer is no longer where it was
    /// written (the user moved its folder), so that dropping the transfer
    /// cannot remove it by name.
    pub fn temp_lost(&self) -> bool {
        self.temp_lost || self.temp_path().is_some_and(|t| !t.exists())
    }

    pub fn chunk(&mut self, data: &[u8], frame_bytes: usize) {
        self.wire_bytes += frame_bytes as u64;
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.write_chunk(data) {
            self.error = Some(e);
            self.discard_temp();
        }
    }

    fn write_chunk(&mut self, data: &[u8]) -> Result<(), String> {
        let Some((base, base_len)) = &mut self.base else {
            return self.append(Piece::Bytes(data));
        };
        let index = self.segments;
        if index >= segment_count(self.entry.size) {
            return Err("more delta segments than the file has".into());
        }
        self.segments += 1;
        // A segment the edit did not touch is copied from our copy in the
        // kernel, not read, rebuilt and written through user space.
        let at = index * SEGMENT;
        let base_seg_len = base_len.saturating_sub(at).min(SEGMENT);
        let rebuilt;
        let piece = if base_seg_len > 0 && whole_copy_len(data) == Some(base_seg_len) {
            Piece::Base { at, len: base_seg_len }
        } else {
            let base_seg = read_segment(base, *base_len, index).map_err(|e| e.to_string())?;
            rebuilt = apply_segment(&base_seg, data).map_err(|e| e.to_string())?;
            Piece::Bytes(&rebuilt)
        };
        if self.segments < segment_count(self.entry.size) && piece.len() != SEGMENT {
            return Err("a delta segment rebuilt the wrong length".into());
        }
        self.append(piece)
    }

    /// Add `piece` to the temp file and the hash.
    fn append(&mut self, piece: Piece<'_>) -> Result<(), String> {
        if self.written + piece.len() > self.entry.size {
            return Err("more bytes than announced".into());
        }
        let tmp = self.tmp.as_mut().ok_or("no temp file")?;
        match piece {
            Piece::Bytes(bytes) => {
                tmp.write(bytes).map_err(|e| e.to_string())?;
                self.hasher.update(bytes);
            }
            Piece::Base { at, len } => {
                let (base, _) = self.base.as_ref().ok_or("no delta base")?;
                let copied = tmp.append_range(base, at, len as usize).map_err(|e| e.to_string())?;
                self.hasher.update(&copied);
            }
        }
        self.written += piece.len();
        Ok(())
    }

    /// The content is complete: verify it. What remains is to make it
    /// durable and put it in place (`TempFile::make_durable`, `Store::install`).
    pub fn finish(mut self) -> Result<Received, Unfinished> {
        match self.verified() {
            Ok(tmp) => Ok(Received {
                entry: self.entry,
                tmp,
                expected: self.expected,
                wire_bytes: self.wire_bytes,
                transfer: self.transfer,
            }),
            Err(reason) => {
                self.discard_temp();
                Err(Unfinished {
                    reason,
                    temp_lost: self.temp_lost,
                })
            }
        }
    }

    /// The temp file, if it holds all of the announced content.
    fn verified(&mut self) -> Result<TempFile, String> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.written != self.entry.size {
            return Err(format!("got {} of {} bytes", self.written, self.entry.size));
        }
        if Hash::from(self.hasher.finalize()) != self.entry.hash {
            return Err("content does not match the announced hash".into());
        }
        self.tmp.take().ok_or_else(|| "no temp file".into())
    }
}

/// Why an incoming file was not finished, and whether its temp file was
/// no longer where it was written (the user moved its folder), so that
/// only a sweep by name removes it. Known from removing it, at no cost to
/// the files that do finish.
#[derive(Debug)]
pub struct Unfinished {
    pub reason: String,
    pub temp_lost: bool,
}

/// What a chunk adds to the new file.
enum Piece<'a> {
    /// These bytes (a whole file's chunk, or a rebuilt delta segment).
    Bytes(&'a [u8]),
    /// `len` bytes of our copy from `at`: a segment the edit did not touch.
    Base { at: u64, len: u64 },
}

impl Piece<'_> {
    fn len(&self) -> u64 {
        match self {
            Piece::Bytes(b) => b.len() as u64,
            Piece::Base { len, .. } => *len,
        }
    }
}

/// A received file with the announced content, in its temp file.
pub struct Received {
    pub entry: Entry,
    pub tmp: TempFile,
    /// What the path must still hold when it is put in place.
    pub expected: Option<Entry>,
    /// What it cost on the wire.
    pub wire_bytes: u64,
    pub transfer: Transfer,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::delta::{read_segment, segment_count, FileSignature};
    use crate::fs::testing::{entry_for, noise, setup};
    use std::io::Cursor;

    /// Untouched segments are copied from our copy (in the kernel), the
    /// edited one rebuilt: the temp file holds exactly the new content,
    /// including a shorter last segment and growth past the base's end.
    #[test]
    fn a_delta_rebuilds_the_new_file_copying_untouched_segments() {
        let (dir, store) = setup();
        let store = store.with_inline_hash_max(u64::MAX);
        let seg = SEGMENT as usize;
        let base = noise(3 * seg + 1234, 1);
        std::fs::write(dir.path().join("big"), &base).unwrap();
        let local = entry_for(&store, "big");
        for new in [
            {
                let mut n = base.clone();
                n[seg + 100..seg + 4196].copy_from_slice(&noise(4096, 2));
                n
            },
            {
                let mut n = base.clone();
                n.extend(noise(seg, 3));
                n
            },
            base[..2 * seg].to_vec(),
        ] {
            let sig = FileSignature::of_file(&mut Cursor::new(&base), base.len() as u64).unwrap();
            let sig = FileSignature::from_bytes(&sig.to_bytes()).unwrap();
            let mut entry = local.clone();
            entry.size = new.len() as u64;
            entry.hash = Hash::of(&new);
            let content = ContentMode::Delta { base: local.hash };
            let mut inc = Incoming::start(&store, entry.clone(), content, Ok(Some(local.clone())), None, 0);
            let mut cur = Cursor::new(&new);
            for i in 0..segment_count(new.len() as u64) {
                let data = read_segment(&mut cur, new.len() as u64, i).unwrap();
                inc.chunk(&sig.diff_segment(i as usize, &data).unwrap(), 0);
            }
            let received = inc.finish().unwrap();
            assert_eq!(std::fs::read(&received.tmp.path).unwrap(), new);
        }
    }
}
