//! Pure statistics of the accuracy report: Wilson intervals, McNemar's exact test, the
//! Tang score interval for a ratio of paired proportions, and prediction correctness.
//!
//! `deploy/spark/accuracy_job.py` repeats these computations operation for operation so
//! that both jobs give the same numbers; change them together.

/// Two-sided 95 %: the 0.975 quantile of the standard normal distribution.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// Ratio search range of the Tang interval: beyond it a limit is reported as 0 or +∞.
const RATIO_MIN: f64 = 1e-10;
const RATIO_MAX: f64 = 1e10;

/// A point estimate with a two-sided interval. NaN when undefined (no data).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub lower: f64,
    pub upper: f64,
}

impl Interval {
    const NAN: Interval = Interval {
        estimate: f64::NAN,
        lower: f64::NAN,
        upper: f64::NAN,
    };
}

/// Wilson score interval for `k` successes in `n` trials at normal quantile `z`.
pub fn wilson(k: u64, n: u64, z: f64) -> Interval {
    if n == 0 {
        return Interval::NAN;
    }
    let (kf, nf) = (k as f64, n as f64);
    let z2 = z * z;
    let center = (kf + z2 / 2.0) / (nf + z2);
    let half = z * (kf * (nf - kf) / nf + z2 / 4.0).sqrt() / (nf + z2);
    Interval {
        estimate: kf / nf,
        lower: (center - half).max(0.0),
        upper: (center + half).min(1.0),
    }
}

/// McNemar's exact test: two-sided binomial test of `b` against `b + c` discordant pairs
/// with success probability 1/2, `min(1, 2·P(X ≤ min(b, c)))`. 1 when there are no
/// discordant pairs.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    let k = b.min(c);
    if n == 0 || 2 * k == n {
        return 1.0;
    }
    // Start at the largest term of the tail and walk down: pmf(j-1) = pmf(j)·j/(n-j+1).
    // The terms shrink geometrically, so the sum stops long before j = 0 for large n.
    let mut term = dbinom_half(k, n);
    let mut sum = term;
    let mut j = k;
    while j > 0 {
        term *= j as f64 / (n - j + 1) as f64;
        sum += term;
        if term <= sum * 1e-17 {
            break;
        }
        j -= 1;
    }
    (2.0 * sum).min(1.0)
}

/// P(X = x) for X ~ Binomial(n, 1/2), by Loader's saddle-point expansion (as R's
/// `dbinom`): accurate to a few ulps where `C(n,x)/2^n` under- or overflows.
fn dbinom_half(x: u64, n: u64) -> f64 {
    let (xf, nf) = (x as f64, n as f64);
    if x == 0 || x == n {
        return (-nf * std::f64::consts::LN_2).exp();
    }
    let half = nf / 2.0;
    let lc = stirlerr(nf) - stirlerr(xf) - stirlerr(nf - xf) - bd0(xf, half) - bd0(nf - xf, half);
    let lf = (2.0 * std::f64::consts::PI).ln() + xf.ln() + (-xf / nf).ln_1p();
    (lc - 0.5 * lf).exp()
}

/// ln(n!) − ((n + ½)·ln n − n + ½·ln 2π): the error of Stirling's formula, for integer n ≥ 1.
fn stirlerr(n: f64) -> f64 {
    const S0: f64 = 1.0 / 12.0;
    const S1: f64 = 1.0 / 360.0;
    const S2: f64 = 1.0 / 1260.0;
    const S3: f64 = 1.0 / 1680.0;
    const S4: f64 = 1.0 / 1188.0;
    if n <= 15.0 {
        // n! is exact in f64 up to 22!, so the direct formula loses only the final
        // subtraction's rounding.
        let mut fact = 1.0f64;
        let mut i = 2.0;
        while i <= n {
            fact *= i;
            i += 1.0;
        }
        return fact.ln() - (n + 0.5) * n.ln() + n - 0.5 * (2.0 * std::f64::consts::PI).ln();
    }
    let nn = n * n;
    if n > 500.0 {
        (S0 - S1 / nn) / n
    } else if n > 80.0 {
        (S0 - (S1 - S2 / nn) / nn) / n
    } else if n > 35.0 {
        (S0 - (S1 - (S2 - S3 / nn) / nn) / nn) / n
    } else {
        (S0 - (S1 - (S2 - (S3 - S4 / nn) / nn) / nn) / nn) / n
    }
}

/// Deviance term x·ln(x/np) + np − x, computed without cancellation when x ≈ np.
fn bd0(x: f64, np: f64) -> f64 {
    if (x - np).abs() < 0.1 * (x + np) {
        let mut v = (x - np) / (x + np);
        let mut s = (x - np) * v;
        let mut ej = 2.0 * x * v;
        v *= v;
        let mut j = 1.0;
        loop {
            ej *= v;
            let s1 = s + ej / (2.0 * j + 1.0);
            if s1 == s {
                return s1;
            }
            s = s1;
            j += 1.0;
        }
    }
    x * (x / np).ln() + np - x
}

/// The paired 2×2 table of labeled rows: which version was right.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairedTable {
    pub both_correct: u64,
    pub baseline_only: u64,
    pub canary_only: u64,
    pub both_wrong: u64,
}

impl PairedTable {
    pub fn total(&self) -> u64 {
        self.both_correct + self.baseline_only + self.canary_only + self.both_wrong
    }
    pub fn baseline_correct(&self) -> u64 {
        self.both_correct + self.baseline_only
    }
    pub fn canary_correct(&self) -> u64 {
        self.both_correct + self.canary_only
    }
    pub fn add(&mut self, o: &PairedTable) {
        self.both_correct += o.both_correct;
        self.baseline_only += o.baseline_only;
        self.canary_only += o.canary_only;
        self.both_wrong += o.both_wrong;
    }
}

/// Accuracy ratio canary / baseline with the asymptotic score interval of Tang, Tang &
/// Chan (2003) for a ratio of paired proportions (the score test of Nam & Blackwelder
/// 2002, inverted). Unlike the delta-method interval on log ratio it stays proper
/// with no discordant pairs and keeps near-nominal coverage in small samples.
///
/// No labeled pairs: all NaN. Baseline never right: estimate NaN or +∞, upper +∞.
/// Canary never right: lower 0.
pub fn ratio_interval(t: &PairedTable, z: f64) -> Interval {
    let n = t.total();
    if n == 0 {
        return Interval::NAN;
    }
    let canary = t.canary_correct() as f64;
    let baseline = t.baseline_correct() as f64;
    let estimate = canary / baseline;
    let score = |phi: f64| tang_score(t, phi);
    // Short-circuit: with the canary never right the statistic is not needed.
    let lower = if canary == 0.0 || score(RATIO_MIN) < z {
        0.0
    } else {
        let hi = if estimate.is_finite() {
            estimate
        } else {
            RATIO_MAX
        };
        bisect_log(RATIO_MIN, hi, |phi| score(phi) - z)
    };
    let upper = if baseline == 0.0 || score(RATIO_MAX) > -z {
        f64::INFINITY
    } else {
        let lo = if canary == 0.0 { RATIO_MIN } else { estimate };
        bisect_log(lo, RATIO_MAX, |phi| score(phi) + z)
    };
    Interval {
        estimate,
        lower,
        upper,
    }
}

/// Tang's score statistic for H0: accuracy(canary) = phi · accuracy(baseline). In the
/// paper's notation the canary is the row variable: n11 = both correct, n12 = canary
/// only, n21 = baseline only. Decreasing in phi.
fn tang_score(t: &PairedTable, phi: f64) -> f64 {
    let n11 = t.both_correct as f64;
    let n12 = t.canary_only as f64;
    let n21 = t.baseline_only as f64;
    let n = t.total() as f64;
    // Constrained maximum-likelihood estimate of p21 under H0 (closed form of the paper).
    let a = n * (1.0 + phi);
    let b = (n11 + n21) * phi * phi - (n11 + n12 + 2.0 * n21);
    let c = n21 * (1.0 - phi) * (n11 + n12 + n21) / n;
    let disc = (b * b - 4.0 * a * c).max(0.0);
    let p21 = (-b + disc.sqrt()) / (2.0 * a);
    let var = n * (1.0 + phi) * p21 + (n11 + n12 + n21) * (phi - 1.0);
    ((n11 + n12) - (n11 + n21) * phi) / var.max(0.0).sqrt()
}

/// Root of a decreasing `f` between `lo` (f > 0) and `hi` (f ≤ 0), by bisection on
/// ln phi until the bracket stops shrinking: deterministic, so the Spark job can repeat
/// it exactly.
fn bisect_log(lo: f64, hi: f64, f: impl Fn(f64) -> f64) -> f64 {
    let (mut a, mut b) = (lo.ln(), hi.ln());
    for _ in 0..200 {
        let m = 0.5 * (a + b);
        if m <= a || m >= b {
            break;
        }
        // A NaN statistic (0/0 exactly at the estimate) counts as "not above the target".
        if f(m.exp()) > 0.0 {
            a = m;
        } else {
            b = m;
        }
    }
    (0.5 * (a + b)).exp()
}

/// Whether a prediction matches a label: equal strings, or both are plain decimal
/// numbers (`[+-]digits[.digits][e[+-]digits]`, no spaces, no inf/nan) of equal value,
/// so `"1"` matches `"1.0"`.
pub fn prediction_correct(prediction: &str, label: &Label) -> bool {
    prediction == label.text.as_ref()
        || label
            .number
            .is_some_and(|v| parse_decimal(prediction) == Some(v))
}

/// Whether two predictions agree, with the same rule as [`prediction_correct`].
pub fn predictions_agree(a: &str, b: &str) -> bool {
    a == b || matches!((parse_decimal(a), parse_decimal(b)), (Some(x), Some(y)) if x == y)
}

/// A label value with its numeric reading computed once.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub text: Box<str>,
    pub number: Option<f64>,
}

impl Label {
    pub fn new(text: &str) -> Label {
        Label {
            text: text.into(),
            number: parse_decimal(text),
        }
    }
}

/// The value of a plain decimal literal, or `None` for anything else (so `" 1"`,
/// `"1_0"`, `"inf"`, `"0x10"` stay strings).
pub fn parse_decimal(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn wilson_matches_closed_form_worked_example() {
        // Ligarden et al. (2010), 13 of 16, as in Fagerland, Lydersen & Laake (2017):
        // Wilson score 95% CI 0.5699 to 0.9341.
        let w = wilson(13, 16, Z_95);
        assert!(close(w.estimate, 0.8125, 1e-12));
        assert!(close(w.lower, 0.5699, 5e-5), "{w:?}");
        assert!(close(w.upper, 0.9341, 5e-5), "{w:?}");
        assert!(wilson(0, 0, Z_95).lower.is_nan());
        let all = wilson(10, 10, Z_95);
        assert_eq!(all.upper, 1.0);
        assert!(all.lower > 0.69 && all.lower < 0.73);
    }

    #[test]
    fn mcnemar_exact_worked_example_and_limits() {
        // Cavo et al. (2012) in Fagerland et al.: discordant 16 and 6, exact
        // conditional McNemar P = 0.052479.
        assert!(close(mcnemar_exact(16, 6), 0.052479, 5e-7));
        assert!(close(mcnemar_exact(6, 16), 0.052479, 5e-7));
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert_eq!(mcnemar_exact(7, 7), 1.0);
        // 0 vs 5: 2 · 2^-5.
        assert!(close(mcnemar_exact(0, 5), 2.0 / 32.0, 1e-15));
        // 1 vs 4: 2 · (1 + 5) / 32.
        assert!(close(mcnemar_exact(1, 4), 12.0 / 32.0, 1e-15));
        // Large n stays finite and symmetric: 5000 vs 5200 discordant pairs.
        let p = mcnemar_exact(5000, 5200);
        assert!(p > 0.04 && p < 0.06, "{p}");
    }

    #[test]
    fn small_binomial_tails_match_exact_sums() {
        for n in 1..60u64 {
            for k in 0..=n / 2 {
                // Exact tail with integer binomial coefficients (n < 60 fits in u128).
                let mut coef: u128 = 1;
                let mut tail: u128 = 0;
                for j in 0..=k {
                    if j > 0 {
                        coef = coef * (n - j + 1) as u128 / j as u128;
                    }
                    tail += coef;
                }
                let exact = (2.0 * tail as f64 / 2f64.powi(n as i32)).min(1.0);
                let got = mcnemar_exact(k, n - k);
                let want = if 2 * k == n { 1.0 } else { exact };
                assert!(
                    (got - want).abs() <= 1e-13 * want.max(1e-300),
                    "n={n} k={k}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn tang_interval_worked_example() {
        // Cavo et al. (2012): n11 = 59, n12 = 6, n21 = 16, n22 = 80, ratio of the first
        // margin to the second. Published: 0.8667 (95% CI 0.7476 to 0.9876).
        let t = PairedTable {
            both_correct: 59,
            canary_only: 6,
            baseline_only: 16,
            both_wrong: 80,
        };
        let r = ratio_interval(&t, Z_95);
        assert!(close(r.estimate, 65.0 / 75.0, 1e-15));
        assert!(close(r.lower, 0.7476, 5e-5), "{r:?}");
        assert!(close(r.upper, 0.9876, 5e-5), "{r:?}");
        // At the limits the score statistic equals ±z.
        assert!(close(tang_score(&t, r.lower), Z_95, 1e-9));
        assert!(close(tang_score(&t, r.upper), -Z_95, 1e-9));
    }

    #[test]
    fn tang_interval_edge_cases() {
        let none = ratio_interval(&PairedTable::default(), Z_95);
        assert!(none.estimate.is_nan() && none.lower.is_nan() && none.upper.is_nan());
        // No discordant pairs: estimate 1, a proper interval around it.
        let same = ratio_interval(
            &PairedTable {
                both_correct: 40,
                both_wrong: 10,
                ..Default::default()
            },
            Z_95,
        );
        assert_eq!(same.estimate, 1.0);
        assert!(
            same.lower < 1.0 && same.lower > 0.8 && same.upper > 1.0,
            "{same:?}"
        );
        // Canary never right.
        let zero = ratio_interval(
            &PairedTable {
                baseline_only: 5,
                both_wrong: 5,
                ..Default::default()
            },
            Z_95,
        );
        assert_eq!((zero.estimate, zero.lower), (0.0, 0.0));
        assert!(zero.upper.is_finite() && zero.upper > 0.0);
        // Baseline never right.
        let inf = ratio_interval(
            &PairedTable {
                canary_only: 5,
                both_wrong: 5,
                ..Default::default()
            },
            Z_95,
        );
        assert!(inf.estimate.is_infinite() && inf.upper.is_infinite());
        assert!(inf.lower.is_finite() && inf.lower > 1.0);
    }

    #[test]
    fn numeric_labels_match_by_value() {
        let one = Label::new("1");
        assert!(prediction_correct("1", &one));
        assert!(prediction_correct("1.0", &one));
        assert!(prediction_correct("+1e0", &one));
        assert!(!prediction_correct(" 1", &one));
        assert!(!prediction_correct("2", &one));
        let cat = Label::new("cat");
        assert!(prediction_correct("cat", &cat));
        assert!(!prediction_correct("Cat", &cat));
        assert!(predictions_agree("-0", "0.0"));
        assert!(predictions_agree("nan", "nan"));
        assert!(!predictions_agree("inf", "Infinity"));
        for s in ["", ".", "+", "1e", "e5", "1_0", "inf", "NaN", "0x1", "1 "] {
            assert_eq!(parse_decimal(s), None, "{s:?}");
        }
        assert_eq!(parse_decimal(".5"), Some(0.5));
        assert_eq!(parse_decimal("5."), Some(5.0));
    }
}
