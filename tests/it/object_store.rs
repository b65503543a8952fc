//! Shadow logs straight to object storage: the real binary writing `s3://` to a real
//! S3-compatible server on loopback (moto in server mode, with authentication on), read
//! back by pyarrow's S3 filesystem and by `shadowgate accuracy --logs s3://...`.

use crate::support::{self, Component};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;
use shadowgate::demo::model::ModelServer;

const BIN: &str = env!("CARGO_BIN_EXE_shadowgate");
const BUCKET: &str = "shadow-logs";
const NEEDS: &[Component] = &[Component::Python(&["moto", "boto3", "pyarrow", "flask"])];

/// `tests/py/s3/moto_s3.py`: moto on a loopback port with one bucket and one IAM key.
struct S3Server {
    child: Child,
    endpoint: String,
    key: String,
    secret: String,
}

impl S3Server {
    /// `auth`: requests must be signed with the key it prints (see moto_s3.py for why
    /// the tests that write Hive trees run without).
    fn start(auth: bool) -> S3Server {
        let port = support::free_port();
        let mut child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/s3/moto_s3.py"))
            .args([&port.to_string(), BUCKET])
            .args(auth.then_some("--auth"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto[server] (the test command installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("moto_s3.py said {line:?}: {e}"));
        S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            key: v["access_key_id"].as_str().unwrap().into(),
            secret: v["secret_access_key"].as_str().unwrap().into(),
        }
    }

    /// The environment the AWS SDKs (and the sidecar) read.
    fn env(&self, secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", self.key.clone()),
            ("AWS_SECRET_ACCESS_KEY", secret.into()),
        ]
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    }

    /// pyarrow's view of `s3://BUCKET/<prefix>`.
    fn read_back(&self, prefix: &str) -> Value {
        let out = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/s3/read_s3_log.py"))
            .args([
                &self.endpoint,
                &self.key,
                &self.secret,
                &format!("{BUCKET}/{prefix}"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Sidecar {
    child: Child,
    proxy_port: u16,
    admin_port: u16,
    log: std::path::PathBuf,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- sidecar log ---\n{log}");
        }
    }
}

fn config(
    dir: &Path,
    servers: &(ModelServer, ModelServer, ModelServer),
    prefix: &str,
    extra: &str,
) -> std::path::PathBuf {
    let (proxy_port, admin_port) = (support::free_port(), support::free_port());
    let text = format!(
        r#"[model]
name = "m"
version = "v1"
[listen]
proxy = "127.0.0.1:{proxy_port}"
admin = "127.0.0.1:{admin_port}"
[primary]
url = "{}"
[shadow]
sample_rate = 1.0
max_per_second = 0
max_in_flight = 256
[shadow.baseline]
url = "{}"
version = "v1"
[shadow.canary]
url = "{}"
version = "v2"
[shadow_log]
dir = "s3://{BUCKET}/{prefix}"
spool_dir = "{}"
upload_timeout = "2s"
{extra}
"#,
        servers.0.url(),
        servers.1.url(),
        servers.2.url(),
        dir.join("spool").display()
    );
    let cfg = dir.join("sg.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn ports(cfg: &Path) -> (u16, u16) {
    let text = std::fs::read_to_string(cfg).unwrap();
    let port = |key: &str| -> u16 {
        let line = text.lines().find(|l| l.starts_with(key)).unwrap();
        line.rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('"')
            .parse()
            .unwrap()
    };
    (port("proxy ="), port("admin ="))
}

fn spawn(cfg: &Path, env: &[(&'static str, String)]) -> Sidecar {
    let (proxy_port, admin_port) = ports(cfg);
    let log = cfg.with_extension("log");
    let child = Command::new(BIN)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .env("POD_NAME", "pod-s3")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    support::wait_listening(proxy_port);
    Sidecar {
        child,
        proxy_port,
        admin_port,
        log,
    }
}

impl Sidecar {
    /// SIGTERM, then the exit status and everything it logged.
    async fn terminate(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let mut child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        (
            status.code(),
            std::fs::read_to_string(&self.log).unwrap_or_default(),
        )
    }

    /// Waits until at least `n` files are in the store.
    async fn wait_uploaded_files(&self, n: f64) {
        support::wait_for_async("files in the store", Duration::from_secs(60), async || {
            self.metric("shadowgate_shadow_log_uploaded_files_total", &[])
                .await
                >= n
        })
        .await;
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = support::Client::new()
            .get(&format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .await
            .text();
        support::value(&text, name, labels).unwrap_or(0.0)
    }
}

/// A store, the three model servers, a spool directory, and the sidecar writing to
/// `s3://BUCKET/<prefix>` with `extra` appended to `[shadow_log]`.
struct Running {
    s3: S3Server,
    _servers: (ModelServer, ModelServer, ModelServer),
    dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    sidecar: Sidecar,
}

impl Running {
    async fn start(prefix: &str, extra: &str) -> Running {
        let s3 = S3Server::start(false);
        let servers = support::model_trio(64).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &servers, prefix, extra);
        let sidecar = spawn(&cfg, &s3.env(&s3.secret));
        Running {
            s3,
            _servers: servers,
            dir,
            cfg,
            sidecar,
        }
    }
}

/// Client load until `stop`: `workers` clients, each pausing `pace` between requests.
/// Counts answers and records the slowest.
struct Load {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    slowest: Arc<Mutex<Duration>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn load(port: u16, workers: usize, pace: Duration) -> Load {
    let l = Load {
        ok: Arc::default(),
        failed: Arc::default(),
        slowest: Arc::default(),
        stop: Arc::default(),
        tasks: Vec::new(),
    };
    let tasks = (0..workers)
        .map(|w| {
            let (ok, failed, slowest, stop) = (
                l.ok.clone(),
                l.failed.clone(),
                l.slowest.clone(),
                l.stop.clone(),
            );
            tokio::spawn(async move {
                let client = support::Client::new();
                let url = format!("http://127.0.0.1:{port}/v1/embeddings");
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = format!(r#"{{"input":"s3 load {w} {i}"}}"#);
                    let t = Instant::now();
                    let r = tokio::time::timeout(
                        Duration::from_secs(5),
                        client.try_send(Method::POST, &url, body),
                    )
                    .await;
                    let took = t.elapsed();
                    if matches!(r, Ok(Some(200))) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else if !stop.load(Ordering::Relaxed) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    {
                        let mut s = slowest.lock().unwrap();
                        *s = (*s).max(took);
                    }
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                }
            })
        })
        .collect();
    Load { tasks, ..l }
}

impl Load {
    async fn stop(self) -> (u64, u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let slowest = *self.slowest.lock().unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            slowest,
        )
    }
}

fn pairs(log: &str) -> u64 {
    support::PAIR_OUTCOMES
        .iter()
        .map(|k| support::final_count(log, k))
        .sum()
}

/// The request ids pyarrow read (sorted), after checking each is there once.
fn ids_once(v: &Value) -> Vec<String> {
    let all: Vec<String> = v["request_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut unique = all.clone();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "every request_id once");
    all
}

fn spooled_parquet(dir: &Path) -> usize {
    fn walk(d: &Path, n: &mut usize) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(dir, &mut n);
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_every_row_is_in_the_store_and_accuracy_reads_it() {
    if !support::require(NEEDS) {
        return;
    }
    let Running {
        s3,
        _servers,
        dir,
        cfg: _cfg,
        sidecar,
    } = Running::start(
        "prod/logs",
        "max_rows_per_file = 300\nmax_file_age = \"60s\"",
    )
    .await;
    let l = load(sidecar.proxy_port, 4, Duration::ZERO);
    // SIGTERM under load, once some files are in the store and more are being written.
    sidecar.wait_uploaded_files(2.0).await;
    let (code, log) = sidecar.terminate().await;
    let (ok, _, _) = l.stop().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains(&s3.secret), "the secret key is never logged");

    let rows_logged = support::final_count(&log, "shadow_log_rows");
    let uploaded = support::final_count(&log, "shadow_log_uploaded_rows");
    assert_eq!(support::final_count(&log, "shadow_log_upload_lost_rows"), 0);
    let seen = s3.read_back("prod/logs");
    let rows = seen["rows"].as_u64().unwrap();
    assert!(rows > 600, "load produced {rows} rows");
    assert_eq!(rows, rows_logged, "pyarrow rows = rows the writer closed");
    assert_eq!(rows, uploaded, "pyarrow rows = rows uploaded");
    assert_eq!(rows, pairs(&log), "every counted pair is in the store");
    assert!(
        ok >= rows,
        "each row is a request a client got an answer for"
    );
    let all = ids_once(&seen);
    // Only complete Parquet files and the start-up probe are in the bucket.
    for key in seen["keys"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        assert!(
            key.ends_with(".parquet") || key.ends_with("_shadowgate/probe-pod-s3"),
            "unexpected object {key}"
        );
        if key.ends_with(".parquet") {
            assert!(
                key.contains("/model=m/date=") && key.contains("/hour="),
                "Hive layout: {key}"
            );
        }
    }
    assert_eq!(
        spooled_parquet(&dir.path().join("spool")),
        0,
        "the spool is empty once everything is sent"
    );

    // The batch job over the same tree in S3: every row read, labels joined by id.
    let labels = dir.path().join("labels.csv");
    let labelled: Vec<&String> = all.iter().step_by(3).collect();
    let mut csv = String::from("request_id,label\n");
    for id in &labelled {
        csv.push_str(&format!("{id},a\n"));
    }
    std::fs::write(&labels, csv).unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(BIN)
        .args(["accuracy", "--quiet", "--logs"])
        .arg(format!("s3://{BUCKET}/prod/logs"))
        .arg("--labels")
        .arg(&labels)
        .arg("--json")
        .arg(&json)
        .envs(s3.env(&s3.secret))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["inputs"]["rows"].as_u64(), Some(rows));
    assert_eq!(report["inputs"]["files_read"], seen["files"]);
    assert_eq!(
        report["labels"]["matched"].as_u64(),
        Some(labelled.len() as u64)
    );

    // Partition pruning by listing: another model's prefix is never fetched.
    let out = Command::new(BIN)
        .args(["accuracy", "--logs"])
        .arg(format!("s3://{BUCKET}/prod/logs"))
        .arg("--labels")
        .arg(&labels)
        .args(["--model", "other", "--json"])
        .arg(&json)
        .envs(s3.env(&s3.secret))
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["inputs"]["rows"].as_u64(), Some(0));
    assert_eq!(report["inputs"]["files_read"].as_u64(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("partition prefixes pruned")
            || report["inputs"]["files_read"].as_u64() == Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_stopped_for_30s_clients_unaffected_spool_bounded_drops_exact() {
    if !support::require(NEEDS) {
        return;
    }
    const SPOOL_MAX: u64 = 96 * 1024;
    let Running {
        s3,
        _servers,
        dir: _dir,
        cfg: _cfg,
        sidecar,
    } = Running::start(
        "outage",
        &format!(
            "max_rows_per_file = 100\nmax_file_age = \"500ms\"\nspool_max_bytes = {SPOOL_MAX}"
        ),
    )
    .await;
    let l = load(sidecar.proxy_port, 2, Duration::from_millis(5));
    sidecar.wait_uploaded_files(2.0).await;
    let ok_before = l.ok.load(Ordering::Relaxed);
    // The store stops answering (SIGSTOP: connections hang, the worst case) for 30 s.
    s3.signal("-STOP");
    let stopped_at = Instant::now();
    let mut spool_peak = 0.0f64;
    let mut dropped_during = 0.0f64;
    while stopped_at.elapsed() < Duration::from_secs(30) {
        spool_peak = spool_peak.max(
            sidecar
                .metric("shadowgate_shadow_log_spool_bytes", &[])
                .await,
        );
        dropped_during = sidecar
            .metric(
                "shadowgate_shadow_log_dropped_total",
                &[("reason", "spool_full")],
            )
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ok_during = l.ok.load(Ordering::Relaxed) - ok_before;
    s3.signal("-CONT");
    // After recovery the spool drains and new rows reach the store again.
    let uploaded_at_resume = sidecar
        .metric("shadowgate_shadow_log_uploaded_rows_total", &[])
        .await;
    support::wait_for_async(
        "the spool drained after the store came back",
        Duration::from_secs(60),
        async || {
            sidecar
                .metric("shadowgate_shadow_log_spool_files", &[])
                .await
                == 0.0
                && sidecar
                    .metric("shadowgate_shadow_log_uploaded_rows_total", &[])
                    .await
                    > uploaded_at_resume
        },
    )
    .await;
    // The client side up to here (the shutdown below refuses requests, as it should).
    let failed = l.failed.load(Ordering::Relaxed);
    let slowest = *l.slowest.lock().unwrap();
    let (code, log) = sidecar.terminate().await;
    let (ok, _, _) = l.stop().await;
    assert_eq!(code, Some(0), "{log}");

    // Clients never noticed: every request answered, none slow, traffic went on.
    assert_eq!(failed, 0, "client requests failed during the outage");
    assert!(
        ok_during > 1000,
        "{ok_during} answers during the 30 s outage"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "slowest client request {slowest:?}"
    );
    // The spool stayed within its bound (plus the one file that can close after the check).
    assert!(
        spool_peak <= (SPOOL_MAX + 64 * 1024) as f64,
        "spool peaked at {spool_peak} bytes, bound {SPOOL_MAX}"
    );
    assert!(
        dropped_during > 0.0,
        "the spool filled during the outage (peak {spool_peak})"
    );
    // Exact accounting: every pair is either in the store or counted as dropped.
    let seen = s3.read_back("outage");
    let rows = seen["rows"].as_u64().unwrap();
    let dropped = support::final_count(&log, "shadow_log_spool_full_rows");
    assert_eq!(support::final_count(&log, "shadow_log_upload_lost_rows"), 0);
    assert_eq!(rows, support::final_count(&log, "shadow_log_uploaded_rows"));
    assert_eq!(
        rows + dropped,
        pairs(&log),
        "rows in the store ({rows}) + rows dropped for a full spool ({dropped}) = pairs"
    );
    assert!(ok >= rows + dropped);
    eprintln!(
        "outage: {ok_during} answers in 30 s, slowest {slowest:?}; spool peak {spool_peak} B \
         (bound {SPOOL_MAX}); {rows} rows in the store, {dropped} dropped for a full spool"
    );
    ids_once(&seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_a_missing_bucket_are_clear_errors_at_start() {
    if !support::require(NEEDS) {
        return;
    }
    let s3 = S3Server::start(true);
    let servers = support::model_trio(64).await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = "not-the-secret-0123456789";
    for (case, prefix_or_bucket, secret, expect) in [
        (
            "bad credentials",
            format!("{BUCKET}/p"),
            wrong,
            "refused the credentials",
        ),
        (
            "missing bucket",
            "no-such-bucket/p".to_string(),
            s3.secret.as_str(),
            "the bucket does not exist",
        ),
    ] {
        let cfg = config(dir.path(), &servers, "p", "");
        let text = std::fs::read_to_string(&cfg).unwrap().replace(
            &format!("s3://{BUCKET}/p"),
            &format!("s3://{prefix_or_bucket}"),
        );
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(BIN)
            .args(["check-config"])
            .arg(&cfg)
            .envs(s3.env(secret))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{case}: check-config: {err}");
        assert!(
            err.contains("shadow_log.dir") && err.contains(expect),
            "{case}: {err}"
        );
        assert!(!err.contains(secret), "{case}: the secret is never printed");

        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .envs(s3.env(secret))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: serve started");
        assert!(err.contains(expect), "{case}: serve: {err}");
        assert!(!err.contains(secret), "{case}: the secret is never printed");
    }
    // And with the right ones, check-config says the store is writable.
    let cfg = config(dir.path(), &servers, "p", "");
    let out = Command::new(BIN)
        .args(["check-config"])
        .arg(&cfg)
        .envs(s3.env(&s3.secret))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("writable with these credentials"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_goes_up_as_a_multipart_upload_and_reads_back_whole() {
    if !support::require(NEEDS) {
        return;
    }
    let s3 = S3Server::start(false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.parquet");
    // 3.5 parts of 8 MiB, above the 16 MiB multipart threshold, not a round size.
    let data: Vec<u8> = (0..(28u32 << 20) + 12_345)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    // Settings as arguments, not this process's environment (other tests share it).
    let env: Vec<(String, String)> = s3
        .env(&s3.secret)
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let overrides: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let remote = shadowgate::store::Remote::from_url_with(
        &format!("s3://{BUCKET}/mp"),
        Duration::from_secs(20),
        &overrides,
    )
    .unwrap();
    let sent = remote
        .upload(&path, "model=m/date=2026-12-04/hour=01/big.parquet")
        .await
        .unwrap();
    assert_eq!(sent, data.len() as u64);
    let back = remote
        .get("model=m/date=2026-12-04/hour=01/big.parquet")
        .await
        .unwrap();
    assert_eq!(back.len(), data.len());
    assert!(
        back[..] == data[..],
        "the object is the file, byte for byte"
    );
    let (dirs, objects) = remote.list_dir("model=m/date=2026-12-04").await.unwrap();
    assert_eq!(dirs, vec!["model=m/date=2026-12-04/hour=01".to_string()]);
    assert!(objects.is_empty());
}

/// The store hangs through the shutdown: the sidecar still exits within its grace
/// period, counts and logs the rows of the files it could not send (`upload_lost`), and
/// leaves them in the spool; the next start on the same spool sends them, so in the end
/// every row is in the store, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_at_shutdown_counts_what_is_left_and_the_next_start_sends_it() {
    if !support::require(NEEDS) {
        return;
    }
    let Running {
        s3,
        _servers,
        dir,
        cfg,
        sidecar,
    } = Running::start(
        "restart",
        "max_rows_per_file = 50\nmax_file_age = \"300ms\"\n[limits]\nshutdown_grace = \"3s\"",
    )
    .await;
    let l = load(sidecar.proxy_port, 2, Duration::from_millis(2));
    sidecar.wait_uploaded_files(2.0).await;
    s3.signal("-STOP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, _, _) = l.stop().await;
    let t = Instant::now();
    let (code, log) = sidecar.terminate().await;
    let took = t.elapsed();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        took < Duration::from_secs(8),
        "exited after {took:?} (grace 3 s)"
    );
    let closed = support::final_count(&log, "shadow_log_rows");
    let uploaded = support::final_count(&log, "shadow_log_uploaded_rows");
    let lost = support::final_count(&log, "shadow_log_upload_lost_rows");
    assert!(lost > 0, "the store was down: something was left");
    assert_eq!(
        uploaded + lost,
        closed,
        "every closed row is either sent or counted"
    );
    assert!(
        log.contains("they stay in the spool"),
        "the loss is logged:\n{log}"
    );
    assert!(spooled_parquet(&dir.path().join("spool")) > 0);

    // The store is back; a new start on the same spool sends what was left.
    s3.signal("-CONT");
    let sidecar = spawn(&cfg, &s3.env(&s3.secret));
    support::wait_for_async("the leftovers sent", Duration::from_secs(60), async || {
        sidecar
            .metric("shadowgate_shadow_log_uploaded_rows_total", &[])
            .await
            >= lost as f64
    })
    .await;
    let (code, log2) = sidecar.terminate().await;
    assert_eq!(code, Some(0), "{log2}");
    assert_eq!(
        support::final_count(&log2, "shadow_log_uploaded_rows"),
        lost
    );
    assert_eq!(spooled_parquet(&dir.path().join("spool")), 0);
    let seen = s3.read_back("restart");
    assert_eq!(
        seen["rows"].as_u64(),
        Some(closed),
        "every row in the store"
    );
    ids_once(&seen);
}
