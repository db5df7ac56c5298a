//! Object ids and clock readings.

use std::time::{SystemTime, UNIX_EPOCH};

/// The letters and digits of an id.
const ALPHANUMERIC: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new id: `prefix` and `len` random letters and digits
/// (`file-…`, `batch_…`, `batch_req_…`), as the service makes them.
pub fn new_id(prefix: &str, len: usize) -> String {
    let mut id = String::with_capacity(prefix.len() + len);
    id.push_str(prefix);
    let mut bytes = [0u8; 64];
    while id.len() < prefix.len() + len {
        fill_random(&mut bytes);
        // Bytes of 248 and over are skipped, so that each of the 62
        // characters is equally likely (248 = 4 × 62).
        id.extend(
            bytes
                .iter()
                .filter(|&&b| b < 248)
                .map(|&b| char::from(ALPHANUMERIC[usize::from(b % 62)]))
                .take(prefix.len() + len - id.len()),
        );
    }
    id
}

/// Fill `bytes` from the operating system's random number generator.
pub fn fill_random(bytes: &mut [u8]) {
    // Only a system without a random source fails here (Linux before
    // 3.17 without /dev/urandom): nothing could be made safely on it.
    getrandom::fill(bytes).expect("the operating system gives no random numbers");
}

/// A random number in `[low, high)`, for jitter (the middle, should the
/// system give no random numbers: jitter is not worth failing for).
pub fn random_between(low: f64, high: f64) -> f64 {
    // The top 53 bits: a double in [0, 1), each step equally likely.
    let unit = getrandom::u64().map_or(0.5, |r| (r >> 11) as f64 / (1u64 << 53) as f64);
    low + (high - low) * unit
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = super::new_id("file-", 24);
        let b = super::new_id("file-", 24);
        assert!(a.starts_with("file-") && a.len() == 29);
        assert_ne!(a, b);
    }

    #[test]
    fn ids_use_every_letter_and_digit_and_nothing_else() {
        let mut seen = std::collections::HashSet::new();
        for len in [0, 1, 63, 64, 65, 200] {
            let id = super::new_id("batch_", len);
            assert_eq!(id.len(), 6 + len);
            assert!(id[6..].bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
            seen.extend(id[6..].bytes());
        }
        for _ in 0..100 {
            seen.extend(super::new_id("", 64).into_bytes());
        }
        assert_eq!(seen.len(), 62, "every letter and digit turns up in 6,800");
    }

    #[test]
    fn jitter_stays_in_its_range() {
        let draws: Vec<f64> = (0..1000).map(|_| super::random_between(0.5, 1.0)).collect();
        assert!(draws.iter().all(|d| (0.5..1.0).contains(d)));
        // Spread over the range, not stuck at the fallback.
        assert!(draws.iter().any(|d| *d < 0.6) && draws.iter().any(|d| *d > 0.9));
    }
}
