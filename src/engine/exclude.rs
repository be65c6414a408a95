//! Selective sync: the paths this host excludes (`STATE_DIR/exclude`,
//! rules that never leave it) are neither sent, nor asked for, nor changed
//! or deleted here, and keep existing on the other hosts.
//!
//! Unlike an ignored path (`.dirsyncignore`, the same on every node and
//! left out of every digest), an excluded path is synced elsewhere: the
//! peers' digests cover it. So the index here keeps following the peers'
//! versions of what it excludes, as metadata only (`track_excluded`): the
//! tree digest stays the peers', `dirsync status` says "in sync" when the
//! rest is, and the digest repair keeps working for the rest. Those
//! entries say what the peers hold, not what this disk holds: they are
//! never announced, served, or used as local content, and a scan never
//! looks at excluded paths.
//!
//! When a rule goes, the paths it excluded are synced again: their entries
//! are forgotten (`Index::forget`), so a file missing here is fetched
//! rather than seen as deleted (but a deletion this disk held when the
//! rule came is kept, and announced), and a file here that differs from the
//! peers' version is a concurrent local version (the usual conflict rules
//! keep both). A file here that matches the forgotten entry takes it back
//! as it was (`rejoined`), so an unchanged folder costs no new versions.
//! The peers' digests then differ from ours, and the digest descent brings
//! their versions of the rest.
//!
//! The rules the index was kept under are stored with it, so a rule
//! removed while the node was stopped is handled the same way at the next
//! start.

use super::ignore::{IgnoreRules, EXCLUDE_FILE};
use super::index::{beats, same_version, wins_over, with_more_history};
use super::safety::deletes;
use super::{Engine, Look, Observed};
use crate::wire::version::Causality;
use crate::wire::{Entry, Hash, Kind, RelPath};
use std::collections::BTreeSet;
use tracing::info;

/// What a path synced again is known to hold here when its rule goes.
#[derive(Debug, Clone)]
pub(super) enum Rejoining {
    /// The version this disk held when the rule came, and the peers'
    /// version made since after seeing it (a deletion, a folder in its
    /// place, an edit), if any.
    Held { held: Entry, superseded_since: Option<Entry> },
    /// None was held (the path came while excluded): the peers' version.
    Tracked(Entry),
}

impl Rejoining {
    pub(super) fn entry(&self) -> &Entry {
        match self {
            Rejoining::Held { held: e, .. } | Rejoining::Tracked(e) => e,
        }
    }
}

/// Whether the peers' `tracked` version replaced the `held` one after
/// seeing it: a deletion that saw it, or a version whose history holds it.
fn supersedes(tracked: &Entry, held: &Entry) -> bool {
    let saw = || tracked.vector.compare(&held.vector) == Causality::Descends;
    deletes(tracked, held) || (!tracked.deleted && beats(tracked, held) && saw())
}

/// What a look at the disk makes of a path synced again (`rejoined`).
#[derive(Debug)]
pub(super) enum Rejoined {
    /// The file is the version known: the index takes it back.
    TakenBack,
    /// A new local version, built on this one (if any).
    NewVersionOf(Option<Entry>),
}

/// Exclusion rules ready to use: parsed, and not naming the whole tree.
#[derive(Debug, Clone, Default)]
pub struct Exclusion {
    rules: IgnoreRules,
    text: Vec<u8>,
}

impl Exclusion {
    /// Rules from the text of the exclusion file, with the lines left out
    /// (each with the reason), or why they cannot be used at all.
    pub fn parse(text: &[u8]) -> Result<(Exclusion, Vec<String>), String> {
        let (rules, errors) = IgnoreRules::from_file_bytes(EXCLUDE_FILE, text);
        if rules.name_everything() {
            return Err(format!(
                "the rules in {EXCLUDE_FILE} exclude every path of the directory, which would leave nothing to sync: exclude folders or patterns (e.g. videos/ or *.iso), not everything"
            ));
        }
        Ok((
            Exclusion {
                rules,
                text: text.to_vec(),
            },
            errors,
        ))
    }

    /// How many patterns the rules hold.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Engine {
    /// Exclude what `exclusion` names from now on. True if that changed
    /// what is synced here since the index was last kept (the node then
    /// looks at the whole tree: paths synced again are found there).
    pub fn set_exclusion(&mut self, exclusion: Exclusion) -> bool {
        let kept_under = self.index.exclusion_rules().to_vec();
        let changed = kept_under != exclusion.text;
        if changed {
            let (old, _) = IgnoreRules::from_file_bytes(EXCLUDE_FILE, &kept_under);
            // What a new rule names, this disk holds in the version the
            // index says now: held, for when the rule goes (the entries
            // follow the peers from now on). One pass over the index, when
            // the rules change (rarely).
            if !exclusion.rules.is_empty() {
                let newly: Vec<Entry> = self
                    .index
                    .iter()
                    .filter(|e| exclusion.rules.excludes(&e.path) && !old.excludes(&e.path))
                    .collect();
                for e in newly {
                    let held = self.deletion_waiting(e);
                    self.index.hold(held);
                }
            }
            // What they excluded and the new ones do not.
            let synced_again: Vec<Entry> = if old.is_empty() {
                Vec::new()
            } else {
                self.index
                    .iter()
                    .filter(|e| old.excludes(&e.path) && !exclusion.rules.excludes(&e.path))
                    .collect()
            };
            if !synced_again.is_empty() {
                info!(paths = synced_again.len(), "paths excluded here until now are synced again");
            }
            for tracked in synced_again {
                let held = self.index.held(&tracked.path);
                self.index.release(&tracked.path);
                self.index.forget(&tracked.path);
                let known = match held {
                    // This disk held nothing when the rule came, in that
                    // history (a deletion made here, perhaps never told):
                    // it still does until a look finds otherwise, and the
                    // peers hear it (found by the workload, faults seed
                    // 7200021983: forgotten with the rule, the file came
                    // back on every host).
                    Some(h) if h.deleted => {
                        self.record(h, None);
                        continue;
                    }
                    Some(h) => Rejoining::Held {
                        superseded_since: supersedes(&tracked, &h).then_some(tracked),
                        held: h,
                    },
                    None => Rejoining::Tracked(tracked),
                };
                if !known.entry().deleted {
                    self.filters.synced_again.insert(known.entry().path.clone(), known);
                }
            }
            self.index.set_exclusion_rules(&exclusion.text);
        }
        self.filters.exclude = exclusion.rules;
        self.drop_excluded_wants();
        self.filters.excluded_live = if self.filters.exclude.is_empty() {
            0
        } else {
            self.index.iter().filter(|e| !e.deleted && self.excluded(&e.path)).count() as u64
        };
        changed
    }

    /// What this disk holds of `e`, a path a new rule excludes: `e`, or
    /// its deletion where a look found it gone and the look that confirms
    /// it had yet to come (found by the workload, faults seed 7200021996:
    /// held as the file, it came back on every host when the rule went).
    fn deletion_waiting(&mut self, e: Entry) -> Entry {
        if e.deleted || self.upkeep.held_deletes.remove(&e.path).is_none() {
            return e;
        }
        let base = self.latest_seen(&e.path, Some(e.clone()));
        self.local_version(base.as_ref(), e.path.clone(), e.kind, true, 0, self.clock, Hash::ZERO)
    }

    /// Live paths the peers hold that this host excludes (for `dirsync
    /// status`).
    pub fn excluded_paths(&self) -> u64 {
        self.filters.excluded_live
    }

    /// True if this host's exclusion rules name `path`.
    pub(super) fn excluded(&self, path: &RelPath) -> bool {
        self.filters.exclude.excludes(path)
    }

    /// True if `path` is not synced here: ignored (everywhere) or excluded
    /// (here).
    pub(super) fn unsynced(&self, path: &RelPath, kind: Kind) -> bool {
        self.ignored(path, kind) || self.excluded(path)
    }

    /// Forget the wants of paths excluded now: nothing of them is fetched
    /// (content still on its way is refused, see `content_wanted`).
    fn drop_excluded_wants(&mut self) {
        let wanted: Vec<RelPath> = self
            .wants
            .needs
            .keys()
            .chain(self.upkeep.retries.keys())
            .chain(self.swarming.swarms.keys())
            .filter(|p| self.excluded(p))
            .cloned()
            .collect();
        for path in wanted {
            self.wants.needs.remove(&path);
            self.upkeep.retries.remove(&path);
            self.wants.inflight.remove(&path);
            if self.swarming.swarms.contains_key(&path) {
                self.end_swarm(&path);
            }
        }
    }

    /// A peer's version `e` of a path excluded here: remembered where it
    /// wins (or adds history to the same version), as the peers would, so
    /// that our digest stays theirs; nothing changes on disk.
    pub(super) fn track_excluded(&mut self, e: Entry, local: Option<Entry>) {
        let taken = match &local {
            Some(l) if same_version(&e, l) => with_more_history(&e, l),
            _ => wins_over(&e, local.as_ref()).then_some(e),
        };
        let Some(taken) = taken else { return };
        let live = |x: Option<&Entry>| x.is_some_and(|x| !x.deleted);
        match (live(local.as_ref()), live(Some(&taken))) {
            (false, true) => self.filters.excluded_live += 1,
            (true, false) => self.filters.excluded_live = self.filters.excluded_live.saturating_sub(1),
            _ => {}
        }
        self.index.insert(taken);
    }

    /// What a scan should do with `path` (a folder when `is_dir`): skip
    /// what is not synced here, and reuse what the index knows, or knew
    /// before a rule went (so a file found in that version is not hashed
    /// again).
    pub fn look_up(&self, path: &RelPath, is_dir: bool) -> Look {
        let kind = if is_dir { Kind::Dir } else { Kind::File };
        if self.unsynced(path, kind) {
            return Look::Skip;
        }
        // A version the install journal holds is what a file received
        // before a crash shows: not hashed again when it does.
        let installing = self.index.installing(path).map(|e| (e.clone(), None));
        Look::At(
            installing
                .or_else(|| self.index.known(path))
                .or_else(|| self.filters.synced_again.get(path).map(|r| (r.entry().clone(), None))),
        )
    }

    /// A look at the disk found `o` where the index forgot the version of
    /// a path synced again: if `o` is the version this disk held when the
    /// rule came (or, with none held, the peers' version), the index takes
    /// it back as it was (nothing new to announce; a newer version of the
    /// peers, a deletion included, then reaches us by the digest descent
    /// and wins as it should: issue 24, case 2). Otherwise, what a new
    /// local version builds on: the held version (an edit of it made while
    /// excluded), or nothing (new content here, concurrent with the
    /// peers').
    pub(super) fn rejoined(&mut self, o: &Observed) -> Rejoined {
        match self.filters.synced_again.remove(&o.path) {
            Some(r) if o.shows(r.entry()) => {
                self.index.insert_seen(r.entry().clone(), o.stat);
                // Deleted or replaced by the peers after they saw it: that
                // version is applied now, as one heard now would be, not
                // left for the digest descent (meanwhile the file counts as
                // content it never saw: found by the workload, faults seeds
                // 7200022059, where a file replacing its folder lost
                // against it as a conflict copy, and 7200022358, where the
                // content of a folder made in its place arrived first).
                if let Rejoining::Held {
                    superseded_since: Some(t), ..
                } = r
                {
                    self.handle_entries(self.me, vec![t]);
                }
                Rejoined::TakenBack
            }
            Some(Rejoining::Held { held, .. }) => Rejoined::NewVersionOf(Some(held)),
            _ => Rejoined::NewVersionOf(None),
        }
    }

    /// A look at the whole tree is over: what it did not find of the
    /// paths synced again is not here, and is fetched from the peers; but
    /// what lies within `unfinished` (being hashed, unreadable) is still
    /// to be seen.
    pub(super) fn rejoin_done(&mut self, unfinished: &BTreeSet<RelPath>) {
        self.filters.synced_again.retain(|p, _| unfinished.iter().any(|u| p.is_within(u)));
    }
}
