//! Changes on a host's disk, made between simulation steps with mtimes
//! from simulated time, each handed to the host's node the way the
//! watcher would; and what the scenario expects of each path.

use super::*;

impl Cluster {
    /// Write `content` to `path` on `host` before any node starts (no event).
    pub fn seed_file(&mut self, host: usize, path: &str, content: &[u8]) {
        self.seed_file_aged(host, path, content, Duration::ZERO);
    }

    /// Like `seed_file`, with an mtime `age` before the simulation's start.
    pub fn seed_file_aged(&mut self, host: usize, path: &str, content: &[u8], age: Duration) {
        assert!(!self.hosts[host].started, "seed_file is for trees that exist before the start");
        let t = self.now_ns() - age.as_nanos() as i64;
        self.put(host, path, content, t);
    }

    /// A folder that exists before the start.
    pub fn seed_dir(&mut self, host: usize, path: &str) {
        fs::create_dir_all(self.hosts[host].root.join(path)).unwrap();
        self.expected.insert(path.into(), Expect::Dir);
    }

    /// Write `content` at `path` with mtime `mtime_ns`; returns the topmost
    /// folder this had to create (what a watcher would report).
    fn put(&mut self, host: usize, path: &str, content: &[u8], mtime_ns: i64) -> Option<RelPath> {
        let root = self.hosts[host].root.clone();
        let created = self.make_parents(&root, path);
        let full = root.join(path);
        fs::write(&full, content).unwrap();
        let ft = filetime::FileTime::from_unix_time(mtime_ns.div_euclid(1_000_000_000), mtime_ns.rem_euclid(1_000_000_000) as u32);
        filetime::set_file_mtime(&full, ft).unwrap();
        self.expected.insert(path.into(), Expect::File(*blake3::hash(content).as_bytes()));
        created
    }

    /// Create the parent folders of `path` under `root`. Returns the
    /// topmost one created.
    ///
    /// The model expects nothing of them: they exist as long as something
    /// inside does (which the checks of their contents cover), and once
    /// that is deleted, a folder's own versions decide, which may include
    /// an older deletion from a node that had not seen this write. A
    /// deletion the model expected of them no longer holds, though.
    fn make_parents(&mut self, root: &Path, path: &str) -> Option<RelPath> {
        let mut created = None;
        let mut anc = Path::new(path).parent();
        while let Some(a) = anc.filter(|a| !a.as_os_str().is_empty()) {
            let s = a.to_string_lossy().to_string();
            if !root.join(a).exists() {
                created = Some(rel(&s));
            }
            if self.expected.get(&s).is_some_and(|e| *e != Expect::Dir) {
                self.expected.insert(s, Expect::Unknown);
            }
            anc = a.parent();
        }
        if let Some(parent) = Path::new(path).parent() {
            fs::create_dir_all(root.join(parent)).unwrap();
        }
        created
    }

    /// Paths at and below `path` on `host`'s disk, with what they hold.
    fn on_disk_under(&mut self, host: usize, path: &str) -> Vec<(String, Item)> {
        let prefix = format!("{path}/");
        self.tree(host)
            .into_iter()
            .filter(|(p, _)| p == path || p.starts_with(&prefix))
            .collect()
    }

    /// Paths below `path` that the model expects to exist but `host` does
    /// not hold: another node made them and `host` has not heard yet, so a
    /// delete or rename of `path` on `host` leaves them (and `path`) be.
    fn forget_unseen_under(&mut self, path: &str, seen: &[(String, Item)]) {
        let prefix = format!("{path}/");
        let unseen: Vec<String> = self
            .expected
            .iter()
            .filter(|(p, e)| p.starts_with(&prefix) && **e != Expect::Gone && !seen.iter().any(|(s, _)| s == *p))
            .map(|(p, _)| p.clone())
            .collect();
        if !unseen.is_empty() {
            self.expected.insert(path.into(), Expect::Unknown);
        }
        for p in unseen {
            self.expected.insert(p, Expect::Unknown);
        }
    }

    /// Paths in `seen` (what `host` is about to delete or rename away) that
    /// another host holds in a version `host` may not have seen: different
    /// content. Such a delete (or rename) may be concurrent with that edit,
    /// and then the edit wins: the scenario cannot know the outcome from the
    /// order of calls alone, so those paths (and `path`) become `Unknown`.
    /// Older content counts too: `host` may have heard of it only as the
    /// loser of a concurrent edit, which does not make its delete descend
    /// from it (found by the simulation, seed 5000017 of `faults`).
    /// Scenarios that know (a partition) set it after.
    fn forget_concurrently_edited(&mut self, host: usize, path: &str, seen: &[(String, Item)]) {
        let others: Vec<Tree> = (0..self.hosts.len()).filter(|&o| o != host).map(|o| self.tree(o)).collect();
        let mut any = false;
        for (p, item) in seen {
            let Item::File { hash, .. } = item else { continue };
            let edited = others
                .iter()
                .any(|t| matches!(t.get(p), Some(Item::File { hash: h, .. }) if h != hash));
            if edited {
                self.expected.insert(p.clone(), Expect::Unknown);
                any = true;
            }
        }
        if any {
            self.expected.insert(path.into(), Expect::Unknown);
        }
    }

    fn tell(&self, host: usize, ev: LocalEvent) {
        // Unbounded, and a receiver is kept: never fails.
        let _ = self.hosts[host].local.try_send(ev);
    }

    /// Write `host`'s exclusion rules (`STATE_DIR/exclude`): read at its
    /// next start, or within a second while it runs.
    pub fn set_exclusion(&mut self, host: usize, rules: &str) {
        self.note(format!("exclusion rules of {}: {rules:?}", self.hosts[host].name));
        let dir = self.hosts[host].root.join(crate::tree::STATE_DIR);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("exclude"), rules).unwrap();
    }

    /// Create or replace `path` on `host` (mtime: simulated now) and tell its node.
    pub fn write(&mut self, host: usize, path: &str, content: &[u8]) {
        self.note(format!("write {} {path} ({} B)", self.hosts[host].name, content.len()));
        let t = self.now_ns();
        let created = self.put(host, path, content, t);
        self.tell(host, LocalEvent::Changed(vec![Some(created.unwrap_or_else(|| rel(path)))]));
    }

    /// Make a folder (and its parents) on `host`.
    pub fn mkdir(&mut self, host: usize, path: &str) {
        self.note(format!("mkdir {} {path}", self.hosts[host].name));
        let root = self.hosts[host].root.clone();
        let created = self.make_parents(&root, path);
        let fresh = !root.join(path).exists();
        fs::create_dir_all(root.join(path)).unwrap();
        self.expected.insert(path.into(), Expect::Dir);
        if let Some(top) = created.or_else(|| fresh.then(|| rel(path))) {
            self.tell(host, LocalEvent::Changed(vec![Some(top)]));
        }
    }

    /// Give file `path` on `host` the mtime `mtime_ns` (`touch -d`), which
    /// may lie far in the past or the future, and tell its node.
    pub fn touch(&mut self, host: usize, path: &str, mtime_ns: i128) {
        self.note(format!("touch {} {path} to {mtime_ns} ns", self.hosts[host].name));
        let full = self.hosts[host].root.join(path);
        let secs = i64::try_from(mtime_ns.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
        let ft = filetime::FileTime::from_unix_time(secs, mtime_ns.rem_euclid(1_000_000_000) as u32);
        filetime::set_file_mtime(&full, ft).unwrap();
        self.tell(host, LocalEvent::Changed(vec![Some(rel(path))]));
    }

    /// Give file or folder `path` on `host` the permission bits `mode`
    /// (`chmod`), and tell its node.
    pub fn chmod(&mut self, host: usize, path: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        self.note(format!("chmod {} {path} {mode:o}", self.hosts[host].name));
        let full = self.hosts[host].root.join(path);
        fs::set_permissions(&full, fs::Permissions::from_mode(mode)).unwrap();
        self.tell(host, LocalEvent::Changed(vec![Some(rel(path))]));
    }

    /// Set extended attribute `name` of `path` on `host` to `value`
    /// (`None`: remove it), and tell its node.
    pub fn set_xattr(&mut self, host: usize, path: &str, name: &str, value: Option<&[u8]>) {
        use std::os::unix::ffi::OsStrExt;
        self.note(format!("setfattr {} {path} {name}={value:?}", self.hosts[host].name));
        let full = self.hosts[host].root.join(path);
        let c = std::ffi::CString::new(full.as_os_str().as_bytes()).unwrap();
        let n = std::ffi::CString::new(name).unwrap();
        let r = match value {
            Some(v) => unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) },
            None => unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) },
        };
        let err = std::io::Error::last_os_error();
        assert!(r == 0 || value.is_none(), "setfattr {}: {err}", full.display());
        self.tell(host, LocalEvent::Changed(vec![Some(rel(path))]));
    }

    /// Make `path` on `host` a symlink to `target` (`ln -sfn`: whatever
    /// file or link was there goes; the target need not exist, and may
    /// lie outside DIR), and tell its node.
    pub fn symlink(&mut self, host: usize, path: &str, target: &str) {
        self.note(format!("ln -s {} {path} -> {target}", self.hosts[host].name));
        let root = self.hosts[host].root.clone();
        let created = self.make_parents(&root, path);
        let full = root.join(path);
        if fs::symlink_metadata(&full).is_ok_and(|m| !m.is_dir()) {
            fs::remove_file(&full).unwrap();
        }
        std::os::unix::fs::symlink(target, &full).unwrap();
        // Made at simulated now, as files are written.
        let t = self.now_ns();
        let ft = filetime::FileTime::from_unix_time(t / 1_000_000_000, (t % 1_000_000_000) as u32);
        filetime::set_symlink_file_times(&full, ft, ft).unwrap();
        self.expected
            .insert(path.into(), Expect::Link(*blake3::hash(target.as_bytes()).as_bytes()));
        self.tell(host, LocalEvent::Changed(vec![Some(created.unwrap_or_else(|| rel(path)))]));
    }

    /// Expect nothing of any path any more: only agreement is checked (a
    /// scenario whose own oracle decides what must hold).
    pub fn forget_all(&mut self) {
        self.expected.clear();
    }

    /// Read `path` on `host`.
    pub fn read(&self, host: usize, path: &str) -> Option<Vec<u8>> {
        fs::read(self.hosts[host].root.join(path)).ok()
    }

    pub fn exists(&self, host: usize, path: &str) -> bool {
        self.hosts[host].root.join(path).exists()
    }

    /// Delete `path` (a file, or a folder with everything in it) on `host`.
    pub fn delete(&mut self, host: usize, path: &str) {
        self.note(format!("delete {} {path}", self.hosts[host].name));
        let seen = self.on_disk_under(host, path);
        let full = self.hosts[host].root.join(path);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&full).unwrap(),
            Ok(_) => fs::remove_file(&full).unwrap(),
            Err(e) => panic!("delete {path} on {}: {e}", self.hosts[host].name),
        }
        for (p, _) in &seen {
            self.expected.insert(p.clone(), Expect::Gone);
        }
        self.forget_unseen_under(path, &seen);
        self.forget_concurrently_edited(host, path, &seen);
        self.tell(host, LocalEvent::Changed(vec![Some(rel(path))]));
    }

    /// Rename `from` to `to` (a fresh path) on `host`; files keep their mtimes.
    pub fn rename(&mut self, host: usize, from: &str, to: &str) {
        self.note(format!("rename {} {from} -> {to}", self.hosts[host].name));
        let root = self.hosts[host].root.clone();
        assert!(!root.join(to).exists(), "rename target {to} exists");
        let seen = self.on_disk_under(host, from);
        let created = self.make_parents(&root, to);
        fs::rename(root.join(from), root.join(to)).unwrap();
        for (p, item) in &seen {
            self.expected.insert(p.clone(), Expect::Gone);
            let moved = format!("{to}{}", &p[from.len()..]);
            let e = match item {
                Item::Dir { .. } => Expect::Dir,
                Item::File { hash, .. } => Expect::File(*hash),
                Item::Link { target, .. } => Expect::Link(*target),
            };
            self.expected.insert(moved, e);
        }
        self.forget_unseen_under(from, &seen);
        self.forget_concurrently_edited(host, from, &seen);
        self.tell(
            host,
            LocalEvent::Renamed {
                from: rel(from),
                to: rel(to),
            },
        );
        if let Some(top) = created {
            self.tell(host, LocalEvent::Changed(vec![Some(top)]));
        }
    }

    /// The temp files visible in `host`'s directory now.
    pub fn temp_files(&mut self, host: usize) -> Vec<String> {
        let root = self.hosts[host].root.clone();
        self.reader.read(&root).1
    }

    /// Leave a half-written temp file in `host`'s folder `dir`, as a crash
    /// in the middle of a transfer would.
    pub fn plant_temp_file(&mut self, host: usize, dir: &str, content: &[u8]) {
        let d = self.hosts[host].root.join(dir);
        fs::create_dir_all(&d).unwrap();
        // Named as the host's node writes them: only those are its own.
        let device = fs::read_to_string(self.hosts[host].root.join(crate::tree::STATE_DIR).join("device")).unwrap_or_default();
        let name = dirsync::wire::temp_name(device.trim(), self.rng.next_u64() % 1_000_000);
        fs::write(d.join(name), content).unwrap();
    }

    /// Set what the scenario expects at `path` (overriding the model the
    /// write/delete/rename calls keep).
    pub fn expect(&mut self, path: &str, e: Expect) {
        self.expected.insert(path.into(), e);
    }

    /// The scenario cannot know what `path` ends as: only check agreement.
    pub fn forget(&mut self, path: &str) {
        self.expected.insert(path.into(), Expect::Unknown);
    }

    pub fn expected(&self) -> &BTreeMap<String, Expect> {
        &self.expected
    }
}
