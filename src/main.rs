//! The `dirsync` binary: parse flags, start logging, the watcher and the
//! node, and turn errors into one line and an exit code (0 ok, 1 runtime
//! error, 2 bad usage).

use anyhow::Context;
use argh::{EarlyExit, FromArgs};
use dirsync::cli::{self, Args, KeygenArgs};
use dirsync::net::AsyncStdNet;
use dirsync::{node, watcher};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use tracing::warn;

/// How long the watcher waits for a burst of events on a path to settle.
const DEBOUNCE: Duration = Duration::from_millis(50);

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == cli::KEYGEN) {
        return keygen();
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(code) => return code,
    };
    if args.version {
        println!("dirsync {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    // Logging first: checking the flags may warn (a key file others can read).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,notify=warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dirsync: error: {e}");
            return ExitCode::from(2);
        }
    };
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

/// `dirsync keygen FILE`.
fn keygen() -> ExitCode {
    let mut words = Vec::new();
    for a in std::env::args_os().skip(2) {
        match a.into_string() {
            Ok(s) => words.push(s),
            Err(bad) => {
                eprintln!("dirsync: error: argument {bad:?} is not valid UTF-8");
                return ExitCode::from(2);
            }
        }
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let args = match KeygenArgs::from_args(&["dirsync", cli::KEYGEN], &words) {
        Ok(a) => a,
        Err(EarlyExit { output, status: Ok(()) }) => {
            print!("{output}");
            return ExitCode::SUCCESS;
        }
        Err(EarlyExit { output, status: Err(()) }) => {
            eprintln!("dirsync: error: {}", output.trim());
            return ExitCode::from(2);
        }
    };
    match args.run() {
        Ok(fingerprint) => {
            println!("wrote a new cluster key to {} (fingerprint {fingerprint})", args.file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dirsync: error: {e}");
            ExitCode::from(1)
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
