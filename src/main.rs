//! The `shadowgate` binary: parse arguments, set up logging, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use shadowgate::cli::{Cli, Command};
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
                ExitCode::SUCCESS
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

fn config_failure(e: &ConfigError) -> ExitCode {
    eprintln!("shadowgate: {e}");
    match e {
        ConfigError::Invalid(_) => ExitCode::from(EXIT_INVALID_CONFIG),
        ConfigError::Read { .. } => ExitCode::from(66), // EX_NOINPUT
    }
}

fn run_async<F>(fut: F) -> ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
