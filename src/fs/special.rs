//! What a look at the disk must never read, because reading it may block
//! the node for ever: the kernel's pseudo filesystems (a `proc` mount
//! inside DIR, as a container root or a chroot holds, has `kmsg`, which
//! looks like a regular file and blocks on read), and files that only look
//! regular. Also the warnings about what is skipped, said once per path
//! rather than on every rescan.
//!
//! Owns: the list of pseudo filesystems, the non-blocking open, and the
//! set of paths already warned about. Must not: change anything on disk.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// `f_type` of the kernel's pseudo filesystems (linux/magic.h): their
/// files are views of the kernel, not data, and some block on read.
const PSEUDO_FILESYSTEMS: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x1cd1, "devpts"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0xcafe_4a11, "bpf"),
    (0x6165_676c, "pstore"),
    (0x6265_6570, "configfs"),
    (0x6573_5543, "fusectl"),
    (0x1980_0202, "mqueue"),
    (0xf97c_ff8c, "selinuxfs"),
    (0xde5e_81e4, "efivarfs"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6e73_6673, "nsfs"),
    (0x0187, "autofs"),
];

/// What statfs(2) says of the filesystem holding `path`.
pub(crate) fn statfs(path: &Path) -> Option<libc::statfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` a buffer of the
    // size statfs(2) writes.
    if unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statfs succeeded, so it filled `st`.
    Some(unsafe { st.assume_init() })
}

/// The name of the pseudo filesystem mounted at `dir`, if it is one.
pub(crate) fn pseudo_filesystem(dir: &Path) -> Option<&'static str> {
    // `f_type`'s type differs by architecture.
    #[allow(clippy::unnecessary_cast)]
    let kind = statfs(dir)?.f_type as i64;
    PSEUDO_FILESYSTEMS.iter().find(|(magic, _)| *magic == kind).map(|(_, name)| *name)
}

/// Open a file to read it without ever blocking in `open` or `read`: a
/// device, FIFO or kernel file that looks regular answers `WouldBlock`
/// instead of holding the node (a regular file ignores the flag).
pub(crate) fn open_for_reading(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// Paths already warned about: a skipped path is said once per run, not
/// on every rescan (a 300-level path gave 270 warnings).
/// Clones share the set.
#[derive(Debug, Default, Clone)]
pub(crate) struct WarnOnce(Arc<Mutex<HashSet<PathBuf>>>);

impl WarnOnce {
    /// True the first time `path` is passed.
    pub(crate) fn first(&self, path: &Path) -> bool {
        match self.0.lock() {
            Ok(mut seen) => seen.insert(path.to_path_buf()),
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_is_a_pseudo_filesystem_and_a_plain_folder_is_not() {
        assert_eq!(pseudo_filesystem(Path::new("/proc")), Some("proc"));
        let d = tempfile::tempdir().unwrap();
        assert_eq!(pseudo_filesystem(d.path()), None);
    }

    #[test]
    fn a_kernel_file_that_blocks_on_read_answers_at_once() {
        use std::io::Read;
        // /proc/self/... files answer; a FIFO with no writer would block a
        // plain open for ever.
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut f = open_for_reading(&fifo).unwrap();
        let mut buf = [0u8; 8];
        // No writer: end of file at once, not a hang.
        assert_eq!(f.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn each_path_is_warned_about_once() {
        let w = WarnOnce::default();
        assert!(w.first(Path::new("a")));
        assert!(!w.first(Path::new("a")));
        assert!(w.first(Path::new("b")));
    }
}
