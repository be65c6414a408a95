//! Running a cluster: stepping the simulation, waiting for convergence,
//! and the checks that every tree agrees and holds what the scenario
//! expects.

use super::*;

impl Cluster {
    /// Run the simulation for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.sim.elapsed() + d;
        while self.sim.elapsed() < until {
            if let Err(e) = self.sim.step() {
                self.fail(&format!("the simulation failed: {e}"));
            }
            let panics = self.panics.take();
            if !panics.is_empty() {
                self.fail(&format!("a node task panicked:\n{}", panics.join("\n")));
            }
        }
    }

    /// The status of `host`'s node, as `dirsync status --json` shows it
    /// (needs `Options::status`).
    pub fn status(&mut self, host: usize) -> Status {
        assert!(self.opts.status, "Options::status is off");
        let (request, answer) = StatusRequest::new();
        let _ = self.hosts[host].status.0.try_send(request);
        let mut status = None;
        self.run_until(Duration::from_secs(5), |_| {
            status = answer.try_recv().ok();
            status.is_some()
        });
        status.unwrap_or_else(|| self.fail(&format!("{} gave no status", self.hosts[host].name)))
    }

    /// Step until `cond` holds (checked after every step) or `max` passes.
    /// Returns whether it held.
    pub fn run_until(&mut self, max: Duration, mut cond: impl FnMut(&mut Cluster) -> bool) -> bool {
        let until = self.sim.elapsed() + max;
        while self.sim.elapsed() < until {
            let tick = self.opts.tick;
            self.run_for(tick);
            if cond(self) {
                return true;
            }
        }
        false
    }

    /// Run until every running node holds the same tree and it stays so for
    /// a few seconds; then check the trees against the expected files.
    /// Fails the test if that takes more than `within`. Returns how long it
    /// took (simulated).
    pub fn converge(&mut self, within: Duration) -> Duration {
        let start = self.sim.elapsed();
        loop {
            self.run_for(CHECK_EVERY);
            if self.trees_agree().is_ok() {
                let agreed_at = self.sim.elapsed();
                let before = self.trees();
                self.run_for(SETTLE);
                if self.trees_agree().is_ok() && self.trees() == before {
                    self.converged_at.push(agreed_at);
                    self.note(format!("converged after {:?}", agreed_at - start));
                    self.assert_converged();
                    return agreed_at - start;
                }
            }
            if self.sim.elapsed() - start > within {
                let why = self.trees_agree().err().unwrap_or_default();
                self.fail(&format!("no convergence within {within:?}:\n{why}"));
            }
        }
    }

    /// Run `d` more (longer than the idle timeout, so a connection that
    /// died unnoticed is replaced meanwhile) and check that nothing changed
    /// and everything still holds: convergence was not a passing moment.
    pub fn assert_stays_converged(&mut self, d: Duration) {
        let before = self.trees();
        self.run_for(d);
        self.assert_converged();
        let after = self.trees();
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            if a != b {
                let diff = describe_difference("before", b, "after", a);
                self.fail(&format!("{} changed after converging:\n{diff}", self.hosts[i].name));
            }
        }
    }

    /// Every host runs, holds the same tree with no temp file visible, and
    /// every path whose outcome the scenario knows holds it.
    pub fn assert_converged(&mut self) {
        if let Some(h) = self.hosts.iter().find(|h| !h.running) {
            let name = h.name.clone();
            self.fail(&format!("{name} is not running"));
        }
        if let Err(why) = self.trees_agree() {
            self.fail(&format!("trees differ:\n{why}"));
        }
        let tree = self.tree(0);
        let mut wrong = String::new();
        for (path, want) in &self.expected {
            let got = tree.get(path);
            let ok = match want {
                Expect::Gone => got.is_none(),
                Expect::Dir => got.is_some_and(Item::is_dir),
                Expect::Link(h) => matches!(got, Some(Item::Link { target, .. }) if target == h),
                Expect::File(h) => got.and_then(Item::hash) == Some(*h),
                Expect::Unknown => true,
            };
            if !ok {
                wrong += &format!("  {path}: expected {want:?}, every node has {got:?}\n");
            }
        }
        if !wrong.is_empty() {
            self.fail(&format!("the trees agree but differ from the expected outcome:\n{wrong}"));
        }
    }

    fn trees(&mut self) -> Vec<Tree> {
        (0..self.hosts.len()).map(|i| self.tree(i)).collect()
    }

    /// The synced tree of `host`.
    pub fn tree(&mut self, host: usize) -> Tree {
        self.read_tree(host).0
    }

    /// The synced tree of `host` (without its local-only paths) and the
    /// temp files in it.
    fn read_tree(&mut self, host: usize) -> (Tree, Vec<String>) {
        let root = self.hosts[host].root.clone();
        let (mut tree, temps) = self.reader.read(&root);
        tree.retain(|p, _| !(self.opts.local_only)(p));
        (tree, temps)
    }

    /// `Ok` if every running host holds the same tree and no temp file.
    fn trees_agree(&mut self) -> Result<(), String> {
        let running: Vec<usize> = (0..self.hosts.len()).filter(|&i| self.hosts[i].running).collect();
        let mut why = String::new();
        let mut first: Option<(usize, Tree)> = None;
        for i in running {
            let (tree, temps) = self.read_tree(i);
            if !temps.is_empty() {
                why += &format!("  {} shows temp files {temps:?}\n", self.hosts[i].name);
            }
            match &first {
                None => first = Some((i, tree)),
                Some((f, ft)) => why += &describe_difference(&self.hosts[*f].name, ft, &self.hosts[i].name, &tree),
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }

    /// Stop the test with `what`, the seed, and the trace (the last lines in
    /// the message, all of it in a file).
    pub fn fail(&self, what: &str) -> ! {
        let lines = self.sanitized_log();
        let dir = std::env::temp_dir().join("dirsync-sim-failures");
        let _ = fs::create_dir_all(&dir);
        let file = dir.join(format!("{}-seed{}.log", self.opts.name, self.opts.seed));
        let _ = fs::write(&file, lines.join("\n") + "\n");
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        panic!(
            "scenario {} seed {} at {:?}: {what}\n--- last trace lines (all in {}):\n{tail}",
            self.opts.name,
            self.opts.seed,
            self.sim.elapsed(),
            file.display()
        );
    }
}
