//! The frame decoder: any bytes decode to a message or an error; a message
//! re-encodes to a frame that decodes to the same message.
#![no_main]

use dirsync::wire;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((msg, used))) = wire::decode(data) {
        assert!(used <= data.len());
        let again = wire::encode(&msg);
        let (back, _) = wire::decode(&again).expect("own frame decodes").expect("whole frame");
        assert_eq!(back, msg);
    }
});
