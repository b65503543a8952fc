//! Which lane, if any, a request is mirrored to: the route it matches (`[[routes]]`, or
//! the `[shadow]` pair matching everything) and, within the route, the candidate whose
//! slice of the request-id hash it falls in.
//!
//! Candidates of a route take consecutive slices of the hash, `[0, s1)`, `[s1, s1+s2)`,
//! ..., so each gets its share exactly, a request goes to one candidate at most, and the
//! decision is the same on every replica. A route named in the body (`match =
//! "pointer"`) is only known once the body is read, so the body of a request is read
//! whole when its hash is under the largest share of such a route; the other requests
//! stream through untouched. A sampled request whose model matches no route counts under
//! `model="other"` and is not mirrored.

use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderMap;
use http::{HeaderName, Method};
use prometheus::IntCounter;

use super::{Admission, Mirror};
use crate::config::{routes::oip_model_name, RouteMatch, OTHER_MODEL};
use crate::ids::{id_hash, SampleRate};
use crate::metrics::{Metrics, MirrorDecision};
use crate::protocol::StringPointer;

/// One route's lanes.
pub struct RouteLanes {
    pub model: Arc<str>,
    matcher: Matcher,
    /// Each lane with the upper end of its hash slice; slices are consecutive.
    lanes: Vec<(SampleRate, Arc<Mirror>)>,
    /// The route's total share: the upper end of its last slice.
    total: SampleRate,
    not_sampled: IntCounter,
}

enum Matcher {
    All,
    PathPrefix(String),
    Pointer {
        pointer: StringPointer,
        names: Vec<String>,
    },
    OipPath {
        names: Vec<String>,
    },
}

/// What the proxy does with a request, from its head alone.
pub enum Head {
    /// Not mirrored: stream it through.
    Pass,
    /// Mirror it to this lane (its body is read whole).
    Lane(Arc<Mirror>, Admission),
    /// Its route is named in the body: read the body, then ask [`Router::admit_body`].
    ReadBody,
}

/// Every route and lane of the sidecar.
pub struct Router {
    routes: Vec<RouteLanes>,
    methods: Vec<Method>,
    paths: Vec<String>,
    shadow_header: HeaderName,
    /// The largest total share of any route: requests over it are never mirrored.
    any_share: SampleRate,
    /// The largest total share of a route named in the body.
    body_share: Option<SampleRate>,
    unrouted: IntCounter,
}

impl Router {
    /// `lanes[r]` are route `r`'s mirrors, in candidate order (as `cfg.checked().routes`).
    pub fn new(
        cfg: &crate::config::Config,
        lanes: Vec<Vec<Arc<Mirror>>>,
        metrics: &Metrics,
    ) -> Result<Self, prometheus::Error> {
        let checked = cfg.checked();
        let mut routes = Vec::new();
        for (route, mirrors) in checked.routes.iter().zip(lanes) {
            let mut upper = 0.0;
            let lanes: Vec<_> = route
                .candidates
                .iter()
                .zip(mirrors)
                .map(|(c, m)| {
                    upper = f64::min(upper + c.share, 1.0);
                    (share(upper), m)
                })
                .collect();
            let matcher = match &route.matcher {
                RouteMatch::All => Matcher::All,
                RouteMatch::PathPrefix(p) => Matcher::PathPrefix(p.clone()),
                RouteMatch::Pointer { pointer, names } => Matcher::Pointer {
                    // Checked by config; an invalid pointer matches nothing.
                    pointer: StringPointer::new(pointer)
                        .unwrap_or_else(|_| StringPointer::new("/\u{0}").expect("valid")),
                    names: names.clone(),
                },
                RouteMatch::OipPath { names } => Matcher::OipPath {
                    names: names.clone(),
                },
            };
            routes.push(RouteLanes {
                model: route.model.as_str().into(),
                matcher,
                lanes,
                total: share(upper),
                not_sampled: metrics.route_decision(&route.model, MirrorDecision::NotSampled)?,
            });
        }
        let max = |only_body: bool| {
            routes
                .iter()
                .filter(|r| !only_body || matches!(r.matcher, Matcher::Pointer { .. }))
                .map(|r| r.total.get())
                .reduce(f64::max)
                .map(share)
        };
        Ok(Router {
            any_share: max(false).unwrap_or(share(0.0)),
            body_share: max(true),
            routes,
            methods: checked.methods.clone(),
            paths: cfg.shadow.paths.clone(),
            shadow_header: checked.shadow_header.clone(),
            unrouted: metrics.route_decision(OTHER_MODEL, MirrorDecision::Unrouted)?,
        })
    }

    /// Every lane, route by route.
    pub fn lanes(&self) -> impl Iterator<Item = &Arc<Mirror>> {
        self.routes
            .iter()
            .flat_map(|r| r.lanes.iter().map(|(_, m)| m))
    }

    /// The first lane: the `[shadow]` pair, or the first route's first candidate.
    pub fn first(&self) -> Option<&Arc<Mirror>> {
        self.lanes().next()
    }

    /// Decide from the head: method and path filters (`shadow.methods`, `shadow.paths`),
    /// a request that is a shadow copy already (it carries `shadow.header`: never
    /// mirrored again), the route, and the candidate.
    pub fn admit_head(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        request_id: &str,
        now: Instant,
    ) -> Head {
        if !self.methods.iter().any(|m| m == method)
            || !(self.paths.is_empty() || self.paths.iter().any(|p| path.starts_with(p.as_str())))
            || headers.contains_key(&self.shadow_header)
        {
            return Head::Pass;
        }
        let hash = id_hash(request_id.as_bytes(), 0);
        for route in &self.routes {
            let matched = match &route.matcher {
                Matcher::All => true,
                Matcher::PathPrefix(p) => path.starts_with(p.as_str()),
                Matcher::OipPath { names } => {
                    oip_model_name(path).is_some_and(|n| names.iter().any(|m| m == n))
                }
                Matcher::Pointer { .. } => false,
            };
            if matched {
                return match route.draw(hash, request_id, now) {
                    Some((lane, admission)) => Head::Lane(lane, admission),
                    None => Head::Pass,
                };
            }
        }
        if self.body_share.is_some_and(|s| s.admits(hash)) {
            return Head::ReadBody;
        }
        if self.any_share.admits(hash) {
            self.unrouted.inc();
        }
        Head::Pass
    }

    /// The lane of a request whose head said [`Head::ReadBody`], from the model its body
    /// names; None when it is not mirrored (counted).
    pub fn admit_body(
        &self,
        body: &[u8],
        request_id: &str,
        now: Instant,
    ) -> Option<(Arc<Mirror>, Admission)> {
        let hash = id_hash(request_id.as_bytes(), 0);
        for route in &self.routes {
            if let Matcher::Pointer { pointer, names } = &route.matcher {
                if pointer
                    .find(body)
                    .is_some_and(|n| names.iter().any(|m| *m == *n))
                {
                    return route.draw(hash, request_id, now);
                }
            }
        }
        self.unrouted.inc();
        None
    }
}

impl RouteLanes {
    /// The candidate whose slice holds `hash`, admitted (rate and concurrency caps).
    fn draw(&self, hash: u64, request_id: &str, now: Instant) -> Option<(Arc<Mirror>, Admission)> {
        if self.total.get() == 0.0 {
            // Mirroring off for this route: nothing to count.
            return None;
        }
        let Some((_, lane)) = self.lanes.iter().find(|(upper, _)| upper.admits(hash)) else {
            self.not_sampled.inc();
            return None;
        };
        let admission = lane.admit_drawn(request_id, now)?;
        Some((lane.clone(), admission))
    }
}

fn share(s: f64) -> SampleRate {
    SampleRate::try_new(s.clamp(0.0, 1.0))
        .unwrap_or_else(|_| SampleRate::try_new(0.0).expect("0 is a share"))
}
