//! Progress while files move: on a terminal, one indicatif bar per peer
//! with files and bytes to receive and send, rate and time left; without
//! one, a plain log line every few seconds while transfers are pending.
//!
//! Owns: the display. It is fed by the node's own status report (the same
//! `StatusRequest` as `dirsync status`), polled from a thread of its own,
//! so the node loop knows nothing of it. Must not: change anything.

use crate::app::control::human_bytes;
use crate::node::status::{Status, StatusRequest};
use crate::wire::NodeId;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};
use tracing::info;

/// How often a terminal display is refreshed.
const TTY_EVERY: Duration = Duration::from_millis(250);
/// How often a progress line is logged without a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A `tracing` writer that keeps log lines from tearing the bars: each
/// line is written with the bars cleared, and they are drawn again after.
#[derive(Clone)]
pub struct LogWriter(pub MultiProgress);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.suspend(|| io::stderr().write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}

/// Bars drawn on stderr.
pub fn terminal_bars() -> MultiProgress {
    MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4))
}

/// Poll the node through `requests` and show its progress: on `bars` when
/// given (a terminal), else as log lines. Stops when the node is gone.
pub fn spawn(requests: async_channel::Sender<StatusRequest>, bars: Option<MultiProgress>) -> io::Result<()> {
    std::thread::Builder::new().name("progress".into()).spawn(move || {
        let mut view: Box<dyn View> = match bars {
            Some(m) => Box::new(Bars::new(m)),
            None => Box::new(Lines::default()),
        };
        loop {
            std::thread::sleep(view.every());
            let (req, reply) = StatusRequest::new();
            if requests.send_blocking(req).is_err() {
                return;
            }
            let Ok(status) = reply.recv_blocking() else { return };
            view.show(&status);
        }
    })?;
    Ok(())
}

trait View: Send {
    fn every(&self) -> Duration;
    fn show(&mut self, s: &Status);
}

/// Bytes moved so far with a peer, both ways.
fn moved(p: &crate::node::status::PeerStatus) -> u64 {
    p.bytes_received + p.bytes_sent
}

struct Bars {
    multi: MultiProgress,
    /// Per peer: its bar and the bytes moved when the bar appeared.
    bars: BTreeMap<NodeId, (ProgressBar, u64)>,
}

impl Bars {
    fn new(multi: MultiProgress) -> Bars {
        Bars {
            multi,
            bars: BTreeMap::new(),
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{prefix} [{bar:24}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }
}

impl View for Bars {
    fn every(&self) -> Duration {
        TTY_EVERY
    }

    fn show(&mut self, s: &Status) {
        for p in &s.peers {
            let remaining = p.receive_bytes + p.send_bytes;
            let busy = p.receive_files + p.send_files > 0;
            if !busy {
                if let Some((bar, _)) = self.bars.remove(&p.id) {
                    bar.finish_and_clear();
                }
                continue;
            }
            let (bar, base) = self.bars.entry(p.id).or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(remaining).with_style(Self::style()));
                bar.set_prefix(format!("{} {}", p.id.to_string().get(..8).unwrap_or_default(), p.addr));
                (bar, moved(p))
            });
            if moved(p) < *base {
                // A new connection with the peer: its counters start at 0.
                *base = 0;
            }
            let done = moved(p) - *base;
            bar.set_length(done + remaining);
            bar.set_position(done);
            bar.set_message(format!("↓ {} files ↑ {} files", p.receive_files, p.send_files));
        }
        let gone: Vec<NodeId> = self
            .bars
            .keys()
            .filter(|id| !s.peers.iter().any(|p| p.id == **id))
            .copied()
            .collect();
        for id in gone {
            if let Some((bar, _)) = self.bars.remove(&id) {
                bar.finish_and_clear();
            }
        }
    }
}

/// Log lines: one every `LOG_EVERY` while anything is pending, and one
/// when it all arrived. The node is asked every second, so the first line
/// already has a rate.
#[derive(Default)]
struct Lines {
    /// When the last line was logged (or transfers were first seen), and
    /// the bytes moved by then.
    last: Option<(Instant, u64)>,
}

impl View for Lines {
    fn every(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn show(&mut self, s: &Status) {
        let (rf, rb) = s.peers.iter().fold((0, 0), |(f, b), p| (f + p.receive_files, b + p.receive_bytes));
        let (sf, sb) = s.peers.iter().fold((0, 0), |(f, b), p| (f + p.send_files, b + p.send_bytes));
        let moved_now: u64 = s.peers.iter().map(moved).sum();
        let now = Instant::now();
        if rf + sf == 0 {
            if self.last.take().is_some() {
                info!("transfers done");
            }
            return;
        }
        let Some((t, m)) = self.last else {
            self.last = Some((now, moved_now));
            return;
        };
        let elapsed = now.duration_since(t);
        if elapsed < LOG_EVERY {
            return;
        }
        // Counters start over with a new connection: no rate this time.
        let rate = moved_now.saturating_sub(m) as f64 / elapsed.as_secs_f64();
        let left = if rate > 0.0 {
            format!("{:.0} s", (rb + sb) as f64 / rate)
        } else {
            "unknown".into()
        };
        info!(
            receive_files = rf,
            receive = %human_bytes(rb),
            send_files = sf,
            send = %human_bytes(sb),
            rate = %format!("{}/s", human_bytes(rate as u64)),
            left = %left,
            "progress"
        );
        self.last = Some((now, moved_now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::status::PeerStatus;

    fn status(peers: Vec<PeerStatus>) -> Status {
        crate::node::status::quiet_status(peers)
    }

    fn peer(receive_files: u64, receive_bytes: u64, bytes_received: u64) -> PeerStatus {
        PeerStatus {
            id: NodeId(2),
            addr: "10.0.0.2:6000".into(),
            synced: false,
            digest: None,
            ours: Default::default(),
            protocol: crate::wire::PROTOCOL_VERSION,
            receive_files,
            receive_bytes,
            send_files: 0,
            send_bytes: 0,
            bytes_received,
            bytes_sent: 0,
        }
    }

    #[test]
    fn a_bar_per_busy_peer_counting_from_when_it_appeared() {
        let mut v = Bars::new(MultiProgress::with_draw_target(ProgressDrawTarget::hidden()));
        v.show(&status(vec![peer(0, 0, 500)]));
        assert!(v.bars.is_empty(), "nothing pending: no bar");
        v.show(&status(vec![peer(2, 1000, 500)]));
        v.show(&status(vec![peer(1, 600, 900)]));
        let (bar, _) = &v.bars[&NodeId(2)];
        assert_eq!((bar.position(), bar.length()), (400, Some(1000)));
        // A new connection: its counters start over, the bar goes on.
        v.show(&status(vec![peer(1, 500, 100)]));
        let (bar, _) = &v.bars[&NodeId(2)];
        assert_eq!((bar.position(), bar.length()), (100, Some(600)));
        v.show(&status(vec![peer(0, 0, 600)]));
        assert!(v.bars.is_empty(), "done: the bar goes");
        v.show(&status(vec![peer(1, 10, 0)]));
        v.show(&status(vec![]));
        assert!(v.bars.is_empty(), "a peer gone: its bar goes");
    }
}
