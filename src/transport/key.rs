//! The cluster key: a 32-byte secret shared by every node of a cluster
//! (`--key-file FILE` or `DIRSYNC_KEY_FILE`), its file format, generation
//! (`dirsync keygen FILE`) and what is derived from it.
//!
//! The key file holds 64 hex digits (optionally followed by a newline);
//! nothing else. Two values are derived from the key with blake3's key
//! derivation, never the key itself: the Noise pre-shared key (`psk`) that
//! authenticates and encrypts every connection (src/secure.rs), and the
//! announcement `fingerprint`, which tells nodes of one cluster apart from
//! others without revealing anything about the key.
//!
//! Owns: reading, writing and deriving from the key. Must not: log the key
//! or anything from which it could be recovered.

use std::fmt;
use std::io::Write;
use std::path::Path;

/// The environment variable naming the key file when `--key-file` is absent.
pub const KEY_FILE_ENV: &str = "DIRSYNC_KEY_FILE";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("key file {0}: expected 64 hex digits (make one with `dirsync keygen FILE`)")]
    Format(String),
    #[error("key file {0} holds the all-zero key, which anyone can guess; make a random one with `dirsync keygen FILE`")]
    AllZero(String),
    #[error("key file {0} is a folder; name the key file itself (make one with `dirsync keygen FILE`)")]
    IsFolder(String),
    #[error("key file {0} already exists; refusing to overwrite it")]
    Exists(String),
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// A cluster key. Its `Debug` shows only the fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(fingerprint {})", self.fingerprint())
    }
}

impl ClusterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> ClusterKey {
        ClusterKey(bytes)
    }

    /// A new random key from the operating system.
    pub fn generate() -> Result<ClusterKey, KeyError> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(ClusterKey(k))
    }

    /// Parse the key file's text: 64 hex digits, surrounding whitespace allowed.
    pub fn parse(text: &str) -> Option<ClusterKey> {
        let t = text.trim();
        if t.len() != 64 || !t.is_ascii() {
            return None;
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ClusterKey(k))
    }

    /// The key file's text.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
            path: shown.clone(),
            source,
        })?;
        if meta.is_dir() {
            return Err(KeyError::IsFolder(shown));
        }
        // A key file is 65 bytes; refuse to read anything much larger.
        if meta.len() > 256 {
            return Err(KeyError::Format(shown));
        }
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: shown.clone(),
            source,
        })?;
        match ClusterKey::parse(&text) {
            None => Err(KeyError::Format(shown)),
            Some(ClusterKey(k)) if k == [0; 32] => Err(KeyError::AllZero(shown)),
            Some(key) => Ok(key),
        }
    }

    /// Write a new random key to `path` (mode 0600), never over an existing file.
    pub fn generate_file(path: &Path) -> Result<ClusterKey, KeyError> {
        let shown = path.display().to_string();
        let key = ClusterKey::generate()?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists(shown.clone())
            } else {
                KeyError::Io {
                    path: shown.clone(),
                    source,
                }
            }
        })?;
        f.write_all(format!("{}\n", key.to_hex()).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|source| KeyError::Io { path: shown, source })?;
        Ok(key)
    }

    /// True if group or others may read the key file (worth a warning).
    pub fn file_is_shared(path: &Path) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            false
        }
    }

    /// The Noise pre-shared key: derived, so the raw key is used for nothing else.
    pub fn psk(&self) -> [u8; 32] {
        blake3::derive_key("dirsync 2026 noise psk v1", &self.0)
    }

    /// 16 hex digits that nodes with this key put in their announcements. A
    /// keyed hash (a PRF): it says which nodes share a key and nothing about
    /// the key itself.
    pub fn fingerprint(&self) -> String {
        let d = blake3::derive_key("dirsync 2026 announcement fingerprint v1", &self.0);
        d[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_64_hex_digits() {
        let k = ClusterKey::from_bytes([0xab; 32]);
        assert_eq!(ClusterKey::parse(&format!("{}\n", k.to_hex())), Some(k.clone()));
        assert_eq!(ClusterKey::parse(&k.to_hex().to_uppercase()), Some(k));
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(65), &"é".repeat(32)] {
            assert!(ClusterKey::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    /// Issue 26, item 9: the all-zero key was accepted.
    #[test]
    fn the_all_zero_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "0".repeat(64)).unwrap();
        let e = ClusterKey::load(&path).unwrap_err();
        assert!(matches!(e, KeyError::AllZero(_)), "{e}");
        assert!(e.to_string().contains("keygen"), "{e}");
    }

    #[test]
    fn keygen_writes_a_private_file_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let k = ClusterKey::generate_file(&path).unwrap();
        assert_eq!(ClusterKey::load(&path).unwrap(), k);
        assert!(!ClusterKey::file_is_shared(&path), "key file readable by others");
        assert!(matches!(ClusterKey::generate_file(&path), Err(KeyError::Exists(_))));
        assert_eq!(ClusterKey::load(&path).unwrap(), k, "the existing key was changed");
        let other = ClusterKey::generate_file(&dir.path().join("key2")).unwrap();
        assert_ne!(other, k, "two generated keys are equal");
    }

    #[test]
    fn derived_values_differ_from_the_key_and_between_keys() {
        let a = ClusterKey::from_bytes([1; 32]);
        let b = ClusterKey::from_bytes([2; 32]);
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        assert_ne!(a.psk(), [1; 32]);
        assert_ne!(a.psk(), b.psk());
        assert!(!a.to_hex().contains(&a.fingerprint()));
        assert!(!format!("{a:?}").contains(&a.to_hex()));
    }
}
