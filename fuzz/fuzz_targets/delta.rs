//! A peer's delta applied to our copy: never a panic, never more than one
//! segment of output.
#![no_main]

use dirsync::fs::delta::{apply_segment, SEGMENT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    if let Ok(out) = apply_segment(&base, data) {
        assert!(out.len() as u64 <= SEGMENT);
    }
});
