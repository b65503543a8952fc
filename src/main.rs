//! The `shadowgate` binary: parse arguments, set up logging, dispatch, map errors to exit codes.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shadowgate::cli::{Cli, Command, ReferenceCommand, SlicesCommand};
use shadowgate::config::{Config, ConfigError};

/// sysexits' EX_CONFIG-adjacent EX_USAGE: the configuration is invalid.
const EXIT_INVALID_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHADOWGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                print!(
                    "# effective configuration of {}\n{}",
                    file.display(),
                    c.to_toml()
                );
                let h2 = check_http2_upstreams(&c);
                let store = check_object_store(&c);
                if h2 != ExitCode::SUCCESS {
                    h2
                } else {
                    store
                }
            }
            Err(e) => config_failure(&e),
        },
        Command::Serve { config } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return config_failure(&e),
            };
            run_async(async move {
                shadowgate::serve::serve_until_signal(cfg)
                    .await
                    .map(drop)
                    .map_err(anyhow::Error::from)
            })
        }
        Command::Accuracy(args) => match shadowgate::accuracy::run(&args) {
            Ok(report) => {
                print!("{}", report.to_table());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shadowgate accuracy: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Command::Slices {
            command: SlicesCommand::Fit(args),
        } => match shadowgate::slices::fit::run(&args) {
            Ok(cb) => {
                let f = &cb.fitted_from;
                println!(
                    "wrote {}: {} regions of dimension {} from {} of {} embeddings in {} files ({} iterations, mean cosine to centroid {:.4}); region sizes {:?}",
                    args.out.display(),
                    cb.k,
                    cb.dim,
                    f.rows_used,
                    f.rows_seen,
                    f.files,
                    f.iterations,
                    f.mean_cosine,
                    f.sizes
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shadowgate slices fit: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Command::Reference {
            command: ReferenceCommand::Build(args),
        } => match shadowgate::reference::cli::run_build(&args) {
            Ok(r) => {
                println!(
                    "wrote {}: reference {} for model {:?}, dimension {}, from {} embeddings; {} features, window {}, alarm line {:.6e} for ERT {} ({} bootstrapped null streams of {} samples)",
                    args.out.display(),
                    r.id,
                    r.model,
                    r.dim,
                    r.vectors,
                    r.features,
                    r.window,
                    r.threshold,
                    r.ert,
                    r.bootstrap_streams,
                    r.horizon
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shadowgate reference build: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Command::Reference {
            command: ReferenceCommand::Replay(args),
        } => match shadowgate::reference::cli::run_replay(&args, |line| println!("{line}")) {
            Ok(summary) => {
                println!("{}", serde_json::to_string(&summary).unwrap_or_default());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shadowgate reference replay: {e}");
                ExitCode::from(e.exit_code())
            }
        },
        Command::Demo {
            seconds,
            admin,
            dir,
            drift,
            clients,
        } => run_async(async move {
            shadowgate::demo::run(shadowgate::demo::DemoOptions {
                seconds,
                admin,
                dir,
                drift,
                clients,
            })
            .await
            .map_err(anyhow::Error::from)
        }),
    }
}

/// `check-config`: every HTTP/2 endpoint that is reachable must speak HTTP/2 with prior
/// knowledge (an HTTP/1.1-only port is a configuration error); one that is not reachable
/// yet is noted, not an error, as pods start in any order.
/// With `shadow_log.dir = "s3://..."`: writes the probe object the sidecar writes at start.
/// A refused credential or a missing bucket is a configuration error; a store that does
/// not answer now is reported and not held against the file.
fn check_object_store(cfg: &Config) -> ExitCode {
    use shadowgate::store::{self, Remote, StoreError};
    let Some(url) = cfg.shadow_log.remote_url() else {
        return ExitCode::SUCCESS;
    };
    let probe = Remote::from_url(
        url,
        cfg.shadow_log.upload_timeout.min(Duration::from_secs(10)),
    )
    .map(|remote| store::block_on(async move { remote.probe("check-config").await }));
    match probe {
        Ok(Ok(Ok(()))) => {
            println!("# shadow_log.dir {url}: writable with these credentials");
            ExitCode::SUCCESS
        }
        Ok(Ok(Err(e @ (StoreError::Denied { .. } | StoreError::NoBucket { .. })))) | Err(e) => {
            eprintln!("shadowgate: shadow_log.dir: {e}");
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
        Ok(Ok(Err(e))) => {
            println!("# shadow_log.dir {url}: not reachable now ({e}); not checked");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            println!("# shadow_log.dir {url}: not checked ({e})");
            ExitCode::SUCCESS
        }
    }
}

fn check_http2_upstreams(cfg: &Config) -> ExitCode {
    let checked = cfg.checked();
    let endpoints = [
        ("primary.http2_url", &checked.primary_http2_url),
        ("shadow.baseline.http2_url", &checked.baseline_http2_url),
        ("shadow.canary.http2_url", &checked.canary_http2_url),
    ];
    if endpoints.iter().all(|(_, u)| u.is_none()) {
        return ExitCode::SUCCESS;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::SUCCESS;
    };
    let tls = match shadowgate::tls::client_config(&cfg.tls, cfg.uses_https()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("shadowgate: tls.ca_file: {e}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let mut bad = false;
    for (key, url) in endpoints {
        let Some(url) = url else { continue };
        use shadowgate::upstream::h2::{probe, Probe};
        match rt.block_on(probe(url, &tls, std::time::Duration::from_secs(2))) {
            Probe::Http2 => println!("# {key} {url}: speaks HTTP/2"),
            Probe::Unreachable(why) => {
                println!("# {key} {url}: not reachable now ({why}); not checked")
            }
            Probe::NotHttp2(why) => {
                bad = true;
                eprintln!("shadowgate: {key}: {url} does not speak HTTP/2 ({why}); give the model server's gRPC port (Triton: 8001), not its HTTP/1.1 port");
            }
        }
    }
    if bad {
        ExitCode::from(EXIT_INVALID_CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("shadowgate: {e}");
    match e {
        ConfigError::Invalid(_) => ExitCode::from(EXIT_INVALID_CONFIG),
        ConfigError::Read { .. } => ExitCode::from(66), // EX_NOINPUT
    }
}

/// `SHADOWGATE_WORKER_THREADS`: how many threads serve requests (default: tokio's, one
/// per CPU or `TOKIO_WORKER_THREADS`). Set it to the container's CPU limit.
fn worker_threads() -> Result<Option<usize>, String> {
    const VAR: &str = "SHADOWGATE_WORKER_THREADS";
    match std::env::var(VAR) {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(format!(
                "{VAR}={v:?} is not a thread count; set a whole number ≥ 1 (e.g. the container's CPU limit) or unset it"
            )),
        },
        Err(_) => Err(format!("{VAR} is not valid UTF-8; set a whole number ≥ 1 or unset it")),
    }
}

fn run_async<F>(fut: F) -> ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let threads = match worker_threads() {
        Ok(n) => n,
        Err(why) => {
            eprintln!("shadowgate: {why}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    // One worker (a pod with a one-CPU limit) runs everything on the calling thread, as
    // nginx's single worker does: no work-stealing queues, no cross-thread wake-ups.
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shadowgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shadowgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
