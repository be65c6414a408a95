//! Reading a node's synced directory as a comparable tree.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What one path holds. Directories compare by kind, mode and extended
/// attributes (their mtimes are not synced), symlinks by target and mtime.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    Dir {
        mode: u32,
        /// A digest of its `user.` extended attributes (0: none).
        xattrs: u64,
    },
    File {
        hash: [u8; 32],
        size: u64,
        mtime: i128,
        /// The permission bits (rwx for user, group, other).
        mode: u32,
        /// A digest of its `user.` extended attributes (0: none).
        xattrs: u64,
    },
    Link {
        /// The blake3 hash of the target text.
        target: [u8; 32],
        mtime: i128,
    },
}

impl Item {
    /// A file's content hash (`None` for folders and links).
    pub fn hash(&self) -> Option<[u8; 32]> {
        match self {
            Item::File { hash, .. } => Some(*hash),
            Item::Dir { .. } | Item::Link { .. } => None,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, Item::Dir { .. })
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Dir { mode, xattrs: 0 } => write!(f, "dir({mode:o})"),
            Item::Dir { mode, xattrs } => write!(f, "dir({mode:o}, xattrs {xattrs:016x})"),
            Item::File {
                hash,
                size,
                mtime,
                mode,
                xattrs,
            } => {
                write!(f, "file({size} B, mtime {mtime}, {mode:o}, ")?;
                if *xattrs != 0 {
                    write!(f, "xattrs {xattrs:016x}, ")?;
                }
                for b in &hash[..4] {
                    write!(f, "{b:02x}")?;
                }
                write!(f, ")")
            }
            Item::Link { target, mtime } => {
                write!(f, "link(mtime {mtime}, to ")?;
                for b in &target[..4] {
                    write!(f, "{b:02x}")?;
                }
                write!(f, ")")
            }
        }
    }
}

/// Relative path (with `/`) → item; dirsync's state folder and temp files
/// are left out.
pub type Tree = BTreeMap<String, Item>;

/// The state folder's name inside DIR and the temp files' prefix.
pub const STATE_DIR: &str = ".dirsync";
pub const TEMP_PREFIX: &str = ".dirsync-tmp-";

/// Reads trees, hashing a file again only when its inode, size, mtime or
/// ctime changed (every write and rename changes the ctime).
#[derive(Default)]
pub struct TreeReader {
    cache: HashMap<PathBuf, (u64, u64, i128, i128, [u8; 32])>,
}

impl TreeReader {
    /// The tree under `root`, and the temp files found in it.
    pub fn read(&mut self, root: &Path) -> (Tree, Vec<String>) {
        let mut tree = Tree::new();
        let mut temps = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let path = e.path();
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().to_string();
                if rel == STATE_DIR {
                    continue;
                }
                if dirsync::wire::temp_name_device(&e.file_name().to_string_lossy()).is_some() {
                    temps.push(rel);
                    continue;
                }
                let Ok(meta) = fs::symlink_metadata(&path) else { continue };
                let mode = meta.mode() & 0o777;
                let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
                if meta.is_dir() {
                    tree.insert(
                        rel,
                        Item::Dir {
                            mode,
                            xattrs: xattrs_digest(&path),
                        },
                    );
                    stack.push(path);
                } else if meta.file_type().is_symlink() {
                    let Ok(target) = fs::read_link(&path) else { continue };
                    let target = *blake3::hash(target.as_os_str().as_encoded_bytes()).as_bytes();
                    tree.insert(rel, Item::Link { target, mtime });
                } else if meta.is_file() {
                    let ctime = i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec());
                    let key = (meta.ino(), meta.len(), mtime, ctime);
                    let hash = match self.cache.get(&path) {
                        Some(c) if (c.0, c.1, c.2, c.3) == key => c.4,
                        _ => {
                            let Ok(bytes) = fs::read(&path) else { continue };
                            let h = *blake3::hash(&bytes).as_bytes();
                            self.cache.insert(path.clone(), (key.0, key.1, key.2, key.3, h));
                            h
                        }
                    };
                    tree.insert(
                        rel,
                        Item::File {
                            hash,
                            size: meta.len(),
                            mtime,
                            mode,
                            xattrs: xattrs_digest(&path),
                        },
                    );
                }
            }
        }
        temps.sort();
        (tree, temps)
    }
}

/// A digest of the `user.` extended attributes of `path` (not following
/// a link), 0 when it has none.
pub fn xattrs_digest(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 0;
    };
    let mut names = vec![0u8; 64 * 1024];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return 0;
    }
    names.truncate(n as usize);
    let mut attrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| n.starts_with(b"user.")) {
        let Ok(cname) = std::ffi::CString::new(name) else { continue };
        let mut value = vec![0u8; 64 * 1024];
        let n = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if n >= 0 {
            value.truncate(n as usize);
            attrs.push((name.to_vec(), value));
        }
    }
    if attrs.is_empty() {
        return 0;
    }
    attrs.sort();
    let mut h = blake3::Hasher::new();
    for (name, value) in &attrs {
        h.update(&(name.len() as u64).to_le_bytes()).update(name);
        h.update(&(value.len() as u64).to_le_bytes()).update(value);
    }
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(out).max(1)
}

/// A readable list of how `other` differs from `first`.
pub fn describe_difference(first_name: &str, first: &Tree, name: &str, other: &Tree) -> String {
    let mut out = String::new();
    for (k, v) in first {
        match other.get(k) {
            None => out += &format!("  {name} lacks {k} ({first_name} has {v:?})\n"),
            Some(w) if w != v => out += &format!("  {k}: {first_name} {v:?}, {name} {w:?}\n"),
            _ => {}
        }
    }
    for (k, v) in other {
        if !first.contains_key(k) {
            out += &format!("  {name} has extra {k} {v:?}\n");
        }
    }
    out
}
