//! `Cluster`: N simulated hosts, each running the real `dirsync::node::run`
//! over `TurmoilNet`, each with its own real temp directory.
//!
//! The test drives the simulation step by step from outside: between steps
//! it changes files on a host's disk (with mtimes from simulated time) and
//! hands the change to that node the way the watcher would, on the node's
//! local-event channel; it partitions, holds, crashes and restarts hosts;
//! and it checks that every tree ends the same and that no file the
//! scenario knows should exist was lost.
//!
//! Here: building a cluster, starting, stopping and cutting off hosts.
//! `running.rs`: stepping and the convergence checks; `disk.rs`: changes
//! on a host's disk and what the scenario expects of each path.

mod disk;
mod running;

use crate::net::{epoch, Panics, TurmoilNet, EPOCH_SECS};
use crate::trace::TraceLog;
use crate::tree::{describe_difference, Item, Tree, TreeReader, TEMP_PREFIX};
use dirsync::fs::temp::{DiskFault, DiskFaults};
use dirsync::fs::watcher::LocalEvent;
use dirsync::node::status::{Status, StatusRequest};
use dirsync::node::{Config, Counters};
use dirsync::transport::key::ClusterKey;
use dirsync::wire::{NodeId, RelPath};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub const LISTEN_PORT: u16 = 6000;
pub const BROADCAST_PORT: u16 = 5000;
/// Files over this are hashed off the loop, as production's large files
/// are: the workloads' 70–130 KB files take that way.
const INLINE_HASH_MAX: u64 = 64 * 1024;
/// The piece size of every simulated node: the workload's files of 70 to
/// 130 KB are fetched in 5 to 9 pieces, so every scenario swarms.
const PIECE_SIZE: u64 = dirsync::wire::pieces::MIN_PIECE_SIZE;
/// How often `converge` looks at the trees (simulated time).
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long the trees must stay the same before a cluster counts as settled.
const SETTLE: Duration = Duration::from_secs(3);

/// How to build a cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Scenario name, for failure reports.
    pub name: String,
    pub nodes: usize,
    pub seed: u64,
    pub announce_interval: Duration,
    pub rescan_interval: Duration,
    pub min_latency: Duration,
    pub max_latency: Duration,
    /// Chance that a message breaks its link (turmoil's `fail_rate`).
    pub fail_rate: f64,
    pub tick: Duration,
    /// Let turmoil run the hosts in a random order at each step.
    pub random_order: bool,
    /// Paths each node keeps to itself (its ignore rules): left out when
    /// trees are compared.
    pub local_only: fn(&str) -> bool,
    /// Broadcast discovery on every node.
    pub discovery: bool,
    /// Give every node the list of every host (itself included) as static
    /// peers, `n0:6000`, `n1:6000`...
    pub static_peers: bool,
    /// Host i's cluster key (`--key-file`); hosts past the end have none.
    pub keys: Vec<Option<ClusterKey>>,
    /// Hosts that flip a byte of every piece they send.
    pub liars: Vec<usize>,
    /// Give every node a status channel (`Cluster::status`). Off by
    /// default: the node's loop then polls one source fewer, as the other
    /// scenarios' seeds were recorded with.
    pub status: bool,
}

impl Options {
    pub fn new(name: &str, nodes: usize, seed: u64) -> Options {
        Options {
            name: name.into(),
            nodes,
            seed,
            announce_interval: Duration::from_secs(1),
            rescan_interval: Duration::from_secs(3600),
            min_latency: Duration::from_millis(0),
            max_latency: Duration::from_millis(20),
            fail_rate: 0.0,
            tick: Duration::from_millis(1),
            random_order: true,
            local_only: |_| false,
            discovery: true,
            static_peers: false,
            keys: Vec::new(),
            liars: Vec::new(),
            status: false,
        }
    }
}

/// What a path must hold on every node once the cluster settles.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A file with this content hash.
    File([u8; 32]),
    Dir,
    /// A symlink whose target has this hash.
    Link([u8; 32]),
    Gone,
    /// May or may not exist: only agreement is checked. (Kept rather than
    /// dropped: a deletion of a folder above it cannot know the outcome.)
    Unknown,
}

impl std::fmt::Debug for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::File(h) => write!(f, "file({:02x}{:02x}{:02x}{:02x})", h[0], h[1], h[2], h[3]),
            Expect::Dir => write!(f, "dir"),
            Expect::Link(h) => write!(f, "link({:02x}{:02x}{:02x}{:02x})", h[0], h[1], h[2], h[3]),
            Expect::Gone => write!(f, "gone"),
            Expect::Unknown => write!(f, "unknown"),
        }
    }
}

struct Host {
    name: String,
    root: PathBuf,
    _dir: tempfile::TempDir,
    local: async_channel::Sender<LocalEvent>,
    /// Kept so events sent while the node is down wait for its next start.
    _local_rx: async_channel::Receiver<LocalEvent>,
    /// `stop` asks the node to shut down cleanly here (as SIGTERM does).
    shutdown: (async_channel::Sender<()>, async_channel::Receiver<()>),
    /// `status` asks the node for its status here (with `Options::status`).
    status: (async_channel::Sender<StatusRequest>, async_channel::Receiver<StatusRequest>),
    counters: Arc<Counters>,
    /// The switch for this host's injected disk failures.
    disk_faults: DiskFaults,
    incarnation: Rc<Cell<u64>>,
    started: bool,
    running: bool,
    /// Cut off by `isolate`.
    isolated: bool,
    /// Files a program holds open for writing here (`hold_open`), with
    /// the inode it has open.
    held: BTreeMap<String, (std::fs::File, u64)>,
}

pub struct Cluster {
    // Dropped first: the simulation (and the nodes' tasks) before the
    // directories they use and before the trace subscriber.
    sim: turmoil::Sim<'static>,
    pub opts: Options,
    hosts: Vec<Host>,
    log: TraceLog,
    panics: Panics,
    expected: BTreeMap<String, Expect>,
    reader: TreeReader,
    /// Scenario randomness, derived from the seed.
    pub rng: Rng,
    /// Simulated time at which each `converge` found the trees equal.
    converged_at: Vec<Duration>,
    _trace: tracing::subscriber::DefaultGuard,
}

/// The node id of `host`'s `incarnation`-th start: a fresh id per start, as
/// production draws a random one per process.
pub fn node_id(seed: u64, host: usize, incarnation: u64) -> NodeId {
    NodeId(splitmix(seed ^ splitmix((host as u64) << 32 | incarnation)))
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A small deterministic generator for scenario choices and file contents.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn rel(path: &str) -> RelPath {
    RelPath::new(path).unwrap_or_else(|e| panic!("bad scenario path {path:?}: {e}"))
}

impl Cluster {
    /// Make the hosts' directories; no node runs until `start`.
    pub fn new(opts: Options) -> Cluster {
        let log = TraceLog::default();
        let trace = log.install();
        let mut b = turmoil::Builder::new();
        b.simulation_duration(Duration::from_secs(24 * 3600))
            .tick_duration(opts.tick)
            .epoch(epoch())
            .rng_seed(opts.seed)
            .min_message_latency(opts.min_latency)
            .max_message_latency(opts.max_latency)
            .fail_rate(opts.fail_rate)
            // A broken link heals at once: each failure loses the messages
            // in flight, as a short outage would.
            .repair_rate(1.0)
            // Room for the many small segments of a busy connection.
            .tcp_capacity(1024);
        if opts.random_order {
            b.enable_random_order();
        }
        let sim = b.build();
        let hosts = (0..opts.nodes)
            .map(|i| {
                let dir = tempfile::Builder::new().prefix("dirsync-sim-").tempdir().unwrap();
                let root = dir.path().canonicalize().unwrap();
                let (local, local_rx) = async_channel::unbounded();
                Host {
                    name: format!("n{i}"),
                    root,
                    _dir: dir,
                    local,
                    _local_rx: local_rx,
                    shutdown: async_channel::unbounded(),
                    status: async_channel::unbounded(),
                    counters: Arc::new(Counters::default()),
                    disk_faults: DiskFaults::default(),
                    incarnation: Rc::new(Cell::new(0)),
                    started: false,
                    running: false,
                    isolated: false,
                    held: BTreeMap::new(),
                }
            })
            .collect();
        Cluster {
            sim,
            rng: Rng::new(splitmix(opts.seed ^ 0x5eed)),
            opts,
            hosts,
            log,
            panics: Panics::default(),
            expected: BTreeMap::new(),
            reader: TreeReader::default(),
            converged_at: Vec::new(),
            _trace: trace,
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn root(&self, host: usize) -> &Path {
        &self.hosts[host].root
    }

    /// From now on every disk write of `host`'s node fails with `fault`
    /// (a full, read-only or failing disk), or works again (`None`).
    pub fn disk_fault(&mut self, host: usize, fault: Option<DiskFault>) {
        self.note(format!("{} disk fault {fault:?}", self.hosts[host].name));
        self.hosts[host].disk_faults.set(fault);
    }

    /// A program opens file `path` on `host` for writing and keeps it open
    /// (as a database does): the node must not replace or delete it until
    /// `close_held`. False if there is no file there.
    pub fn hold_open(&mut self, host: usize, path: &str) -> bool {
        use std::os::unix::fs::MetadataExt;
        let full = self.hosts[host].root.join(path);
        let Ok(file) = std::fs::OpenOptions::new().append(true).open(&full) else {
            return false;
        };
        let Ok(meta) = file.metadata() else { return false };
        if !meta.is_file() {
            return false;
        }
        self.note(format!("hold open {} {path}", self.hosts[host].name));
        self.hosts[host].disk_faults.hold_open(&full, true);
        self.hosts[host].held.insert(path.to_string(), (file, meta.ino()));
        true
    }

    /// The program holding `path` open on `host` closes it. `Err` if the
    /// file it had open is no longer at `path`: it was replaced or deleted
    /// under its writer.
    pub fn close_held(&mut self, host: usize, path: &str) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let full = self.hosts[host].root.join(path);
        self.note(format!("release {} {path}", self.hosts[host].name));
        self.hosts[host].disk_faults.hold_open(&full, false);
        let Some((_file, ino)) = self.hosts[host].held.remove(path) else {
            return Ok(());
        };
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.ino() == ino => Ok(()),
            Ok(_) => Err(format!(
                "{path} on {} was replaced while a program held it open for writing",
                self.hosts[host].name
            )),
            Err(_) => Err(format!(
                "{path} on {} was deleted while a program held it open for writing",
                self.hosts[host].name
            )),
        }
    }

    pub fn counters(&self, host: usize) -> &Counters {
        &self.hosts[host].counters
    }

    pub fn name(&self, host: usize) -> &str {
        &self.hosts[host].name
    }

    /// The node id `host` runs under now.
    pub fn node_id(&self, host: usize) -> NodeId {
        node_id(self.opts.seed, host, self.hosts[host].incarnation.get())
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.sim.elapsed()
    }

    /// Simulated wall-clock time now, in ns since the Unix epoch.
    pub fn now_ns(&self) -> i64 {
        (EPOCH_SECS as i64) * 1_000_000_000 + self.sim.elapsed().as_nanos() as i64
    }

    /// Start every node not started yet.
    pub fn start_all(&mut self) {
        for i in 0..self.hosts.len() {
            if !self.hosts[i].started {
                self.start(i);
            }
        }
    }

    /// Register `host` with the simulation: its node starts at once, and
    /// again (with a new id) on every `restart`.
    pub fn start(&mut self, host: usize) {
        let h = &mut self.hosts[host];
        assert!(!h.started, "{} started twice", h.name);
        h.started = true;
        h.running = true;
        let name = h.name.clone();
        let root = h.root.clone();
        let incarnation = h.incarnation.clone();
        let local_rx = h._local_rx.clone();
        let shutdown = h.shutdown.1.clone();
        let status = h.status.1.clone();
        let counters = h.counters.clone();
        let disk_faults = h.disk_faults.clone();
        let panics = self.panics.clone();
        let opts = self.opts.clone();
        let log = self.log.clone();
        let host_name = name.clone();
        self.sim.host(name.as_str(), move || {
            let n = incarnation.get() + 1;
            incarnation.set(n);
            let cfg = Config {
                dir: root.clone(),
                state_dir: root.join(crate::tree::STATE_DIR),
                listen_port: LISTEN_PORT,
                broadcast_port: BROADCAST_PORT,
                broadcast_addr: Ipv4Addr::BROADCAST,
                node_id: node_id(opts.seed, host, n),
                announce_interval: opts.announce_interval,
                rescan_interval: opts.rescan_interval,
                key: opts.keys.get(host).cloned().flatten(),
                counters: counters.clone(),
                static_peers: if opts.static_peers {
                    (0..opts.nodes).map(|i| format!("n{i}:{LISTEN_PORT}")).collect()
                } else {
                    Vec::new()
                },
                discovery: opts.discovery,
                control: dirsync::node::status::Control {
                    shutdown: Some(shutdown.clone()),
                    status: opts.status.then(|| status.clone()),
                },
                disk_faults: disk_faults.clone(),
                trash_days: 7,
                trash_max: Default::default(),
                perms: true,
                xattrs: true,
                inline_hash_max: INLINE_HASH_MAX,
                max_send_rate: None,
                max_recv_rate: None,
                dashboard: None,
                piece_size: PIECE_SIZE,
                corrupt_pieces: opts.liars.contains(&host),
            };
            let net = TurmoilNet::new(&host_name, panics.clone());
            let rx = local_rx.clone();
            let log = log.clone();
            let host_name = host_name.clone();
            async move {
                let t = turmoil::sim_elapsed().unwrap_or_default().as_micros();
                log.push(format!("{t:>12} {host_name} START incarnation {n} as {}", cfg.node_id));
                dirsync::node::run(net, cfg, rx).await?;
                Ok(())
            }
        });
    }

    /// Run `f` as an extra turmoil host named `name` beside the nodes (a
    /// hostile or impostor client written by the scenario); it can reach
    /// the nodes at their names and `LISTEN_PORT`/`BROADCAST_PORT`.
    pub fn add_host<F, Fut>(&mut self, name: &str, f: F)
    where
        F: Fn() -> Fut + 'static,
        Fut: std::future::Future<Output = turmoil::Result> + 'static,
    {
        self.note(format!("add host {name}"));
        self.sim.host(name, f);
    }

    /// Crash `host` like a power loss: its node stops at once, every task
    /// and socket dropped, and nothing it would say while going down (FINs,
    /// RSTs) reaches anyone. Its peers find out when they next send to it.
    ///
    /// (The silence is also what keeps a crash deterministic: turmoil drops
    /// the host's tasks in an order that follows tokio's process-wide task
    /// ids, which tests running in parallel shift, and each goodbye sent
    /// would draw its latency from the seeded generator in that order.)
    pub fn crash(&mut self, host: usize) {
        let name = self.hosts[host].name.clone();
        self.note(format!("crash {name}"));
        self.silently(host, |sim| sim.crash(name.as_str()));
        self.hosts[host].running = false;
    }

    /// Stop `host` cleanly, as SIGTERM does: its index is committed and
    /// closed, its connections closed. `restart` starts it again.
    pub fn stop(&mut self, host: usize) {
        let name = self.hosts[host].name.clone();
        self.note(format!("stop {name}"));
        let _ = self.hosts[host].shutdown.0.try_send(());
        self.run_for(Duration::from_millis(500));
        self.hosts[host].running = false;
    }

    /// Start a crashed, stopped (or running) node again, with its state on
    /// disk and a new node id.
    pub fn restart(&mut self, host: usize) {
        let name = self.hosts[host].name.clone();
        self.note(format!("restart {name}"));
        self.silently(host, |sim| sim.bounce(name.as_str()));
        self.hosts[host].running = true;
    }

    /// Run `f` with `host` cut off from every other host (unless it already
    /// is, by `isolate`, which stays so).
    fn silently(&mut self, host: usize, f: impl FnOnce(&mut turmoil::Sim<'static>)) {
        let names: Vec<String> = self.hosts.iter().map(|h| h.name.clone()).collect();
        let me = names[host].as_str();
        let was_isolated = self.hosts[host].isolated;
        for o in names.iter().filter(|o| o.as_str() != me) {
            self.sim.partition(me, o.as_str());
        }
        f(&mut self.sim);
        if !was_isolated {
            for o in names.iter().filter(|o| o.as_str() != me) {
                self.sim.repair(me, o.as_str());
            }
        }
    }

    pub fn is_running(&self, host: usize) -> bool {
        self.hosts[host].running
    }

    /// Drop every message between `host` and all the others until `heal`.
    pub fn isolate(&mut self, host: usize) {
        self.note(format!("isolate {}", self.hosts[host].name));
        self.hosts[host].isolated = true;
        for o in 0..self.hosts.len() {
            if o != host {
                self.sim.partition(self.hosts[host].name.as_str(), self.hosts[o].name.as_str());
            }
        }
    }

    /// Undo `isolate`.
    pub fn heal(&mut self, host: usize) {
        self.note(format!("heal {}", self.hosts[host].name));
        self.hosts[host].isolated = false;
        for o in 0..self.hosts.len() {
            if o != host {
                self.sim.repair(self.hosts[host].name.as_str(), self.hosts[o].name.as_str());
            }
        }
    }

    /// Cut the hosts in `side` off from all the others (they still reach
    /// each other) until `rejoin`. (Do not crash a host meanwhile.)
    pub fn split(&mut self, side: &[usize]) {
        self.note(format!("split {side:?} from the rest"));
        for &a in side {
            for b in (0..self.hosts.len()).filter(|b| !side.contains(b)) {
                self.sim.partition(self.hosts[a].name.as_str(), self.hosts[b].name.as_str());
            }
        }
    }

    /// Undo `split`.
    pub fn rejoin(&mut self, side: &[usize]) {
        self.note(format!("rejoin {side:?}"));
        for &a in side {
            for b in (0..self.hosts.len()).filter(|b| !side.contains(b)) {
                self.sim.repair(self.hosts[a].name.as_str(), self.hosts[b].name.as_str());
            }
        }
    }

    /// Hold the messages between `a` and `b` (they are delivered late, on `release`).
    pub fn hold(&mut self, a: usize, b: usize) {
        self.note(format!("hold {} {}", self.hosts[a].name, self.hosts[b].name));
        self.sim.hold(self.hosts[a].name.as_str(), self.hosts[b].name.as_str());
    }

    pub fn release(&mut self, a: usize, b: usize) {
        self.note(format!("release {} {}", self.hosts[a].name, self.hosts[b].name));
        self.sim.release(self.hosts[a].name.as_str(), self.hosts[b].name.as_str());
    }

    pub fn set_fail_rate(&mut self, rate: f64) {
        self.note(format!("fail rate {rate}"));
        self.sim.set_fail_rate(rate);
    }

    /// Record a scenario step in the trace.
    pub fn note(&self, what: String) {
        let t = self.sim.elapsed().as_micros();
        self.log.push(format!("{t:>12} cluster {what}"));
    }

    // ----- replay -------------------------------------------------------

    /// The trace with each host's directory and temp-file numbers (which
    /// differ between runs) replaced by stable names.
    pub fn sanitized_log(&self) -> Vec<String> {
        let roots: Vec<(String, String)> = self
            .hosts
            .iter()
            .map(|h| (h.root.display().to_string(), format!("<{}>", h.name)))
            .collect();
        self.log
            .lines()
            .into_iter()
            .map(|mut l| {
                for (r, n) in &roots {
                    l = l.replace(r, n);
                }
                mask_temp_names(&l)
            })
            .collect()
    }

    /// A digest of the run: every trace line, the final trees (with mtimes)
    /// and the simulated times at which the cluster converged. Two runs of a
    /// seed must give the same digest.
    pub fn digest(&mut self) -> String {
        let mut h = blake3::Hasher::new();
        for l in self.sanitized_log() {
            h.update(l.as_bytes());
            h.update(b"\n");
        }
        for i in 0..self.hosts.len() {
            for (p, item) in self.tree(i) {
                h.update(format!("{i} {p} {item:?}\n").as_bytes());
            }
        }
        for t in &self.converged_at {
            h.update(format!("converged {}\n", t.as_nanos()).as_bytes());
        }
        h.update(format!("trace lines {}\n", self.log.len()).as_bytes());
        h.finalize().to_hex().to_string()
    }

    pub fn converged_at(&self) -> &[Duration] {
        &self.converged_at
    }

    pub fn content_bytes_received(&self, host: usize) -> u64 {
        self.hosts[host].counters.content_bytes_received.load(Ordering::Relaxed)
    }
}

/// `.dirsync-tmp-<pid>-<n>` → `.dirsync-tmp-*` (the counter is per process).
fn mask_temp_names(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find(TEMP_PREFIX) {
        out.push_str(&rest[..i + TEMP_PREFIX.len()]);
        out.push('*');
        rest = &rest[i + TEMP_PREFIX.len()..];
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}
