//! The `dirsync` binary: parse flags, start logging, the watcher, the
//! signal handler, the control socket, the progress display and the node,
//! and turn errors into one line and an exit code (0 ok, also after
//! SIGINT/SIGTERM; 1 runtime error; 2 bad usage; 3 `status` found no node).

/// A line on stderr that cannot panic: stderr may be a pipe whose reader
/// is gone (`dirsync DIR 2>&1 | head -1`), and `eprintln!` panics there.
macro_rules! say {
    ($($line:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($line)*);
    }};
}

use anyhow::Context;
use argh::EarlyExit;
use dirsync::app::cli::{CliError, ConflictsArgs, Invocation, KeygenArgs, StatusArgs, TrashArgs};
use dirsync::app::control::{self, ControlError};
use dirsync::app::dashboard;
use dirsync::app::progress;
use dirsync::fs::state::prepare_state_dir;
use dirsync::fs::watcher;
use dirsync::node;
use dirsync::node::status::Control;
use dirsync::transport::net::AsyncStdNet;
use dirsync::wire::STATE_DIR_NAME;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long the watcher waits for a burst of events on a path to settle.
/// Short, so a saved file reaches the peers within about 10 ms (`just
/// bench` W4: p50 8.9 ms, 24.4 ms at 20 ms); a file still being written is
/// sent again when it settles (and a receiver never applies a version
/// whose content no longer matches).
const DEBOUNCE: Duration = Duration::from_millis(5);

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Invocation::Run(a)) => a,
        Ok(Invocation::Status(s)) => return status(s),
        Ok(Invocation::Keygen(k)) => return keygen(&k),
        Ok(Invocation::Trash(t)) => return trash(&t),
        Ok(Invocation::Conflicts(c)) => return conflicts(&c),
        Err(code) => return code,
    };
    if args.version {
        println!("dirsync {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    // Logging first: checking the flags may warn (a key file others can read).
    let tty = std::io::stderr().is_terminal();
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let bars = tty.then(progress::terminal_bars);
    // A log line that cannot be written (stderr a pipe whose reader is
    // gone) is dropped: tracing-subscriber's report of the failure is an
    // `eprintln!`, which panics on that pipe and took the node down.
    match &bars {
        Some(m) => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(progress::LogWriter(m.clone()))
            .with_ansi(true)
            .log_internal_errors(false)
            .init(),
        None => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .log_internal_errors(false)
            .init(),
    }
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            say!("dirsync: error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config, bars) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("dirsync: error: {}", chain(&e));
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line, each cause once: our error types
/// already name their cause in their own message, and `{:#}` would repeat
/// it ("...: Address already in use: Address already in use").
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out += ": ";
            }
            out += &text;
        }
    }
    out
}

/// Parse the command line; on `--help` or a usage error, print and return
/// the exit code instead.
fn parse_args() -> Result<Invocation, ExitCode> {
    let mut strings = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => strings.push(s),
            Err(bad) => {
                say!("dirsync: error: argument {bad:?} is not valid UTF-8");
                return Err(ExitCode::from(2));
            }
        }
    }
    let words: Vec<&str> = strings.iter().map(String::as_str).collect();
    match dirsync::app::cli::parse(&words) {
        Ok(a) => Ok(a),
        Err(EarlyExit { output, status: Ok(()) }) => {
            print!("{output}");
            Err(ExitCode::SUCCESS)
        }
        Err(EarlyExit { output, status: Err(()) }) => {
            say!("dirsync: error: {}", output.trim());
            Err(ExitCode::from(2))
        }
    }
}

/// A bad command line (exit code 2), said in one line.
fn usage_error(e: &dyn std::fmt::Display) -> ExitCode {
    say!("dirsync: error: {e}");
    ExitCode::from(2)
}

/// `dirsync trash`: list what the trash holds, from the disk.
fn trash(args: &TrashArgs) -> ExitCode {
    let dir = match args.trash_dir() {
        Ok(d) => d,
        Err(e) => return usage_error(&e),
    };
    let kept = dirsync::fs::trash::list(&dir);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&kept).unwrap_or_default());
    } else if kept.is_empty() {
        println!("the trash is empty ({})", dir.display());
    } else {
        for k in &kept {
            println!(
                "{}  {:>10}  {}  ->  {}",
                k.trashed,
                control::human_bytes(k.size),
                k.original,
                k.path.display()
            );
        }
    }
    ExitCode::SUCCESS
}

/// `dirsync conflicts`: list the conflict copies, or settle one.
fn conflicts(args: &ConflictsArgs) -> ExitCode {
    use dirsync::fs::conflicts;
    let root = match args.root() {
        Ok(d) => d,
        Err(e) => return usage_error(&e),
    };
    let settled = match (&args.keep, &args.drop) {
        (Some(_), Some(_)) => return usage_error(&"--keep and --drop settle one copy each: give one of them"),
        (Some(copy), None) => Some(conflicts::keep(&root, copy).map(|original| format!("kept: it is {original} now"))),
        (None, Some(copy)) => Some(conflicts::drop_copy(&root, copy).map(|copy| format!("dropped {copy}"))),
        (None, None) => None,
    };
    match settled {
        Some(Ok(done)) => {
            println!("{done} (a running node syncs it now; otherwise at its next start)");
            return ExitCode::SUCCESS;
        }
        Some(Err(e)) => {
            say!("dirsync: error: {e}");
            return ExitCode::from(1);
        }
        None => {}
    }
    let device = dirsync::fs::state::read_device_id(&root.join(STATE_DIR_NAME)).map(|d| d.to_string());
    let copies = conflicts::list(&root, device.as_deref());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&copies).unwrap_or_default());
    } else if copies.is_empty() {
        println!("no conflict copies in {}", root.display());
    } else {
        for c in &copies {
            let original = match (&c.original, c.original_exists) {
                (Some(o), true) => o.clone(),
                (Some(o), false) => format!("{o} (gone now)"),
                (None, _) => "(unknown: the name was shortened)".into(),
            };
            let by = if c.this_device {
                format!("{} (this host)", c.device)
            } else {
                c.device.clone()
            };
            println!("{}  {}", c.path, control::human_bytes(c.size));
            let written = c.written.replace('T', " ").replace('Z', " UTC");
            println!("    lost against {original}; written {written} by device {by}");
        }
        println!("\nsettle one: dirsync conflicts --keep COPY (it replaces the file) or --drop COPY (it goes)");
    }
    ExitCode::SUCCESS
}

/// `dirsync status`: ask the node, print its answer.
fn status(args: StatusArgs) -> ExitCode {
    let answer = match args.state_dir() {
        Ok(d) => control::query(&d),
        // DIR is gone: a node that synced it may still run there (it is
        // suspended, and answers at its twin socket).
        Err(e @ CliError::NoSuchDir(_)) => match control::query(&args.state_dir_of_gone_dir()) {
            Err(ControlError::NotRunning(_)) => return usage_error(&e),
            other => other,
        },
        Err(e) => return usage_error(&e),
    };
    match answer {
        Ok(s) if args.json => {
            println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(s) => {
            print!("{}", s.render());
            // The token is the owner's to read, as the status is.
            let token = args.state_dir().ok().as_deref().and_then(dashboard::read_token);
            if let (Some(page), Some(token)) = (&s.dashboard, token) {
                println!("page     {page}?token={token}");
            }
            ExitCode::SUCCESS
        }
        Err(e @ ControlError::NotRunning(_)) => {
            say!("dirsync: error: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            say!("dirsync: error: {e}");
            ExitCode::from(1)
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
            say!("dirsync: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// SIGINT and SIGTERM become one shutdown request; a second one ends the
/// process at once.
fn on_signals(shutdown: async_channel::Sender<()>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("cannot handle signals")?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut seen = false;
        for sig in signals.forever() {
            if seen {
                say!("dirsync: second signal {sig}; stopping at once");
                std::process::exit(1);
            }
            seen = true;
            info!(
                signal = sig,
                "stopping: abandoning transfers in progress, saving the index, closing connections"
            );
            let _ = shutdown.try_send(());
        }
    })?;
    Ok(())
}

fn serve_dashboard(
    addr: std::net::SocketAddr,
    config: &node::Config,
    requests: async_channel::Sender<node::status::StatusRequest>,
) -> Result<dashboard::Dashboard, dashboard::DashboardError> {
    let ctx = dashboard::Context {
        token: dashboard::token(&config.state_dir)?,
        root: config.dir.clone(),
        state_dir: config.state_dir.clone(),
        requests,
        send_rate: config.max_send_rate,
        recv_rate: config.max_recv_rate,
    };
    dashboard::serve(addr, ctx)
}

/// Raise the soft limit on open files to the hard one, as Go programs
/// (Syncthing among them) do at start: received files wait to be made
/// durable with their temp files open, up to a few thousand at once, and
/// many systems set the soft limit at 1024.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for getrlimit and setrlimit to
    // read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                debug!(error = %std::io::Error::last_os_error(), "cannot raise the open files limit");
            }
        }
    }
}

/// At most two malloc arenas (unless `MALLOC_ARENA_MAX` says otherwise):
/// glibc gives each thread that allocates while another does an arena of
/// its own, and with received files written on one blocking thread while
/// another makes the previous batch durable, the arenas' free memory
/// added 2-3 MiB to a first sync of 5,000 files (27.8-29.2 MiB peak with
/// the loop writing, 30.5-31.9 with the threads, 28.5 with two arenas).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

fn run(mut config: node::Config, bars: Option<indicatif::MultiProgress>) -> anyhow::Result<()> {
    limit_malloc_arenas();
    raise_open_files_limit();
    // Make the state directory owner-only when it is ours: the default, or
    // one this run creates. A directory given with -s that exists already
    // (it may be shared, like /tmp) keeps its permissions; the socket in it
    // is 0600 in any case.
    let ours = !config.state_dir.exists() || config.state_dir == config.dir.join(STATE_DIR_NAME);
    prepare_state_dir(&config.state_dir)?;
    if ours {
        if let Err(e) = control::restrict_state_dir(&config.state_dir) {
            warn!(error = %e, path = %config.state_dir.display(), "cannot make the state directory owner-only");
        }
    }
    let (shutdown_tx, shutdown_rx) = async_channel::bounded(1);
    on_signals(shutdown_tx)?;
    let (status_tx, status_rx) = async_channel::unbounded();
    // Without the socket the node still syncs; only `dirsync status` cannot
    // reach it. A socket that answers means another node runs here: stop.
    let _socket = match control::serve(&config.state_dir, status_tx.clone()) {
        Ok(s) => Some(s),
        Err(e @ ControlError::AlreadyRunning(_)) => return Err(e.into()),
        Err(e) => {
            warn!(error = %e, "no control socket: `dirsync status` will not reach this node");
            None
        }
    };
    // Without the dashboard the node still syncs: a busy port is said
    // once, with what to do about it.
    let _dashboard = match config.dashboard.map(|addr| serve_dashboard(addr, &config, status_tx.clone())) {
        Some(Ok(d)) => {
            config.dashboard = Some(d.addr);
            info!(url = %d.addr, "dashboard: `dirsync status` prints its address with the token");
            Some(d)
        }
        Some(Err(e)) => {
            warn!(error = %e, "no dashboard");
            config.dashboard = None;
            None
        }
        None => None,
    };
    progress::spawn(status_tx, bars).context("cannot start the progress display")?;
    config.control = Control {
        shutdown: Some(shutdown_rx),
        status: Some(status_rx),
    };
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
