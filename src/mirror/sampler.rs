//! Whether a request is sampled: method and path filters, a deterministic hash of the request
//! id against `sample_rate` (so replicas and retries agree), and a per-second cap.

use std::sync::Mutex;
use std::time::Instant;

use http::Method;

use crate::drift::SelfSampling;
use crate::ids::{id_hash, SampleRate};

/// Salt for the self-similarity decision, so it is independent of the sampling decision.
const SELF_SALT: u64 = 0x5e1f_5e1f_5e1f_5e1f;

/// A token bucket allowing `per_second` on average and bursts of one second's worth.
#[derive(Debug)]
struct Bucket {
    per_second: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = match self.last {
            Some(last) => now.saturating_duration_since(last).as_secs_f64(),
            None => 1.0,
        };
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What the sampler decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Method or path not configured for mirroring.
    NotEligible,
    /// Eligible, but the id hash fell outside the sample.
    NotSampled,
    /// Sampled, but over `max_per_second`.
    RateLimited,
    /// Mirror it; `self_similarity` says whether the baseline gets a second call too.
    Mirror { self_similarity: bool },
}

/// The whole decision, built once from config.
#[derive(Debug)]
pub struct Sampler {
    rate: SampleRate,
    /// Whether a sample also gets the self-similarity call (None: never).
    self_sampling: Option<SelfSampling>,
    methods: Vec<Method>,
    paths: Vec<String>,
    bucket: Option<Mutex<Bucket>>,
}

impl Sampler {
    pub fn new(
        rate: SampleRate,
        max_per_second: u32,
        methods: Vec<Method>,
        paths: &[String],
        self_sampling: Option<SelfSampling>,
    ) -> Self {
        let bucket = (max_per_second > 0).then(|| {
            Mutex::new(Bucket {
                per_second: f64::from(max_per_second),
                tokens: 0.0,
                last: None,
            })
        });
        Self {
            rate,
            self_sampling,
            methods,
            paths: paths.to_vec(),
            bucket,
        }
    }

    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// Is this method and path configured for mirroring?
    pub fn eligible(&self, method: &Method, path: &str) -> bool {
        self.methods.iter().any(|m| m == method)
            && (self.paths.is_empty() || self.paths.iter().any(|p| path.starts_with(p.as_str())))
    }

    /// Decide for one request. Only the rate cap has state; everything else depends on
    /// the request alone.
    pub fn decide(&self, method: &Method, path: &str, request_id: &str, now: Instant) -> Decision {
        if !self.eligible(method, path) {
            return Decision::NotEligible;
        }
        self.sample(request_id, now)
    }

    /// Decide for a request already found eligible: the id hash, the rate cap, and the
    /// self-similarity call.
    pub fn sample(&self, request_id: &str, now: Instant) -> Decision {
        if self.rate.get() == 0.0 {
            return Decision::NotEligible;
        }
        if !self.rate.admits(id_hash(request_id.as_bytes(), 0)) {
            return Decision::NotSampled;
        }
        self.drawn(request_id, now)
    }

    /// Decide for a request whose id hash a router already drew for this sampler's lane:
    /// the rate cap and the self-similarity call.
    pub fn drawn(&self, request_id: &str, now: Instant) -> Decision {
        if let Some(bucket) = &self.bucket {
            let admitted = match bucket.lock() {
                Ok(mut b) => b.try_take(now),
                Err(poisoned) => poisoned.into_inner().try_take(now),
            };
            if !admitted {
                return Decision::RateLimited;
            }
        }
        let self_similarity = self.self_sampling.as_ref().is_some_and(|s| {
            // 1 until enough self pairs exist, then `self_similarity_rate` (drift.rs).
            let rate = s.rate();
            rate >= 1.0
                || SampleRate::try_new(rate)
                    .is_ok_and(|r| r.admits(id_hash(request_id.as_bytes(), SELF_SALT)))
        });
        Decision::Mirror { self_similarity }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn sampler(rate: f64, cap: u32) -> Sampler {
        Sampler::new(
            SampleRate::try_new(rate).unwrap(),
            cap,
            vec![Method::POST],
            &[],
            None,
        )
    }

    #[test]
    fn observed_rate_is_within_three_sigma_over_100k_ids() {
        let n = 100_000u32;
        let now = Instant::now();
        for rate in [0.01, 0.05, 0.3, 0.5] {
            let s = sampler(rate, 0);
            let hits = (0..n)
                .filter(|i| {
                    let id = format!("req-{i}");
                    matches!(
                        s.decide(&Method::POST, "/v1/embeddings", &id, now),
                        Decision::Mirror { .. }
                    )
                })
                .count() as f64;
            let expected = rate * f64::from(n);
            let sigma = (f64::from(n) * rate * (1.0 - rate)).sqrt();
            assert!(
                (hits - expected).abs() <= 3.0 * sigma,
                "rate {rate}: {hits} vs {expected} ± {sigma}"
            );
        }
    }

    #[test]
    fn uuid_ids_sample_at_the_rate_too() {
        // Real ids share long prefixes (UUIDv7 starts with the time): the hash must still
        // spread them. Ten ids a millisecond, their random bits either drawn (seeded, so
        // the count is the same on every run) or a counter, as a monotonic generator
        // makes them.
        let s = sampler(0.1, 0);
        let now = Instant::now();
        let n = 100_000u64;
        let sigma = (n as f64 * 0.1 * 0.9).sqrt();
        for (family, random) in [
            (
                "drawn",
                (|i: u64| crate::ids::mix64(i ^ 0x5eed)) as fn(u64) -> u64,
            ),
            ("counter", |i: u64| i),
        ] {
            let hits = (0..n)
                .filter(|&i| {
                    let mut bytes = [0u8; 10];
                    bytes[2..].copy_from_slice(&random(i).to_be_bytes());
                    let id = uuid::Builder::from_unix_timestamp_millis(
                        1_760_000_000_000 + i / 10,
                        &bytes,
                    )
                    .into_uuid()
                    .to_string();
                    matches!(
                        s.decide(&Method::POST, "/", &id, now),
                        Decision::Mirror { .. }
                    )
                })
                .count() as f64;
            eprintln!(
                "{family}: {hits} of {n} ids sampled at 0.1 (3 sigma = {:.0})",
                3.0 * sigma
            );
            assert!(
                (hits - 10_000.0).abs() <= 3.0 * sigma,
                "{family}: {hits} of {n}"
            );
        }
    }

    #[test]
    fn edges_zero_and_one() {
        let now = Instant::now();
        assert_eq!(
            sampler(0.0, 0).decide(&Method::POST, "/", "a", now),
            Decision::NotEligible
        );
        let all = sampler(1.0, 0);
        assert!((0..1000).all(|i| matches!(
            all.decide(&Method::POST, "/", &i.to_string(), now),
            Decision::Mirror { .. }
        )));
        assert!(SampleRate::try_new(1.01).is_err());
        assert!(SampleRate::try_new(-0.1).is_err());
        assert!(SampleRate::try_new(f64::NAN).is_err());
    }

    #[test]
    fn methods_and_paths_filter() {
        let s = Sampler::new(
            SampleRate::try_new(1.0).unwrap(),
            0,
            vec![Method::POST],
            &["/v1/embeddings".to_string()],
            None,
        );
        let now = Instant::now();
        assert_eq!(
            s.decide(&Method::GET, "/v1/embeddings", "a", now),
            Decision::NotEligible
        );
        assert_eq!(
            s.decide(&Method::POST, "/v1/chat", "a", now),
            Decision::NotEligible
        );
        assert!(matches!(
            s.decide(&Method::POST, "/v1/embeddings?x=1", "a", now),
            Decision::Mirror { .. }
        ));
    }

    #[test]
    fn rate_cap_allows_per_second_on_average() {
        let s = sampler(1.0, 10);
        let start = Instant::now();
        let mut admitted = 0;
        // 1000 requests spread evenly over 5 simulated seconds.
        for i in 0..1000u64 {
            let now = start + Duration::from_millis(i * 5);
            if matches!(
                s.decide(&Method::POST, "/", &i.to_string(), now),
                Decision::Mirror { .. }
            ) {
                admitted += 1;
            }
        }
        // 10/s over 5 s, plus at most one initial burst of 10.
        assert!((50..=61).contains(&admitted), "{admitted}");
    }

    /// Every sample gets the self call until `min` self pairs exist, then the rate.
    #[test]
    fn self_similarity_share_follows_its_rate_once_enough_self_pairs_exist() {
        use crate::drift::{DriftConfig, DriftState};
        let mut drift = DriftState::new(DriftConfig {
            window: std::time::Duration::from_secs(60),
            min_pairs: 10,
            floor: 0.8,
            alpha: 0.025,
        });
        let min = 50;
        let s = Sampler::new(
            SampleRate::try_new(1.0).unwrap(),
            0,
            vec![Method::POST],
            &[],
            Some(drift.self_sampling(0.2, min)),
        );
        let now = Instant::now();
        let selfs = |from: usize, n: usize| {
            (from..from + n)
                .filter(|i| {
                    s.decide(&Method::POST, "/", &format!("r{i}"), now)
                        == Decision::Mirror {
                            self_similarity: true,
                        }
                })
                .count() as f64
        };
        assert_eq!(selfs(0, 1000), 1000.0, "all, before any self pair");
        for _ in 0..min {
            drift.record_self_paired(now, 0.99, 1.0);
        }
        let n = 20_000;
        let hits = selfs(1000, n);
        let sigma = (n as f64 * 0.2 * 0.8).sqrt();
        assert!((hits - 4000.0).abs() <= 3.0 * sigma, "{hits}");
    }

    proptest! {
        #[test]
        fn same_id_always_decides_the_same(id in ".{0,64}", rate in 0.0f64..=1.0) {
            let a = sampler(rate, 0);
            let b = sampler(rate, 0);
            let now = Instant::now();
            prop_assert_eq!(a.decide(&Method::POST, "/", &id, now), b.decide(&Method::POST, "/", &id, now));
            prop_assert_eq!(a.decide(&Method::POST, "/", &id, now), a.decide(&Method::POST, "/", &id, now));
        }

        #[test]
        fn a_larger_rate_samples_a_superset(id in ".{0,64}", r1 in 0.0f64..=1.0, r2 in 0.0f64..=1.0) {
            let (lo, hi) = if r1 <= r2 { (r1, r2) } else { (r2, r1) };
            let h = id_hash(id.as_bytes(), 0);
            if SampleRate::try_new(lo).unwrap().admits(h) {
                prop_assert!(SampleRate::try_new(hi).unwrap().admits(h));
            }
        }
    }
}
