//! Reading a node's synced directory as a comparable tree.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What one path holds. Directories compare by kind only (their mtimes are
/// not synced).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    Dir,
    File {
        hash: [u8; 32],
        size: u64,
        mtime: i128,
        exec: bool,
    },
}

impl Item {
    pub fn hash(&self) -> Option<[u8; 32]> {
        match self {
            Item::Dir => None,
            Item::File { hash, .. } => Some(*hash),
        }
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Dir => write!(f, "dir"),
            Item::File { hash, size, mtime, exec } => {
                let x = if *exec { "exec, " } else { "" };
                write!(f, "file({size} B, mtime {mtime}, {x}")?;
                for b in &hash[..4] {
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
                if meta.is_dir() {
                    tree.insert(rel, Item::Dir);
                    stack.push(path);
                } else if meta.is_file() {
                    let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
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
                            exec: meta.mode() & 0o111 != 0,
                        },
                    );
                }
            }
        }
        temps.sort();
        (tree, temps)
    }
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
