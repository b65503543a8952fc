//! The binary as a user runs it: check-config, serve's refusal of bad config, env
//! overrides, and graceful shutdown on SIGTERM.

use crate::support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::Method;
use shadowgate::demo::model::{Behaviour, ModelOptions, ModelServer};

const BIN: &str = env!("CARGO_BIN_EXE_shadowgate");

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("shadowgate.toml");
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

const GOOD: &str = r#"
[model]
name = "m"
version = "v2"
[primary]
url = "http://127.0.0.1:8000"
[shadow.baseline]
url = "http://127.0.0.1:8001"
version = "v1"
[shadow.canary]
url = "http://127.0.0.1:8002"
version = "v2"
"#;

#[test]
fn check_config_prints_effective_settings_with_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), GOOD);
    let out = Command::new(BIN)
        .args(["check-config", path.to_str().unwrap()])
        .env("SHADOWGATE_SHADOW__SAMPLE_RATE", "0.25")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sample_rate = 0.25"), "{text}");
    assert!(
        text.contains("max_in_flight = 64"),
        "defaults shown: {text}"
    );
}

#[test]
fn invalid_config_lists_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let bad = GOOD
        .replace(
            "url = \"http://127.0.0.1:8000\"",
            "url = \"localhost\"\nretries = 3",
        )
        .replace("version = \"v1\"", "version = \"\"");
    let path = write_config(dir.path(), &bad);
    let out = Command::new(BIN)
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("primary.retries: unknown key"), "{err}");

    let bad = GOOD
        .replace("url = \"http://127.0.0.1:8000\"", "url = \"localhost\"")
        .replace("version = \"v1\"", "version = \"\"");
    let path = write_config(dir.path(), &bad);
    let out = Command::new(BIN)
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("primary.url"), "{err}");
    assert!(err.contains("shadow.baseline.version"), "{err}");
    assert!(err.contains("2 problems"), "{err}");

    // serve refuses the same way, and so does a bad override from the environment.
    let out = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let path = write_config(dir.path(), GOOD);
    let out = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("SHADOWGATE_SHADOW__SAMPLE_RATE", "7")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shadow.sample_rate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    sigterm_case(None).await;
}

/// The same on the single-threaded runtime (`SHADOWGATE_WORKER_THREADS=1`): proxying,
/// mirroring, draining and shutdown all run on one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_threaded_runtime_serves_mirrors_and_drains() {
    sigterm_case(Some("1")).await;
}

#[test]
fn bad_worker_thread_counts_exit_64_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), GOOD);
    for bad in ["0", "two", "-1"] {
        let out = Command::new(BIN)
            .args(["serve", "--config", path.to_str().unwrap()])
            .env("SHADOWGATE_WORKER_THREADS", bad)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{bad}: {err}");
        assert!(
            err.contains("SHADOWGATE_WORKER_THREADS") && err.contains("whole number"),
            "{err}"
        );
    }
}

async fn sigterm_case(threads: Option<&str>) {
    let primary = ModelServer::spawn(ModelOptions {
        behaviour: Behaviour::Delay(Duration::from_millis(700)),
        ..Default::default()
    })
    .await
    .unwrap();
    let shadow = ModelServer::spawn(ModelOptions {
        behaviour: Behaviour::Delay(Duration::from_millis(900)),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (proxy_port, admin_port) = (support::free_port(), support::free_port());
    let text = format!(
        "[listen]\nproxy = \"127.0.0.1:{proxy_port}\"\nadmin = \"127.0.0.1:{admin_port}\"\n[primary]\nurl = \"{}\"\n[shadow]\nsample_rate = 1.0\nself_similarity_rate = 0.0\ntimeout = \"3s\"\n[shadow.baseline]\nurl = \"{}\"\nversion = \"v1\"\n[shadow.canary]\nurl = \"{}\"\nversion = \"v2\"\n",
        primary.url(),
        shadow.url(),
        shadow.url()
    );
    let path = write_config(dir.path(), &text);
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config", path.to_str().unwrap()]);
    if let Some(n) = threads {
        cmd.env("SHADOWGATE_WORKER_THREADS", n);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if threads == Some("1") {
        // The runtime's thread is the main thread: no tokio worker threads (once it
        // serves, the runtime is up).
        support::wait_listening(admin_port);
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", child.id()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with("tokio-runtime-w")),
            "{names:?}\n{status}"
        );
    }
    let client = support::Client::new();
    support::wait_listening(proxy_port);
    let url = format!("http://127.0.0.1:{proxy_port}/v1/embeddings");
    let inflight = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .send(Method::POST, &url, &[], r#"{"input":"x"}"#.into())
                .await
        })
    };
    // SIGTERM only once the request is in flight at the primary and at both shadows
    // (a loaded machine can take longer than any fixed pause to get it there).
    support::wait_for_async(
        "the request at the primary and at both shadows",
        Duration::from_secs(5),
        async || primary.requests() >= 1 && shadow.shadow_requests() >= 2,
    )
    .await;
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let reply = inflight.await.unwrap();
    assert_eq!(
        reply.status, 200,
        "in-flight request completed across SIGTERM"
    );
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    // The shadow pair (900 ms) outlived the primary answer (700 ms) and was still drained.
    assert_eq!(
        shadow.shadow_requests(),
        2,
        "primary saw {}",
        primary.requests()
    );
    let log = String::from_utf8_lossy(&status.stderr);
    assert!(
        log.contains("draining shadow work") && !log.contains("grace period over"),
        "{log}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", proxy_port)).is_err(),
        "stopped listening"
    );
}

/// Even at debug level, neither credentials nor request bodies reach the logs, also when
/// shadow calls fail (the failure is logged with the request id and the error only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_bodies_never_reach_the_logs() {
    let primary = ModelServer::spawn(ModelOptions::default()).await.unwrap();
    let broken = ModelServer::spawn(ModelOptions {
        behaviour: Behaviour::Malformed,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (proxy_port, admin_port) = (support::free_port(), support::free_port());
    let text = format!(
        "[listen]\nproxy = \"127.0.0.1:{proxy_port}\"\nadmin = \"127.0.0.1:{admin_port}\"\n[primary]\nurl = \"{}\"\n[shadow]\nsample_rate = 1.0\n[shadow.baseline]\nurl = \"{}\"\nversion = \"v1\"\n[shadow.canary]\nurl = \"http://127.0.0.1:1\"\nversion = \"v2\"\n[shadow_log]\ndir = \"\"\n[feedback]\ntoken = \"admin-token-5ecret\"\n",
        primary.url(),
        broken.url()
    );
    let path = write_config(dir.path(), &text);
    let child = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("SHADOWGATE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    support::wait_listening(proxy_port);
    let client = support::Client::new();
    for i in 0..5 {
        let r = client
            .send(
                Method::POST,
                &format!("http://127.0.0.1:{proxy_port}/v1/embeddings"),
                &[
                    ("authorization", "Bearer user-token-5ecret"),
                    ("cookie", "session=cookie-5ecret"),
                ],
                format!(r#"{{"input":"personal-data-5ecret {i}"}}"#),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let r = client
        .send(
            Method::POST,
            &format!("http://127.0.0.1:{admin_port}/labels"),
            &[("authorization", "Bearer admin-token-5ecret")],
            r#"{"request_id":"x","label":"label-5ecret"}"#.into(),
        )
        .await;
    assert_eq!(r.status, 200);
    // A sleep, not a wait: the test looks for log lines that must never appear, so it
    // gives any late ones time to be written before the process stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("shadow call failed") || log.contains("bad model output"),
        "debug logging was on: {log}"
    );
    assert!(
        !log.contains("5ecret"),
        "a secret or a body reached the log:\n{log}"
    );
}

/// The README's configuration (kept as fixtures/shadowgate.example.toml) is valid as written.
#[test]
fn the_documented_example_config_is_valid() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/shadowgate.example.toml");
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let example = std::fs::read_to_string(&path).unwrap();
    let body = example.split_once('\n').unwrap().1;
    assert!(
        readme.contains(body),
        "fixtures/shadowgate.example.toml and the README's config block differ"
    );
    let out = Command::new(BIN)
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
