//! The filesystem watcher: notify (with notify-debouncer-full) turns local
//! creates, writes, deletes and renames into `LocalEvent`s for the node.
//!
//! Owns: the notify watcher and the translation of its paths. Must not:
//! decide what changed (the node rescans the named paths and the engine
//! compares with the index, so our own writes cause no echo).
//!
//! When the watcher cannot be trusted it asks for a full rescan at once: on
//! an event queue overflow (inotify `IN_Q_OVERFLOW`, notify's rescan flag)
//! and on any watcher error. Hitting the inotify watch limit (ENOSPC from
//! `inotify_add_watch`, notify's `MaxFilesWatch`) logs one warning with the
//! fix; the folders left unwatched are then covered by the periodic rescan.

use crate::wire::RelPath;
use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer_opt, DebounceEventResult, DebouncedEvent, Debouncer, NoCache};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
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

/// Keeps the watcher alive; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, NoCache>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    path: String,
    source: notify::Error,
}

/// The fix for the inotify watch limit, logged once.
pub const WATCH_LIMIT_FIX: &str =
    "sudo sysctl fs.inotify.max_user_watches=524288 (and add fs.inotify.max_user_watches=524288 to /etc/sysctl.conf to keep it)";

/// Log the watch-limit warning the first time only.
fn warn_watch_limit(warned: &AtomicBool) {
    if !warned.swap(true, Ordering::Relaxed) {
        warn!(
            fix = WATCH_LIMIT_FIX,
            "the inotify watch limit is reached: some folders are not watched, and their changes are found only by the periodic rescan (--rescan-interval)"
        );
    }
}

/// What to do about one batch of watcher results: the local event to
/// send, if any (errors and overflows ask for a rescan of everything).
fn on_errors(errors: &[notify::Error], limit_warned: &AtomicBool) -> LocalEvent {
    for e in errors {
        if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
            warn_watch_limit(limit_warned);
        } else {
            warn!(error = %e, "watcher error; rescanning the whole directory");
        }
    }
    LocalEvent::Changed(vec![None])
}

/// The local events for one batch of debounced watcher events: renames as
/// such, everything else as paths to rescan; an overflow (lost events)
/// asks for the whole directory at once.
fn translate(root: &Path, state: &Path, events: Vec<DebouncedEvent>) -> Vec<LocalEvent> {
    let mut out = Vec::new();
    let mut changed: Vec<Option<RelPath>> = Vec::new();
    for ev in events {
        if ev.need_rescan() {
            warn!("the watcher's event queue overflowed; rescanning the whole directory");
            changed.push(None);
            continue;
        }
        match ev.kind {
            EventKind::Access(_) => {}
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if ev.paths.len() == 2 => {
                match (relative(root, state, &ev.paths[0]), relative(root, state, &ev.paths[1])) {
                    (Some(Some(from)), Some(Some(to))) => out.push(LocalEvent::Renamed { from, to }),
                    (from, to) => changed.extend(from.into_iter().chain(to)),
                }
            }
            _ => changed.extend(ev.paths.iter().filter_map(|p| relative(root, state, p))),
        }
    }
    if !changed.is_empty() {
        out.push(LocalEvent::Changed(changed));
    }
    out
}

/// Watch `root` recursively; events go to `tx` after `debounce`.
pub fn watch(root: &Path, state_dir: &Path, debounce: Duration, tx: async_channel::Sender<LocalEvent>) -> Result<Watcher, WatchError> {
    let root_buf = root.to_path_buf();
    let state = state_dir.to_path_buf();
    let limit_warned = Arc::new(AtomicBool::new(false));
    let warned = limit_warned.clone();
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            for ev in translate(&root_buf, &state, events) {
                let _ = tx.send_blocking(ev);
            }
        }
        Err(errors) => {
            let _ = tx.send_blocking(on_errors(&errors, &warned));
        }
    };
    // Symlinks are never followed: one to `/` inside DIR made notify walk
    // and watch the whole machine.
    let config = notify::Config::default().with_follow_symlinks(false);
    // The debouncer looks for settled events every `debounce / 2` (its
    // default, a quarter, woke an idle node 800 times a second: 2% of a
    // core doing nothing); a change waits at most 1.5 debounces.
    let mut debouncer = new_debouncer_opt(debounce, Some(debounce / 2), handler, NoCache, config).map_err(|source| WatchError {
        path: root.display().to_string(),
        source,
    })?;
    watch_tree(&mut debouncer, root, &limit_warned).map_err(|source| WatchError {
        path: root.display().to_string(),
        source,
    })?;
    Ok(Watcher { _debouncer: debouncer })
}

/// Watch `dir` and everything below it. notify gives up on a whole tree
/// when one folder in it refuses a watch (a kernel pseudo filesystem
/// mounted inside, a folder this user cannot read): then `dir` alone is
/// watched and each subfolder in turn, so that only what refuses is left
/// to the periodic rescan. New folders made directly in a folder watched
/// alone are found by that rescan too (notify adds watches for new folders
/// only below a recursive watch).
fn watch_tree(debouncer: &mut Debouncer<notify::RecommendedWatcher, NoCache>, dir: &Path, limit_warned: &AtomicBool) -> notify::Result<()> {
    let refused = match debouncer.watch(dir, RecursiveMode::Recursive) {
        Ok(()) => return Ok(()),
        // The folders watched before the limit stay watched; the rest are
        // covered by the periodic rescan.
        Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
            warn_watch_limit(limit_warned);
            return Ok(());
        }
        Err(e) => e,
    };
    debouncer.watch(dir, RecursiveMode::NonRecursive)?;
    warn!(dir = %dir.display(), error = %refused, "part of this folder cannot be watched; watching its folders one by one, the rest is found by the periodic rescan");
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || super::special::pseudo_filesystem(&path).is_some() {
            continue;
        }
        if let Err(e) = watch_tree(debouncer, &path, limit_warned) {
            debug!(dir = %path.display(), error = %e, "not watched");
        }
    }
    Ok(())
}

/// The path to rescan for a watcher path: `Some(None)` for the root itself,
/// `None` for paths dirsync never syncs (its state and temp files).
fn relative(root: &Path, state_dir: &Path, path: &Path) -> Option<Option<RelPath>> {
    if path.starts_with(state_dir) {
        return None;
    }
    let rel = path.strip_prefix(root).ok()?;
    if rel.as_os_str().is_empty() {
        return Some(None);
    }
    // RelPath refuses temp names and the default state dir's name.
    match RelPath::from_fs(root, path) {
        Ok(p) => Some(Some(p)),
        Err(e) => {
            debug!(path = %path.display(), error = %e, "ignoring event");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn an_overflow_asks_for_a_full_rescan_at_once() {
        use notify::event::{Event, Flag};
        let (root, state) = (PathBuf::from("/r"), PathBuf::from("/r/.dirsync"));
        let now = std::time::Instant::now();
        let write = DebouncedEvent::new(
            Event::new(EventKind::Create(notify::event::CreateKind::File)).add_path("/r/a".into()),
            now,
        );
        assert_eq!(
            translate(&root, &state, vec![write.clone()]),
            vec![LocalEvent::Changed(vec![Some(RelPath::new("a").unwrap())])]
        );
        let overflow = DebouncedEvent::new(Event::new(EventKind::Other).set_flag(Flag::Rescan), now);
        let got = translate(&root, &state, vec![write, overflow]);
        assert!(matches!(&got[..], [LocalEvent::Changed(p)] if p.contains(&None)), "{got:?}");
    }

    #[test]
    fn errors_ask_for_a_full_rescan_and_the_watch_limit_warns_once() {
        let warned = AtomicBool::new(false);
        let limit = || notify::Error::new(notify::ErrorKind::MaxFilesWatch);
        assert_eq!(on_errors(&[limit()], &warned), LocalEvent::Changed(vec![None]));
        assert!(warned.load(Ordering::Relaxed));
        let other = notify::Error::generic("boom");
        assert_eq!(on_errors(&[other, limit()], &warned), LocalEvent::Changed(vec![None]));
    }

    #[test]
    fn relative_paths_skip_own_files() {
        let root = PathBuf::from("/r");
        let state = PathBuf::from("/r/.dirsync");
        assert_eq!(relative(&root, &state, Path::new("/r")), Some(None));
        assert_eq!(
            relative(&root, &state, Path::new("/r/a/b")),
            Some(Some(RelPath::new("a/b").unwrap()))
        );
        assert_eq!(relative(&root, &state, Path::new("/r/.dirsync/index")), None);
        assert_eq!(relative(&root, &state, Path::new("/r/a/.dirsync-tmp-0123456789abcdef-2")), None);
        assert_eq!(relative(&root, &state, Path::new("/elsewhere")), None);
    }
}
