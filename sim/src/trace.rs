//! Capturing what the nodes log, per simulation, as the run's trace.
//!
//! A `tracing` layer, installed as the thread's default subscriber for the
//! life of a `Cluster`, records every INFO-or-worse event of the `dirsync`
//! crate as one line: simulated time, the turmoil host it ran on (from the
//! `node{name=..}` span turmoil enters around each host), level, message and
//! fields. The lines are the replay check (two runs of a seed must produce
//! the same lines) and what a failing scenario dumps.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// The lines of one simulation, shared with the layer.
#[derive(Clone, Default)]
pub struct TraceLog(Arc<Mutex<Vec<String>>>);

impl TraceLog {
    pub fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Install a layer feeding this log as the current thread's subscriber
    /// (also printing to stderr what the `SIM_LOG` filter selects, e.g.
    /// `SIM_LOG=dirsync=debug`; `SIM_TRACE=debug` keeps debug lines in it). Events are recorded
    /// until the guard drops.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        // `SIM_TRACE=debug` records debug lines too (in the failure log).
        let level = match std::env::var("SIM_TRACE").as_deref() {
            Ok("debug") => Level::DEBUG,
            _ => Level::INFO,
        };
        let capture = Capture { log: self.clone(), level };
        let echo = std::env::var("SIM_LOG").ok().map(|filter| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .without_time()
                .with_ansi(false)
                .with_filter(tracing_subscriber::EnvFilter::new(filter))
        });
        let subscriber = tracing_subscriber::registry().with(capture).with(echo);
        tracing::subscriber::set_default(subscriber)
    }
}

struct Capture {
    log: TraceLog,
    level: Level,
}

/// The `name` field of turmoil's `node` span.
struct HostName(String);

#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S> Layer<S> for Capture
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "node" {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        let name = f.0.trim().strip_prefix("name=").unwrap_or(f.0.trim()).to_string();
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(HostName(name));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("dirsync") || *meta.level() > self.level {
            return;
        }
        let host = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope
                    .from_root()
                    .find_map(|s| s.extensions().get::<HostName>().map(|h| h.0.clone()))
            })
            .unwrap_or_else(|| "-".into());
        let t = turmoil::sim_elapsed().map_or(-1, |d| d.as_micros() as i64);
        let mut f = Fields::default();
        event.record(&mut f);
        self.log.push(format!("{t:>12} {host} {}{}", meta.level(), f.0));
    }
}
