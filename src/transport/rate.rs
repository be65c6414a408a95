//! Bandwidth limits (`--max-send-rate`, `--max-recv-rate`): one token
//! bucket per direction for the whole node, across all peers, charged for
//! file content only. Control messages (updates, wants, digests) are never
//! held back, so a change still travels at once under a saturated limit.
//!
//! Owns: parsing a rate and the bucket. Must not: sleep (the writer and
//! the reader wait what `take` tells them, on the `Net`'s clock).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateError {
    #[error("{0:?} is not a rate: give a number and a unit, like 20MB/s, 512KiB/s or 100Mbit/s")]
    Unparsable(String),
    #[error("{0:?} is ambiguous: write MB/s for megabytes or Mbit/s for megabits")]
    Ambiguous(String),
    #[error("{0:?}: a rate must be more than 0 (leave the flag out for no limit)")]
    Zero(String),
}

/// Bytes per second from `20MB/s`, `1.5MiB/s`, `100Mbit/s`, `500k` (the
/// `/s` is optional; K, M, G are powers of 1000, KiB, MiB, GiB of 1024;
/// bits are eighths of bytes).
pub fn parse_rate(text: &str) -> Result<u64, RateError> {
    let bad = || RateError::Unparsable(text.to_string());
    let t = text.trim();
    let t = t.strip_suffix("/s").or_else(|| t.strip_suffix("ps")).unwrap_or(t).trim_end();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let number: f64 = number.parse().map_err(|_| bad())?;
    let bytes = match unit {
        "" | "B" => 1.0,
        "k" | "K" | "kB" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "bit" => 1.0 / 8.0,
        "kbit" | "Kbit" => 1e3 / 8.0,
        "Mbit" => 1e6 / 8.0,
        "Gbit" => 1e9 / 8.0,
        "Mb" | "mb" | "Gb" | "gb" | "kb" | "Kb" => return Err(RateError::Ambiguous(text.to_string())),
        _ => return Err(bad()),
    };
    let rate = number * bytes;
    if !rate.is_finite() || rate > u64::MAX as f64 {
        return Err(bad());
    }
    match rate as u64 {
        0 => Err(RateError::Zero(text.to_string())),
        r => Ok(r),
    }
}

/// A token bucket of `rate` bytes per second. Whoever takes more than it
/// holds goes into debt and is told how long to wait, so senders on many
/// connections share the rate in the order they come.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    /// At most this much may go at once after a quiet time (50 ms of the
    /// rate, at least 64 KiB).
    burst: f64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may go now; negative: owed.
    available: f64,
    at: Option<SystemTime>,
}

impl RateLimit {
    pub fn new(bytes_per_second: u64) -> RateLimit {
        let rate = bytes_per_second.max(1) as f64;
        let burst = (rate / 20.0).max(64.0 * 1024.0);
        RateLimit {
            rate,
            burst,
            bucket: Mutex::new(Bucket {
                available: burst,
                at: None,
            }),
        }
    }

    /// Take `n` bytes at `now`; how long to wait before they may go.
    pub fn take(&self, n: u64, now: SystemTime) -> Duration {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = b.at.and_then(|at| now.duration_since(at).ok()).unwrap_or_default();
        b.available = (b.available + elapsed.as_secs_f64() * self.rate).min(self.burst);
        b.at = Some(now);
        b.available -= n as f64;
        match b.available {
            a if a >= 0.0 => Duration::ZERO,
            a => Duration::from_secs_f64(-a / self.rate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_bytes_and_bits() {
        assert_eq!(parse_rate("20MB/s"), Ok(20_000_000));
        assert_eq!(parse_rate("1.5MiB/s"), Ok(1_572_864));
        assert_eq!(parse_rate("100Mbit/s"), Ok(12_500_000));
        assert_eq!(parse_rate("500k"), Ok(500_000));
        assert_eq!(parse_rate(" 64 KiB/s "), Ok(65_536));
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert_eq!(parse_rate("2GBps"), Ok(2_000_000_000));
        assert!(matches!(parse_rate("20Mb/s"), Err(RateError::Ambiguous(_))));
        assert!(matches!(parse_rate("0MB/s"), Err(RateError::Zero(_))));
        for bad in ["", "fast", "MB/s", "20 parsecs", "1e9", "-5MB", "1.2.3MB", "99999999999999999999GB"] {
            assert!(matches!(parse_rate(bad), Err(RateError::Unparsable(_))), "{bad}");
        }
    }

    #[test]
    fn the_bucket_lets_the_rate_through_and_makes_the_rest_wait() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let limit = RateLimit::new(1_000_000);
        // The first 64 KiB go at once; a 1 MB chunk then waits its share.
        assert_eq!(limit.take(65_536, t0), Duration::ZERO);
        assert_eq!(limit.take(1_000_000, t0), Duration::from_secs(1));
        // A second later the debt is paid: the next megabyte waits a second.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(limit.take(1_000_000, t1), Duration::from_secs(1));
        // Over a long run, what went equals the rate times the time.
        let limit = RateLimit::new(2_000_000);
        let (mut now, mut sent) = (t0, 0u64);
        for _ in 0..100 {
            now += limit.take(1 << 20, now);
            sent += 1 << 20;
        }
        let took = now.duration_since(t0).unwrap().as_secs_f64();
        let rate = sent as f64 / took;
        assert!((rate / 2_000_000.0 - 1.0).abs() < 0.01, "{rate} B/s");
    }
}
