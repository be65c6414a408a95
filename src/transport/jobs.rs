//! A connection's outgoing work, in two lanes: control messages (index
//! updates, wants, digests: small and waited for) and bulk work (file
//! content, and delta requests, which sign a whole file first). The
//! writer takes control first, also between the chunks of a file, so that
//! a 64-byte change is never stuck behind gigabytes of content going the
//! same way.
//!
//! Owns: the job type and the lanes. Must not: decide what is sent.

use crate::wire::{Entry, Hash, Message};

/// Work for a connection's writer task.
#[derive(Debug)]
pub enum Job {
    Send(Message),
    /// Stream `entry`'s content, whole or as a delta against `base`.
    Content {
        entry: Entry,
        base: Option<(Hash, Vec<u8>)>,
    },
    /// Sign our copy `base` and ask for `want` as a delta against it.
    RequestDelta {
        want: Entry,
        base: Entry,
    },
    /// Send a piece of a file.
    Piece(PieceJob),
}

/// Piece `index` of `entry`: `len` bytes from `offset`, read from the temp
/// file `temp` while it holds them, else from our copy.
#[derive(Debug)]
pub struct PieceJob {
    pub entry: Entry,
    pub index: u64,
    pub offset: u64,
    pub len: u64,
    pub temp: Option<std::path::PathBuf>,
}

impl Job {
    /// Signature bytes this job holds (counted against the queue's cap).
    pub fn signature_bytes(&self) -> usize {
        match self {
            Job::Content { base: Some((_, sig)), .. } => sig.len(),
            _ => 0,
        }
    }
}

/// The node's end of a connection's lanes.
#[derive(Debug)]
pub struct JobSender {
    /// Only messages go here: the control lane is `Job::Send`.
    control: async_channel::Sender<Message>,
    bulk: async_channel::Sender<Job>,
}

/// The writer's end: control before bulk, each lane in order.
#[derive(Debug)]
pub struct JobReceiver {
    control: async_channel::Receiver<Message>,
    bulk: async_channel::Receiver<Job>,
    /// A bulk job taken to look at, not to go with the one at hand
    /// (`bulk_now_if`): the next in line.
    held: std::sync::Mutex<Option<Job>>,
}

/// A connection's two lanes (unbounded: the node caps what waits, see
/// `limits::Queued`).
pub fn lanes() -> (JobSender, JobReceiver) {
    let (control, control_rx) = async_channel::unbounded();
    let (bulk, bulk_rx) = async_channel::unbounded();
    (
        JobSender { control, bulk },
        JobReceiver {
            control: control_rx,
            bulk: bulk_rx,
            held: std::sync::Mutex::new(None),
        },
    )
}

impl JobSender {
    /// Queue `job` in its lane; false once the writer has stopped.
    pub fn send(&self, job: Job) -> bool {
        match job {
            Job::Send(msg) => self.control.try_send(msg).is_ok(),
            other => self.bulk.try_send(other).is_ok(),
        }
    }
}

impl JobReceiver {
    /// The next job, a control message if one waits; `None` once the node
    /// dropped the connection.
    pub async fn next(&self) -> Option<Job> {
        if let Some(msg) = self.control_now() {
            return Some(Job::Send(msg));
        }
        if let Some(job) = self.held().take() {
            return Some(job);
        }
        let control = async { self.control.recv().await.map(Job::Send) };
        futures_lite::future::or(control, self.bulk.recv()).await.ok()
    }

    /// The next control message, when it comes (`None` once the node
    /// dropped the connection).
    pub async fn control(&self) -> Option<Message> {
        self.control.recv().await.ok()
    }

    /// A control message waiting now, to send between a file's chunks.
    pub fn control_now(&self) -> Option<Message> {
        self.control.try_recv().ok()
    }

    /// The next bulk job, if one waits now and `takes` it (to go in the
    /// same frame as the job at hand); one it does not take stays next in
    /// line.
    pub fn bulk_now_if(&self, takes: impl Fn(&Job) -> bool) -> Option<Job> {
        let mut held = self.held();
        if held.is_some() {
            return None;
        }
        let job = self.bulk.try_recv().ok()?;
        if takes(&job) {
            return Some(job);
        }
        *held = Some(job);
        None
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Job>> {
        // Only the writer task locks it, never across an await.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(path: &str) -> Job {
        let entry = crate::wire::testing::file(path, 1, b"x");
        Job::Content { entry, base: None }
    }

    #[test]
    fn control_messages_overtake_queued_content_but_keep_their_order() {
        let (tx, rx) = lanes();
        assert!(tx.send(content("big")));
        assert!(tx.send(Job::Send(Message::Ping)));
        assert!(tx.send(Job::Send(Message::FileEnd)));
        let order: Vec<String> = futures_lite::future::block_on(async {
            let mut seen = Vec::new();
            while let Some(job) = rx.next().await {
                seen.push(match job {
                    Job::Send(m) => m.name().to_string(),
                    Job::Content { entry, .. } => entry.path.to_string(),
                    Job::RequestDelta { .. } => "delta".into(),
                    Job::Piece(_) => "piece".into(),
                });
                if seen.len() == 3 {
                    break;
                }
            }
            seen
        });
        assert_eq!(order, ["ping", "file_end", "big"]);
        drop(tx);
        assert!(futures_lite::future::block_on(rx.next()).is_none());
    }

    #[test]
    fn between_chunks_only_control_messages_are_taken() {
        let (tx, rx) = lanes();
        tx.send(content("next"));
        assert!(rx.control_now().is_none());
        tx.send(Job::Send(Message::Ping));
        assert!(matches!(rx.control_now(), Some(Message::Ping)));
        assert!(matches!(futures_lite::future::block_on(rx.next()), Some(Job::Content { .. })));
    }

    /// Small files join the one at hand while they wait; the first job
    /// that does not join stays next in line, behind any control message.
    #[test]
    fn a_bulk_job_looked_at_and_not_taken_stays_next() {
        let (tx, rx) = lanes();
        for job in [content("a"), content("b"), Job::Piece(piece()), content("c")] {
            assert!(tx.send(job));
        }
        let is_content = |j: &Job| matches!(j, Job::Content { .. });
        let first = futures_lite::future::block_on(rx.next());
        assert!(matches!(first, Some(Job::Content { entry, .. }) if entry.path.as_str() == "a"));
        assert!(matches!(rx.bulk_now_if(is_content), Some(Job::Content { entry, .. }) if entry.path.as_str() == "b"));
        assert!(rx.bulk_now_if(is_content).is_none(), "a piece does not join");
        assert!(rx.bulk_now_if(is_content).is_none(), "nor does what waits behind it");
        assert!(tx.send(Job::Send(Message::Ping)));
        let next: Vec<Option<Job>> = futures_lite::future::block_on(async { vec![rx.next().await, rx.next().await, rx.next().await] });
        assert!(matches!(&next[0], Some(Job::Send(Message::Ping))));
        assert!(matches!(&next[1], Some(Job::Piece(_))));
        assert!(matches!(&next[2], Some(Job::Content { entry, .. }) if entry.path.as_str() == "c"));
    }

    fn piece() -> PieceJob {
        PieceJob {
            entry: crate::wire::testing::file("p", 1, b"p"),
            index: 0,
            offset: 0,
            len: 1,
            temp: None,
        }
    }
}
