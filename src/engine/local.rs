//! Local changes: a look at the disk (`Scan`) compared with the index,
//! and the mass-delete guard.

use super::exclude::Rejoined;
use super::index::wins_over;
use super::repair::DELETE_HOLD;
use super::types::{mode_on_disk, DEFAULT_FOLDER_MODE};
use super::{safety, Command, Engine, Extent, Observed, Scan};
use crate::wire::version::Vector;
use crate::wire::{Entry, Hash, Kind, NodeId, RelPath};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{debug, error, info, warn};

/// Most paths looked at again a moment after they appeared: a burst of
/// new files (a first scan, a big copy) is not a write-then-rename race,
/// and looking at all of it twice would cost a second pass over the tree.
const MAX_APPEARED_LATELY: usize = 4096;

impl Engine {
    /// What the disk holds under each of `roots` (`None`: the whole tree)
    /// is `found` (every path observed, DIR present).
    #[cfg(test)]
    pub fn handle_local(&mut self, now: i128, roots: &[Option<RelPath>], found: Vec<Observed>) {
        self.handle_scan(
            now,
            Scan {
                roots: roots.to_vec(),
                shallow: vec![],
                found,
                failed: vec![],
                hashing: vec![],
                dir: super::DirState::Present,
                extent: Extent::Paths,
            },
        );
    }

    /// A look at the disk. Differences from the index become local
    /// changes, sent to every peer; index entries under a root that the
    /// scan lacks are deletions, unless they lie at or under a path that
    /// failed (unknown, not gone: their entries stay until a later scan).
    ///
    /// The mass-delete guard: if DIR is missing, unreadable, or lacks its
    /// marker folder `DIR/.dirsync` (an unmounted disk looks like this),
    /// this scan records nothing, and syncing stops (`Command::Suspend`)
    /// until a scan finds DIR with its marker again (`Command::Resume`).
    /// The marker is checked after the scan has read the tree, so a scan
    /// that saw the disk go records none of what it saw. A DIR emptied with
    /// its marker kept (`rm -rf DIR/*`) is a user's deletion, and travels.
    ///
    /// A look that changed the index asks for a commit first
    /// (`Command::SaveIndex`, before what it announces): local changes are
    /// durable when they go out, so that a crash cannot make this node
    /// forget a version its peers hold from it (a rename, then a crash:
    /// the peers' copy came back here after a later delete; found by the
    /// workload, faults seed 7200021600).
    pub fn handle_scan(&mut self, now: i128, scan: Scan) {
        let (seq, at) = (self.index.seq(), self.commands.len());
        self.look(now, scan);
        if self.index.seq() != seq {
            self.commands.insert(at, Command::SaveIndex);
        }
    }

    fn look(&mut self, now: i128, scan: Scan) {
        self.clock = self.clock.max(now);
        let Scan {
            roots,
            shallow,
            found,
            failed,
            hashing,
            dir,
            extent,
        } = scan;
        if let Some(reason) = safety::dir_gone(&dir) {
            // Nothing found gone lately travels: the disk went.
            self.upkeep.held_deletes.clear();
            if self.suspended.is_none() {
                error!(%reason, "not syncing, so that no deletion of everything reaches the peers: is the disk unmounted? Syncing resumes by itself once the directory and its .dirsync folder are back (mkdir DIR/.dirsync if DIR is right)");
                self.suspended = Some(reason.clone());
                self.commands.push(Command::Suspend { reason });
            }
            return;
        }
        if self.suspended.take().is_some() {
            info!("the directory is back: syncing again");
            self.commands.push(Command::Resume);
        }
        for root in roots.iter().flatten() {
            self.vacated(root);
        }
        self.note_unreadable(&roots, &failed, &found, extent);
        // The first look at the whole tree after the index was lost: what
        // it finds has an unknown history (all of its parts do).
        let whole = roots.iter().any(Option::is_none) || matches!(extent, Extent::TreePart { .. });
        let unknown = self.unknown_history && whole;
        if extent != (Extent::TreePart { last: false }) {
            self.unknown_history = false;
        }
        // A sorted list, not a map: a first scan holds every path of the
        // tree, and a map's copy of each path and its nodes cost as much
        // again.
        let mut found: Vec<Observed> = found
            .into_iter()
            .filter(|o| !self.unsynced(&o.path, o.kind) && !self.is_container(o))
            .collect();
        found.sort_by(|a, b| a.path.cmp(&b.path));
        let on_the_way = self.folders_on_the_way(&found);
        if !on_the_way.is_empty() {
            found.extend(on_the_way.into_iter().filter(|o| !self.is_container(o)));
            found.sort_by(|a, b| a.path.cmp(&b.path));
        }
        found.dedup_by(|later, earlier| later.path == earlier.path);
        let seen = |path: &RelPath| found.binary_search_by(|o| o.path.cmp(path)).is_ok();
        let mut changes = Vec::new();
        // The inode and change time each new version was seen with.
        let mut stats = Vec::new();
        // Files found where the index may hold a folder's contents: what it
        // holds below them is gone (a shallow look covers no subtree of a
        // path that is no folder any more; found by the workload, faults
        // seed 7200021659).
        let mut no_folder_now = Vec::new();
        for o in &found {
            let (old, stat) = self.index.known(&o.path).unzip();
            let mut rejoined_base = None;
            if old.is_none() {
                match self.rejoined(o) {
                    Rejoined::TakenBack => continue,
                    Rejoined::NewVersionOf(base) => rejoined_base = base,
                }
            }
            // Whatever the file found is taken for (a version received
            // before a crash, too; found by the workload, faults seed
            // 7200022294), nothing lies below it.
            if o.kind != Kind::Dir && !old.as_ref().is_some_and(|e| !e.deleted && e.kind == Kind::File) {
                no_folder_now.push(o.path.clone());
            }
            if !old.as_ref().is_some_and(|e| o.shows(e)) && self.recovered_install(o, old.as_ref()) {
                continue;
            }
            if old.is_none() && rejoined_base.is_none() && self.made_on_the_way(o) {
                continue;
            }
            if old.as_ref().is_some_and(|e| o.shows(e)) {
                // Received since the last look, or the same content at a
                // new inode: what the next look compares with.
                if stat.flatten() != o.stat {
                    self.index.set_stat(&o.path, o.stat);
                }
                continue;
            }
            stats.push(o.stat);
            let mtime = if o.kind == Kind::Dir { now } else { o.mtime };
            // Changed since a version the install journal holds was put in
            // place (a crash, then an edit before the first look): the
            // edit builds on that version, not on the older one the index
            // kept, or it would race with it (found by the workload,
            // faults seed 7200021622: a conflict copy of the received
            // version on every node).
            let base = self.latest_seen(&o.path, old.clone().or(rejoined_base));
            let mut e = self.local_version(base.as_ref(), o.path.clone(), o.kind, false, o.size, mtime, o.hash);
            e.exec = o.exec;
            e.mode = o.mode;
            e.target = o.target.clone();
            e.xattrs = o.xattrs.clone();
            if unknown && old.is_none() {
                e.vector = Vector::default();
            }
            changes.push(e);
        }
        // Under a root every path is in `found` or gone; in a shallow
        // folder, every child (and a gone child's subtree with it).
        let below_gone_children = shallow
            .iter()
            .flat_map(|d| self.index.child_paths(d.as_ref()).into_iter().filter(|c| !seen(c)).map(Some));
        let gone_roots: Vec<Option<RelPath>> = roots
            .iter()
            .cloned()
            .chain(below_gone_children)
            .chain(no_folder_now.iter().cloned().map(Some))
            .collect();
        // A deletion travels once a look a moment after the first still
        // finds the path gone and DIR with its marker (this one: it is
        // past the guard). A file whose content reappears in this very
        // look moved (a rename): it goes at once, so that peers move it
        // rather than copy it.
        // So does what lay below a path that is a file now (a folder
        // replaced by a file): peers take the file and the deletions
        // together, or keep the folder against it.
        let moved: BTreeSet<Hash> = changes.iter().filter(|c| c.kind == Kind::File).map(|c| c.hash).collect();
        let mut gone = Vec::new();
        for root in &gone_roots {
            // A received file a crash kept out of the index (its install
            // journal row only), moved away before this look: its deletion
            // travels with the move, as the index's would. Only a move: a
            // path simply missing may be one the crash came before (found
            // by the workload, faults seed 7200021921: the file came back
            // at its old path on every host).
            let journaled = self
                .index
                .installing_under(root.as_ref())
                .filter(|j| j.kind == Kind::File && moved.contains(&j.hash) && self.index.get(&j.path).is_none())
                .cloned()
                .collect::<Vec<_>>();
            for e in self.index.under(root.as_ref()).chain(journaled) {
                let unknown = failed.iter().chain(&hashing).any(|f| e.path.is_within(f));
                if !e.deleted && !seen(&e.path) && !unknown && !self.unsynced(&e.path, e.kind) {
                    gone.push(e.clone());
                }
            }
        }
        gone.extend(self.journaled_moves(&moved, seen));
        // Roots may overlap (a root and a gone child below it).
        gone.sort_by(|a, b| a.path.cmp(&b.path));
        gone.dedup_by(|later, earlier| later.path == earlier.path);
        for f in &found {
            self.upkeep.held_deletes.remove(&f.path);
        }
        let was_moved = |e: &Entry| e.kind == Kind::File && moved.contains(&e.hash);
        // A folder whose files all reappeared elsewhere in this look moved
        // with them (a folder renamed): its deletion goes with theirs, or
        // peers keep it, emptied, until the hold is over.
        let moved_folders = moved_folders(&gone, was_moved);
        let mut confirmed = Vec::with_capacity(gone.len());
        for e in gone {
            let since = *self.upkeep.held_deletes.entry(e.path.clone()).or_insert(now);
            let below_a_file = no_folder_now.iter().any(|f| e.path.is_within(f) && e.path != *f);
            let due = since + DELETE_HOLD <= now && !self.may_hold_moved_content();
            if due || was_moved(&e) || moved_folders.contains(&e.path) || below_a_file {
                self.upkeep.held_deletes.remove(&e.path);
                confirmed.push(e);
            }
        }
        for e in confirmed {
            let base = self.latest_seen(&e.path, Some(e.clone()));
            let t = self.local_version(base.as_ref(), e.path.clone(), e.kind, true, 0, now, Hash::ZERO);
            changes.push(t);
            stats.push(None);
        }
        let tree_done = match extent {
            Extent::Paths => roots.iter().any(Option::is_none),
            Extent::TreePart { last } => last,
        };
        if matches!(extent, Extent::TreePart { .. }) {
            self.upkeep.tree_hashing.extend(hashing.iter().cloned());
        }
        if tree_done {
            // What the look could not finish (hashed off the loop, or
            // unreadable) keeps what is known of it from before: its
            // version before a rule went, a version received before a
            // crash (found by the workload, faults seed 7200021920: a large
            // file edited while excluded was made new, with no history,
            // once its hash came).
            let mut unfinished = std::mem::take(&mut self.upkeep.tree_hashing);
            unfinished.extend(hashing.iter().cloned());
            unfinished.extend(self.upkeep.unreadable.keys().cloned());
            self.rejoin_done(&unfinished);
            self.upkeep.journaled_gone = match unfinished.is_empty() {
                true => Vec::new(),
                false => self
                    .index
                    .installing_under(None)
                    .filter(|j| j.kind == Kind::File && !seen(&j.path) && self.index.get(&j.path).is_none())
                    .cloned()
                    .collect(),
            };
            self.index.installs_settled(&unfinished);
        }
        if changes.is_empty() {
            return;
        }
        let mut weigh_again = Vec::new();
        for (e, stat) in changes.iter().zip(stats) {
            debug!(path = %e.path, deleted = e.deleted, kind = ?e.kind, "local change");
            // Not a folder: a look at one takes in all below it (at a first
            // start, the whole tree), and what appeared below it is here.
            if !e.deleted
                && e.kind != Kind::Dir
                && self.index.live(&e.path).is_none()
                && self.upkeep.appeared_lately.len() < MAX_APPEARED_LATELY
            {
                self.upkeep.appeared_lately.insert(e.path.clone(), now);
            }
            self.index.insert_seen(e.clone(), stat);
            // A local change may settle a version we were waiting for.
            self.settle(e);
            weigh_again.extend(self.unseen_by_its_need(e));
        }
        self.broadcast(changes, None);
        for (peer, winner) in weigh_again {
            self.handle_entries(peer, vec![winner]);
        }
        self.check_all_synced();
    }

    /// If the version this node is fetching for `e`'s path (asked for,
    /// or its bytes arriving) never saw `e`, a local edit made meanwhile,
    /// and would replace it, its request is dropped and the version is
    /// returned with a peer holding it, to be weighed against `e` again:
    /// `e` is kept as a conflict copy first. Decided when the edit is
    /// seen, not when the bytes land, where the disk already holds `e`
    /// (found by the workload, everyday seed 7100021956: the edit was
    /// replaced, its bytes only in the trash).
    fn unseen_by_its_need(&mut self, e: &Entry) -> Option<(NodeId, Entry)> {
        let need = self.wants.needs.get(&e.path).filter(|_| !e.deleted)?;
        self.copy_to_keep(e, &need.entry)?;
        let asked = self.wants.inflight.get(&e.path).map(|i| i.peer);
        let peer = asked.or_else(|| need.sources.first().copied())?;
        let need = self.wants.needs.remove(&e.path)?;
        self.wants.inflight.remove(&e.path);
        self.end_swarm(&e.path);
        Some((peer, need.entry))
    }

    /// A look at the disk found `o`, which the index does not say, showing
    /// the version the install journal says was being put in place there
    /// when the node stopped (a crash after the rename, before the commit
    /// that recorded it): that version, with its history, not a new local
    /// one. True if the index took it back (nothing to announce: the peers
    /// made it). Issue 24, case 1: taken as new, such files undid the
    /// deletes and edits made while this node was down.
    fn recovered_install(&mut self, o: &Observed, old: Option<&Entry>) -> bool {
        let Some(installed) = self.index.installing(&o.path).filter(|j| o.shows(j) && wins_over(j, old)).cloned() else {
            return false;
        };
        debug!(path = %o.path, "found as received before a crash");
        self.index.insert_seen(installed, o.stat);
        self.index.install_settled(&o.path);
        true
    }

    /// Keep the set of unreadable paths up to date with a look: what it
    /// could not read is added (and logged once), what it read or found
    /// gone under its roots leaves, and a look at the whole tree replaces
    /// the set once it is over.
    fn note_unreadable(&mut self, roots: &[Option<RelPath>], failed: &[RelPath], found: &[Observed], extent: Extent) {
        // A folder found whose contents could not be read is in both.
        for o in found {
            self.upkeep.unreadable.remove(&o.path);
        }
        for f in failed {
            let clock = self.clock;
            let (due, attempts) = self.upkeep.unreadable.entry(f.clone()).or_insert((clock, 0));
            if *attempts == 0 {
                warn!(path = %f, "cannot be read here: unknown, not gone; looked at again, and no deletion made here travels until it can be read (fix its permissions, or exclude it)");
            }
            *attempts += 1;
            *due = clock.saturating_add(super::repair::unreadable_backoff(*attempts));
        }
        let failed_set: BTreeSet<&RelPath> = failed.iter().collect();
        match extent {
            Extent::Paths if roots.iter().any(Option::is_none) => self.upkeep.unreadable.retain(|u, _| failed_set.contains(u)),
            Extent::Paths => self
                .upkeep
                .unreadable
                .retain(|u, _| failed_set.contains(u) || !roots.iter().flatten().any(|r| u.is_within(r))),
            Extent::TreePart { last } => {
                self.upkeep.tree_failed.extend(failed.iter().cloned());
                if last {
                    let seen = std::mem::take(&mut self.upkeep.tree_failed);
                    self.upkeep.unreadable.retain(|u, _| seen.contains(u));
                }
            }
        }
    }

    /// True while an unreadable path may hold what a deletion found here
    /// moved away (`mv f locked/`, or `chmod 000 sub; mv sub sub2`): a
    /// folder, or a path the index holds no live file at.
    pub(super) fn may_hold_moved_content(&self) -> bool {
        self.upkeep
            .unreadable
            .keys()
            .any(|u| self.index.live(u).is_none_or(|e| e.kind == Kind::Dir))
    }

    /// Paths a look could not read, in path order.
    pub fn unreadable(&self) -> impl Iterator<Item = &RelPath> {
        self.upkeep.unreadable.keys()
    }

    /// The received files a crash kept out of the index that the last look
    /// at the whole tree found gone (`Upkeep::journaled_gone`) whose
    /// content this look found elsewhere (`moved`, hashed off the loop
    /// since): they moved, and their deletions travel with the move (found
    /// by the workload, faults seed 7200022538: the move showed only once
    /// the file was hashed, and the file came back at its old path on
    /// every host). One found again at its path meanwhile is not gone.
    fn journaled_moves(&mut self, moved: &BTreeSet<Hash>, seen: impl Fn(&RelPath) -> bool) -> Vec<Entry> {
        let (gone, waiting) = std::mem::take(&mut self.upkeep.journaled_gone)
            .into_iter()
            .filter(|j| !seen(&j.path) && self.index.get(&j.path).is_none())
            .partition(|j| moved.contains(&j.hash));
        self.upkeep.journaled_gone = waiting;
        gone
    }

    /// What a local change of `path` builds on: `old`, or the
    /// version the install journal says was put in place there after it
    /// (a crash, then a change before the first look). The journal row is
    /// written just before its rename; a crash in between and a change of
    /// the old file would wrongly build on the newer version (which then
    /// goes to the peers' trash, not a conflict copy): a window of one
    /// rename, against a spurious conflict after every such crash.
    ///
    /// Likewise a peer's folder or deletion heard here that failed to
    /// apply (a full disk): the disk never showed it, but this node knew of
    /// it, and a change made here now comes after it. Built on both
    /// histories, what it replaced stays replaced (found by the workload,
    /// faults seed 7200022128: a folder made here, built on nothing, was
    /// concurrent with the file a peer's unapplied folder had replaced, and
    /// a node still holding that file kept it as a conflict copy). Only
    /// versions without content: coming after a peer's file would lose it.
    pub(super) fn latest_seen(&self, path: &RelPath, old: Option<Entry>) -> Option<Entry> {
        let old = match self.index.installing(path) {
            Some(j) if wins_over(j, old.as_ref()) => Some(j.clone()),
            _ => old,
        };
        let unapplied = self.upkeep.retries.get(path).map(|r| &r.entry);
        match unapplied.filter(|h| h.deleted || h.kind == Kind::Dir) {
            Some(h) if wins_over(h, old.as_ref()) => Some(Entry {
                vector: old.as_ref().map_or(h.vector.clone(), |o| h.vector.merge(&o.vector)),
                ..h.clone()
            }),
            _ => old,
        }
    }

    /// A folder whose deletion is recorded but that still holds something
    /// (a file the deleter did not know, a transfer's temp file) is kept as
    /// the container of what it holds, not seen as a folder made anew; it
    /// goes with the last of its contents (`Command::RemoveEmptyDirs`).
    ///
    /// Only a folder's deletion: a folder found where a *file* was deleted
    /// is made anew (a user writing `x/y` after `x` the file was moved
    /// away); hidden, its content reached a node that was away, still
    /// holding the file, as content below a file, and that node kept its
    /// file as a conflict copy though nothing raced (found by the
    /// workload's conflict-copy invariant, faults seed 7200021602).
    /// The folders a look's paths lie in that the index does not hold as
    /// folders (a look at one path does not observe its parents): they are
    /// folders on disk now, and peers must take them with what they hold,
    /// before it. (Found by the workload, everyday seed 7100021503: a file
    /// replaced by a folder, whose content was reported first, met the
    /// peers' file alone, and they kept that file as a conflict copy.)
    fn folders_on_the_way(&self, found: &[Observed]) -> Vec<Observed> {
        let observed = |path: &RelPath| found.binary_search_by(|o| o.path.cmp(path)).is_ok();
        let mut folders = BTreeSet::new();
        for o in found {
            // Deepest first: a scan observes what lies below its roots, so
            // in a whole-tree look every parent is found and this stops at
            // once.
            for above in o.path.ancestors().into_iter().rev() {
                let known = || self.index.live(&above).is_some_and(|e| e.kind == Kind::Dir);
                if observed(&above) || folders.contains(&above) || known() {
                    break;
                }
                folders.insert(above);
            }
        }
        folders
            .into_iter()
            .map(|path| Observed {
                path,
                kind: Kind::Dir,
                size: 0,
                mtime: 0,
                hash: Hash::ZERO,
                occupied: true,
                exec: false,
                mode: 0,
                target: None,
                xattrs: None,
                stat: None,
            })
            .collect()
    }

    /// A folder the index does not hold, with the mode of one the store
    /// makes, found holding what the index holds (or the install journal):
    /// made on the way to a file received, whose own version was still to
    /// be applied (a retry lost in a crash). Not a folder made here: the
    /// peers' version comes with their index. A folder made here holds
    /// nothing the index knows (found by the workload, faults seed
    /// 7200021970: announced as new, it beat a file its maker had
    /// replaced, and a node that had been away kept that file as a
    /// conflict copy though nothing raced).
    fn made_on_the_way(&self, o: &Observed) -> bool {
        o.kind == Kind::Dir
            && (o.mode == 0 || o.mode == DEFAULT_FOLDER_MODE)
            && o.xattrs.as_ref().is_none_or(|x| x.0.is_empty())
            && (self.index.under(Some(&o.path)).any(|e| e.path != o.path && !e.deleted)
                || self.index.installing_under(Some(&o.path)).any(|j| j.path != o.path))
    }

    /// A folder whose deletion is recorded, kept only for what it holds
    /// (see `deleted_ancestors`): no change of its own, unless a user gave
    /// it a mode of its own (a container has the default one everywhere,
    /// `fs::Store::make_dir`; found by the workload, everyday seed
    /// 7100021317: a chmod of a re-made folder never travelled) or extended
    /// attributes (a container has none).
    fn is_container(&self, o: &Observed) -> bool {
        o.kind == Kind::Dir
            && o.occupied
            && self
                .index
                .get(&o.path)
                .is_some_and(|e| e.deleted && e.kind == Kind::Dir && (o.mode == 0 || o.mode == mode_on_disk(&e)))
            && o.xattrs.as_ref().is_none_or(|x| x.0.is_empty())
    }

    /// A new local version of `path`, ranked above the `old` one it replaces
    /// (see `Entry::version`), its vector bumped for this device.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn local_version(
        &self,
        old: Option<&Entry>,
        path: RelPath,
        kind: Kind,
        deleted: bool,
        size: u64,
        mtime: i128,
        hash: Hash,
    ) -> Entry {
        let floor = old.map_or(i128::MIN, |o| o.version.saturating_add(1));
        let version = mtime.max(floor);
        let vector = old.map(|o| o.vector.clone()).unwrap_or_default().bump(self.device, version);
        Entry {
            path,
            kind,
            deleted,
            size,
            mtime,
            version,
            hash,
            vector,
            by: self.device,
            exec: false,
            mode: 0,
            target: None,
            xattrs: None,
        }
    }
}

/// The folders of `gone` below which at least one file is gone and every
/// file or link gone was `moved`.
fn moved_folders(gone: &[Entry], moved: impl Fn(&Entry) -> bool) -> BTreeSet<RelPath> {
    let folders: BTreeSet<&RelPath> = gone.iter().filter(|e| e.kind == Kind::Dir).map(|e| &e.path).collect();
    // Per folder: a moved file below it, and something gone below it that
    // did not move.
    let mut below: BTreeMap<RelPath, (bool, bool)> = BTreeMap::new();
    for e in gone.iter().filter(|e| e.kind != Kind::Dir) {
        let was_moved = moved(e);
        for folder in e.path.ancestors().into_iter().filter(|a| folders.contains(a)) {
            let seen = below.entry(folder).or_default();
            seen.0 |= was_moved;
            seen.1 |= !was_moved;
        }
    }
    below
        .into_iter()
        .filter(|(_, (some, not_all))| *some && !not_all)
        .map(|(f, _)| f)
        .collect()
}
