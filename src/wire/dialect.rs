//! How a message is written for the protocol version its peer speaks.
//!
//! From protocol 8 a message is written compact: a hash travels as base64
//! (43 characters; a want's 4-byte prefix, 6) instead of hex, and an entry leaves
//! out its `version` when it is its `mtime`, and its `vector` when that is
//! only its maker's change at `version` (the everyday entry). That is about
//! 12 of the 60 compressed bytes an entry costs in an index. A peer
//! speaking 7 is written the whole form, which is also the readable one
//! (`dirsync status`, the snapshots of version 7). Reading takes either
//! form, whatever the version: the two cannot be mistaken for each other.
//!
//! serde passes no context to a `Serialize` impl, so the version being
//! written is set for the length of one `encode_in` on this thread.
//!
//! Owns: that setting and the base64 codec. Must not: do IO.

use std::cell::Cell;

/// The first version that writes messages compact.
pub const COMPACT: u32 = 8;

thread_local! {
    /// The version the message being encoded on this thread is written in
    /// (0: the whole, readable form).
    static WRITING_IN: Cell<u32> = const { Cell::new(0) };
}

/// Run `write` with messages written as a peer speaking `version` reads
/// them.
pub(super) fn written_in<T>(version: u32, write: impl FnOnce() -> T) -> T {
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            WRITING_IN.set(self.0);
        }
    }
    let _restore = Restore(WRITING_IN.replace(version));
    write()
}

/// Whether the message being written now is written compact.
pub(super) fn compact() -> bool {
    WRITING_IN.get() >= COMPACT
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `bytes` in standard base64 without padding (RFC 4648 section 4).
pub(super) fn to_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=group.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Fill `out` from the unpadded base64 `s`, which must be exactly as long
/// as `out` needs and canonical (unused low bits zero), so that every
/// value has one spelling.
pub(super) fn from_base64(s: &str, out: &mut [u8]) -> Result<(), ()> {
    let digits = s.as_bytes();
    if digits.len() != out.len() * 4 / 3 + usize::from(out.len() % 3 != 0) {
        return Err(());
    }
    let value = |c: u8| ALPHABET.iter().position(|a| *a == c).map(|v| v as u32).ok_or(());
    for (group, bytes) in digits.chunks(4).zip(out.chunks_mut(3)) {
        let mut n = 0u32;
        for (i, c) in group.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (n >> (16 - 8 * i)) as u8;
        }
        // Bits past the last byte must be zero.
        if n & (0xFF_FFFF >> (8 * bytes.len())) != 0 {
            return Err(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_and_refuses_other_spellings() {
        // RFC 4648 section 10, without the padding.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(to_base64(plain.as_bytes()), coded);
            let mut back = vec![0; plain.len()];
            assert_eq!(from_base64(coded, &mut back), Ok(()));
            assert_eq!(back, plain.as_bytes());
        }
        let mut two = [0u8; 2];
        assert_eq!(from_base64("Zm9", &mut two), Err(()), "unused bits set");
        assert_eq!(from_base64("Zm8=", &mut two), Err(()), "padding");
        assert_eq!(from_base64("Zm", &mut two), Err(()), "too short");
        assert_eq!(from_base64("Z-8", &mut two), Err(()), "not in the alphabet");
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut back = vec![0; len];
            assert_eq!(from_base64(&to_base64(&bytes), &mut back), Ok(()));
            assert_eq!(back, bytes);
        }
    }

    #[test]
    fn the_version_written_in_is_set_for_the_call_only() {
        assert!(!compact());
        assert!(written_in(COMPACT, compact));
        assert!(!written_in(COMPACT - 1, compact));
        assert!(written_in(COMPACT, || written_in(0, || !compact()) && compact()));
        assert!(!compact());
    }
}
