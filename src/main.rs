//! The `dirsync` binary: parse flags, start logging, the watcher and the
//! node, and turn errors into one line and an exit code (0 ok, 1 runtime
//! error, 2 bad usage).

use anyhow::Context;
use argh::{EarlyExit, FromArgs};
use dirsync::cli::Args;
use dirsync::net::AsyncStdNet;
use dirsync::{node, watcher};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use tracing::warn;

/// How long the watcher waits for a burst of events on a path to settle.
/// Short, so a saved file reaches the peers within tens of milliseconds; a
/// file still being written is sent again when it settles (and a receiver
/// never applies a version whose content no longer matches).
const DEBOUNCE: Duration = Duration::from_millis(20);

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.version {
        println!("dirsync {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dirsync: error: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,notify=warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dirsync: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Parse the command line; on `--help` or a usage error, print and return
/// the exit code instead.
fn parse_args() -> Result<Args, ExitCode> {
    let mut strings = Vec::new();
    for a in std::env::args_os() {
        match a.into_string() {
            Ok(s) => strings.push(s),
            Err(bad) => {
                eprintln!("dirsync: error: argument {bad:?} is not valid UTF-8");
                return Err(ExitCode::from(2));
            }
        }
    }
    let words: Vec<&str> = strings.iter().map(String::as_str).collect();
    match Args::from_args(&["dirsync"], words.get(1..).unwrap_or_default()) {
        Ok(a) => Ok(a),
        Err(EarlyExit { output, status: Ok(()) }) => {
            print!("{output}");
            Err(ExitCode::SUCCESS)
        }
        Err(EarlyExit { output, status: Err(()) }) => {
            eprintln!("dirsync: error: {}", output.trim());
            Err(ExitCode::from(2))
        }
    }
}

fn run(config: node::Config) -> anyhow::Result<()> {
    node::prepare_state_dir(&config.state_dir)?;
    let (tx, rx) = async_channel::unbounded();
    // Without a watcher the periodic rescan still finds every change.
    let _watcher = match watcher::watch(&config.dir, &config.state_dir, DEBOUNCE, tx) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, "live changes will be found by the periodic rescan only");
            None
        }
    };
    AsyncStdNet::block_on(node::run(AsyncStdNet, config, rx)).context("dirsync stopped")
}
