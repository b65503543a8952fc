//! Command-line definitions (clap); no logic.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Canary-safety sidecar for ML model servers.
#[derive(Debug, Parser)]
#[command(name = "shadowgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar.
    Serve {
        /// TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and print the effective settings.
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
    /// Batch accuracy job: join shadow logs with ground-truth labels by request id and
    /// report, per model and version pair, accuracy, the paired comparison and agreement.
    Accuracy(crate::accuracy::AccuracyArgs),
    /// Slices of traffic: fit the embedding-region codebook that `slices.codebook` names.
    Slices {
        #[command(subcommand)]
        command: SlicesCommand,
    },
    /// Input drift against a frozen reference: build the reference file a sidecar
    /// loads, or replay embeddings through its detector.
    Reference {
        #[command(subcommand)]
        command: ReferenceCommand,
    },
    /// Everything on one machine: built-in baseline and canary model servers, the
    /// sidecar, and traffic, with live progress and a summary.
    Demo {
        /// How long to send traffic.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Where the sidecar's admin port (/metrics) listens while the demo runs.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// Directory for the shadow logs.
        #[arg(long, default_value = "./shadowgate-demo")]
        dir: PathBuf,
        /// How far the canary drifts: its mean cosine to the baseline is about 1 − drift.
        #[arg(long, default_value_t = 0.05)]
        drift: f64,
        /// Concurrent clients sending traffic.
        #[arg(long, default_value_t = 4)]
        clients: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum SlicesCommand {
    /// Fit a codebook of embedding regions (spherical k-means on baseline embeddings
    /// from shadow logs or .npy files) and write it as JSON for `slices.codebook`.
    Fit(crate::slices::fit::FitArgs),
}

#[derive(Debug, Subcommand)]
pub enum ReferenceCommand {
    /// Build a reference (random-feature sketch and calibrated alarm line) from shadow
    /// logs or .npy files of embeddings, and write it as JSON.
    Build(crate::reference::cli::BuildArgs),
    /// Replay embeddings (in order) through a reference's detector: first alarm, score,
    /// time per sample.
    Replay(crate::reference::cli::ReplayArgs),
}
