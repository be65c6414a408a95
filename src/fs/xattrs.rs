//! Reading and writing a path's `user.` extended attributes (`--xattrs`),
//! never through a symlink: the `l` calls on paths, the `f` calls on a
//! temp file before it is renamed into place.
//!
//! Owns: the system calls and what is carried of what they return: names
//! in UTF-8, values within `MAX_XATTR_VALUE` (a larger one stays where it
//! is, on every host); a set over `MAX_XATTRS_TOTAL` in all is not carried
//! (unknown). Must not: decide anything about versions.

use crate::wire::{Xattrs, MAX_XATTRS_TOTAL, MAX_XATTR_VALUE, XATTR_NAMESPACE};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What `read` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The attributes carried (perhaps none).
    Carried(Xattrs),
    /// More than `MAX_XATTRS_TOTAL` in all: not carried.
    TooMany,
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Call `f` with a buffer, growing it while the answer does not fit.
fn with_buffer(mut f: impl FnMut(*mut libc::c_void, usize) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    let mut size = 256;
    loop {
        let mut buf = vec![0u8; size];
        let n = f(buf.as_mut_ptr().cast(), buf.len());
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        // Grown meanwhile: ask for the size, then try again.
        if err.raw_os_error() != Some(libc::ERANGE) || size >= 1 << 20 {
            return Err(err);
        }
        size *= 4;
    }
}

/// The names of `user.` attributes at `c`, not following a symlink.
fn user_names(c: &CString) -> io::Result<Vec<CString>> {
    let list = match with_buffer(|buf, len| unsafe { libc::llistxattr(c.as_ptr(), buf.cast(), len) }) {
        Ok(list) => list,
        // A filesystem without extended attributes holds none.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(list
        .split(|b| *b == 0)
        .filter(|n| n.starts_with(XATTR_NAMESPACE.as_bytes()) && n.len() > XATTR_NAMESPACE.len())
        .filter_map(|n| CString::new(n).ok())
        .collect())
}

/// The `user.` attributes of `path` (not following a symlink).
pub fn read(path: &Path) -> io::Result<Found> {
    let c = c_path(path)?;
    let mut out = BTreeMap::new();
    for name in user_names(&c)? {
        let value = match with_buffer(|buf, len| unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), buf, len) }) {
            Ok(v) => v,
            // Removed between the list and the read.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(e),
        };
        let Ok(name) = name.into_string() else { continue };
        if value.len() <= MAX_XATTR_VALUE {
            out.insert(name, value);
        }
    }
    Ok(carried(Xattrs(out)))
}

/// `x` as carried: not at all over `MAX_XATTRS_TOTAL` in all (some
/// filesystems hold more than ext4's 4 KiB block).
fn carried(x: Xattrs) -> Found {
    match x.total() > MAX_XATTRS_TOTAL {
        true => Found::TooMany,
        false => Found::Carried(x),
    }
}

/// Give the new file `file` (a temp file, before its rename) `x`.
pub fn write_new(file: &File, x: &Xattrs) -> io::Result<()> {
    for (name, value) in &x.0 {
        let name = CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let r = unsafe { libc::fsetxattr(file.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Make the `user.` attributes of `path` (not through a symlink) `x`:
/// what `x` lacks goes (but a value too large to carry, which is not
/// this version's to judge), what differs is set.
pub fn apply(path: &Path, x: &Xattrs) -> io::Result<()> {
    let c = c_path(path)?;
    let now = match read(path)? {
        Found::Carried(now) => now.0,
        Found::TooMany => BTreeMap::new(),
    };
    for name in now.keys().filter(|n| !x.0.contains_key(*n)) {
        let name = CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if unsafe { libc::lremovexattr(c.as_ptr(), name.as_ptr()) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENODATA) {
                return Err(err);
            }
        }
    }
    for (name, value) in x.0.iter().filter(|(n, v)| now.get(*n) != Some(*v)) {
        let name = CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &[u8])]) -> Xattrs {
        Xattrs(pairs.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect())
    }

    #[test]
    fn user_attributes_are_read_set_and_removed_and_big_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(read(&f).unwrap(), Found::Carried(Xattrs::default()));
        let want = attrs(&[("user.a", b"1"), ("user.b", b"")]);
        apply(&f, &want).unwrap();
        assert_eq!(read(&f).unwrap(), Found::Carried(want));
        // A value too large to carry is neither read nor removed.
        let big = CString::new("user.big").unwrap();
        let value = vec![7u8; MAX_XATTR_VALUE + 1];
        let c = c_path(&f).unwrap();
        assert_eq!(
            unsafe { libc::lsetxattr(c.as_ptr(), big.as_ptr(), value.as_ptr().cast(), value.len(), 0) },
            0
        );
        let fewer = attrs(&[("user.a", b"2")]);
        apply(&f, &fewer).unwrap();
        assert_eq!(read(&f).unwrap(), Found::Carried(fewer));
        assert_eq!(user_names(&c).unwrap().len(), 2, "user.big stays");
        // Too many in all: not carried (ext4 cannot hold so many).
        let many = Xattrs((0..5).map(|i| (format!("user.{i}"), vec![0; 1000])).collect());
        assert_eq!(carried(many), Found::TooMany);
        // A new file gets its set before it is renamed.
        let g = dir.path().join("g");
        let file = File::create(&g).unwrap();
        write_new(&file, &attrs(&[("user.z", b"zz")])).unwrap();
        assert_eq!(read(&g).unwrap(), Found::Carried(attrs(&[("user.z", b"zz")])));
    }
}
