//! The filesystem watcher: an inotify watch on every folder of DIR, read on
//! a thread of its own, turns local creates, writes, deletes and renames
//! into `LocalEvent`s for the node.
//!
//! Owns: the inotify instance, which folder each watch is on, and the
//! changes waiting to be sent. Must not: decide what changed (the node
//! rescans the named paths and the engine compares with the index, so our
//! own writes cause no echo).
//!
//! Why not the notify crate: it watches `IN_OPEN` with no way to drop it,
//! so every file the sender reads and every temp file the receiver writes
//! raised events, and its debouncer kept a queue per path. On a first sync
//! of small files the two watcher threads took 16-18% of each node's CPU.
//! This watcher asks only for what changes a tree, drops events on
//! dirsync's own temp files before building a path, and never watches the
//! state folder. Nor does it report our installs (a temp name renamed onto
//! its path): the node tells the engine what it put there.
//!
//! Events wait at most one `debounce` after the first of a batch; a rename
//! is the pair `IN_MOVED_FROM`/`IN_MOVED_TO` sharing a cookie, and a
//! `MOVED_FROM` still alone when its debounce is over moved out of DIR.
//!
//! When the watcher cannot be trusted it asks for a full rescan at once: on
//! an event queue overflow (`IN_Q_OVERFLOW`, after which every folder is
//! watched again) and on a read error. Hitting the inotify watch limit
//! (ENOSPC from `inotify_add_watch`) logs one warning with the fix; the
//! folders left unwatched are then covered by the periodic rescan, as are
//! folders that refuse a watch (unreadable ones) and pseudo filesystems
//! mounted inside DIR, which are never watched.

use crate::wire::{temp_name_device, RelPath};
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// A change on the local disk, from the watcher (or the simulation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalEvent {
    /// Look again at these paths and everything below them (`None`: the
    /// whole directory).
    Changed(Vec<Option<RelPath>>),
    /// `from` was renamed to `to`.
    Renamed { from: RelPath, to: RelPath },
}

/// Keeps the watcher alive; dropping it stops the watcher's thread.
pub struct Watcher {
    _stop: UnixStream,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot start inotify: {0}")]
    Init(io::Error),
    #[error("cannot watch {path}: {source}")]
    Watch { path: String, source: io::Error },
    #[error("cannot start the watcher's thread: {0}")]
    Thread(io::Error),
}

/// The fix for the inotify watch limit, logged once.
pub const WATCH_LIMIT_FIX: &str =
    "sudo sysctl fs.inotify.max_user_watches=524288 (and add fs.inotify.max_user_watches=524288 to /etc/sysctl.conf to keep it)";

/// What a folder's watch reports: what changes the tree, never an open or
/// a read.
fn folder_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::EXCL_UNLINK
}

/// One inotify event, as the tracker needs it (`W`: the watch it came on).
#[derive(Debug, Clone, Copy)]
struct RawEvent<'a, W> {
    watch: W,
    mask: EventMask,
    cookie: u32,
    name: Option<&'a OsStr>,
}

/// What the thread must do on the kernel's side after an event.
#[derive(Debug, PartialEq, Eq)]
enum Followup {
    /// Watch this folder and every folder below it (`None`: all of DIR).
    WatchTree(Option<RelPath>),
}

/// A `MOVED_FROM` waiting for its `MOVED_TO`.
#[derive(Debug)]
struct MovedFrom {
    path: RelPath,
    is_dir: bool,
    at: Instant,
}

/// The pure part of the watcher: which folder each watch is on, and the
/// changes waiting for the next flush. `W` is the watch's key (inotify's
/// `WatchDescriptor`; a number in the tests).
struct Tracker<W> {
    folders: HashMap<W, Option<RelPath>>,
    /// The state folder's place, when it is inside DIR: its parent's
    /// path and its name (events on it are never ours to send).
    state: Option<(Option<RelPath>, std::ffi::OsString)>,
    changed: Vec<Option<RelPath>>,
    changed_set: HashSet<Option<RelPath>>,
    renames: Vec<(RelPath, RelPath)>,
    moved_from: HashMap<u32, MovedFrom>,
    /// Cookies of renames away from our temp names: our installs, whose
    /// `MOVED_TO` needs no look (the node recorded what it put there).
    installs: HashSet<u32>,
    /// When the oldest change now waiting came.
    since: Option<Instant>,
}

impl<W: std::hash::Hash + Eq + Clone> Tracker<W> {
    fn new(state: Option<(Option<RelPath>, std::ffi::OsString)>) -> Self {
        Tracker {
            folders: HashMap::new(),
            state,
            changed: Vec::new(),
            changed_set: HashSet::new(),
            renames: Vec::new(),
            moved_from: HashMap::new(),
            installs: HashSet::new(),
            since: None,
        }
    }

    fn change(&mut self, path: Option<RelPath>, now: Instant) {
        self.since.get_or_insert(now);
        if self.changed_set.insert(path.clone()) {
            self.changed.push(path);
        }
    }

    /// Take one event in; what the kernel's side must do about it, if
    /// anything.
    fn handle(&mut self, ev: RawEvent<'_, W>, now: Instant) -> Option<Followup> {
        if ev.mask.contains(EventMask::Q_OVERFLOW) {
            warn!("the watcher's event queue overflowed; rescanning the whole directory");
            self.change(None, now);
            // Folders made while events were lost have no watch yet.
            return Some(Followup::WatchTree(None));
        }
        if ev.mask.contains(EventMask::IGNORED) {
            self.folders.remove(&ev.watch);
            return None;
        }
        let folder = self.folders.get(&ev.watch)?;
        let Some(name) = ev.name else {
            // The folder itself: only DIR's own removal or move matters
            // (a subfolder's is reported by its parent too).
            if folder.is_none() && ev.mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
                self.change(None, now);
            }
            return None;
        };
        if self.state.as_ref().is_some_and(|(parent, state)| parent == folder && name == state) {
            return None;
        }
        let name = name.to_str()?;
        // Most events of a receiving node are on its own temp files.
        if temp_name_device(name).is_some() {
            if ev.mask.contains(EventMask::MOVED_FROM) {
                self.installs.insert(ev.cookie);
            }
            return None;
        }
        let path = match RelPath::child_of(folder.as_ref(), name) {
            Ok(p) => p,
            Err(e) => {
                debug!(name, error = %e, "ignoring event");
                return None;
            }
        };
        let is_dir = ev.mask.contains(EventMask::ISDIR);
        if ev.mask.contains(EventMask::MOVED_FROM) {
            self.since.get_or_insert(now);
            self.moved_from.insert(ev.cookie, MovedFrom { path, is_dir, at: now });
            return None;
        }
        if ev.mask.contains(EventMask::MOVED_TO) {
            if self.installs.remove(&ev.cookie) {
                return None;
            }
            if let Some(from) = self.moved_from.remove(&ev.cookie) {
                if from.is_dir {
                    self.folder_moved(&from.path, &path);
                }
                self.since.get_or_insert(now);
                self.renames.push((from.path, path));
                return None;
            }
            // Moved in from outside DIR.
            self.change(Some(path.clone()), now);
            return is_dir.then_some(Followup::WatchTree(Some(path)));
        }
        let new_folder = is_dir && ev.mask.contains(EventMask::CREATE);
        self.change(Some(path.clone()), now);
        new_folder.then_some(Followup::WatchTree(Some(path)))
    }

    /// The watches on `from` and below follow the folder to `to`.
    fn folder_moved(&mut self, from: &RelPath, to: &RelPath) {
        for folder in self.folders.values_mut().flatten() {
            if folder.is_within(from) {
                let rest = &folder.as_str()[from.as_str().len()..];
                match RelPath::new(format!("{}{rest}", to.as_str())) {
                    Ok(p) => *folder = p,
                    Err(e) => debug!(error = %e, "a moved folder's new path is not one dirsync syncs"),
                }
            }
        }
    }

    /// When the changes now waiting are due.
    fn due(&self, debounce: Duration) -> Option<Instant> {
        self.since.map(|t| t + debounce)
    }

    /// The local events due at `now`, and the watches to remove (folders
    /// moved out of DIR: the kernel keeps watching them where they went).
    fn flush(&mut self, now: Instant, debounce: Duration) -> (Vec<LocalEvent>, Vec<W>) {
        // An install's two events come together: a cookie still here lost
        // its `MOVED_TO` (it went out of DIR), and must not match a later one.
        self.installs.clear();
        let mut unwatch = Vec::new();
        let gone: Vec<u32> = self
            .moved_from
            .iter()
            .filter(|(_, m)| now.duration_since(m.at) >= debounce)
            .map(|(cookie, _)| *cookie)
            .collect();
        for cookie in gone {
            let Some(m) = self.moved_from.remove(&cookie) else { continue };
            if m.is_dir {
                let below: Vec<W> = self
                    .folders
                    .iter()
                    .filter(|(_, f)| f.as_ref().is_some_and(|f| f.is_within(&m.path)))
                    .map(|(w, _)| w.clone())
                    .collect();
                for w in &below {
                    self.folders.remove(w);
                }
                unwatch.extend(below);
            }
            self.change(Some(m.path), now);
        }
        let mut out: Vec<LocalEvent> = self.renames.drain(..).map(|(from, to)| LocalEvent::Renamed { from, to }).collect();
        if !self.changed.is_empty() {
            self.changed_set.clear();
            out.push(LocalEvent::Changed(std::mem::take(&mut self.changed)));
        }
        self.since = self.moved_from.values().map(|m| m.at).min();
        (out, unwatch)
    }
}

/// The thread's side: the inotify instance and the tracker.
struct Inner {
    inotify: Inotify,
    watches: Watches,
    root: PathBuf,
    state_dir: PathBuf,
    tracker: Tracker<WatchDescriptor>,
    limit_warned: bool,
    /// Folders that refused a watch, warned about.
    refused: HashSet<PathBuf>,
}

impl Inner {
    /// Watch `top` and every folder below it.
    fn watch_tree(&mut self, top: Option<RelPath>) {
        let mut stack = vec![top];
        while let Some(rel) = stack.pop() {
            let abs = rel.as_ref().map_or_else(|| self.root.clone(), |r| r.to_fs(&self.root));
            if abs == self.state_dir {
                continue;
            }
            if let Some(kind) = super::special::pseudo_filesystem(&abs) {
                debug!(dir = %abs.display(), kind, "not watching a pseudo filesystem");
                continue;
            }
            match self.watches.add(&abs, folder_mask() | WatchMask::DONT_FOLLOW) {
                Ok(wd) => {
                    self.tracker.folders.insert(wd, rel.clone());
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    self.warn_watch_limit();
                    return;
                }
                Err(e) => {
                    // Said once a folder: a walk after an overflow tries
                    // it again.
                    if self.refused.insert(abs.clone()) {
                        warn!(dir = %abs.display(), error = %e, "this folder cannot be watched: its changes are found by the periodic rescan");
                    }
                    continue;
                }
            }
            let Ok(entries) = std::fs::read_dir(&abs) else { continue };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if let Ok(child) = RelPath::child_of(rel.as_ref(), &name) {
                    stack.push(Some(child));
                }
            }
        }
    }

    fn warn_watch_limit(&mut self) {
        if !std::mem::replace(&mut self.limit_warned, true) {
            warn!(
                fix = WATCH_LIMIT_FIX,
                "the inotify watch limit is reached: some folders are not watched, and their changes are found only by the periodic rescan (--rescan-interval)"
            );
        }
    }

    /// Take in every event the kernel holds now.
    fn read_all(&mut self, buf: &mut [u8]) {
        loop {
            let now = Instant::now();
            let mut followups = Vec::new();
            match self.inotify.read_events(buf) {
                Ok(events) => {
                    for ev in events {
                        let raw = RawEvent {
                            watch: ev.wd,
                            mask: ev.mask,
                            cookie: ev.cookie,
                            name: ev.name,
                        };
                        followups.extend(self.tracker.handle(raw, now));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "watcher error; rescanning the whole directory");
                    self.tracker.change(None, now);
                    return;
                }
            }
            for Followup::WatchTree(dir) in followups {
                self.watch_tree(dir);
            }
        }
    }

    /// Read events and send them on after `debounce` until `stop` closes
    /// or the node stops listening.
    fn run(mut self, mut stop: UnixStream, debounce: Duration, tx: async_channel::Sender<LocalEvent>) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // While changes wait, the thread sleeps until they are due and
            // only then reads what came meanwhile: woken by each event, it
            // cost the writer a wakeup per event (a tenth of a receiving
            // node's CPU on small files).
            let due = self.tracker.due(debounce);
            let timeout = match due {
                None => -1,
                Some(due) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
                }
            };
            let mut fds = [
                libc::pollfd {
                    // poll(2) skips a negative descriptor.
                    fd: if due.is_some() { -1 } else { self.inotify.as_raw_fd() },
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: stop.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: `fds` is a valid array of two pollfd for the call.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                warn!(error = %e, "the watcher stopped: changes are found by the periodic rescan");
                return;
            }
            // The other end is closed (or written to): the node stopped.
            if fds[1].revents != 0 {
                let _ = stop.read(&mut [0u8; 1]);
                return;
            }
            if due.is_some() || fds[0].revents != 0 {
                self.read_all(&mut buf);
            }
            let now = Instant::now();
            if self.tracker.due(debounce).is_some_and(|due| due <= now) {
                let (events, unwatch) = self.tracker.flush(now, debounce);
                for wd in unwatch {
                    // Fails when the folder is gone already, which is fine.
                    let _ = self.watches.remove(wd);
                }
                for ev in events {
                    if tx.send_blocking(ev).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Watch `root` and every folder below it (but `state_dir`); events go to
/// `tx` at most `debounce` after the first of them.
pub fn watch(root: &Path, state_dir: &Path, debounce: Duration, tx: async_channel::Sender<LocalEvent>) -> Result<Watcher, WatchError> {
    let inotify = Inotify::init().map_err(WatchError::Init)?;
    let mut watches = inotify.watches();
    // DIR itself may be a symlink to the folder to keep: it is followed.
    let root_watch = watches.add(root, folder_mask()).map_err(|source| WatchError::Watch {
        path: root.display().to_string(),
        source,
    })?;
    let state = state_dir.parent().and_then(|parent| {
        let name = state_dir.file_name()?.to_os_string();
        let parent = if parent == root {
            None
        } else {
            Some(RelPath::from_fs(root, parent).ok()?)
        };
        Some((parent, name))
    });
    let mut inner = Inner {
        inotify,
        watches,
        root: root.to_path_buf(),
        state_dir: state_dir.to_path_buf(),
        tracker: Tracker::new(state),
        limit_warned: false,
        refused: HashSet::new(),
    };
    inner.tracker.folders.insert(root_watch, None);
    // The walk adds DIR's watch again (the same one) and every folder's.
    inner.watch_tree(None);
    let (stop, stopped) = UnixStream::pair().map_err(WatchError::Thread)?;
    std::thread::Builder::new()
        .name("watcher".into())
        .spawn(move || inner.run(stopped, debounce, tx))
        .map_err(WatchError::Thread)?;
    Ok(Watcher { _stop: stop })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// A tracker with DIR on watch 0 and `a` on watch 1.
    fn tracker() -> Tracker<u32> {
        let mut t = Tracker::new(Some((None, ".dirsync".into())));
        t.folders.insert(0, None);
        t.folders.insert(1, Some(path("a")));
        t
    }

    fn ev(watch: u32, mask: EventMask, cookie: u32, name: &str) -> RawEvent<'_, u32> {
        RawEvent {
            watch,
            mask,
            cookie,
            name: Some(OsStr::new(name)),
        }
    }

    const D: Duration = Duration::from_millis(5);

    #[test]
    fn changes_wait_one_debounce_and_come_once() {
        let mut t = tracker();
        let t0 = Instant::now();
        assert_eq!(t.handle(ev(1, EventMask::CREATE, 0, "x"), t0), None);
        t.handle(ev(1, EventMask::MODIFY, 0, "x"), t0 + D / 2);
        t.handle(ev(0, EventMask::DELETE, 0, "y"), t0 + D / 2);
        assert_eq!(t.due(D), Some(t0 + D), "due one debounce after the first event");
        let (events, unwatch) = t.flush(t0 + D, D);
        assert_eq!(events, vec![LocalEvent::Changed(vec![Some(path("a/x")), Some(path("y"))])]);
        assert!(unwatch.is_empty());
        assert_eq!(t.due(D), None);
    }

    #[test]
    fn own_temp_files_and_the_state_folder_raise_nothing() {
        let mut t = tracker();
        let now = Instant::now();
        t.handle(ev(1, EventMask::CREATE, 0, ".dirsync-tmp-0123456789abcdef-7"), now);
        t.handle(ev(0, EventMask::MODIFY, 0, ".dirsync"), now);
        assert_eq!(t.due(D), None);
        // Our install: the temp name moves onto the real one, which the
        // node recorded as it installed it.
        t.handle(ev(1, EventMask::MOVED_FROM, 9, ".dirsync-tmp-0123456789abcdef-7"), now);
        t.handle(ev(1, EventMask::MOVED_TO, 9, "x"), now);
        assert_eq!(t.due(D), None);
        // What anyone else moves there is looked at.
        t.handle(ev(1, EventMask::MOVED_TO, 10, "x"), now);
        assert_eq!(t.flush(now + D, D).0, vec![LocalEvent::Changed(vec![Some(path("a/x"))])]);
    }

    #[test]
    fn a_rename_pairs_by_cookie_and_a_folder_keeps_its_watches() {
        let mut t = tracker();
        t.folders.insert(2, Some(path("a/b")));
        let now = Instant::now();
        t.handle(ev(0, EventMask::MOVED_FROM | EventMask::ISDIR, 4, "a"), now);
        t.handle(ev(0, EventMask::MOVED_TO | EventMask::ISDIR, 4, "c"), now);
        let (events, unwatch) = t.flush(now + D, D);
        assert_eq!(
            events,
            vec![LocalEvent::Renamed {
                from: path("a"),
                to: path("c")
            }]
        );
        assert!(unwatch.is_empty());
        assert_eq!(t.folders[&1], Some(path("c")));
        assert_eq!(t.folders[&2], Some(path("c/b")));
        // An event in the moved folder now names its new path.
        t.handle(ev(2, EventMask::CREATE, 0, "f"), now);
        assert_eq!(t.flush(now + D, D).0, vec![LocalEvent::Changed(vec![Some(path("c/b/f"))])]);
    }

    #[test]
    fn a_folder_moved_out_is_a_change_and_loses_its_watches() {
        let mut t = tracker();
        t.folders.insert(2, Some(path("a/b")));
        t.folders.insert(3, Some(path("ab")));
        let now = Instant::now();
        t.handle(ev(0, EventMask::MOVED_FROM | EventMask::ISDIR, 4, "a"), now);
        // Its MOVED_TO may still come: not yet due.
        assert_eq!(t.flush(now + D / 2, D).0, vec![]);
        let (events, mut unwatch) = t.flush(now + D, D);
        assert_eq!(events, vec![LocalEvent::Changed(vec![Some(path("a"))])]);
        unwatch.sort();
        assert_eq!(unwatch, vec![1, 2], "`ab` is not below `a`");
        assert!(t.folders.contains_key(&3));
    }

    #[test]
    fn new_folders_are_watched_and_an_overflow_rescans_and_rewatches_everything() {
        let mut t = tracker();
        let now = Instant::now();
        assert_eq!(
            t.handle(ev(1, EventMask::CREATE | EventMask::ISDIR, 0, "n"), now),
            Some(Followup::WatchTree(Some(path("a/n"))))
        );
        assert_eq!(
            t.handle(ev(0, EventMask::MOVED_TO | EventMask::ISDIR, 8, "m"), now),
            Some(Followup::WatchTree(Some(path("m")))),
            "a folder moved in from outside"
        );
        let overflow = RawEvent {
            watch: 0,
            mask: EventMask::Q_OVERFLOW,
            cookie: 0,
            name: None,
        };
        assert_eq!(t.handle(overflow, now), Some(Followup::WatchTree(None)));
        let (events, _) = t.flush(now + D, D);
        assert!(matches!(&events[..], [LocalEvent::Changed(p)] if p.contains(&None)), "{events:?}");
    }

    #[test]
    fn dirs_own_removal_rescans_and_a_removed_folder_forgets_its_watch() {
        let mut t = tracker();
        let now = Instant::now();
        let on = |watch, mask| RawEvent {
            watch,
            mask,
            cookie: 0,
            name: None,
        };
        t.handle(on(1, EventMask::DELETE_SELF), now);
        assert_eq!(t.due(D), None, "a subfolder's removal comes from its parent");
        t.handle(on(1, EventMask::IGNORED), now);
        assert!(!t.folders.contains_key(&1));
        t.handle(on(0, EventMask::MOVE_SELF), now);
        assert_eq!(t.flush(now + D, D).0, vec![LocalEvent::Changed(vec![None])]);
    }

    #[test]
    fn the_real_watcher_reports_a_new_file_in_a_new_folder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".dirsync");
        std::fs::create_dir(&state).unwrap();
        let (tx, rx) = async_channel::unbounded();
        let _w = watch(dir.path(), &state, D, tx).unwrap();
        std::fs::write(state.join("index"), b"ours").unwrap();
        std::fs::create_dir(dir.path().join("n")).unwrap();
        std::fs::write(dir.path().join("n/f"), b"x").unwrap();
        // Waits for the next event, failing the test after 30 s.
        let next = || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match rx.try_recv() {
                    Ok(ev) => return ev,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                    Err(e) => panic!("no event from the watcher: {e}"),
                }
            }
        };
        let mut seen = HashSet::new();
        while !seen.contains(&Some(path("n/f"))) && !seen.contains(&Some(path("n"))) {
            match next() {
                LocalEvent::Changed(p) => seen.extend(p),
                other => panic!("{other:?}"),
            }
        }
        // Our install (a temp name renamed onto its path, as the store
        // does it: written, made durable, put in place, dropped) is not
        // reported; a file made in the new folder after its watch is, by
        // name.
        let store = crate::fs::store::Store::new(dir.path().to_path_buf(), state.clone(), crate::wire::NodeId(7));
        let installed = crate::wire::testing::file("n/installed", 1_600_000_000_000_000_000, b"ours");
        let mut tmp = store.create_temp(&installed.path).unwrap();
        tmp.write(b"ours").unwrap();
        tmp.make_durable(&installed).unwrap();
        store.install(&mut tmp, &installed, None).unwrap();
        drop(tmp);
        std::fs::write(dir.path().join("n/g"), b"y").unwrap();
        loop {
            match next() {
                LocalEvent::Changed(p) if p.contains(&Some(path("n/installed"))) => panic!("our install was reported: {p:?}"),
                LocalEvent::Changed(p) if p.contains(&Some(path("n/g"))) => break,
                LocalEvent::Changed(p) => assert!(!p.iter().flatten().any(|p| p.as_str().starts_with(".dirsync")), "{p:?}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
