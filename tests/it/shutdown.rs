//! The real binary under load: SIGTERM loses no accepted shadow row; kill -9 leaves only
//! complete files visible, and the restart serves at once and sets leftovers aside.

use crate::support::{self, Component};

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shadowgate");

struct Sidecar {
    child: Child,
    proxy_port: u16,
}

fn spawn_sidecar(
    dir: &Path,
    log_dir: &Path,
    primary: &str,
    baseline: &str,
    canary: &str,
) -> Sidecar {
    let (proxy_port, admin_port) = (support::free_port(), support::free_port());
    let text = format!(
        r#"[model]
name = "m"
version = "v1"
[listen]
proxy = "127.0.0.1:{proxy_port}"
admin = "127.0.0.1:{admin_port}"
[primary]
url = "{primary}"
[shadow]
sample_rate = 1.0
max_per_second = 0
max_in_flight = 256
[shadow.baseline]
url = "{baseline}"
version = "v1"
[shadow.canary]
url = "{canary}"
version = "v2"
[shadow_log]
dir = "{}"
max_file_age = "60s"
max_rows_per_file = 400
"#,
        log_dir.display()
    );
    let cfg = dir.join("sg.toml");
    std::fs::write(&cfg, text).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("POD_NAME", "pod-a")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    support::wait_listening(proxy_port);
    Sidecar { child, proxy_port }
}

/// Clients sending embeddings requests until `stop`; returns the count of 200s.
fn load(port: u16, stop: Arc<AtomicBool>, ok: Arc<AtomicU64>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|w| {
            let (stop, ok) = (stop.clone(), ok.clone());
            tokio::spawn(async move {
                let client = support::Client::new();
                let url = format!("http://127.0.0.1:{port}/v1/embeddings");
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = format!(r#"{{"input":"load {w} {i}"}}"#);
                    if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), async {
                        Ok::<_, ()>(client.try_send(Method::POST, &url, body).await)
                    })
                    .await
                    {
                        if r == Some(200) {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect()
}

fn read_back(dir: &Path) -> Value {
    let out = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/read_shadow_log.py"))
        .arg(dir)
        .output()
        .expect("python3 with pyarrow and duckdb (the test command installs them)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_loses_no_accepted_row() {
    if !support::require(&[Component::Python(&["pyarrow", "duckdb"])]) {
        return;
    }
    let (p, b, c) = support::model_trio(128).await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let sidecar = spawn_sidecar(dir.path(), &logs, &p.url(), &b.url(), &c.url());
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let workers = load(sidecar.proxy_port, stop.clone(), ok.clone());
    // SIGTERM under load, once there are closed 400-row files and an open one.
    support::wait_for_async(
        "a closed shadow-log file and an open one",
        Duration::from_secs(30),
        async || {
            let files = walk(&logs);
            files.iter().any(|p| p.ends_with(".tmp"))
                && files.iter().any(|p| p.ends_with(".parquet"))
        },
    )
    .await;
    let pid = sidecar.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::task::spawn_blocking(move || sidecar.child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");

    let rows_logged = support::final_count(&log, "shadow_log_rows");
    let pairs: u64 = support::PAIR_OUTCOMES
        .iter()
        .map(|k| support::final_count(&log, k))
        .sum();
    let seen = read_back(&logs);
    let rows = seen["pyarrow"]["rows"].as_u64().unwrap();
    let ids: Vec<&str> = seen["pyarrow"]["request_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert!(rows > 100, "load produced {rows} rows");
    assert_eq!(
        rows, rows_logged,
        "pyarrow rows = shadowgate_shadow_log_rows_total"
    );
    assert_eq!(rows, pairs, "every counted pair is on disk");
    assert_eq!(unique.len(), ids.len(), "every request_id once");
    assert_eq!(seen["duckdb"]["rows"].as_u64(), Some(rows));
    assert!(
        ok.load(Ordering::Relaxed) >= rows,
        "each row is a request a client got an answer for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_only_complete_files_and_restart_sets_leftovers_aside() {
    if !support::require(&[Component::Python(&["pyarrow", "duckdb"])]) {
        return;
    }
    let (p, b, c) = support::model_trio(128).await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let mut sidecar = spawn_sidecar(dir.path(), &logs, &p.url(), &b.url(), &c.url());
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let workers = load(sidecar.proxy_port, stop.clone(), ok.clone());
    // Kill once there are closed 400-row files and an open one.
    support::wait_for_async(
        "a closed shadow-log file and an open one",
        Duration::from_secs(30),
        async || {
            let files = walk(&logs);
            files.iter().any(|p| p.ends_with(".tmp"))
                && files.iter().any(|p| p.ends_with(".parquet"))
        },
    )
    .await;
    sidecar.child.kill().unwrap(); // SIGKILL
    let _ = sidecar.child.wait();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    // Readers see only complete files (400-row files closed before the kill), never a temp file.
    let seen = read_back(&logs);
    let files: Vec<&str> = seen["pyarrow"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        files
            .iter()
            .all(|f| !f.contains(".tmp") && !f.rsplit('/').next().unwrap().starts_with('.')),
        "{files:?}"
    );
    assert_eq!(
        seen["pyarrow"]["rows"].as_u64().unwrap() % 400,
        0,
        "only whole files: {seen}"
    );
    let leftovers: Vec<String> = walk(&logs)
        .into_iter()
        .filter(|p| p.ends_with(".tmp"))
        .collect();
    let temps = leftovers.len();
    assert!(temps >= 1, "the kill left an open file behind");

    // The restart serves at once and moves the leftovers aside, deleting nothing.
    let restarted = spawn_sidecar(dir.path(), &logs, &p.url(), &b.url(), &c.url());
    let r = support::Client::new()
        .send(
            Method::POST,
            &format!("http://127.0.0.1:{}/v1/embeddings", restarted.proxy_port),
            &[],
            r#"{"input":"after"}"#.into(),
        )
        .await;
    assert_eq!(r.status, 200);
    let after = walk(&logs);
    // The restarted sidecar opens temp files of its own; the killed run's are all gone.
    let visible_temps = leftovers.iter().filter(|p| Path::new(p).exists()).count();
    let quarantined = after.iter().filter(|p| p.contains("_quarantine")).count();
    let complete_before = walk_complete(&files);
    let recovered = after
        .iter()
        .filter(|p| p.ends_with(".parquet") && !p.contains("_quarantine"))
        .count()
        - complete_before;
    assert_eq!(visible_temps, 0, "{after:?}");
    // A leftover that is a readable Parquet file is renamed into place; a torn one is moved
    // aside. Either way nothing is deleted.
    assert_eq!(recovered + quarantined, temps, "{after:?}");
    let seen = read_back(&logs);
    assert!(
        seen["pyarrow"]["rows"].as_u64().is_some(),
        "the tree still reads as one table"
    );
    let pid = restarted.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = tokio::task::spawn_blocking(move || restarted.child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("recovered or set aside"),
        "the restart reports what it found: {log}"
    );
}

fn walk_complete(files: &[&str]) -> usize {
    files.iter().filter(|f| f.ends_with(".parquet")).count()
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.to_string_lossy().into_owned());
            }
        }
    }
    out
}
