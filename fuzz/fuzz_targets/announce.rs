//! Discovery datagrams: never a panic; what decodes is a dirsync announcement.
#![no_main]

use dirsync::wire::Announce;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Announce::decode(data) {
        assert_eq!(a.app, Announce::APP);
        assert!(a.key.as_ref().is_none_or(|k| k.len() == 16));
    }
});
