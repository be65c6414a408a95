//! The data-safety rules the engine applies when versions meet and when the
//! disk looks gone: pure functions of entries, so every node decides alike.
//! The rules in words, with their tests: docs/CONFLICTS.md.

use super::DirState;
use crate::engine::index::beats;
use crate::wire::version::Causality;
use crate::wire::{Entry, Kind};

/// Why syncing must stop (the mass-delete guard): DIR is missing, cannot
/// be read, or lacks its marker folder. An emptied DIR that keeps its
/// marker is a user's deletion like any other, and travels.
pub(super) fn dir_gone(dir: &DirState) -> Option<String> {
    match dir {
        DirState::Missing(why) => Some(format!("the directory is not there as synced: {why}")),
        DirState::Present => None,
    }
}

/// True if our live `local` is about to be replaced by `winner`, a version
/// that did not see it, and holds bytes the winner lacks: a concurrent
/// edit, whose loser is kept as a conflict copy. Equal vectors with
/// different content (two unknown histories: files that met for the first
/// time) count as concurrent too. An unknown history (empty vector) that
/// loses to a known one counts as its ancestor: no copy, as before
/// vectors. But a known history never descends from an unknown one that
/// beats it (a local version ranks above the one it builds on), so a
/// winner of unknown history is concurrent with it, and the loser is kept
/// (a host's own file, never seen by anyone, lost on a hash tie-break to a
/// peer's file of unknown history when its exclusion rule went; found by
/// the simulation, exclude seed 31000188).
///
/// A winner that saw the edit that made our content (by its maker's own
/// counter, as `missed_the_edit` judges deletes) built on it, whatever
/// other history ours carries: a deletion it overruled, merged in by
/// `resurrection` (found by the workload, faults seed 7200022204: a copy
/// of content the winner had replaced, on every node).
pub(super) fn loses_concurrently(local: &Entry, winner: &Entry) -> bool {
    if local.kind != Kind::File || winner.deleted || (winner.kind == Kind::File && winner.hash == local.hash) {
        return false;
    }
    let made = local.vector.get(local.by);
    if made > 0 && winner.vector.get(local.by) >= made {
        return false;
    }
    let unknown_winner = winner.vector.is_empty() && !local.vector.is_empty();
    unknown_winner || matches!(winner.vector.compare(&local.vector), Causality::Concurrent | Causality::Equal)
}

/// If `incoming` is a delete that would win over our live file `local`
/// without having seen the edit that made its content (both histories
/// known), the version that keeps the file: `local`'s content, ranked at
/// the delete's version (so it beats the delete everywhere) with the merge
/// of both vectors (so it descends from both).
pub(super) fn resurrection(incoming: &Entry, local: &Entry) -> Option<Entry> {
    let known = !incoming.vector.is_empty() && !local.vector.is_empty();
    if !(incoming.deleted
        && !local.deleted
        && local.kind == Kind::File
        && known
        && missed_the_edit(incoming, local)
        && beats(incoming, local))
    {
        return None;
    }
    Some(Entry {
        version: incoming.version,
        vector: local.vector.merge(&incoming.vector),
        ..local.clone()
    })
}

/// Whether tombstone `t` deletes our live `live`: it wins, and it saw the
/// edit that made `live`'s content.
pub(super) fn deletes(t: &Entry, live: &Entry) -> bool {
    t.deleted && beats(t, live) && resurrection(t, live).is_none()
}

/// Whether `delete` was made without seeing the edit that gave `live` its
/// content. Judged by the editor's own counter, not the whole vector: a
/// file kept by `resurrection` carries the first deleter's history, and a
/// later delete by someone who saw the edit, but not that first delete,
/// must still win (found by the simulation: the file came back).
fn missed_the_edit(delete: &Entry, live: &Entry) -> bool {
    match live.vector.get(live.by) {
        0 => delete.vector.compare(&live.vector) == Causality::Concurrent,
        edit => delete.vector.get(live.by) < edit,
    }
}
