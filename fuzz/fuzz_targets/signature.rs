//! A peer's delta signature: parsed and validated before fast_rsync sees
//! it, then diffed against: never a panic.
#![no_main]

use dirsync::fs::delta::FileSignature;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sig) = FileSignature::from_bytes(data) {
        let new: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        for i in 0..sig.segment_count().min(4) + 1 {
            let _ = sig.diff_segment(i, &new);
        }
    }
});
