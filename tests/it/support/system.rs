//! System components some tests need (Prometheus, Chromium, Python packages, ...),
//! checked at the start of the test with [`require`], so that a missing one is named with
//! how to get it instead of failing mid-run.
//!
//! `scripts/test.sh` (the CI command) installs all of them and sets
//! `SHADOWGATE_REQUIRE_SYSTEM=1`: then a missing component fails the test at once. Without
//! it (a quick `cargo test` on a developer's machine) the test prints
//! `skipped: <component> not found — <how to get it>` to stderr and passes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Something outside cargo's reach that a test runs.
#[derive(Clone, Copy, Debug)]
pub enum Component {
    /// The `prometheus` server binary.
    Prometheus,
    /// `promtool`, from the same Debian package.
    Promtool,
    /// The `prometheus-pushgateway` binary.
    Pushgateway,
    /// A headless Chromium (`chromium`, `chromium-browser` or `google-chrome`).
    Chromium,
    /// `python3` importing every one of these modules (none: python3 alone).
    Python(&'static [&'static str]),
    /// A Java runtime, for PySpark in local mode.
    Java,
    /// `node` and `npm` (for the custom-resource schema checks of `scripts/validate-deploy.sh`).
    Node,
    /// The venv of the real embedding models (`$RM_VENVS/np`, built by
    /// `fixtures/real_models/start.sh setup`).
    RealModelVenv,
    /// The venv of MLServer, tritonclient and grpcio-tools (`$RM_VENVS/mlserver`, built by
    /// `tests/py/grpc/mlserver/setup-venv.sh`): the real OIP v2 servers and clients of
    /// `tests/it/grpc_real.rs`.
    MlserverVenv,
    /// Permission to mount a tmpfs (root, as `scripts/test.sh` runs).
    TmpfsMount,
}

impl Component {
    /// What is looked for, as the skip or failure message names it.
    pub fn name(&self) -> String {
        match self {
            Component::Prometheus => "prometheus".into(),
            Component::Promtool => "promtool".into(),
            Component::Pushgateway => "prometheus-pushgateway".into(),
            Component::Chromium => "chromium (or chromium-browser, google-chrome)".into(),
            Component::Python([]) => "python3".into(),
            Component::Python(modules) => {
                format!("python3 with the modules {}", modules.join(", "))
            }
            Component::Java => "java (for PySpark)".into(),
            Component::Node => "node and npm".into(),
            Component::RealModelVenv => {
                format!("the real-model venv {}", real_model_venv_python().display())
            }
            Component::MlserverVenv => {
                format!("the MLServer venv {}", mlserver_venv_python().display())
            }
            Component::TmpfsMount => "permission to `mount -t tmpfs`".into(),
        }
    }

    /// How to get it: the install step of `scripts/test.sh` that provides it.
    pub fn how_to_get(&self) -> String {
        let apt = |pkg: &str| {
            format!("run scripts/test.sh, or `apt-get install {pkg}` (its install step)")
        };
        match self {
            Component::Prometheus | Component::Promtool => apt("prometheus"),
            Component::Pushgateway => apt("prometheus-pushgateway"),
            Component::Chromium => apt("chromium"),
            Component::Java => apt("default-jre-headless"),
            Component::Node => apt("nodejs npm"),
            Component::Python([]) => apt("python3 python3-pip"),
            Component::Python(modules) => {
                let pip: Vec<&str> = modules.iter().map(|m| pip_name(m)).collect();
                format!(
                    "run scripts/test.sh, or `python3 -m pip install {}` (its install step)",
                    pip.join(" ")
                )
            }
            Component::RealModelVenv => format!(
                "run scripts/test.sh, or `RM_VENVS={} fixtures/real_models/start.sh setup` \
                 (its install step; ~230 MB, once)",
                real_model_venvs().display()
            ),
            Component::MlserverVenv => format!(
                "run scripts/test.sh, or `tests/py/grpc/mlserver/setup-venv.sh {}` \
                 (its install step; ~330 MB, once)",
                real_model_venvs().join("mlserver").display()
            ),
            Component::TmpfsMount => "run the tests as root, as scripts/test.sh is run".into(),
        }
    }

    /// Whether it is there.
    pub fn found(&self) -> bool {
        match self {
            Component::Prometheus => on_path("prometheus"),
            Component::Promtool => on_path("promtool"),
            Component::Pushgateway => on_path("prometheus-pushgateway"),
            Component::Chromium => chromium().is_some(),
            Component::Java => on_path("java"),
            Component::Node => on_path("node") && on_path("npm"),
            Component::Python(modules) => {
                let imports = format!("import sys, {}", modules.join(", "));
                let imports = imports.trim_end_matches(", ");
                Command::new("python3")
                    .args(["-c", imports])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            }
            Component::RealModelVenv => real_model_venv_python().exists(),
            // Two processes: mlserver and tritonclient.grpc both register the protobuf
            // package `inference`, which one process refuses.
            Component::MlserverVenv => {
                [
                    "import mlserver, grpc_tools, numpy, grpc_reflection, grpc_health",
                    "import tritonclient.grpc",
                ]
                .iter()
                .all(|imports| {
                    Command::new(mlserver_venv_python())
                        .args(["-c", imports])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                }) && mlserver_venv_python().with_file_name("grpcurl").exists()
            }
            Component::TmpfsMount => tmpfs_mountable(),
        }
    }
}

/// Whether every one of `components` is there. If not: with `SHADOWGATE_REQUIRE_SYSTEM=1`
/// panics naming each missing one and how to get it; otherwise prints
/// `skipped: <component> not found — <how to get it>` for each to stderr and returns
/// false, and the test returns early:
///
/// ```ignore
/// if !support::require(&[Component::Prometheus]) {
///     return;
/// }
/// ```
pub fn require(components: &[Component]) -> bool {
    let missing: Vec<String> = components
        .iter()
        .filter(|c| !c.found())
        .map(|c| format!("{} not found — {}", c.name(), c.how_to_get()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let test = std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    if std::env::var("SHADOWGATE_REQUIRE_SYSTEM").as_deref() == Ok("1") {
        panic!(
            "missing system components{test}, and SHADOWGATE_REQUIRE_SYSTEM=1 requires them:\n  {}",
            missing.join("\n  ")
        );
    }
    // Straight to the process's stderr, not through eprintln!, which the test harness
    // captures and shows only for failures: a skip must be seen in a plain `cargo test`.
    let mut stderr = std::io::stderr().lock();
    for m in &missing {
        let _ = writeln!(stderr, "skipped: {m}{test}");
    }
    false
}

/// The Chromium binary on PATH, if any.
pub fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| on_path(c))
}

/// Where the real-model venvs live: `$RM_VENVS`, by default (as in `scripts/test.sh`)
/// `~/.cache/shadowgate/rm-venvs`.
pub fn real_model_venvs() -> PathBuf {
    std::env::var_os("RM_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/shadowgate/rm-venvs")
        })
}

fn real_model_venv_python() -> PathBuf {
    real_model_venvs().join("np/bin/python")
}

/// The Python of the MLServer venv: `$RM_VENVS/mlserver/bin/python`.
pub fn mlserver_venv_python() -> PathBuf {
    real_model_venvs().join("mlserver/bin/python")
}

/// The pip package of a Python module, where the names differ.
fn pip_name(module: &str) -> &str {
    match module {
        "yaml" => "pyyaml",
        "moto" => "'moto[server]'",
        m => m,
    }
}

/// An executable file called `name` in a directory of PATH (as `command -v`).
fn on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| executable(&d.join(name))))
}

/// Mount a 1 MiB tmpfs on a temporary directory and unmount it again.
fn tmpfs_mountable() -> bool {
    let Ok(dir) = tempfile::tempdir() else {
        return false;
    };
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let _ = Command::new("umount").arg(dir.path()).status();
    }
    mounted
}
