//! shadowgate: a sidecar that makes canary deployments of ML models safe.
//!
//! It sits in front of a model server, passes every request through untouched, mirrors a
//! sampled share to the baseline and canary model versions, compares their answers for
//! the same input, and exports the comparison as Prometheus series for rollout gates.
//!
//! # Layout
//!
//! Modules follow the data flow:
//!
//! - [`config`]: the TOML contract, environment overrides, validation.
//! - [`serve`]: wiring of everything below; ordered shutdown. The proxy port's HTTP/1.1
//!   connections are served by [`h1::server`] (the workspace crate `crates/h1`).
//! - [`proxy`]: the primary path (forward, stream back, offer to the sampler).
//! - [`upstream`]: the keep-alive pools for primary, baseline, canary ([`h1::client`]).
//! - [`sampler`]: pure decision, mirror this request or not.
//! - [`ids`]: request ids (UUIDv7) for requests that arrive without one.
//! - [`mirror`]: bounded shadow tasks calling baseline and canary.
//! - [`protocol`]: how each model server shapes embeddings and predictions.
//! - [`compare`]: cosine (simsimd), norms, prediction agreement.
//! - [`drift`]: windowed statistics and confidence sequences.
//! - [`slices`]: bounded groups of traffic (field, input length, embedding region),
//!   their statistics and the worst slice; codebook fitting (`shadowgate slices fit`).
//! - [`feedback`]: labels and business events joined online.
//! - [`metrics`]: every exported series, registered once.
//! - [`shadow_log`]: shadow-log records and the Parquet writer.
//! - [`accuracy`]: batch job joining shadow logs with labels (`shadowgate accuracy`).
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`, `/labels`, `/feedback`.
//! - [`status`]: the status page at `/`.
//! - [`tls`]: trusted roots and the rustls configuration for `https://` upstreams.
//! - [`demo`]: built-in model servers and traffic for `shadowgate demo`.
//! - [`cli`]: command-line definitions.
//!
//! ```text
//! client ─► proxy ─► primary ─► client (streamed, unchanged)
//!             └─ sampler ─► mirror ─► baseline ┐
//!                                 └─► canary   ┴─► compare ─► drift ─► /metrics
//!                                                          └─► shadow log (Parquet)
//! ```

#![deny(unsafe_code)]

pub mod accuracy;
pub mod admin;
pub mod cli;
pub mod compare;
pub mod config;
pub mod demo;
pub mod drift;
pub mod feedback;
pub mod grpc;
pub mod ids;
pub mod metrics;
pub mod mirror;
pub mod protocol;
pub mod proxy;
pub mod sampler;
pub mod serve;
pub mod shadow_log;
pub mod slices;
pub mod tls;
pub mod upstream;
