//! shadowgate: a sidecar that makes canary deployments of ML models safe.
//!
//! It sits in front of a model server, passes every request through untouched, mirrors a
//! sampled share to the baseline and canary model versions, compares their answers for
//! the same input, and exports the comparison as Prometheus series for rollout gates.
//!
//! # Layout
//!
//! Modules in the order a request meets them; each builds itself from its own config
//! section, and none imports a module above it in this list except `config`:
//!
//! - [`config`]: the TOML contract, environment overrides, validation into typed values
//!   ([`config::Checked`]) with every problem reported at once.
//! - [`serve`]: wiring only: builds each component from the config, binds the ports,
//!   shuts down in order.
//! - [`proxy`]: the primary path, protocol-neutral ([`proxy::Proxy::handle`]); one
//!   server module per wire protocol feeds it ([`proxy::http1`]: the proxy port's
//!   HTTP/1.1, served by the workspace crate `crates/h1`).
//! - [`upstream`]: the keep-alive pools for primary, baseline, canary ([`h1::client`]),
//!   and the general client for the sidecar's own calls.
//! - [`ids`]: request ids (UUIDv7) and the id hash sampling agrees on.
//! - [`mirror`]: the whole decision to mirror (sampling, rate cap, concurrency cap, their
//!   counters), then the bounded shadow task calling baseline and canary and comparing.
//! - [`protocol`]: how each model server shapes embeddings and predictions.
//! - [`compare`]: cosine (simsimd), norms, prediction agreement.
//! - [`drift`]: windowed statistics and confidence sequences.
//! - [`slices`]: bounded groups of traffic (field, input length, embedding region),
//!   their statistics and the worst slice; codebook fitting (`shadowgate slices fit`).
//! - [`reference`]: input drift against a frozen reference: the random-feature sketch,
//!   its calibration, the streaming detector (`shadowgate reference build/replay`);
//!   [`reference_monitor`] scores a sample of the primary's answers with it.
//! - [`feedback`]: labels and business events joined online.
//! - [`metrics`]: every exported series, registered once.
//! - [`shadow_log`]: shadow-log records and the Parquet writer (`[shadow_log]`); with an
//!   `s3://` dir, a bounded local spool and the uploader.
//! - [`accuracy`]: batch job joining shadow logs with labels (`shadowgate accuracy`).
//! - [`store`]: object storage (`s3://`, `az://`) through `object_store`, for the
//!   shadow log's uploads and the accuracy job's reads.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`, `/labels`, `/feedback`, and the
//!   status page at `/` ([`admin::status`]).
//! - [`tls`]: trusted roots and the rustls configuration for `https://` upstreams.
//! - [`demo`]: built-in model servers and traffic for `shadowgate demo`.
//! - [`cli`]: command-line definitions.
//!
//! ```text
//! client ─► proxy::http1 ─► proxy ─► primary ─► client (streamed, unchanged)
//!                             └─ mirror::admit ─► baseline ┐
//!                                             └─► canary   ┴─► compare ─► drift ─► /metrics
//!                                                                      └─► shadow_log (Parquet)
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
pub mod reference;
pub mod reference_monitor;
pub mod serve;
pub mod shadow_log;
pub mod slices;
pub mod store;
pub mod tls;
pub mod upstream;
