//! The status page at `/` on the admin port, for the engineer who port-forwards to one
//! pod: drift mean with its bounds and the noise floor over the last hour (inline SVG, no
//! external assets), the verdict each gate would give now from this pod's view, and the
//! health of the shadow path and shadow log. Every number is read from the same registry
//! `/metrics` exposes, so the page and the scrape cannot disagree.

use std::collections::VecDeque;
use std::fmt::Write;
use std::time::Duration;

use prometheus::proto::{MetricFamily, MetricType};

use crate::config::GatesConfig;
use crate::slices::{SliceExample, SliceSummary};

/// One point of the drift history.
#[derive(Debug, Clone, Copy)]
pub struct HistoryPoint {
    /// Seconds since the sidecar started.
    pub at: f64,
    pub mean: f64,
    pub lower: f64,
    pub upper: f64,
    pub self_mean: f64,
}

/// How often the history is sampled, and how much is kept (one hour).
pub const HISTORY_EVERY: Duration = Duration::from_secs(10);
pub const HISTORY_POINTS: usize = 360;

/// Drift history for the chart: a ring of the last hour.
#[derive(Debug, Default)]
pub struct History {
    points: VecDeque<HistoryPoint>,
}

impl History {
    pub fn push(&mut self, p: HistoryPoint) {
        if self.points.len() == HISTORY_POINTS {
            self.points.pop_front();
        }
        self.points.push_back(p);
    }

    pub fn points(&self) -> impl Iterator<Item = &HistoryPoint> {
        self.points.iter()
    }
}

/// A gate's verdict as Argo Rollouts would see it from this pod's series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// Evidence not yet enough either way: keep collecting.
    Inconclusive,
    /// No data (NaN, or nothing served).
    NoData,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
            Verdict::NoData => "no data",
        }
    }
    fn colour(self) -> &'static str {
        match self {
            Verdict::Pass => "#1a7f37",
            Verdict::Fail => "#cf222e",
            Verdict::Inconclusive => "#9a6700",
            Verdict::NoData => "#6e7781",
        }
    }
}

/// Sum of a family's samples whose labels include all of `labels` (counter, gauge or
/// histogram count).
pub fn metric(families: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> f64 {
    let Some(f) = families.iter().find(|f| f.name() == name) else {
        return f64::NAN;
    };
    let mut sum = 0.0;
    let mut any = false;
    for m in f.get_metric() {
        let matches = labels.iter().all(|(k, v)| {
            m.get_label()
                .iter()
                .any(|l| l.name() == *k && l.value() == *v)
        });
        if !matches {
            continue;
        }
        any = true;
        sum += match f.get_field_type() {
            MetricType::COUNTER => m.get_counter().get_value(),
            MetricType::GAUGE => m.get_gauge().get_value(),
            MetricType::HISTOGRAM => m.get_histogram().get_sample_count() as f64,
            _ => 0.0,
        };
    }
    if any {
        sum
    } else {
        f64::NAN
    }
}

/// A quantile from a histogram family (all series summed), by linear interpolation in
/// the bucket, as PromQL's `histogram_quantile` does.
pub fn histogram_quantile(families: &[MetricFamily], name: &str, q: f64) -> f64 {
    let Some(f) = families.iter().find(|f| f.name() == name) else {
        return f64::NAN;
    };
    let mut edges: Vec<(f64, f64)> = Vec::new();
    let mut total = 0.0;
    for m in f.get_metric() {
        let h = m.get_histogram();
        total += h.get_sample_count() as f64;
        for (i, b) in h.get_bucket().iter().enumerate() {
            if edges.len() <= i {
                edges.push((b.upper_bound(), 0.0));
            }
            edges[i].1 += b.cumulative_count() as f64;
        }
    }
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(upper, count) in &edges {
        if count >= rank {
            let width = count - prev.1;
            return if width == 0.0 {
                upper
            } else {
                prev.0 + (upper - prev.0) * (rank - prev.1) / width
            };
        }
        prev = (upper, count);
    }
    edges.last().map_or(f64::NAN, |e| e.0)
}

/// Everything the page shows, read from the registry.
pub struct View {
    pub model: String,
    pub version: String,
    pub baseline: String,
    pub canary: String,
    pub uptime: Duration,
    pub families: Vec<MetricFamily>,
    pub gates: GatesConfig,
    /// Every slice's numbers, in `Slicer::names` order (empty when slices are off).
    pub slices: Vec<(String, SliceSummary)>,
    /// The worst slice (by its low-share lower bound, else its cosine upper bound) and
    /// its lowest-cosine recent pairs.
    pub worst_slice: Option<(String, Vec<SliceExample>)>,
    /// With `[[routes]]`: every lane's drift, for the lanes table (empty with one lane).
    pub lanes: Vec<LaneRow>,
    /// `[reference]`: the reference's density and the last scored embeddings' on the same
    /// plane (`GRID × GRID` shares each), and how many scored embeddings the second is of.
    pub reference: Option<ReferencePicture>,
}

/// One lane of the lanes table.
#[derive(Debug, Clone)]
pub struct LaneRow {
    pub model: String,
    pub baseline: String,
    pub canary: String,
    pub share: f64,
    pub drift: crate::drift::DriftSnapshot,
}

/// `families` without the series of lanes other than (`model`, `canary`): the page's
/// sections sum series by name, and one lane's gauges must not add to another's. Series
/// without a `canary` label (the primary's, the shadow log's) stay, and so do the
/// router's (`canary=""`) of the same model.
pub fn first_lane(mut families: Vec<MetricFamily>, model: &str, canary: &str) -> Vec<MetricFamily> {
    for f in &mut families {
        let keep: Vec<_> = f
            .take_metric()
            .into_iter()
            .filter(|m| {
                let label = |name: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value())
                };
                match label("canary") {
                    None => true,
                    Some(c) => {
                        label("model").is_none_or(|m| m == model) && (c.is_empty() || c == canary)
                    }
                }
            })
            .collect();
        f.set_metric(keep);
    }
    families
}

/// The two densities of the reference section.
#[derive(Debug, Clone)]
pub struct ReferencePicture {
    pub reference: Vec<f32>,
    pub recent: Vec<f32>,
    pub recent_points: usize,
}

/// The gate verdicts from this pod's point of view.
pub fn verdicts(v: &View) -> Vec<(&'static str, String, Verdict)> {
    let f = &v.families;
    let g = &v.gates;
    let mut out = Vec::new();

    let requests = metric(f, "model_inference_requests_total", &[]);
    let errors = metric(f, "model_inference_errors_total", &[]);
    let rate = if requests > 0.0 {
        errors / requests
    } else {
        f64::NAN
    };
    let verdict = if rate.is_nan() {
        Verdict::NoData
    } else if rate < g.max_error_rate {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    out.push((
        "error rate",
        format!("{} (limit {})", fmt(rate, 5), g.max_error_rate),
        verdict,
    ));

    let p99 = histogram_quantile(f, "model_inference_duration_seconds", 0.99);
    let limit = g.max_p99.as_secs_f64();
    let verdict = if p99.is_nan() {
        Verdict::NoData
    } else if p99 < limit {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    out.push((
        "p99 latency (SLO)",
        format!("{} s (limit {limit} s)", fmt(p99, 4)),
        verdict,
    ));

    let lat_lo = metric(f, "model_canary_latency_ratio_lower_bound", &[]);
    let lat_hi = metric(f, "model_canary_latency_ratio_upper_bound", &[]);
    // "ratio <= max" is "-ratio >= -max", with the bounds swapped.
    let verdict = at_least(-lat_hi, -lat_lo, -g.max_latency_ratio);
    out.push((
        "paired latency",
        format!(
            "canary/baseline median in [{}, {}] (limit {})",
            fmt(lat_lo, 3),
            fmt(lat_hi, 3),
            g.max_latency_ratio
        ),
        verdict,
    ));

    let lower = metric(f, "model_embedding_cosine_similarity_lower_bound", &[]);
    let upper = metric(f, "model_embedding_cosine_similarity_upper_bound", &[]);
    let low_lo = metric(f, "model_embedding_low_similarity_ratio_lower_bound", &[]);
    let low_hi = metric(f, "model_embedding_low_similarity_ratio_upper_bound", &[]);
    let verdict = if [lower, upper, low_lo, low_hi].iter().any(|x| x.is_nan()) {
        Verdict::NoData
    } else if upper < g.cosine_threshold || low_lo > g.low_similarity_budget {
        Verdict::Fail
    } else if lower >= g.cosine_threshold && low_hi <= g.low_similarity_budget {
        Verdict::Pass
    } else {
        Verdict::Inconclusive
    };
    out.push((
        "embedding drift",
        format!(
            "cosine in [{}, {}] (threshold {}); low share in [{}, {}] (budget {})",
            fmt(lower, 4),
            fmt(upper, 4),
            g.cosine_threshold,
            fmt(low_lo, 4),
            fmt(low_hi, 4),
            g.low_similarity_budget
        ),
        verdict,
    ));

    let noise_lo = metric(
        f,
        "model_embedding_noise_adjusted_similarity_lower_bound",
        &[],
    );
    let noise_hi = metric(
        f,
        "model_embedding_noise_adjusted_similarity_upper_bound",
        &[],
    );
    out.push((
        "noise-adjusted drift",
        format!(
            "ratio in [{}, {}] (threshold {})",
            fmt(noise_lo, 4),
            fmt(noise_hi, 4),
            g.cosine_threshold
        ),
        at_least(noise_lo, noise_hi, g.cosine_threshold),
    ));

    let ratio_lo = metric(f, "model_accuracy_ratio_lower_bound", &[]);
    let ratio_hi = accuracy_ratio_upper(f, g.min_labeled_pairs);
    out.push((
        "accuracy ratio",
        format!(
            "ratio in [{}, {}] (threshold {})",
            fmt(ratio_lo, 4),
            fmt(ratio_hi, 4),
            g.accuracy_ratio
        ),
        at_least(ratio_lo, ratio_hi, g.accuracy_ratio),
    ));

    if !v.slices.is_empty() {
        let worst_low = metric(
            f,
            "model_embedding_worst_slice_low_similarity_ratio_lower_bound",
            &[],
        );
        let worst_cos = metric(
            f,
            "model_embedding_worst_slice_cosine_similarity_upper_bound",
            &[],
        );
        // The template's rule: fail when any slice is proven broken, else pass (a slice
        // without evidence cannot hold the rollout up; the overall drift gate needs it).
        let verdict = if worst_low > g.slice_low_similarity_budget || worst_cos < g.cosine_threshold
        {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
        let name = v
            .worst_slice
            .as_ref()
            .map_or("none yet", |(n, _)| n.as_str());
        out.push((
            "worst slice",
            format!(
                "{name}: low share ≥ {} (budget {}), cosine ≤ {} (threshold {})",
                fmt(worst_low, 4),
                g.slice_low_similarity_budget,
                fmt(worst_cos, 4),
                g.cosine_threshold
            ),
            verdict,
        ));
    }

    let conv = metric(f, "business_metric_conversion_rate", &[]);
    out.push((
        "conversion ratio",
        format!(
            "this pod ({}) converts {}; the ratio needs the other version's pods (see Prometheus)",
            v.version,
            fmt(conv, 4)
        ),
        Verdict::NoData,
    ));
    out
}

/// The slices: pairs, bounds, a bar of the low-similarity share's bounds, and for the
/// worst slice the recent pairs with the lowest cosine (what to open when a rollout
/// aborts on a slice).
fn slices_table(v: &View) -> String {
    let esc = html_escape;
    let mut h = String::from(
        "<h2>Slices</h2><table id=\"slices\"><tr><th>slice</th><th>pairs</th><th>mean cosine</th>\
         <th>cosine bounds</th><th>share under the floor</th><th></th></tr>",
    );
    let worst = v.worst_slice.as_ref().map(|(n, _)| n.as_str());
    for (name, s) in &v.slices {
        let (lo, hi) = (s.low_share_lower, s.low_share_upper);
        let px = |x: f64| {
            if x.is_finite() {
                (x.clamp(0.0, 1.0) * 160.0).round()
            } else {
                0.0
            }
        };
        let bar = format!(
            "<div style=\"width:160px;height:10px;background:#eaeef2;position:relative\">\
             <div style=\"position:absolute;left:{}px;width:{}px;height:10px;background:#cf222e\"></div></div>",
            px(lo),
            (px(hi) - px(lo)).max(1.0)
        );
        let style = if Some(name.as_str()) == worst {
            " style=\"font-weight:600\""
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr{style} data-slice=\"{n}\"><th>{n}</th><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">[{}, {}]</td><td class=\"num\">[{}, {}]</td><td>{bar}</td></tr>",
            s.pairs,
            fmt(s.mean_cosine, 4),
            fmt(s.cosine_lower, 4),
            fmt(s.cosine_upper, 4),
            fmt(lo, 4),
            fmt(hi, 4),
            n = esc(name)
        );
    }
    h.push_str("</table>");
    if let Some((name, examples)) = &v.worst_slice {
        let _ = write!(
            h,
            "<h3>Worst slice: <span id=\"worst-slice\">{}</span></h3><table id=\"worst-examples\">\
             <tr><th>request id</th><th>item</th><th>cosine</th><th>input</th></tr>",
            esc(name)
        );
        for e in examples {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&e.request_id),
                e.item,
                fmt(e.cosine, 4),
                e.input.as_deref().map_or_else(
                    || "<i>not stored (shadow_log.store_inputs = false)</i>".to_string(),
                    esc
                )
            );
        }
        h.push_str("</table>");
    }
    h
}

/// The templates' rule for a quantity that must stay at or above `threshold`, given a
/// lower and an upper bound on it: pass when both are at or above, fail when both are
/// under, inconclusive in between, no data when either is missing (NaN).
fn at_least(lower: f64, upper: f64, threshold: f64) -> Verdict {
    if lower.is_nan() || upper.is_nan() {
        Verdict::NoData
    } else if lower >= threshold && upper >= threshold {
        Verdict::Pass
    } else if lower < threshold && upper < threshold {
        Verdict::Fail
    } else {
        Verdict::Inconclusive
    }
}

/// The upper bound `deploy/argo/accuracy-ratio.yaml` computes in PromQL from the paired
/// label counts (a both correct, b baseline only, c canary only): r = (a + c) / (a + b)
/// times exp(3 sd), with Var(ln r) ≈ (b + c) / ((a + b)(a + c)) by the delta method; NaN
/// below `min_pairs` labeled pairs.
fn accuracy_ratio_upper(f: &[MetricFamily], min_pairs: u64) -> f64 {
    let count = |o: &str| {
        let v = metric(f, "model_shadow_labeled_pairs_total", &[("outcome", o)]);
        if v.is_nan() {
            0.0
        } else {
            v
        }
    };
    let (a, b, c, d) = (
        count("both_correct"),
        count("baseline_only"),
        count("canary_only"),
        count("both_wrong"),
    );
    if a + b + c + d < min_pairs as f64 || a + b == 0.0 || a + c == 0.0 {
        return f64::NAN;
    }
    let r = (a + c) / (a + b);
    r * (3.0 * ((b + c) / ((a + b) * (a + c))).sqrt()).exp()
}

fn fmt(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.digits$}")
    }
}

/// The whole page.
pub fn render(v: &View, history: &History) -> String {
    let f = &v.families;
    let esc = html_escape;
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>shadowgate · {model}</title>\
         <meta http-equiv=\"refresh\" content=\"10\">\
         <style>body{{font-family:system-ui,sans-serif;margin:1.5em;color:#1f2328}}table{{border-collapse:collapse;margin:.5em 0 1.2em}}\
         td,th{{padding:.25em .8em;border-bottom:1px solid #d0d7de;text-align:left}}th{{font-weight:600}}.num{{font-variant-numeric:tabular-nums}}</style>\
         </head><body><h1>shadowgate</h1>\
         <p>model <b>{model}</b> · this pod serves <b>{version}</b> · baseline <b>{b}</b> vs canary <b>{c}</b> · up {up}s</p>",
        model = esc(&v.model),
        version = esc(&v.version),
        b = esc(&v.baseline),
        c = esc(&v.canary),
        up = v.uptime.as_secs()
    );

    let g = |name: &str| metric(f, name, &[]);
    h.push_str("<h2>Drift</h2><table>");
    for (id, label, value) in [
        (
            "mean-cosine",
            "mean cosine (window)",
            fmt(g("model_embedding_drift_cosine_similarity"), 4),
        ),
        (
            "lower-bound",
            "lower bound (since start)",
            fmt(g("model_embedding_cosine_similarity_lower_bound"), 4),
        ),
        (
            "upper-bound",
            "upper bound (since start)",
            fmt(g("model_embedding_cosine_similarity_upper_bound"), 4),
        ),
        (
            "noise-floor",
            "noise floor: self cosine",
            fmt(g("model_embedding_self_cosine_similarity"), 4),
        ),
        (
            "noise-adjusted",
            "noise-adjusted lower bound",
            fmt(
                g("model_embedding_noise_adjusted_similarity_lower_bound"),
                4,
            ),
        ),
        (
            "low-ratio",
            "share under the floor (window)",
            fmt(g("model_embedding_low_similarity_ratio"), 4),
        ),
        (
            "window-pairs",
            "pairs in window",
            fmt(g("model_embedding_window_pairs"), 0),
        ),
        (
            "pairs-compared",
            "pairs compared (total)",
            fmt(
                metric(f, "model_embedding_pairs_total", &[("outcome", "compared")]),
                0,
            ),
        ),
    ] {
        let _ = write!(
            h,
            "<tr><th>{label}</th><td class=\"num\" id=\"{id}\">{value}</td></tr>"
        );
    }
    h.push_str("</table>");
    h.push_str(&chart(history));

    if !v.lanes.is_empty() {
        h.push_str(&lanes_table(&v.lanes, v.gates.cosine_threshold));
    }
    h.push_str("<h2>Gates, as this pod sees them</h2><table>");
    for (name, detail, verdict) in verdicts(v) {
        let _ = write!(
            h,
            "<tr><th>{name}</th><td class=\"verdict\" data-gate=\"{name}\" style=\"color:{}\"><b>{}</b></td><td>{}</td></tr>",
            verdict.colour(),
            verdict.as_str(),
            esc(&detail)
        );
    }
    h.push_str("</table>");

    if !v.slices.is_empty() {
        h.push_str(&slices_table(v));
    }
    if v.reference.is_some()
        || f.iter()
            .any(|m| m.name() == "shadowgate_reference_samples_total")
    {
        h.push_str(&reference_section(v));
    }

    h.push_str("<h2>Shadow path</h2><table><tr><th>target</th>");
    let outcomes = ["ok", "error", "timeout", "invalid_embedding", "dropped"];
    for o in outcomes {
        let _ = write!(h, "<th>{o}</th>");
    }
    h.push_str("</tr>");
    for t in ["baseline", "canary"] {
        let _ = write!(h, "<tr><th>{t}</th>");
        for o in outcomes {
            let n = metric(
                f,
                "shadowgate_shadow_requests_total",
                &[("target", t), ("outcome", o)],
            );
            let _ = write!(
                h,
                "<td class=\"num\" id=\"shadow-{t}-{o}\">{}</td>",
                fmt(n, 0)
            );
        }
        h.push_str("</tr>");
    }
    let _ = write!(
        h,
        "</table><p>in flight: <span id=\"in-flight\">{}</span></p>",
        fmt(g("shadowgate_shadow_in_flight"), 0)
    );

    h.push_str("<h2>Shadow log</h2><table>");
    for (id, label, name) in [
        (
            "log-rows",
            "rows written",
            "shadowgate_shadow_log_rows_total",
        ),
        (
            "log-files",
            "files closed",
            "shadowgate_shadow_log_files_total",
        ),
        (
            "log-dropped",
            "rows dropped",
            "shadowgate_shadow_log_dropped_total",
        ),
        (
            "log-errors",
            "write errors",
            "shadowgate_shadow_log_write_errors_total",
        ),
        (
            "log-queue",
            "queue depth",
            "shadowgate_shadow_log_queue_depth",
        ),
        (
            "log-uploaded",
            "rows in the object store",
            "shadowgate_shadow_log_uploaded_rows_total",
        ),
        (
            "log-spool",
            "spool bytes waiting for the store",
            "shadowgate_shadow_log_spool_bytes",
        ),
    ] {
        let _ = write!(
            h,
            "<tr><th>{label}</th><td class=\"num\" id=\"{id}\">{}</td></tr>",
            fmt(g(name), 0)
        );
    }
    h.push_str("</table><p><a href=\"/metrics\">/metrics</a> · <a href=\"/readyz\">/readyz</a></p></body></html>");
    h
}

/// `[reference]`: the score against its line, and the picture: where the reference's
/// embeddings lie on their two main directions, next to where the last scored ones lie.
fn reference_section(v: &View) -> String {
    let f = &v.families;
    let g = |name: &str| metric(f, name, &[]);
    let mut h = String::from("<h2>Input drift against the reference</h2><table>");
    let learning = g("shadowgate_reference_learning_samples");
    let alarm = g("shadowgate_reference_alarm") >= 1.0;
    for (id, label, value) in [
        (
            "ref-score",
            "shift score (1 = alarm line)",
            fmt(g("shadowgate_reference_shift_score"), 3),
        ),
        (
            "ref-alarm",
            "alarm",
            if alarm { "ALARM" } else { "no" }.to_string(),
        ),
        (
            "ref-samples",
            "embeddings scored",
            fmt(g("shadowgate_reference_samples_total"), 0),
        ),
        (
            "ref-learning",
            "still to collect (from_first)",
            fmt(learning, 0),
        ),
    ] {
        let _ = write!(
            h,
            "<tr><th>{label}</th><td class=\"num\" id=\"{id}\">{value}</td></tr>"
        );
    }
    h.push_str("</table>");
    match &v.reference {
        Some(p) if p.reference.len() == GRID * GRID => {
            let _ = write!(
                h,
                "<p>Density on the reference's two main directions: the reference, and the last {} scored embeddings.</p>\
                 <div style=\"display:flex;gap:2em\">{}{}</div>",
                p.recent_points,
                heatmap("ref-picture", "reference", &p.reference, "#0969da"),
                heatmap("now-picture", "now", &p.recent, if alarm { "#cf222e" } else { "#1a7f37" })
            );
        }
        _ => h.push_str("<p>No picture yet (no reference, or one built before pictures).</p>"),
    }
    h
}

/// Cells per side of the reference picture.
const GRID: usize = crate::reference::picture::GRID;

/// A `GRID × GRID` density as an SVG heatmap: cell opacity by share (of the largest).
fn heatmap(id: &str, title: &str, density: &[f32], colour: &str) -> String {
    const CELL: usize = 12;
    let side = GRID * CELL;
    let max = density.iter().copied().fold(0f32, f32::max);
    let mut s = format!(
        "<figure style=\"margin:0\"><svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{side}\" height=\"{side}\" role=\"img\" aria-label=\"{title}\">\
         <rect width=\"{side}\" height=\"{side}\" fill=\"#f6f8fa\" stroke=\"#d0d7de\"/>"
    );
    if max > 0.0 {
        for (i, &d) in density.iter().enumerate() {
            if d > 0.0 {
                let (x, y) = (i % GRID, GRID - 1 - i / GRID);
                let _ = write!(
                    s,
                    "<rect x=\"{}\" y=\"{}\" width=\"{CELL}\" height=\"{CELL}\" fill=\"{colour}\" fill-opacity=\"{:.3}\"/>",
                    x * CELL,
                    y * CELL,
                    0.08 + 0.92 * d / max
                );
            }
        }
    }
    let _ = write!(s, "</svg><figcaption>{title}</figcaption></figure>");
    s
}

/// Inline SVG: the mean with its confidence band and the noise floor, last hour.
fn chart(history: &History) -> String {
    let pts: Vec<&HistoryPoint> = history.points().filter(|p| p.mean.is_finite()).collect();
    if pts.len() < 2 {
        return "<p id=\"chart\">chart: waiting for data (a point every 10 s)</p>".into();
    }
    let (w, hgt, pad) = (720.0, 220.0, 36.0);
    let t0 = pts[0].at;
    let t1 = pts[pts.len() - 1].at.max(t0 + 1.0);
    let lo = pts
        .iter()
        .flat_map(|p| [p.mean, p.lower, p.self_mean])
        .filter(|x| x.is_finite())
        .fold(1.0f64, f64::min)
        .max(-1.0)
        - 0.01;
    let hi = 1.0;
    let x = |t: f64| pad + (t - t0) / (t1 - t0) * (w - 2.0 * pad);
    let y = |v: f64| hgt - pad + (lo - v.clamp(lo, hi)) / (hi - lo) * (hgt - 2.0 * pad);
    let line = |sel: &dyn Fn(&HistoryPoint) -> f64| -> String {
        pts.iter()
            .filter(|p| sel(p).is_finite())
            .map(|p| format!("{:.1},{:.1}", x(p.at), y(sel(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let band: Vec<String> = pts
        .iter()
        .filter(|p| p.upper.is_finite())
        .map(|p| format!("{:.1},{:.1}", x(p.at), y(p.upper)))
        .chain(
            pts.iter()
                .rev()
                .filter(|p| p.lower.is_finite())
                .map(|p| format!("{:.1},{:.1}", x(p.at), y(p.lower))),
        )
        .collect();
    format!(
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hgt}\" role=\"img\" aria-label=\"drift over the last hour\">\
         <rect width=\"{w}\" height=\"{hgt}\" fill=\"#f6f8fa\"/>\
         <polygon points=\"{band}\" fill=\"#54aeff\" fill-opacity=\"0.25\"/>\
         <polyline points=\"{mean}\" fill=\"none\" stroke=\"#0969da\" stroke-width=\"2\"/>\
         <polyline points=\"{noise}\" fill=\"none\" stroke=\"#8250df\" stroke-dasharray=\"4 3\"/>\
         <text x=\"4\" y=\"{ytop:.0}\" font-size=\"11\">{hi:.3}</text><text x=\"4\" y=\"{ybot:.0}\" font-size=\"11\">{lo:.3}</text>\
         <text x=\"{pad}\" y=\"14\" font-size=\"11\" fill=\"#0969da\">mean cosine (window) with bounds</text>\
         <text x=\"300\" y=\"14\" font-size=\"11\" fill=\"#8250df\">noise floor (self cosine)</text></svg>",
        band = band.join(" "),
        mean = line(&|p| p.mean),
        noise = line(&|p| p.self_mean),
        ytop = y(hi) + 4.0,
        ybot = y(lo),
    )
}

/// Escape text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantile_interpolates_like_promql() {
        let r = prometheus::Registry::new();
        let h = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("h", "h").buckets(vec![0.1, 0.2, 0.4]),
        )
        .unwrap();
        r.register(Box::new(h.clone())).unwrap();
        for _ in 0..50 {
            h.observe(0.05);
        }
        for _ in 0..50 {
            h.observe(0.15);
        }
        let f = r.gather();
        // rank 75 of 100: halfway through the (0.1, 0.2] bucket.
        assert!((histogram_quantile(&f, "h", 0.75) - 0.15).abs() < 1e-12);
        assert!((histogram_quantile(&f, "h", 0.5) - 0.1).abs() < 1e-12);
    }
}

#[cfg(test)]
mod verdict_tests {
    use super::*;
    use prometheus::{Gauge, IntCounterVec, Opts, Registry};

    fn view(r: &Registry) -> View {
        View {
            model: "m".into(),
            version: "v2".into(),
            baseline: "v1".into(),
            canary: "v2".into(),
            uptime: Duration::from_secs(1),
            families: r.gather(),
            gates: GatesConfig::default(),
            slices: Vec::new(),
            worst_slice: None,
            lanes: Vec::new(),
            reference: None,
        }
    }

    fn gauge(r: &Registry, name: &str, v: f64) {
        let g = Gauge::new(name, name).unwrap();
        g.set(v);
        r.register(Box::new(g)).unwrap();
    }

    fn verdict(v: &View, gate: &str) -> Verdict {
        verdicts(v)
            .into_iter()
            .find(|(name, _, _)| *name == gate)
            .map(|(_, _, v)| v)
            .unwrap()
    }

    /// Paired labels with a = 145 both correct, b = 50 baseline only, c = 5 canary only:
    /// the ratio is 0.77 and the template's pooled upper bound 0.88, both under 0.95,
    /// so `deploy/argo/accuracy-ratio.yaml` fails the canary; the page must too.
    #[test]
    fn accuracy_ratio_fails_where_the_template_fails() {
        let r = Registry::new();
        gauge(&r, "model_accuracy_ratio_lower_bound", 0.70);
        let pairs = IntCounterVec::new(
            Opts::new("model_shadow_labeled_pairs_total", "x"),
            &["outcome"],
        )
        .unwrap();
        r.register(Box::new(pairs.clone())).unwrap();
        for (o, n) in [
            ("both_correct", 145),
            ("baseline_only", 50),
            ("canary_only", 5),
            ("both_wrong", 0),
        ] {
            pairs.with_label_values(&[o]).inc_by(n);
        }
        assert_eq!(verdict(&view(&r), "accuracy ratio"), Verdict::Fail);
    }

    /// The noise-adjusted template fails when even the upper bound is under the
    /// threshold; the page said "inconclusive" there.
    #[test]
    fn noise_adjusted_fails_where_the_template_fails() {
        let r = Registry::new();
        gauge(
            &r,
            "model_embedding_noise_adjusted_similarity_lower_bound",
            0.70,
        );
        gauge(
            &r,
            "model_embedding_noise_adjusted_similarity_upper_bound",
            0.85,
        );
        assert_eq!(verdict(&view(&r), "noise-adjusted drift"), Verdict::Fail);
    }
}

/// Every (route, candidate) lane: its share and drift numbers, the first lane being the
/// one the sections above describe.
fn lanes_table(lanes: &[LaneRow], threshold: f64) -> String {
    let mut h = String::from(
        "<h2>Routes</h2><table id=\"lanes\"><tr><th>model</th><th>baseline</th><th>candidate</th>\
         <th>share</th><th>pairs</th><th>mean cosine (window)</th><th>lower bound</th><th>upper bound</th><th></th></tr>",
    );
    for l in lanes {
        let d = &l.drift;
        let flag = if d.cosine_upper < threshold {
            "under the threshold"
        } else if d.cosine_lower >= threshold {
            "above the threshold"
        } else {
            ""
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{flag}</td></tr>",
            html_escape(&l.model),
            html_escape(&l.baseline),
            html_escape(&l.canary),
            fmt(l.share, 3),
            d.total_pairs,
            fmt(d.mean_cosine, 4),
            fmt(d.cosine_lower, 4),
            fmt(d.cosine_upper, 4),
        );
    }
    h.push_str("</table>");
    h
}
