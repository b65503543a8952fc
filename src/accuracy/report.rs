//! The accuracy report: its numbers (built from the scan's counters), the JSON form
//! (stable keys, documented in `docs`-style comments below), the terminal table and the
//! Prometheus text pushed to the Pushgateway.
//!
//! JSON conventions: counts are integers; every float that is undefined (no data) or
//! unbounded (an interval end at +∞) is `null`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Serialize, Serializer};

use super::labels::LabelCounts;
use super::logs::{GroupCounts, GroupKey};
use super::stats::{mcnemar_exact, ratio_interval, wilson, PairedTable, Z_95};

/// Version of the JSON layout; bumped on any incompatible change.
pub const REPORT_VERSION: u32 = 1;

/// Name of the accuracy-ratio interval method, as written to the report.
pub const RATIO_METHOD: &str = "tang_score";

/// Below this many labeled pairs the pushed ratio lower bound is NaN, as the sidecar's
/// online gauge is: a gate then stays inconclusive instead of deciding on noise.
pub const MIN_LABELED_PAIRS: u64 = 30;

fn finite<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

fn display_path<S: Serializer>(p: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.display().to_string())
}

/// A file left out by `--skip-bad-files`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedFile {
    #[serde(serialize_with = "display_path")]
    pub path: PathBuf,
    pub error: String,
}

/// The whole report (`--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Layout version of this JSON ([`REPORT_VERSION`]).
    pub report_version: u32,
    /// Level of every interval (0.95).
    pub confidence_level: f64,
    /// How the accuracy-ratio interval is computed ([`RATIO_METHOD`]).
    pub ratio_interval_method: &'static str,
    pub inputs: Inputs,
    pub labels: LabelSummary,
    /// One entry per model, sorted by name.
    pub models: Vec<ModelReport>,
}

/// What was read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inputs {
    /// Shadow-log files read to the end.
    pub files_read: u64,
    /// Files left out by `--model` / `--since` / `--until` from their partition path.
    pub files_pruned: u64,
    /// Corrupt files skipped under `--skip-bad-files` (shadow logs and labels), by path.
    pub files_skipped: Vec<SkippedFile>,
    /// Shadow rows kept after the filters (one per item of each mirrored request).
    pub rows: u64,
    /// Of those, rows whose (request id, item) has a label.
    pub labeled_rows: u64,
    /// Rows without a label (`rows - labeled_rows`).
    pub unlabeled_rows: u64,
}

/// What the label files held.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelSummary {
    /// Label rows in all files.
    pub rows: u64,
    /// Rows without an id or a label value, or with an item that is not a
    /// non-negative integer (ignored).
    pub invalid: u64,
    /// Rows superseded by a later label for the same (id, item).
    pub duplicates: u64,
    /// Distinct labeled (id, item) keys.
    pub distinct: u64,
    /// Distinct keys that joined at least one kept shadow row.
    pub matched: u64,
    /// Distinct keys with no kept shadow row.
    pub unmatched: u64,
}

/// Accuracy of one version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionAccuracy {
    pub version: String,
    /// Labeled rows scored for this version.
    pub labeled: u64,
    /// Of those, rows where its prediction matched the label.
    pub correct: u64,
    #[serde(serialize_with = "finite")]
    pub accuracy: f64,
    /// Wilson score interval.
    #[serde(serialize_with = "finite")]
    pub accuracy_lower: f64,
    #[serde(serialize_with = "finite")]
    pub accuracy_upper: f64,
}

impl VersionAccuracy {
    fn new(version: &str, correct: u64, labeled: u64) -> Self {
        let w = wilson(correct, labeled, Z_95);
        VersionAccuracy {
            version: version.to_string(),
            labeled,
            correct,
            accuracy: w.estimate,
            accuracy_lower: w.lower,
            accuracy_upper: w.upper,
        }
    }
}

/// The paired table (`model_shadow_labeled_pairs_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PairedCounts {
    pub both_correct: u64,
    pub baseline_only: u64,
    pub canary_only: u64,
    pub both_wrong: u64,
}

impl From<PairedTable> for PairedCounts {
    fn from(t: PairedTable) -> Self {
        PairedCounts {
            both_correct: t.both_correct,
            baseline_only: t.baseline_only,
            canary_only: t.canary_only,
            both_wrong: t.both_wrong,
        }
    }
}

/// One (baseline, canary) pair of a model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairReport {
    pub baseline_version: String,
    pub canary_version: String,
    pub rows: u64,
    pub labeled_rows: u64,
    pub baseline: VersionAccuracy,
    pub canary: VersionAccuracy,
    pub paired: PairedCounts,
    /// McNemar's exact test (two-sided binomial on the discordant pairs).
    #[serde(serialize_with = "finite")]
    pub mcnemar_p_value: f64,
    /// accuracy(canary) / accuracy(baseline) on the same labeled rows.
    #[serde(serialize_with = "finite")]
    pub accuracy_ratio: f64,
    #[serde(serialize_with = "finite")]
    pub accuracy_ratio_lower: f64,
    #[serde(serialize_with = "finite")]
    pub accuracy_ratio_upper: f64,
    /// Rows with both predictions present.
    pub predictions_compared: u64,
    /// Of those, rows where the two predictions agree.
    pub predictions_agreed: u64,
    #[serde(serialize_with = "finite")]
    pub agreement_rate: f64,
    /// Rows without a baseline (canary) prediction; they count as wrong when labeled.
    pub baseline_missing: u64,
    pub canary_missing: u64,
}

/// One model: its pairs and each version's accuracy over all of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelReport {
    pub model: String,
    pub rows: u64,
    pub labeled_rows: u64,
    /// Per version, summed over the pairs where it is baseline or canary, sorted by
    /// version (a version on both sides of one pair counts each row twice).
    pub versions: Vec<VersionAccuracy>,
    /// The paired tables of all pairs, summed.
    pub paired: PairedCounts,
    /// Sorted by (baseline, canary).
    pub pairs: Vec<PairReport>,
}

/// Builds the report from the scan's per-group counters.
pub fn build(
    groups: &std::collections::HashMap<GroupKey, GroupCounts>,
    labels: &LabelCounts,
    matched: u64,
    files_read: u64,
    files_pruned: u64,
    files_skipped: Vec<SkippedFile>,
) -> Report {
    let mut by_model: BTreeMap<&str, BTreeMap<(&str, &str), &GroupCounts>> = BTreeMap::new();
    for ((m, b, c), g) in groups {
        by_model
            .entry(m.as_str())
            .or_default()
            .insert((b.as_str(), c.as_str()), g);
    }
    let mut models = Vec::new();
    let (mut rows, mut labeled_rows) = (0, 0);
    for (model, pairs) in by_model {
        let mut total = GroupCounts::default();
        let mut versions: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut pair_reports = Vec::new();
        for ((b, c), g) in pairs {
            total.add(g);
            let t = g.table;
            let vb = versions.entry(b).or_default();
            vb.0 += t.baseline_correct();
            vb.1 += g.labeled;
            let vc = versions.entry(c).or_default();
            vc.0 += t.canary_correct();
            vc.1 += g.labeled;
            let ratio = ratio_interval(&t, Z_95);
            pair_reports.push(PairReport {
                baseline_version: b.to_string(),
                canary_version: c.to_string(),
                rows: g.rows,
                labeled_rows: g.labeled,
                baseline: VersionAccuracy::new(b, t.baseline_correct(), g.labeled),
                canary: VersionAccuracy::new(c, t.canary_correct(), g.labeled),
                paired: t.into(),
                mcnemar_p_value: if g.labeled == 0 {
                    f64::NAN
                } else {
                    mcnemar_exact(t.baseline_only, t.canary_only)
                },
                accuracy_ratio: ratio.estimate,
                accuracy_ratio_lower: ratio.lower,
                accuracy_ratio_upper: ratio.upper,
                predictions_compared: g.compared,
                predictions_agreed: g.agreed,
                agreement_rate: if g.compared == 0 {
                    f64::NAN
                } else {
                    g.agreed as f64 / g.compared as f64
                },
                baseline_missing: g.baseline_missing,
                canary_missing: g.canary_missing,
            });
        }
        rows += total.rows;
        labeled_rows += total.labeled;
        models.push(ModelReport {
            model: model.to_string(),
            rows: total.rows,
            labeled_rows: total.labeled,
            versions: versions
                .into_iter()
                .map(|(v, (k, n))| VersionAccuracy::new(v, k, n))
                .collect(),
            paired: total.table.into(),
            pairs: pair_reports,
        });
    }
    Report {
        report_version: REPORT_VERSION,
        confidence_level: 0.95,
        ratio_interval_method: RATIO_METHOD,
        inputs: Inputs {
            files_read,
            files_pruned,
            files_skipped,
            rows,
            labeled_rows,
            unlabeled_rows: rows - labeled_rows,
        },
        labels: LabelSummary {
            rows: labels.rows,
            invalid: labels.invalid,
            duplicates: labels.duplicates,
            distinct: labels.distinct,
            matched,
            unmatched: labels.distinct - matched,
        },
        models,
    }
}

fn num(v: f64, digits: usize) -> String {
    if v.is_nan() {
        "-".to_string()
    } else if v.is_infinite() {
        "inf".to_string()
    } else {
        format!("{v:.digits$}")
    }
}

fn interval(lo: f64, hi: f64) -> String {
    if lo.is_nan() && hi.is_nan() {
        "-".to_string()
    } else {
        format!("[{}, {}]", num(lo, 4), num(hi, 4))
    }
}

impl Report {
    /// The human-readable table printed on the terminal.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let i = &self.inputs;
        let l = &self.labels;
        let _ = writeln!(
            s,
            "shadow log: {} files read, {} pruned, {} skipped; {} rows, {} labeled, {} unlabeled",
            i.files_read,
            i.files_pruned,
            i.files_skipped.len(),
            i.rows,
            i.labeled_rows,
            i.unlabeled_rows
        );
        let _ = writeln!(
            s,
            "labels: {} rows, {} distinct ids, {} duplicates, {} invalid; {} matched, {} without a shadow row",
            l.rows, l.distinct, l.duplicates, l.invalid, l.matched, l.unmatched
        );
        for f in &i.files_skipped {
            let _ = writeln!(s, "  skipped {}: {}", f.path.display(), f.error);
        }
        if self.models.is_empty() {
            let _ = writeln!(s, "\nno shadow rows");
        }
        for m in &self.models {
            let _ = writeln!(
                s,
                "\nmodel {}: {} rows, {} labeled",
                m.model, m.rows, m.labeled_rows
            );
            let _ = writeln!(
                s,
                "  {:<16} {:>10} {:>10} {:>9}  95% CI (Wilson)",
                "version", "labeled", "correct", "accuracy"
            );
            for v in &m.versions {
                let _ = writeln!(
                    s,
                    "  {:<16} {:>10} {:>10} {:>9}  {}",
                    v.version,
                    v.labeled,
                    v.correct,
                    num(v.accuracy, 4),
                    interval(v.accuracy_lower, v.accuracy_upper)
                );
            }
            for p in &m.pairs {
                let _ = writeln!(
                    s,
                    "  {} -> {}: {} rows, {} labeled; predictions agree {} ({} of {} compared)",
                    p.baseline_version,
                    p.canary_version,
                    p.rows,
                    p.labeled_rows,
                    num(p.agreement_rate, 4),
                    p.predictions_agreed,
                    p.predictions_compared
                );
                let t = &p.paired;
                let _ = writeln!(
                    s,
                    "    paired: both correct {}, baseline only {}, canary only {}, both wrong {}",
                    t.both_correct, t.baseline_only, t.canary_only, t.both_wrong
                );
                let _ = writeln!(
                    s,
                    "    accuracy {} {} {}, {} {} {}",
                    p.baseline_version,
                    num(p.baseline.accuracy, 4),
                    interval(p.baseline.accuracy_lower, p.baseline.accuracy_upper),
                    p.canary_version,
                    num(p.canary.accuracy, 4),
                    interval(p.canary.accuracy_lower, p.canary.accuracy_upper),
                );
                let _ = writeln!(
                    s,
                    "    ratio canary/baseline {} 95% CI {} (Tang score); McNemar exact p = {}",
                    num(p.accuracy_ratio, 4),
                    interval(p.accuracy_ratio_lower, p.accuracy_ratio_upper),
                    num(p.mcnemar_p_value, 4)
                );
            }
        }
        s
    }

    /// Prometheus text exposition of one model's series, for a Pushgateway group.
    pub fn prometheus_text(&self, m: &ModelReport) -> String {
        let mut s = String::new();
        let model = escape_label(&m.model);
        let _ = writeln!(s, "# HELP model_inference_accuracy Share of labeled requests the version predicted correctly.\n# TYPE model_inference_accuracy gauge");
        for v in &m.versions {
            let _ = writeln!(
                s,
                "model_inference_accuracy{{model=\"{model}\",version=\"{}\"}} {}",
                escape_label(&v.version),
                prom_float(v.accuracy)
            );
        }
        let _ = writeln!(s, "# HELP model_inference_labeled_total Labeled requests scored for the version.\n# TYPE model_inference_labeled_total counter");
        for v in &m.versions {
            let _ = writeln!(
                s,
                "model_inference_labeled_total{{model=\"{model}\",version=\"{}\"}} {}",
                escape_label(&v.version),
                v.labeled
            );
        }
        let _ = writeln!(s, "# HELP model_shadow_labeled_pairs_total Labeled shadow pairs by which version was right.\n# TYPE model_shadow_labeled_pairs_total counter");
        let p = &m.paired;
        for (outcome, n) in [
            ("both_correct", p.both_correct),
            ("baseline_only", p.baseline_only),
            ("canary_only", p.canary_only),
            ("both_wrong", p.both_wrong),
        ] {
            let _ = writeln!(
                s,
                "model_shadow_labeled_pairs_total{{model=\"{model}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(s, "# HELP model_accuracy_ratio_lower_bound Lower 95% bound on accuracy(canary)/accuracy(baseline) from paired labels; NaN below {MIN_LABELED_PAIRS} pairs.\n# TYPE model_accuracy_ratio_lower_bound gauge");
        for pr in &m.pairs {
            let v = if pr.labeled_rows < MIN_LABELED_PAIRS {
                f64::NAN
            } else {
                pr.accuracy_ratio_lower
            };
            let _ = writeln!(
                s,
                "model_accuracy_ratio_lower_bound{{model=\"{model}\",baseline=\"{}\",canary=\"{}\"}} {}",
                escape_label(&pr.baseline_version),
                escape_label(&pr.canary_version),
                prom_float(v)
            );
        }
        s
    }
}

fn prom_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
