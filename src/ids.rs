//! Request ids: new ones for requests that arrive without one (UUIDv7, time-ordered, so
//! ids sort by arrival in the shadow log, made without a system call per request), and
//! the portable hash of an id that sampling, the feedback table and the demo's models
//! agree on.
//!
//! The 74 random bits come from a per-thread splitmix64 sequence seeded once from the
//! standard library's per-thread random keys. Ids are unique, not secret: nothing here
//! authorises anything (`/labels` and `/feedback` have their own bearer token).

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;

/// splitmix64's increment.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish()
}

fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(GOLDEN);
        s.set(x);
        mix64(x)
    })
}

/// A new UUIDv7 for a request received at `at`, as a header value.
pub fn new_request_id(at: SystemTime) -> HeaderValue {
    let millis = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let (a, b) = (next_u64(), next_u64());
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&a.to_le_bytes());
    random[8..].copy_from_slice(&b.to_le_bytes()[..2]);
    let id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A share in `[0, 1]`, kept as the 64-bit threshold the id hash is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRate {
    rate: f64,
    threshold: u64,
}

/// A sample rate outside `[0, 1]`.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("sample rate {0} is outside [0, 1]")]
pub struct BadRate(pub f64);

impl SampleRate {
    pub fn try_new(rate: f64) -> Result<Self, BadRate> {
        if !(0.0..=1.0).contains(&rate) {
            return Err(BadRate(rate));
        }
        // rate = 1 must admit every hash, including u64::MAX.
        let threshold = if rate >= 1.0 {
            u64::MAX
        } else {
            (rate * 2f64.powi(64)) as u64
        };
        Ok(Self { rate, threshold })
    }

    pub fn get(self) -> f64 {
        self.rate
    }

    /// Does a hash fall inside the sampled share?
    pub fn admits(self, hash: u64) -> bool {
        if self.rate >= 1.0 {
            return true;
        }
        hash < self.threshold
    }
}

/// A fixed, portable 64-bit hash of a request id: FNV-1a, then the splitmix64 finaliser
/// for avalanche. Every replica, version and platform computes the same value, which a
/// randomly seeded hasher (std's SipHash) would not.
pub fn id_hash(id: &[u8], salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for &b in id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// splitmix64's finaliser.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_v7_unique_and_time_ordered() {
        let t0 = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_000);
        let mut seen = HashSet::new();
        for i in 0..10_000u64 {
            let at = t0 + std::time::Duration::from_millis(i / 10);
            let v = new_request_id(at);
            let u = uuid::Uuid::parse_str(v.to_str().unwrap()).unwrap();
            assert_eq!(u.get_version_num(), 7);
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = u.get_timestamp().unwrap().to_unix();
            assert_eq!(
                secs * 1000 + u64::from(nanos) / 1_000_000,
                1_700_000_000_000 + i / 10
            );
            assert!(seen.insert(u), "duplicate id {u}");
        }
        // Other threads start from other seeds.
        let other = std::thread::spawn(move || new_request_id(t0))
            .join()
            .unwrap();
        assert!(!seen.contains(&uuid::Uuid::parse_str(other.to_str().unwrap()).unwrap()));
    }
}
