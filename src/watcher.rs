//! The filesystem watcher: notify (with notify-debouncer-full) turns local
//! creates, writes, deletes and renames into `LocalEvent`s for the node.
//!
//! Owns: the notify watcher and the translation of its paths. Must not:
//! decide what changed (the node rescans the named paths and the engine
//! compares with the index, so our own writes cause no echo).

use crate::node::LocalEvent;
use crate::wire::RelPath;
use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use std::path::Path;
use std::time::Duration;
use tracing::{debug, warn};

/// Keeps the watcher alive; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}{hint}")]
pub struct WatchError {
    path: String,
    source: notify::Error,
    hint: &'static str,
}

/// Watch `root` recursively; events go to `tx` after `debounce`.
pub fn watch(root: &Path, state_dir: &Path, debounce: Duration, tx: async_channel::Sender<LocalEvent>) -> Result<Watcher, WatchError> {
    let root_buf = root.to_path_buf();
    let state = state_dir.to_path_buf();
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            let mut changed: Vec<Option<RelPath>> = Vec::new();
            for ev in events {
                if ev.need_rescan() {
                    warn!("watcher lost events; rescanning the whole directory");
                    changed.push(None);
                    continue;
                }
                match ev.kind {
                    EventKind::Access(_) => {}
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if ev.paths.len() == 2 => {
                        match (relative(&root_buf, &state, &ev.paths[0]), relative(&root_buf, &state, &ev.paths[1])) {
                            (Some(Some(from)), Some(Some(to))) => {
                                let _ = tx.send_blocking(LocalEvent::Renamed { from, to });
                            }
                            (from, to) => changed.extend(from.into_iter().chain(to)),
                        }
                    }
                    _ => changed.extend(ev.paths.iter().filter_map(|p| relative(&root_buf, &state, p))),
                }
            }
            if !changed.is_empty() {
                let _ = tx.send_blocking(LocalEvent::Changed(changed));
            }
        }
        Err(errors) => {
            for e in errors {
                warn!(error = %e, "watcher error; rescanning");
            }
            let _ = tx.send_blocking(LocalEvent::Changed(vec![None]));
        }
    };
    let mut debouncer = new_debouncer(debounce, None, handler).map_err(|source| WatchError {
        path: root.display().to_string(),
        source,
        hint: "",
    })?;
    debouncer.watch(root, RecursiveMode::Recursive).map_err(|source| {
        let hint = if matches!(source.kind, notify::ErrorKind::MaxFilesWatch) {
            " (raise fs.inotify.max_user_watches, e.g. sysctl fs.inotify.max_user_watches=524288)"
        } else {
            ""
        };
        WatchError {
            path: root.display().to_string(),
            source,
            hint,
        }
    })?;
    Ok(Watcher { _debouncer: debouncer })
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
    fn relative_paths_skip_own_files() {
        let root = PathBuf::from("/r");
        let state = PathBuf::from("/r/.dirsync");
        assert_eq!(relative(&root, &state, Path::new("/r")), Some(None));
        assert_eq!(
            relative(&root, &state, Path::new("/r/a/b")),
            Some(Some(RelPath::new("a/b").unwrap()))
        );
        assert_eq!(relative(&root, &state, Path::new("/r/.dirsync/index")), None);
        assert_eq!(relative(&root, &state, Path::new("/r/a/.dirsync-tmp-1-2")), None);
        assert_eq!(relative(&root, &state, Path::new("/elsewhere")), None);
    }
}
