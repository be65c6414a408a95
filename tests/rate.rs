//! Bandwidth limits with real processes: with `--max-send-rate` on one side
//! and `--max-recv-rate` on the other, content still arrives whole and
//! verified, big files (several chunks, each waiting its share) and small
//! ones alike. How fast is measured by `just bench` (W2r), not here.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn limited_nodes_still_sync_everything_whole() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    let (a, b) = two_dirs(root);
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    write(&a, "big.bin", &big);
    for i in 0..20 {
        write(&a, &format!("small/{i}.txt"), format!("file {i}").as_bytes());
    }
    let bport = free_udp_port();
    let _pa = Proc::start_with(&a, free_tcp_port(), bport, &root.join("a.log"), &["--max-send-rate", "2MB/s"], &[]);
    let _pb = Proc::start_with(&b, free_tcp_port(), bport, &root.join("b.log"), &["--max-recv-rate", "3MiB/s"], &[]);
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]));
    assert!(ok, "no sync under the limits:\n{}", describe_difference(&[&a, &b]));
    assert_eq!(fs::read(b.join("big.bin")).unwrap(), big);
    // The other way, through the same limits' other ends.
    write(&b, "back.txt", b"from b");
    let (ok, _) = wait_until(TIMEOUT, || all_equal(&[&a, &b]));
    assert!(ok, "{}", describe_difference(&[&a, &b]));
}
