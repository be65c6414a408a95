//! The encrypted record layer fed bytes from the network: never a panic,
//! never a plaintext byte that was not sealed with the key.
#![no_main]

use dirsync::transport::key::ClusterKey;
use dirsync::transport::secure::{Reader, NOISE_PARAMS};
use futures_lite::AsyncReadExt;
use libfuzzer_sys::fuzz_target;

fn responder_state() -> snow::StatelessTransportState {
    let psk = ClusterKey::from_bytes([5; 32]).psk();
    let params: snow::params::NoiseParams = NOISE_PARAMS.parse().expect("params");
    let b = || snow::Builder::new(params.clone()).psk(0, &psk).expect("psk");
    let mut i = b().build_initiator().expect("initiator");
    let mut r = b().build_responder().expect("responder");
    let (mut m, mut scratch) = ([0u8; 128], [0u8; 128]);
    let n = i.write_message(&[], &mut m).expect("message 1");
    r.read_message(&m[..n], &mut scratch).expect("read 1");
    let n = r.write_message(&[], &mut m).expect("message 2");
    i.read_message(&m[..n], &mut scratch).expect("read 2");
    r.into_stateless_transport_mode().expect("transport")
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::with_state(futures_lite::io::Cursor::new(data.to_vec()), responder_state());
    let mut out = Vec::new();
    let result = futures_lite::future::block_on(r.read_to_end(&mut out));
    // Random bytes cannot carry a valid tag: nothing may come out.
    assert!(result.is_err() || out.is_empty(), "forged plaintext accepted");
});
