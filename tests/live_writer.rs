//! Issue 26, item 8: a file being written here is never replaced under its
//! writer. SQLite in WAL mode is written by a loop on host A, and the
//! database is opened once on host B mid-write (`pragma integrity_check`;
//! opening it checkpoints, so B's copy changes). B's version used to win,
//! replace `db` on A under A's open connection and delete `db-shm`, and A's
//! database lost rows its writer had committed, or became malformed.
//!
//! Wanted: every row A's writer committed is in the database, on both
//! hosts, once the writer stops and the trees converge.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);

/// A writer on `db`: WAL mode, one row per transaction every 100 ms for
/// `secs` seconds, a checkpoint every 20 rows, one connection held open
/// throughout. Prints the rows it committed.
const WRITER: &str = r#"
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("pragma journal_mode=wal")
db.execute("create table if not exists t (id integer primary key, body text)")
end = time.time() + float(sys.argv[2])
n = 0
while time.time() < end:
    db.execute("insert into t (body) values (?)", ("row %d %s" % (n, "x" * 200),))
    n += 1
    # What SQLite's auto-checkpoint does every 1000 pages, sooner.
    if n % 20 == 0:
        db.execute("pragma wal_checkpoint(truncate)")
    time.sleep(0.1)
db.close()
print(n)
"#;

/// Open `db`, check it, count its rows: `(integrity, rows)`.
const CHECK: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
ok = db.execute("pragma integrity_check").fetchone()[0]
try:
    n = db.execute("select count(*) from t").fetchone()[0]
except sqlite3.DatabaseError as e:
    n = -1
db.close()
print(ok, n)
"#;

fn sqlite_is_here() -> bool {
    let python = Command::new("python3")
        .args(["-c", "import sqlite3"])
        .stderr(Stdio::null())
        .status();
    let shell = Command::new("sqlite3").arg("-version").stdout(Stdio::null()).status();
    python.is_ok_and(|s| s.success()) && shell.is_ok_and(|s| s.success())
}

fn check(db: &Path) -> (String, i64) {
    let out = Command::new("python3").args(["-c", CHECK]).arg(db).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    let ok = words.next().unwrap_or("").to_string();
    let rows = words.next().and_then(|n| n.parse().ok()).unwrap_or(-2);
    (format!("{ok} {}", String::from_utf8_lossy(&out.stderr).trim()), rows)
}

#[test]
fn a_database_written_here_keeps_every_row_its_writer_committed() {
    if !sqlite_is_here() {
        eprintln!("SKIPPED: python3 with sqlite3, or the sqlite3 shell, is not here");
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = two_dirs(root);
    let bport = free_udp_port();
    let node_a = Proc::start(&a, free_tcp_port(), bport, &root.join("a.log"));
    let node_b = Proc::start(&b, free_tcp_port(), bport, &root.join("b.log"));
    let writer = Command::new("python3")
        .args(["-c", WRITER])
        .arg(a.join("db"))
        .arg("10")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // B's copy arrives, then B opens it mid-write.
    let (arrived, _) = wait_until(TIMEOUT, || b.join("db").exists() && b.join("db-wal").exists());
    assert!(arrived, "the database never reached B:\n{}", node_b.log_text());
    std::thread::sleep(Duration::from_secs(3));
    // As a user would: the sqlite3 shell.
    let on_b = Command::new("sqlite3").arg(b.join("db")).arg("pragma integrity_check").output();
    let on_b = on_b.map(|o| String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr));
    let out = writer.wait_with_output().unwrap();
    let committed: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("the writer's row count");
    assert!(committed > 30, "the writer committed only {committed} rows");

    let (ok, _) = wait_until(TIMEOUT, || {
        all_equal(&[&a, &b]) && check(&a.join("db")).1 == committed && check(&b.join("db")).1 == committed
    });
    let (on_a, rows_a) = check(&a.join("db"));
    let (on_b_after, rows_b) = check(&b.join("db"));
    assert!(
        ok,
        "the writer committed {committed} rows; A holds {rows_a} ({on_a}), B {rows_b} ({on_b_after}); B's check mid-write: {on_b:?}\n{}\nA:\n{}\nB:\n{}",
        describe_difference(&[&a, &b]),
        node_a.log_text(),
        node_b.log_text()
    );
    assert!(on_a.starts_with("ok") && on_b_after.starts_with("ok"), "{on_a} / {on_b_after}");
}
