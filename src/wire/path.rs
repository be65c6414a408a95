//! `RelPath`: a path relative to the synced directory, checked once at the
//! edge so the rest of the code can trust it.
//!
//! A `RelPath` is non-empty UTF-8, uses `/` as separator, and has no empty,
//! `.` or `..` component, no leading `/`, no NUL or backslash, no component
//! longer than 255 bytes and no more than 4096 bytes in all. Names reserved
//! for dirsync's own state and temp files are refused too, so a peer can
//! never make us overwrite them. Deserializing validates, so a malformed path
//! in a peer's message fails the decode of that message.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};

/// Prefix of the temp files dirsync writes before renaming into place
/// (the whole name: see `temp_name`).
pub const TEMP_PREFIX: &str = ".dirsync-tmp-";
/// Name of the default state directory inside the synced directory.
pub const STATE_DIR_NAME: &str = ".dirsync";
/// Longest path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest single component accepted, in bytes (the common filesystem limit).
pub const MAX_COMPONENT_LEN: usize = 255;
/// Most components in one path. Checking a path's ancestors costs its
/// depth times its length, so a peer must not choose thousands.
pub const MAX_DEPTH: usize = 256;

/// The name of temp file number `n` written by device `device` (16 hex
/// digits): `.dirsync-tmp-<device>-<n>`.
pub fn temp_name(device: &str, n: u64) -> String {
    format!("{TEMP_PREFIX}{device}-{n}")
}

/// Whether `name` is one of dirsync's temp file names, and then the device
/// that wrote it. Only names of exactly `temp_name`'s shape are: a user's
/// `.dirsync-tmp-notes.txt` is an ordinary file, synced and never swept.
pub fn temp_name_device(name: &str) -> Option<&str> {
    let (device, n) = name.strip_prefix(TEMP_PREFIX)?.split_once('-')?;
    let hex = device.len() == 16 && device.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let counter = !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit());
    (hex && counter).then_some(device)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("path longer than {MAX_PATH_LEN} bytes or deeper than {MAX_DEPTH} components")]
    TooLong,
    #[error("absolute path {0:?}")]
    Absolute(String),
    #[error("path {0:?} has an empty, '.' or '..' component")]
    BadComponent(String),
    #[error("path {0:?} contains NUL or a backslash")]
    BadCharacter(String),
    #[error("path {0:?} names dirsync's own state or temp files")]
    Reserved(String),
    #[error("path {0:?} is not valid UTF-8")]
    NotUtf8(String),
}

/// A validated relative path; see the module docs for the rules.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    pub fn new(s: impl Into<String>) -> Result<Self, PathError> {
        let s = s.into();
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong);
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(s));
        }
        if s.contains('\0') || s.contains('\\') {
            return Err(PathError::BadCharacter(s));
        }
        if s.bytes().filter(|&b| b == b'/').count() >= MAX_DEPTH {
            return Err(PathError::TooLong);
        }
        for (i, part) in s.split('/').enumerate() {
            if part.is_empty() || part == "." || part == ".." || part.len() > MAX_COMPONENT_LEN {
                return Err(PathError::BadComponent(s));
            }
            if temp_name_device(part).is_some() || (i == 0 && part == STATE_DIR_NAME) {
                return Err(PathError::Reserved(s));
            }
        }
        Ok(RelPath(s))
    }

    /// The relative path of `full` below `root`, if it is a valid `RelPath`.
    pub fn from_fs(root: &Path, full: &Path) -> Result<Self, PathError> {
        let rel = full
            .strip_prefix(root)
            .map_err(|_| PathError::Absolute(full.display().to_string()))?;
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                std::path::Component::Normal(os) => parts.push(os.to_str().ok_or_else(|| PathError::NotUtf8(rel.display().to_string()))?),
                _ => return Err(PathError::BadComponent(rel.display().to_string())),
            }
        }
        RelPath::new(parts.join("/"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path below `root` on this machine.
    pub fn to_fs(&self, root: &Path) -> PathBuf {
        let mut p = root.to_path_buf();
        p.extend(self.0.split('/'));
        p
    }

    /// The parent directory, `None` at the top level.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rfind('/').map(|i| RelPath(self.0[..i].to_string()))
    }

    /// All ancestors, outermost first (`a/b/c` gives `a`, `a/b`).
    pub fn ancestors(&self) -> Vec<RelPath> {
        self.0.match_indices('/').map(|(i, _)| RelPath(self.0[..i].to_string())).collect()
    }

    /// Bounds `[lo, hi)` that enclose exactly the paths below `self` in
    /// path order: `self/` up to `self0` ('0' follows '/'). For range
    /// queries only: they are not valid paths themselves.
    pub fn below_bounds(&self) -> (RelPath, RelPath) {
        (RelPath(format!("{}/", self.0)), RelPath(format!("{}0", self.0)))
    }

    /// The path of child `name` of folder `dir` (`None`: the root), if it
    /// is a valid path. Built from the paths themselves, never from their
    /// display form (which escapes control characters).
    pub fn child_of(dir: Option<&RelPath>, name: &str) -> Result<RelPath, PathError> {
        match dir {
            Some(d) => RelPath::new(format!("{}/{name}", d.0)),
            None => RelPath::new(name),
        }
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// True if `self` is `dir` or lies below it.
    pub fn is_within(&self, dir: &RelPath) -> bool {
        self.0 == dir.0 || (self.0.len() > dir.0.len() && self.0.starts_with(&dir.0) && self.0.as_bytes()[dir.0.len()] == b'/')
    }

    /// Number of components (`a/b` is 2).
    pub fn depth(&self) -> usize {
        self.0.matches('/').count() + 1
    }
}

/// For people and logs: control characters (a newline, an escape
/// sequence) are escaped, so a file name cannot forge a log line or
/// repaint a terminal. The path itself is `as_str`.
impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.chars().any(char::is_control) {
            return f.write_str(&self.0);
        }
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for RelPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelPath::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_path_is_built_from_the_path_not_its_display() {
        let tab = RelPath::new("t\tb").unwrap();
        assert_eq!(tab.to_string(), "t\\tb", "shown escaped");
        assert_eq!(RelPath::child_of(Some(&tab), "c").unwrap().as_str(), "t\tb/c");
        assert_eq!(RelPath::child_of(None, "c").unwrap().as_str(), "c");
        assert!(RelPath::child_of(Some(&tab), "..").is_err());
    }

    #[test]
    fn accepts_ordinary_and_odd_names() {
        let deepest = vec!["d"; MAX_DEPTH].join("/");
        for ok in [
            "a",
            "a/b/c.txt",
            "with space/ü ñ 日本",
            "a/.hidden",
            "x/.dirsync",
            "-rf",
            "a\nb",
            &deepest,
        ] {
            assert!(RelPath::new(ok).is_ok(), "{ok:?} should be accepted");
        }
    }

    #[test]
    fn rejects_escapes_and_reserved_names() {
        let long = "x".repeat(MAX_PATH_LEN + 1);
        let long_part = "y".repeat(MAX_COMPONENT_LEN + 1);
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        for bad in [
            "",
            "/etc/passwd",
            "../escape",
            "a/../../b",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\\..\\b",
            ".dirsync",
            ".dirsync/index",
            "d/.dirsync-tmp-0123456789abcdef-7",
            long.as_str(),
            long_part.as_str(),
            deep.as_str(),
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<RelPath>("\"../x\"").is_err());
        assert_eq!(serde_json::from_str::<RelPath>("\"a/b\"").unwrap().as_str(), "a/b");
    }

    #[test]
    fn structure_helpers() {
        let p = RelPath::new("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(p.ancestors().iter().map(|a| a.as_str()).collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(p.file_name(), "c");
        assert!(p.is_within(&RelPath::new("a").unwrap()));
        assert!(!RelPath::new("ab").unwrap().is_within(&RelPath::new("a").unwrap()));
        assert_eq!(p.depth(), 3);
        assert_eq!(RelPath::from_fs(Path::new("/r"), Path::new("/r/a/b/c")).unwrap(), p);
    }

    /// Issue 13: file names with control characters reached the logs raw.
    #[test]
    fn control_characters_are_escaped_when_shown() {
        let p = RelPath::new("d/new\nline\u{1b}[31m red").unwrap();
        assert_eq!(p.to_string(), "d/new\\nline\\u{1b}[31m red");
        assert_eq!(p.as_str(), "d/new\nline\u{1b}[31m red");
        assert_eq!(RelPath::new("plain/é.txt").unwrap().to_string(), "plain/é.txt");
    }

    /// Issue 13, bug 3: a user's files named like temp files were deleted
    /// at start. Only `temp_name`'s exact shape is dirsync's.
    #[test]
    fn only_the_exact_temp_name_shape_is_reserved() {
        let ours = temp_name("0123456789abcdef", 42);
        assert_eq!(temp_name_device(&ours), Some("0123456789abcdef"));
        for user in [
            ".dirsync-tmp-notes.txt",
            ".dirsync-tmp-",
            ".dirsync-tmp-0123456789abcdef-",
            ".dirsync-tmp-0123456789abcdef-1x",
            ".dirsync-tmp-0123456789ABCDEF-1",
            ".dirsync-tmp-0123456789abcde-1",
            ".dirsync-tmp-1-2",
        ] {
            assert_eq!(temp_name_device(user), None, "{user}");
            assert!(RelPath::new(format!("d/{user}")).is_ok(), "{user} is an ordinary name");
        }
    }
}
