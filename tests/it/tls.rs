//! TLS to upstreams end to end: https primary, baseline and canary behind test CAs made
//! with rcgen, certificates from a CA the sidecar does not trust, and bad CA files.
//!
//! Each https model server is a plain [`ModelServer`] behind a TLS front (tokio-rustls on
//! 127.0.0.1 relaying the decrypted bytes), so the answers and the per-server counters are
//! exactly those of the plain servers the other tests use.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use shadowgate::config::Config;
use shadowgate::demo::model::{CosineSpec, ModelOptions, ModelServer};
use shadowgate::serve;
use support::{config, value, Client};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_shadowgate");

/// A test certificate authority.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server configuration with a certificate for `localhost` and 127.0.0.1 signed by this CA.
    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "model server");
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        )
    }
}

/// A model server reachable over TLS.
struct TlsModel {
    server: ModelServer,
    front: SocketAddr,
    _task: AbortOnDrop,
}

impl TlsModel {
    async fn spawn(opts: ModelOptions, ca: &Ca) -> TlsModel {
        let server = ModelServer::spawn(opts).await.unwrap();
        let (front, task) = tls_front(server.addr, ca.server_config()).await;
        TlsModel {
            server,
            front,
            _task: AbortOnDrop(task),
        }
    }

    /// `https://127.0.0.1:PORT`: the certificate's IP address entry is checked.
    fn url(&self) -> String {
        format!("https://{}", self.front)
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Terminate TLS on a loopback port and relay each connection to `backend`.
async fn tls_front(
    backend: SocketAddr,
    config: Arc<rustls::ServerConfig>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                // A client that rejects the certificate ends the handshake: nothing to relay.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, task)
}

fn opts(cosine: CosineSpec) -> ModelOptions {
    ModelOptions {
        dim: 128,
        cosine,
        ..Default::default()
    }
}

fn write_pem(dir: &Path, name: &str, pems: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pems.concat()).unwrap();
    path
}

/// A plain primary, https baseline and canary with certificates from the given CAs, and
/// a sidecar trusting `ca_file`; every request mirrored, identical models.
async fn shadows_stack(
    baseline_ca: &Ca,
    canary_ca: &Ca,
    ca_file: &Path,
) -> (ModelServer, TlsModel, TlsModel, Stack) {
    let primary = ModelServer::spawn(opts(CosineSpec::Identical))
        .await
        .unwrap();
    let baseline = TlsModel::spawn(opts(CosineSpec::Identical), baseline_ca).await;
    let canary = TlsModel::spawn(opts(CosineSpec::Identical), canary_ca).await;
    let cfg = config(
        &primary.url(),
        &baseline.url(),
        &canary.url(),
        "",
        &tls_section(ca_file),
    );
    let stack = Stack {
        sidecar: serve::start(cfg).await.unwrap(),
    };
    (primary, baseline, canary, stack)
}

fn tls_section(ca_file: &Path) -> String {
    format!(
        "[tls]\nca_file = \"{}\"\nsystem_roots = false\n",
        ca_file.display()
    )
}

fn count(m: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(m, name, labels).unwrap_or(0.0)
}

#[tokio::test]
async fn https_primary_answers_byte_equal_to_the_direct_answer() {
    let ca = Ca::new("shadowgate test CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_pem(dir.path(), "ca.pem", &[&ca.pem]);
    let primary = TlsModel::spawn(opts(CosineSpec::Identical), &ca).await;
    let baseline = ModelServer::spawn(opts(CosineSpec::Identical))
        .await
        .unwrap();
    let canary = ModelServer::spawn(opts(CosineSpec::Identical))
        .await
        .unwrap();
    // By host name this time: the certificate's DNS entry is checked.
    let primary_url = format!("https://localhost:{}", primary.front.port());
    let cfg = config(
        &primary_url,
        &baseline.url(),
        &canary.url(),
        "sample_rate = 0.0",
        &tls_section(&ca_file),
    );
    let sidecar = serve::start(cfg).await.unwrap();
    let client = Client::new();
    let proxy = format!("http://{}", sidecar.proxy_addr);
    let n = 20;
    for i in 0..n {
        let body = format!(r#"{{"input":"tls input {i}"}}"#);
        let direct = client
            .send(
                Method::POST,
                &format!("{}/v1/embeddings", primary.server.url()),
                &[],
                body.clone(),
            )
            .await;
        let via = client
            .send(Method::POST, &format!("{proxy}/v1/embeddings"), &[], body)
            .await;
        assert_eq!(via.status, 200, "{}", via.text());
        assert_eq!(via.body, direct.body, "request {i}");
        assert_eq!(via.headers["content-type"], direct.headers["content-type"]);
    }
    // Each request reached the model twice: once directly, once through TLS.
    assert_eq!(primary.server.requests(), 2 * n);
    let ready = client
        .get(&format!("http://{}/readyz", sidecar.admin_addr))
        .await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let m = client
        .get(&format!("http://{}/metrics", sidecar.admin_addr))
        .await
        .text();
    assert_eq!(count(&m, "model_inference_requests_total", &[]), n as f64);
    assert_eq!(count(&m, "model_inference_errors_total", &[]), 0.0);
    sidecar.shutdown().await;
}

#[tokio::test]
async fn https_baseline_and_canary_are_compared_with_a_two_ca_bundle() {
    // Baseline and canary certificates come from different CAs; one bundle trusts both.
    let ca_a = Ca::new("CA A");
    let ca_b = Ca::new("CA B");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_pem(dir.path(), "bundle.pem", &[&ca_a.pem, &ca_b.pem]);
    let (_primary, baseline, canary, stack) = shadows_stack(&ca_a, &ca_b, &ca_file).await;
    let n = 30;
    for i in 0..n {
        assert_eq!(stack.embed(&format!("pair {i}")).await.status, 200);
    }
    let m = stack.wait_pairs(n).await;
    assert_eq!(
        count(
            &m,
            "model_embedding_pairs_total",
            &[("outcome", "compared")]
        ),
        n as f64,
        "{m}"
    );
    for target in ["baseline", "canary"] {
        assert_eq!(
            count(
                &m,
                "shadowgate_shadow_requests_total",
                &[("target", target), ("outcome", "ok")]
            ),
            n as f64,
            "{target}"
        );
    }
    let mean = value(&m, "model_embedding_drift_cosine_similarity", &[]).unwrap();
    assert!((mean - 1.0).abs() < 1e-6, "identical models: mean {mean}");
    assert_eq!(baseline.server.shadow_requests(), n);
    assert_eq!(canary.server.shadow_requests(), n);
    stack.sidecar.shutdown().await;
}

#[tokio::test]
async fn certificates_from_an_untrusted_ca_are_refused() {
    let trusted = Ca::new("trusted CA");
    let stranger = Ca::new("some other CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_pem(dir.path(), "ca.pem", &[&trusted.pem]);

    // A canary with a certificate from another CA: its shadow calls fail, the client
    // never notices.
    let (primary, _baseline, canary, stack) = shadows_stack(&trusted, &stranger, &ca_file).await;
    let n = 10;
    for i in 0..n {
        let r = stack.embed(&format!("x{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let m = stack.wait_pairs(n).await;
    let canary_count = |outcome| {
        count(
            &m,
            "shadowgate_shadow_requests_total",
            &[("target", "canary"), ("outcome", outcome)],
        )
    };
    assert_eq!(canary_count("error"), n as f64, "{m}");
    assert_eq!(canary_count("ok"), 0.0);
    assert_eq!(
        count(
            &m,
            "shadowgate_shadow_requests_total",
            &[("target", "baseline"), ("outcome", "ok")]
        ),
        n as f64
    );
    assert_eq!(
        count(
            &m,
            "model_embedding_pairs_total",
            &[("outcome", "canary_error")]
        ),
        n as f64
    );
    assert_eq!(count(&m, "model_inference_errors_total", &[]), 0.0);
    // The handshake failed before any request reached the canary model.
    assert_eq!(canary.server.requests(), 0);
    stack.sidecar.shutdown().await;

    // A primary with such a certificate: 502 naming the certificate problem.
    let bad_primary = TlsModel::spawn(opts(CosineSpec::Identical), &stranger).await;
    let cfg = config(
        &bad_primary.url(),
        &primary.url(),
        &primary.url(),
        "sample_rate = 0.0",
        &tls_section(&ca_file),
    );
    let stack = Stack {
        sidecar: serve::start(cfg).await.unwrap(),
    };
    let r = stack.embed("to an untrusted primary").await;
    assert_eq!(r.status, 502, "{}", r.text());
    // e.g. "primary https://127.0.0.1:PORT/ unavailable: invalid peer certificate: UnknownIssuer"
    assert!(
        r.text().contains("invalid peer certificate"),
        "the reason names the certificate: {}",
        r.text()
    );
    assert_eq!(bad_primary.server.requests(), 0);
    let m = stack.metrics().await;
    assert_eq!(count(&m, "model_inference_errors_total", &[]), 1.0);
    stack.sidecar.shutdown().await;
}

#[test]
fn bad_ca_files_are_config_errors_naming_tls_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let good = write_pem(dir.path(), "good.pem", &[&ca.pem]);
    let empty = write_pem(dir.path(), "empty.pem", &[]);
    let not_pem = write_pem(dir.path(), "not.pem", &["this is not a certificate\n"]);
    let key_only = write_pem(
        dir.path(),
        "key.pem",
        &[&KeyPair::generate().unwrap().serialize_pem()],
    );
    let missing = dir.path().join("missing.pem");
    let base = |tls: &str| {
        format!(
            r#"
[primary]
url = "https://127.0.0.1:8443"
[shadow.baseline]
url = "https://127.0.0.1:8444"
version = "v1"
[shadow.canary]
url = "http://127.0.0.1:8002"
version = "v2"
{tls}"#
        )
    };
    let load = |text: &str, env: &[(&str, &str)]| {
        Config::from_toml_with_env(
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    };
    assert!(load(&base(&tls_section(&good)), &[]).is_ok());

    for (file, says) in [
        (&missing, "cannot read"),
        (&empty, "no `-----BEGIN CERTIFICATE-----` block"),
        (&not_pem, "no `-----BEGIN CERTIFICATE-----` block"),
        (&key_only, "no `-----BEGIN CERTIFICATE-----` block"),
    ] {
        let err = load(&base(&tls_section(file)), &[]).unwrap_err();
        let p = &err.problems()[0];
        assert_eq!(err.problems().len(), 1, "{err}");
        assert_eq!(p.key, "tls.ca_file", "{err}");
        assert!(p.message.contains(says), "{}: {err}", file.display());
        assert!(
            p.message.contains(&file.display().to_string()),
            "names the file: {err}"
        );
    }

    // The environment override is checked the same way.
    let err = load(
        &base(""),
        &[("SHADOWGATE_TLS__CA_FILE", missing.to_str().unwrap())],
    )
    .unwrap_err();
    assert_eq!(err.problems()[0].key, "tls.ca_file", "{err}");

    // https with nothing trusted at all.
    let err = load(&base("[tls]\nsystem_roots = false\n"), &[]).unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["tls.ca_file", "tls.ca_file"], "{err}");
    assert!(err.to_string().contains("primary.url"), "{err}");
    assert!(err.to_string().contains("shadow.baseline.url"), "{err}");

    // check-config and serve both refuse it with exit 64, naming the key.
    let cfg = dir.path().join("shadowgate.toml");
    std::fs::write(&cfg, base(&tls_section(&missing))).unwrap();
    for args in [
        vec!["check-config", cfg.to_str().unwrap()],
        vec!["serve", "--config", cfg.to_str().unwrap()],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains("tls.ca_file"), "{args:?}: {stderr}");
        assert!(stderr.contains("missing.pem"), "{args:?}: {stderr}");
    }
}

/// The few [`support::Stack`] helpers these tests need, for a sidecar whose upstreams are
/// not the plain model servers of `support::stack`.
struct Stack {
    sidecar: serve::Running,
}

impl Stack {
    async fn embed(&self, text: &str) -> support::Reply {
        Client::new()
            .send(
                Method::POST,
                &format!("http://{}/v1/embeddings", self.sidecar.proxy_addr),
                &[],
                format!(r#"{{"input":"{text}"}}"#),
            )
            .await
    }

    async fn metrics(&self) -> String {
        Client::new()
            .get(&format!("http://{}/metrics", self.sidecar.admin_addr))
            .await
            .text()
    }

    async fn wait_pairs(&self, n: u64) -> String {
        let mut last = String::new();
        let reached = support::poll_async(Duration::from_secs(30), async || {
            last = self.metrics().await;
            (support::pairs_total(&last) as u64 >= n).then_some(())
        })
        .await;
        // A scrape taken after the count was seen holds everything those pairs
        // recorded (see `support::Stack::wait_pairs`).
        match reached {
            Some(()) => self.metrics().await,
            None => last,
        }
    }
}

/// An HTTP/2 primary behind TLS (`https://` in `primary.http2_url`): the sidecar offers
/// only `h2` in ALPN and checks the certificate against `tls.ca_file`; a gRPC call passes
/// with its trailers. A server that does not agree to `h2` is refused, and the client gets
/// `UNAVAILABLE` saying why.
#[tokio::test]
async fn https_http2_primary_is_reached_with_alpn_h2() {
    use http_body_util::{BodyExt, Full};
    let backend = support::h2::server(|_req| async {
        let (mut tx, body) =
            http_body_util::channel::Channel::<bytes::Bytes, std::convert::Infallible>::new(2);
        tokio::spawn(async move {
            let _ = tx
                .send_data(bytes::Bytes::from_static(b"\0\0\0\0\x01k"))
                .await;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let _ = tx.send_trailers(trailers).await;
        });
        let mut resp = http::Response::new(body);
        resp.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        resp
    })
    .await;
    let ca = Ca::new("h2 test CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = write_pem(dir.path(), "ca.pem", &[&ca.pem]);
    let with_alpn = {
        let mut c = rustls::ServerConfig::clone(&ca.server_config());
        c.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(c)
    };
    let (h2_front, _t1) = tls_front(backend, with_alpn).await;
    // The same certificate, but the server offers no ALPN protocol (HTTP/1.1 only).
    let (h1_front, _t2) = tls_front(backend, ca.server_config()).await;
    let model = ModelServer::spawn(opts(CosineSpec::Identical))
        .await
        .unwrap();

    for (front, ok) in [(h2_front, true), (h1_front, false)] {
        let cfg = config(
            &model.url(),
            &model.url(),
            &model.url(),
            "sample_rate = 0.0",
            &format!(
                "{}[primary]\nhttp2_url = \"https://{front}\"\n",
                tls_section(&ca_file)
            ),
        );
        let sidecar = serve::start(cfg).await.unwrap();
        let mut client = support::h2::client(sidecar.proxy_addr).await;
        let req = http::Request::post(format!("http://{}/pkg.Svc/Call", sidecar.proxy_addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(bytes::Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        let resp = client.send_request(req).await.unwrap();
        let head = resp.headers().clone();
        let collected = resp.into_body().collect().await.unwrap();
        if ok {
            assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
            assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x01k");
        } else {
            assert_eq!(head["grpc-status"], "14", "{head:?}");
            let message = head["grpc-message"].to_str().unwrap();
            assert!(message.contains("ALPN"), "{message}");
        }
        sidecar.shutdown().await;
    }
}
