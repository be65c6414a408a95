//! Whether some process holds a file open for writing, so that a peer's
//! version never replaces (or deletes) a file under its writer: a database
//! such as SQLite keeps its file open for as long as the program runs, and
//! a file renamed over it leaves the writer writing into the old, unlinked
//! one (issue 26: a WAL database lost the rows committed after a peer's
//! version replaced it).
//!
//! "Being written" means: a process (of any user this node may look at)
//! has the file open with write access, as `/proc/PID/fd` and
//! `/proc/PID/fdinfo` tell. Files opened before dirsync started count
//! too. A writer that changed the file since the node last looked at it
//! is caught earlier, by the store's check of what the path holds.
//!
//! The open files of every process are listed at most once a second (a
//! list costs about a millisecond per thousand open descriptors); the
//! access mode of a match is read fresh. Where `/proc` cannot be read,
//! nothing is ever reported busy.
//!
//! Owns: that lookup. Must not: decide what a busy file means (the engine
//! weighs the peer's version again later).

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a list of open files is used before it is made again.
const FRESH_FOR: Duration = Duration::from_secs(1);

/// Open regular files: (device, inode) → the `/proc/PID/fdinfo/N` of each
/// descriptor that has it open.
type OpenFiles = HashMap<(u64, u64), Vec<PathBuf>>;

/// A list of open files and when it was made.
type Listed = Option<(Instant, Arc<OpenFiles>)>;

/// The lookup, with its list of open files. Clones share the list.
#[derive(Debug, Clone, Default)]
pub(crate) struct Writers {
    listed: Arc<Mutex<Listed>>,
}

impl Writers {
    /// Who holds the file `meta` describes open for writing, as
    /// "pid N (command)", if anyone does.
    pub(crate) fn writer_of(&self, meta: &Metadata) -> Option<String> {
        let open = self.open_files();
        let id = (meta.dev(), meta.ino());
        let descriptors = open.get(&id)?;
        descriptors.iter().find_map(|fdinfo| {
            // The list may be a second old: the descriptor must still be
            // this file (its number may have been reused since).
            let fd = fdinfo.parent()?.parent()?.join("fd").join(fdinfo.file_name()?);
            let now = fs::metadata(fd).ok()?;
            if (now.dev(), now.ino()) != id {
                return None;
            }
            let text = fs::read_to_string(fdinfo).ok()?;
            writes(&text).then(|| describe_process(fdinfo))
        })
    }

    fn open_files(&self) -> Arc<OpenFiles> {
        let mut listed = match self.listed.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        match listed.as_ref() {
            Some((at, files)) if at.elapsed() < FRESH_FOR => files.clone(),
            _ => {
                let files = Arc::new(list_open_files());
                *listed = Some((Instant::now(), files.clone()));
                files
            }
        }
    }
}

/// Every open regular file of every other process whose descriptors can
/// be read. This process is left out: it writes under DIR only through
/// temp files of its own (and the simulation runs many nodes in one
/// process, with files each installs for the other).
fn list_open_files() -> OpenFiles {
    let mut out = OpenFiles::new();
    let Ok(procs) = fs::read_dir("/proc") else { return out };
    let me = std::process::id().to_string();
    for p in procs.flatten() {
        let name = p.file_name();
        if !name.to_str().is_some_and(|n| n != me && n.bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            // Follows the link to the open file itself.
            let Ok(meta) = fs::metadata(fd.path()) else { continue };
            if meta.is_file() {
                let fdinfo = p.path().join("fdinfo").join(fd.file_name());
                out.entry((meta.dev(), meta.ino())).or_default().push(fdinfo);
            }
        }
    }
    out
}

/// True if an fdinfo text's `flags:` (octal) give write access.
fn writes(fdinfo: &str) -> bool {
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok());
    flags.is_some_and(|f| f & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32)
}

/// "pid N (command)" for `/proc/N/fdinfo/M`.
fn describe_process(fdinfo: &std::path::Path) -> String {
    let proc_dir = fdinfo.parent().and_then(|p| p.parent());
    let pid = proc_dir
        .and_then(|d| d.file_name())
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let comm = proc_dir.and_then(|d| fs::read_to_string(d.join("comm")).ok()).unwrap_or_default();
    format!("pid {pid} ({})", comm.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    /// `sleep` with `path` open as its stdout (`write`) or stdin (read).
    fn holder(path: &std::path::Path, write: bool) -> std::process::Child {
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        match write {
            true => cmd.stdout(OpenOptions::new().append(true).open(path).unwrap()),
            false => cmd.stdin(fs::File::open(path).unwrap()),
        };
        cmd.spawn().unwrap()
    }

    #[test]
    fn a_file_open_for_writing_has_a_writer_and_one_open_for_reading_not() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("db");
        fs::write(&path, b"x").unwrap();
        let meta = fs::metadata(&path).unwrap();
        let mut reader = holder(&path, false);
        assert_eq!(Writers::default().writer_of(&meta), None, "a reader is no writer");
        let mut writer = holder(&path, true);
        let who = Writers::default().writer_of(&meta);
        assert_eq!(who, Some(format!("pid {} (sleep)", writer.id())));
        for child in [&mut reader, &mut writer] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert_eq!(Writers::default().writer_of(&meta), None, "gone: no writer");
        // This process's own descriptors are never counted (it writes
        // under DIR only through its temp files).
        let _own = OpenOptions::new().append(true).open(&path).unwrap();
        assert_eq!(Writers::default().writer_of(&meta), None);
    }

    #[test]
    fn access_modes_are_read_from_fdinfo_flags() {
        assert!(!writes("pos:\t0\nflags:\t0100000\nmnt_id:\t30\n"), "O_RDONLY|O_LARGEFILE");
        assert!(writes("pos:\t0\nflags:\t0100002\n"), "O_RDWR");
        assert!(writes("flags:\t02100001\n"), "O_WRONLY|O_CLOEXEC|O_LARGEFILE");
        assert!(!writes("no flags here"));
    }
}
