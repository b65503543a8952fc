//! The integration tests of shadowgate, one test binary (`cargo test --test it`,
//! `cargo nextest run -E 'binary(it)'`): one module per area, shared pieces in `support`.
//! Filter an area by its module path, e.g. `cargo test --test it sidecar::`.
//!
//! The tests that count the open descriptors of their own process live apart, in
//! `tests/fd_leaks.rs`: in one `cargo test` process the other tests would open and close
//! descriptors while they count.

mod support;

mod accuracy;
mod bad_input;
mod cli;
mod deploy;
mod downstream;
mod feedback;
mod gates;
mod grpc_mirror;
mod grpc_real;
mod h2c;
mod object_store;
mod prometheus_e2e;
mod protocols;
mod real_models;
mod reference;
mod resets;
mod routes;
mod shadow_log;
mod shutdown;
mod sidecar;
mod soak;
mod status_page;
mod structure;
mod tls;
mod upstream;
