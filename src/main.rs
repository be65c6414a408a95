//! The `dirsync` binary: parse flags, start logging, the watcher and the
//! node, and turn errors into one line and an exit code (0 ok, 1 runtime
//! error, 2 bad usage).

use anyhow::Context;
use argh::EarlyExit;
use dirsync::cli::{self, Invocation, KeygenArgs};
use dirsync::net::AsyncStdNet;
use dirsync::{node, watcher};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use tracing::warn;

/// How long the watcher waits for a burst of events on a path to settle.
const DEBOUNCE: Duration = Duration::from_millis(50);

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Invocation::Sync(a)) => a,
        Ok(Invocation::Keygen(k)) => return keygen(&k),
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

/// Parse the command line (`cli::parse` picks the command); on `--help`
/// or a usage error, print and return the exit code instead.
fn parse_args() -> Result<Invocation, ExitCode> {
    let mut strings = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => strings.push(s),
            Err(bad) => {
                eprintln!("dirsync: error: argument {bad:?} is not valid UTF-8");
                return Err(ExitCode::from(2));
            }
        }
    }
    let words: Vec<&str> = strings.iter().map(String::as_str).collect();
    match cli::parse(&words) {
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
fn keygen(args: &KeygenArgs) -> ExitCode {
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
