//! Outcomes: the content a peer streams (one decision per frame), files
//! received, and disk actions done. Each failure is recorded and looked at
//! again (`Command::Rescan`); folders a change emptied go
//! (`Command::RemoveEmptyDirs`).

use super::index::{same_content, same_version, wins_over};
use super::{Action, ActionError, Command, Engine, Receive, Stat, Streaming, Transfer};
use crate::wire::{Entry, Kind, Message, NodeId, RelPath};
use tracing::{debug, info, warn};

impl Engine {
    /// `peer` starts streaming `entry`'s content (`FileStart`).
    pub fn handle_file_start(&mut self, peer: NodeId, entry: &Entry) -> Receive {
        let Some(p) = self.peers.get(&peer) else {
            return Receive::Drop {
                reason: "not connected".into(),
            };
        };
        if let Some(r) = &p.streaming {
            let reason = format!("new file started before {} ended", r.entry.path);
            self.commands.push(Command::Close {
                peer,
                reason: reason.clone(),
            });
            return Receive::Drop { reason };
        }
        let wanted = self.content_wanted(peer, entry);
        if wanted.is_err() {
            self.refused_answer(peer, entry);
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.streaming = Some(Streaming {
                entry: entry.clone(),
                wanted: wanted.is_ok(),
            });
        }
        match wanted {
            Ok(expected) => Receive::Write { expected },
            Err(reason) => Receive::Drop { reason },
        }
    }

    /// `peer` sends small files whole, many to a frame (`frame`, a
    /// `Files` message, protocol 7): the version each answers, the one
    /// asked of that peer for its path (the frame names only paths;
    /// `handle_file_start` then weighs each as it would a `FileStart` of
    /// it), or `None` where nothing was asked of it there (its content is
    /// dropped).
    pub fn handle_files(&mut self, peer: NodeId, frame: &Message) -> Vec<Option<Entry>> {
        let Message::Files { files, .. } = frame else {
            return Vec::new();
        };
        if self.refuses(peer) {
            return vec![None; files.len()];
        }
        files
            .iter()
            .map(|f| {
                let asked = self.wants.inflight.get(&f.path).filter(|i| i.peer == peer);
                asked.map(|i| i.entry.clone())
            })
            .collect()
    }

    /// The deepest folder above `path` the index holds live: content
    /// received for `path` is written only while it is on disk (see
    /// `fs::Store::create_temp_in`).
    pub fn folder_to_find(&self, path: &RelPath) -> Option<RelPath> {
        path.ancestors()
            .into_iter()
            .rev()
            .find(|a| self.index.live(a).is_some_and(|e| e.kind == Kind::Dir))
    }

    /// A `Chunk` of the file `peer` is streaming: the connection closes if
    /// it streams none (the node has no file to write it into then).
    pub fn handle_chunk(&mut self, peer: NodeId) {
        if self.peers.get(&peer).is_some_and(|p| p.streaming.is_none()) {
            self.commands.push(Command::Close {
                peer,
                reason: "chunk outside a file".into(),
            });
        }
    }

    /// `peer` ended the file it streams (`FileEnd`): `Write` if it is still
    /// wanted (verify it and make it durable), `Drop` if not.
    pub fn handle_file_end(&mut self, peer: NodeId) -> Receive {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Receive::Drop {
                reason: "not connected".into(),
            };
        };
        let Some(r) = p.streaming.take() else {
            let reason = "file end outside a file".to_string();
            self.commands.push(Command::Close {
                peer,
                reason: reason.clone(),
            });
            return Receive::Drop { reason };
        };
        if !r.wanted {
            return Receive::Drop {
                reason: "not asked for".into(),
            };
        }
        // The peer owes it no longer: it may be asked for more.
        if self.answers_request(peer, &r.entry) {
            self.wants.inflight.arrived(&r.entry.path);
            self.schedule();
        }
        self.still_wanted(peer, &r.entry)
    }

    /// A received file is durable in its temp file: `Write` if it is still
    /// wanted (put it in place, then report with `handle_received`).
    pub fn handle_durable(&mut self, peer: NodeId, entry: &Entry) -> Receive {
        self.still_wanted(peer, entry)
    }

    /// A newer version (or deletion) may have arrived while this one was
    /// on its way: it must not replace that (found by the simulation).
    fn still_wanted(&mut self, peer: NodeId, entry: &Entry) -> Receive {
        match self.content_wanted(peer, entry) {
            Ok(expected) => Receive::Write { expected },
            Err(reason) => {
                debug!(%peer, %reason, "discarding superseded content");
                self.vacated(&entry.path);
                self.request_answered(peer, &entry.path);
                Receive::Drop { reason }
            }
        }
    }

    /// `peer` answered our request for `path` with content we do not use:
    /// that request is over, whatever version it carried, and the need (if
    /// one is left) is asked again. A peer answers a want once; a request
    /// left in flight would keep the need from ever being asked again
    /// (issue 24, case 0: a file touched while it was being sent never
    /// arrived). The peer stays a source: it announced what we need, and
    /// it answered with what it held when the want reached it.
    fn request_answered(&mut self, peer: NodeId, path: &RelPath) {
        if self.wants.inflight.get(path).is_none_or(|i| i.peer != peer) {
            return;
        }
        self.wants.inflight.remove(path);
        self.unschedule(path.clone());
        self.schedule();
        self.check_synced(peer);
    }

    /// Stop every transfer whose content is no longer wanted.
    pub(super) fn abandon_superseded(&mut self) {
        let receiving: Vec<(NodeId, Entry)> = self
            .peers
            .iter()
            .filter_map(|(id, p)| p.streaming.as_ref().filter(|r| r.wanted).map(|r| (*id, r.entry.clone())))
            .collect();
        for (peer, entry) in receiving {
            if let Err(reason) = self.content_wanted(peer, &entry) {
                if let Some(r) = self.peers.get_mut(&peer).and_then(|p| p.streaming.as_mut()) {
                    r.wanted = false;
                }
                self.commands.push(Command::Abandon { peer, reason });
            }
        }
    }

    /// What the path must still hold on disk for `entry`'s content from
    /// `peer` to replace it (`None`: nothing there), or `Err` if this
    /// content was not asked of that peer or is superseded.
    pub(super) fn content_wanted(&self, peer: NodeId, entry: &Entry) -> Result<Option<Entry>, String> {
        if self.excluded(&entry.path) {
            return Err(format!("{} is excluded here", entry.path));
        }
        if self.answers_request(peer, entry) {
            // Never replace a newer version with an older one.
            if !wins_over(entry, self.index.get(&entry.path).as_ref()) {
                return Err(format!("{} is newer here than the version asked for", entry.path));
            }
            return Ok(self.replaced_here(&entry.path));
        }
        match self.wants.inflight.get(&entry.path) {
            Some(_) => Err(format!("{} was asked of another peer or in another version", entry.path)),
            None => Err(format!("{} was not asked for", entry.path)),
        }
    }

    /// True if `entry`'s content from `peer` answers our request for its
    /// path: asked of that peer, in that version or with the content needed
    /// now. (A peer answers a want with the version it holds now, which may
    /// have moved on with the same content: an edit that won against a
    /// delete, found by the simulation; a file touched while it was being
    /// sent, issue 24. The bytes are the ones needed; a newer version of
    /// the same content is then applied without a transfer.)
    fn answers_request(&self, peer: NodeId, entry: &Entry) -> bool {
        if self.swarm_fetches(entry) {
            return true;
        }
        self.wants.inflight.get(&entry.path).is_some_and(|i| {
            i.peer == peer
                && (same_version(&i.entry, entry)
                    || self
                        .wants
                        .needs
                        .get(&entry.path)
                        .is_some_and(|n| same_version(&n.entry, entry) || same_content(&n.entry, entry)))
        })
    }

    /// `peer` started sending content for `entry` that we cannot use. If
    /// it answers our request for that path, the request is over and the
    /// need is asked again; otherwise it answers an older request and
    /// changes nothing.
    fn refused_answer(&mut self, peer: NodeId, entry: &Entry) {
        self.request_answered(peer, &entry.path);
    }

    /// `peer` no longer serves the need for `path` (and may have nothing
    /// else left to send us); a need left with no source is given up until
    /// someone announces it again.
    pub(super) fn drop_source(&mut self, path: &RelPath, peer: NodeId) {
        if let Some(n) = self.wants.needs.get_mut(path) {
            n.sources.remove(&peer);
            if n.sources.is_empty() {
                self.wants.needs.remove(path);
            }
        }
        self.check_synced(peer);
    }

    /// The node put `entry`'s version in place (a received file, a copy),
    /// seen there with `stat`: what the next look compares with, so that
    /// an edit keeping size and mtime is still seen. The watcher raises no
    /// look for our own installs (that look was a redb read and write per
    /// received file).
    pub fn handle_installed(&mut self, entry: &Entry, stat: Stat) {
        if self.index.live(&entry.path).is_some_and(|e| same_version(&e, entry)) {
            self.index.set_stat(&entry.path, Some(stat));
        }
    }

    /// The content of `entry` from `peer` was written (`Ok`, with the bytes
    /// it cost on the wire) or could not be (`Err`, the reason).
    pub fn handle_received(&mut self, peer: NodeId, entry: Entry, transfer: Transfer, result: Result<u64, String>) {
        self.index.install_settled(&entry.path);
        if self.answers_request(peer, &entry) {
            self.wants.inflight.remove(&entry.path);
            self.unschedule(entry.path.clone());
        }
        match result {
            Ok(bytes) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.files_received += 1;
                    p.bytes_received += bytes;
                }
                // Pieces came from many peers, some still receiving the
                // file: every peer hears that we hold it now.
                let from = (!self.swarm_fetches(&entry)).then_some(peer);
                self.applied(from, entry.clone());
                // The content arrived in an older version than the one
                // needed now (touched meanwhile): the newer one needs no
                // transfer, only its metadata.
                if self.wants.needs.get(&entry.path).is_some_and(|n| same_content(&n.entry, &entry)) {
                    if let Some(newer) = self.wants.needs.remove(&entry.path) {
                        self.handle_entries(peer, vec![newer.entry]);
                    }
                }
            }
            Err(reason) => {
                warn!(path = %entry.path, %peer, %reason, "receiving failed");
                self.last_error = Some(format!("receiving {} from {peer}: {reason}", entry.path));
                self.vacated(&entry.path);
                // The disk may hold something else than we thought.
                self.commands.push(Command::Rescan {
                    paths: vec![entry.path.clone()],
                });
                // A failure of an older version leaves a newer need alone;
                // a failed delta is asked again whole at once; anything
                // else is tried again later (a full disk, a read-only
                // folder, a file changed meanwhile), never forgotten.
                let need = self.wants.needs.get_mut(&entry.path).filter(|n| same_version(&n.entry, &entry));
                match need {
                    Some(n) if transfer == Transfer::Delta && !n.whole => n.whole = true,
                    Some(_) => self.retry_later(peer, entry, reason),
                    None => {}
                }
            }
        }
        self.schedule();
        self.check_synced(peer);
    }

    /// A conflict copy of `from` was made as `copy` (or not): then `then`,
    /// the winner, may replace it (or is tried again later).
    fn conflict_copy_done(&mut self, peer: NodeId, from: Entry, copy: Entry, then: Entry, result: Result<(), ActionError>) {
        match result {
            Ok(()) => {
                info!(path = %from.path, copy = %copy.path, "concurrent edit: the losing version is kept as a conflict copy");
                self.record(copy, None);
                // Now the winner may replace the loser.
                self.handle_entries(peer, vec![then]);
                self.schedule();
            }
            Err(reason) => {
                warn!(path = %from.path, copy = %copy.path, %reason, "could not keep the losing version of a concurrent edit; keeping it in place for now");
                self.retry_later(peer, then, reason.to_string());
            }
        }
        self.check_synced(peer);
    }

    /// An `Action` finished: `Ok` if the disk now holds it.
    pub fn handle_action_done(&mut self, peer: NodeId, action: Action, result: Result<(), ActionError>) {
        self.index.install_settled(&action.entry().path);
        let container = matches!(result, Err(ActionError::NotEmpty(_)));
        let result = match result {
            // The peer deleted a folder that still holds something here (a
            // file it did not know, or one whose own deletion is still on
            // its way): the deletion is recorded all the same, and the
            // folder stays as the container of what it holds until that
            // goes too (see `Engine::deleted_ancestors`).
            Err(ActionError::NotEmpty(_)) if matches!(&action, Action::Delete { local, .. } if local.kind == Kind::Dir) => {
                debug!(path = %action.entry().path, %peer, "folder not empty: its deletion is recorded, it stays for what it holds");
                Ok(())
            }
            other => other,
        };
        if let Action::ConflictCopy { from, copy, then } = action {
            return self.conflict_copy_done(peer, from, copy, then, result);
        }
        match result {
            Ok(()) => {
                if let Action::Rename { from_tombstone, .. } = &action {
                    // The source path is gone: the peer's deletion of it is
                    // applied too.
                    self.applied(Some(peer), from_tombstone.clone());
                }
                self.applied(Some(peer), action.entry().clone());
                // What a delete or a rename moved away may have been the
                // last thing a deleted folder held (found by the simulation).
                match &action {
                    // A folder kept as a container may be emptied by what
                    // is queued before this (found by the workload,
                    // everyday seed 7100021391): try it after those.
                    Action::Delete { entry, .. } if container => self.remove_container(&entry.path),
                    Action::Delete { entry, .. } => self.vacated(&entry.path),
                    Action::Rename { from, .. } => self.vacated(&from.path),
                    _ => {}
                }
            }
            Err(e) => {
                let path = action.entry().path.clone();
                warn!(%path, %peer, reason = %e, "could not apply change");
                self.last_error = Some(format!("{} {path}: {e}", action.name()));
                if let ActionError::Changed(_) | ActionError::Busy(_) = e {
                    // The user changed it meanwhile, or a program is
                    // writing it now: what it holds is looked at and
                    // announced like any other change; the peer's version
                    // is weighed against it again later (once the writer
                    // is gone, a newer local version wins by its mtime and
                    // the peer's concurrent one becomes a conflict copy).
                    self.commands.push(Command::Rescan { paths: vec![path] });
                }
                // A copy or move may fail for its source (gone, or below
                // what is a file now): the index must stop offering it
                // (found by the workload, faults seed 7200022294: the same
                // copy failed forever).
                if let Action::Copy { from, .. } | Action::Rename { from, .. } = &action {
                    self.commands.push(Command::Rescan {
                        paths: vec![from.path.clone()],
                    });
                }
                match action {
                    // The peer's version at the target, and its deletion
                    // of the source, are each tried again.
                    Action::Rename { entry, from_tombstone, .. } => {
                        self.retry_later(peer, from_tombstone, e.to_string());
                        self.retry_later(peer, entry, e.to_string());
                    }
                    Action::Copy { entry, .. } => self.retry_later(peer, entry, e.to_string()),
                    other => self.retry_later(peer, other.entry().clone(), e.to_string()),
                }
            }
        }
        self.check_synced(peer);
    }
}
