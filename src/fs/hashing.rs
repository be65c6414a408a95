//! Hashing files, and hashing large ones off the event loop.
//!
//! A look at the disk hashes a new or changed file before it can announce
//! it. Up to `INLINE_HASH_MAX` bytes that happens inline (a millisecond or
//! two); a larger file would stall the node for as long as the disk takes
//! to read it (seconds for a few GiB), and every peer's small change would
//! wait behind it. So a large file is queued instead: the look reports it
//! as not observed yet (unknown, so its old entry stands, rule 6), a
//! blocking thread hashes it (blake3 on all cores), and when the hash is
//! in, the node looks at the path again and this time finds the hash here,
//! for that exact version of the file (size, mtime, inode, change time).
//!
//! Owns: the queue of large files to hash and the hashes done, per
//! version. Must not: decide what a hash means (the engine does).

use crate::engine::Stat;
use crate::wire::{Hash, RelPath};
use std::collections::{HashMap, VecDeque};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Files up to this size are hashed inline by a look at the disk.
pub const INLINE_HASH_MAX: u64 = 4 * 1024 * 1024;
/// Reads of this size go to blake3's multi-threaded `update_rayon`, which
/// only pays off from a few hundred KiB up.
const PARALLEL_READ: usize = 1024 * 1024;

/// Hash a whole file of about `size` bytes, streaming (the buffer is no
/// larger than the file: clearing 256 KiB for a 300-byte file cost more
/// than hashing it). Returns the hash and the bytes read.
pub fn hash_file(path: &Path, size: u64) -> io::Result<(Hash, u64)> {
    hash_open(&mut super::special::open_for_reading(path)?, size)
}

fn hash_open(f: &mut File, size: u64) -> io::Result<(Hash, u64)> {
    let mut hasher = blake3::Hasher::new();
    let parallel = size >= PARALLEL_READ as u64;
    let mut buf = vec![0u8; (size as usize).clamp(4096, if parallel { PARALLEL_READ } else { 256 * 1024 })];
    let mut len = 0u64;
    loop {
        let n = read_full(f, &mut buf)?;
        if n == 0 {
            break;
        }
        match parallel {
            true => hasher.update_rayon(&buf[..n]),
            false => hasher.update(&buf[..n]),
        };
        len += n as u64;
    }
    Ok((hasher.finalize().into(), len))
}

/// Fill `buf` as far as the file goes (a short read mid-file would hand
/// `update_rayon` a small piece).
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// One version of a file: what must not change while it is hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub size: u64,
    pub mtime: i128,
    pub stat: Stat,
}

impl Version {
    pub fn of(meta: &Metadata) -> Version {
        Version {
            size: meta.len(),
            mtime: super::files::mtime_ns(meta),
            stat: stat_of(meta),
        }
    }
}

/// The inode and change time a look compares (`Stat`).
pub fn stat_of(meta: &Metadata) -> Stat {
    Stat {
        ino: meta.ino(),
        ctime: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
    }
}

/// A large file to hash off the loop (`HashJob::run` on a blocking thread).
#[derive(Debug)]
pub struct HashJob {
    pub path: RelPath,
    full: PathBuf,
    version: Version,
}

/// What a `HashJob` found: the hash of that version, or why not.
#[derive(Debug)]
pub struct Hashed {
    pub path: RelPath,
    version: Version,
    hash: Result<Hash, String>,
}

impl HashJob {
    /// Hash the file if it is still the version queued; blocking.
    pub fn run(self) -> Hashed {
        let hash = self.hash();
        Hashed {
            path: self.path,
            version: self.version,
            hash,
        }
    }

    fn hash(&self) -> Result<Hash, String> {
        let mut f = super::special::open_for_reading(&self.full).map_err(|e| e.to_string())?;
        let same = |f: &File| f.metadata().is_ok_and(|m| Version::of(&m) == self.version);
        if !same(&f) {
            return Err("changed before it was hashed".into());
        }
        let (hash, len) = hash_open(&mut f, self.version.size).map_err(|e| e.to_string())?;
        // Written while we read it: the watcher's event queues the new version.
        if len != self.version.size || !same(&f) {
            return Err("changed while it was hashed".into());
        }
        Ok(hash)
    }
}

/// The large files waiting to be hashed and the hashes done, shared by
/// the clones of a `Store`.
#[derive(Debug, Clone, Default)]
pub struct BackgroundHashes(Arc<Mutex<Queue>>);

#[derive(Debug, Default)]
struct Queue {
    /// The version of each path queued or being hashed.
    wanted: HashMap<RelPath, Version>,
    jobs: VecDeque<HashJob>,
    done: HashMap<RelPath, (Version, Hash)>,
}

/// What a look at a large file gets from `BackgroundHashes::lookup`.
pub enum Background {
    Hashed(Hash),
    /// Queued or being hashed: not observed yet.
    Pending,
}

impl BackgroundHashes {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while the lock was held leaves plain maps behind: go on.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The hash of `version` of `path` if it is done (it is handed out
    /// once: the index keeps it from then on); else queue it.
    pub fn lookup(&self, path: &RelPath, full: &Path, version: Version) -> Background {
        let mut q = self.lock();
        match q.done.remove(path) {
            Some((v, hash)) if v == version => return Background::Hashed(hash),
            _ => {}
        }
        if q.wanted.get(path) != Some(&version) {
            q.wanted.insert(path.clone(), version);
            q.jobs.retain(|j| &j.path != path);
            q.jobs.push_back(HashJob {
                path: path.clone(),
                full: full.to_path_buf(),
                version,
            });
        }
        Background::Pending
    }

    /// The next file to hash, if any.
    pub fn next_job(&self) -> Option<HashJob> {
        self.lock().jobs.pop_front()
    }

    /// Take in what a job found; `Err` says why the hash is not there.
    /// A version no longer wanted (the file changed again) is dropped.
    pub fn finish(&self, hashed: Hashed) -> Result<(), String> {
        let mut q = self.lock();
        if q.wanted.get(&hashed.path) != Some(&hashed.version) {
            return Err("changed again since it was queued".into());
        }
        q.wanted.remove(&hashed.path);
        let hash = hashed.hash?;
        q.done.insert(hashed.path, (hashed.version, hash));
        Ok(())
    }

    /// Files queued or being hashed.
    pub fn pending(&self) -> usize {
        self.lock().wanted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(len: usize) -> (tempfile::TempDir, RelPath, PathBuf, Version) {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("big");
        std::fs::write(&full, vec![7u8; len]).unwrap();
        let version = Version::of(&std::fs::metadata(&full).unwrap());
        (dir, RelPath::new("big").unwrap(), full, version)
    }

    #[test]
    fn a_queued_file_is_hashed_once_and_its_hash_handed_out_for_that_version() {
        let (_dir, path, full, version) = setup(3 * PARALLEL_READ + 5);
        let hashes = BackgroundHashes::default();
        assert!(matches!(hashes.lookup(&path, &full, version), Background::Pending));
        // Looking again while it waits queues nothing more.
        assert!(matches!(hashes.lookup(&path, &full, version), Background::Pending));
        let job = hashes.next_job().unwrap();
        assert!(hashes.next_job().is_none());
        hashes.finish(job.run()).unwrap();
        assert_eq!(hashes.pending(), 0);
        match hashes.lookup(&path, &full, version) {
            Background::Hashed(h) => assert_eq!(h, Hash::of(&vec![7u8; 3 * PARALLEL_READ + 5])),
            Background::Pending => panic!("the hash was done"),
        }
    }

    #[test]
    fn a_file_changed_after_it_was_queued_is_not_given_the_old_hash() {
        let (_dir, path, full, version) = setup(PARALLEL_READ);
        let hashes = BackgroundHashes::default();
        hashes.lookup(&path, &full, version);
        let job = hashes.next_job().unwrap();
        std::fs::write(&full, vec![8u8; PARALLEL_READ + 1]).unwrap();
        let newer = Version::of(&std::fs::metadata(&full).unwrap());
        // The job finds the file changed; the newer version is queued anew.
        assert!(hashes.finish(job.run()).is_err());
        assert!(matches!(hashes.lookup(&path, &full, newer), Background::Pending));
        let job = hashes.next_job().unwrap();
        hashes.finish(job.run()).unwrap();
        assert!(
            matches!(hashes.lookup(&path, &full, version), Background::Pending),
            "an old version gets no hash"
        );
        hashes.finish(hashes.next_job().unwrap().run()).unwrap_err();
    }

    #[test]
    fn parallel_and_plain_hashing_agree() {
        let data: Vec<u8> = (0..5 * PARALLEL_READ + 77).map(|i| (i * 31 % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("f");
        std::fs::write(&full, &data).unwrap();
        assert_eq!(hash_file(&full, data.len() as u64).unwrap(), (Hash::of(&data), data.len() as u64));
        // A size that understates the file still reads all of it.
        assert_eq!(hash_file(&full, 10).unwrap(), (Hash::of(&data), data.len() as u64));
    }
}
