//! `[[routes]]`: several models, and several candidates per model, behind one sidecar.
//!
//! A route picks requests (every request, a path prefix, the model named in the body at
//! a JSON pointer, or the model of an Open Inference Protocol path), and names its
//! baseline and one or more candidates, each with its share of the route's requests.
//! Each (route, candidate) pair is a *lane*: its own series (`model`, `baseline`,
//! `canary` labels), drift, slices and shadow-log partition. Without `[[routes]]` the
//! `[shadow]` pair is the one lane, matching every request at `shadow.sample_rate`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{check_url, TargetConfig};
use crate::protocol::{Extractor, Protocol};

/// The `model` label of sampled requests that matched no route (never mirrored).
pub const OTHER_MODEL: &str = "other";

/// The JSON pointer a `match = "pointer"` route reads when `pointer` is not set: the
/// OpenAI-style body's `model`.
pub const DEFAULT_MODEL_POINTER: &str = "/model";

/// How a route picks its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MatchBy {
    /// The body's value at `pointer` (default `/model`) is `model` or one of `aliases`.
    #[default]
    Pointer,
    /// The path starts with `path_prefix`.
    PathPrefix,
    /// An Open Inference Protocol path `/v2/models/{name}/...` whose `{name}` is
    /// `model` or one of `aliases`.
    OipPath,
}

/// One `[[routes]]` entry, as written.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// The `model` label of this route's series, and the name it matches.
    pub model: String,
    /// Other names of the same model (what clients send in `model`, or in the path).
    pub aliases: Vec<String>,
    /// pointer | path_prefix | oip_path.
    #[serde(rename = "match")]
    pub match_by: MatchBy,
    /// `match = "pointer"`: where the body names its model (default `/model`).
    pub pointer: String,
    /// `match = "path_prefix"`: the prefix.
    pub path_prefix: String,
    /// How this route's answers are read (default `shadow.protocol`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Default `shadow.embedding_pointer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_pointer: Option<String>,
    /// Default `shadow.prediction_pointer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prediction_pointer: Option<String>,
    pub baseline: TargetConfig,
    pub candidates: Vec<CandidateConfig>,
}

/// One candidate of a route.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CandidateConfig {
    pub url: String,
    /// The `canary` label of this candidate's series.
    pub version: String,
    /// Share of the route's requests mirrored to this candidate (and the baseline),
    /// 0..=1. Candidates of a route get disjoint slices of the request-id hash, so one
    /// request goes to at most one candidate and their shares add up.
    pub share: f64,
}

/// What a validated route matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// Every eligible request (the `[shadow]` pair without `[[routes]]`).
    All,
    PathPrefix(String),
    /// The body's string at `pointer` is one of `names`.
    Pointer {
        pointer: String,
        names: Vec<String>,
    },
    /// The OIP path's model name is one of `names`.
    OipPath {
        names: Vec<String>,
    },
}

impl RouteMatch {
    /// Whether the route is known from the request head alone.
    pub fn needs_body(&self) -> bool {
        matches!(self, RouteMatch::Pointer { .. })
    }
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct CheckedRoute {
    pub model: String,
    pub matcher: RouteMatch,
    pub protocol: Protocol,
    pub extractor: Arc<Extractor>,
    pub baseline: CheckedTarget,
    pub candidates: Vec<CheckedCandidate>,
}

#[derive(Debug, Clone)]
pub struct CheckedTarget {
    pub url: http::Uri,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct CheckedCandidate {
    pub target: CheckedTarget,
    pub share: f64,
}

/// The model name in an OIP path: `/v2/models/{name}` followed by `/`, or the end.
pub fn oip_model_name(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v2/models/")?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// Validate `[[routes]]`; `shadow` gives the defaults (protocol, pointers, item cap).
pub(super) fn check(
    routes: &[RouteConfig],
    shadow: &super::ShadowConfig,
    bad: &mut impl FnMut(&str, String),
) -> Option<Vec<CheckedRoute>> {
    let mut out = Vec::new();
    let mut ok = true;
    let mut names_seen: Vec<(String, usize)> = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        let mut fail = |k: &str, msg: String| {
            ok = false;
            bad(&key(k), msg);
        };
        if r.model.is_empty() {
            fail(
                "model",
                "is required: the `model` label of this route's series, e.g. \"minilm\"".into(),
            );
        } else if r.model == OTHER_MODEL {
            fail(
                "model",
                format!(
                    "{OTHER_MODEL:?} is the label of requests no route matched; name the model"
                ),
            );
        }
        let names: Vec<String> = std::iter::once(r.model.clone())
            .chain(r.aliases.iter().cloned())
            .filter(|n| !n.is_empty())
            .collect();
        if r.match_by != MatchBy::PathPrefix {
            for n in &names {
                match names_seen.iter().find(|(m, _)| m == n) {
                    Some((_, j)) => fail(
                        "aliases",
                        format!(
                            "{n:?} is also a name of routes[{j}]: a model name routes to one route"
                        ),
                    ),
                    None => names_seen.push((n.clone(), i)),
                }
            }
        }
        let matcher = match r.match_by {
            MatchBy::Pointer => {
                let pointer = if r.pointer.is_empty() {
                    DEFAULT_MODEL_POINTER.to_string()
                } else {
                    r.pointer.clone()
                };
                if !pointer.starts_with('/') {
                    fail(
                        "pointer",
                        format!("{pointer:?} is not a JSON pointer, e.g. \"/model\""),
                    );
                }
                RouteMatch::Pointer { pointer, names }
            }
            MatchBy::PathPrefix => {
                if !r.path_prefix.starts_with('/') {
                    fail(
                        "path_prefix",
                        format!(
                            "{:?}: match = \"path_prefix\" needs a prefix starting with '/', e.g. \"/v1/minilm/\"",
                            r.path_prefix
                        ),
                    );
                }
                RouteMatch::PathPrefix(r.path_prefix.clone())
            }
            MatchBy::OipPath => RouteMatch::OipPath { names },
        };
        let protocol = r.protocol.unwrap_or(shadow.protocol);
        let embedding = r
            .embedding_pointer
            .as_deref()
            .unwrap_or(&shadow.embedding_pointer);
        let prediction = r
            .prediction_pointer
            .as_deref()
            .unwrap_or(&shadow.prediction_pointer);
        let extractor = match Extractor::new(protocol, embedding, prediction) {
            Ok(e) => Some(Arc::new(e.with_max_items(shadow.max_batch_items))),
            Err(e) => {
                fail(
                    "embedding_pointer",
                    format!("{e} (a JSON pointer such as \"/data/0/embedding\")"),
                );
                None
            }
        };
        let baseline = target(&r.baseline.url, &r.baseline.version, &key("baseline"), bad);
        if !r.baseline.http2_url.is_empty() {
            bad(
                &key("baseline.http2_url"),
                "routes mirror HTTP/1.1 requests only; gRPC calls are mirrored with the [shadow] pair (without [[routes]])".into(),
            );
            ok = false;
        }
        if r.candidates.is_empty() {
            bad(
                &key("candidates"),
                "needs at least one candidate: [{ url = \"http://127.0.0.1:8002\", version = \"v2\", share = 0.05 }]".into(),
            );
            ok = false;
        }
        let mut total = 0.0;
        let mut candidates = Vec::new();
        for (j, c) in r.candidates.iter().enumerate() {
            let ck = key(&format!("candidates[{j}]"));
            if !(0.0..=1.0).contains(&c.share) {
                bad(
                    &format!("{ck}.share"),
                    format!(
                        "{} is not a share: use a number from 0 to 1, e.g. 0.01",
                        c.share
                    ),
                );
                ok = false;
            }
            total += c.share;
            if c.version == r.baseline.version
                || r.candidates[..j].iter().any(|o| o.version == c.version)
            {
                bad(
                    &format!("{ck}.version"),
                    format!(
                        "{:?} is already a version of this route: each side needs its own label",
                        c.version
                    ),
                );
                ok = false;
            }
            if let Some(t) = target(&c.url, &c.version, &ck, bad) {
                candidates.push(CheckedCandidate {
                    target: t,
                    share: c.share,
                });
            }
        }
        if total > 1.0 + 1e-9 {
            bad(
                &key("candidates"),
                format!("shares add up to {total}: a request goes to one candidate at most, so they can add up to 1 at most"),
            );
            ok = false;
        }
        if let (Some(baseline), Some(extractor)) = (baseline, extractor) {
            if candidates.len() == r.candidates.len() {
                out.push(CheckedRoute {
                    model: r.model.clone(),
                    matcher,
                    protocol,
                    extractor,
                    baseline,
                    candidates,
                });
                continue;
            }
        }
        ok = false;
    }
    ok.then_some(out)
}

/// A side's URL and version, each required.
fn target(
    url: &str,
    version: &str,
    key: &str,
    bad: &mut impl FnMut(&str, String),
) -> Option<CheckedTarget> {
    let url = check_url(url, &format!("{key}.url"), bad);
    if version.is_empty() {
        bad(
            &format!("{key}.version"),
            "is required: the version label of this side, e.g. \"v1\"".into(),
        );
        return None;
    }
    Some(CheckedTarget {
        url: url?,
        version: version.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oip_paths_name_their_model() {
        assert_eq!(oip_model_name("/v2/models/minilm/infer"), Some("minilm"));
        assert_eq!(
            oip_model_name("/v2/models/minilm/versions/3/infer"),
            Some("minilm")
        );
        assert_eq!(oip_model_name("/v2/models/minilm"), Some("minilm"));
        assert_eq!(oip_model_name("/v2/models//infer"), None);
        assert_eq!(oip_model_name("/v1/embeddings"), None);
    }
}
