//! A fast Open Inference Protocol v2 gRPC model server for `benches/grpc_vs_nginx.sh`:
//! hyper's HTTP/2 (h2c, prior knowledge) on one current-thread tokio runtime, answering
//! every `ModelInfer` with a fixed 768-dim FP32 vector per input item, in
//! `raw_output_contents`, and `grpc-status: 0` in the trailers. The answer for one item
//! is encoded once at start-up; other batch sizes are encoded per call. Optionally waits
//! `--delay-ms` before answering (the 50 ms shadow target) and shifts every component
//! by `--shift` (a canary a little off the baseline). `/__count` answers at once with
//! the `ModelInfer` calls, connections calls to other paths (answered
//! UNIMPLEMENTED) and undecodable calls (INVALID_ARGUMENT) so far in the `x-calls`,
//! `x-connections`, `x-other-paths` and `x-invalid` headers.
//!
//! It also carries the client side of the benchmark: `request FILE` writes one framed
//! `ModelInferRequest` (one BYTES input, one string) for h2load's `-d`, and
//! `check URL` sends that request with hyper's HTTP/2 client and prints the HTTP status,
//! the trailers' `grpc-status` and the decoded answer's shape: h2load counts HTTP
//! statuses only.
//!
//! ```sh
//! cargo build --release --example grpc_model
//! grpc_model serve PORT [--delay-ms N] [--shift X] [--dim D]
//! grpc_model request FILE
//! grpc_model check http://127.0.0.1:PORT [x-request-id]
//! grpc_model count http://127.0.0.1:PORT
//! ```

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use shadowgate::grpc::frame;
use shadowgate::grpc::pb::oip::{
    InferInputTensor, InferOutputTensor, InferTensorContents, ModelInferRequest, ModelInferResponse,
};
use tokio::net::{TcpListener, TcpStream};

const PATH: &str = "/inference.GRPCInferenceService/ModelInfer";
const TEXT: &str =
    "The quick brown fox jumps over the lazy dog while the model computes an embedding.";

/// A unary gRPC answer body: one data frame (if any), then the trailers. Ready at once,
/// no channel and no task per call.
struct Unary {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for Unary {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

#[derive(Default)]
struct Counts {
    calls: AtomicU64,
    connections: AtomicU64,
    /// Calls to any other path (answered UNIMPLEMENTED).
    other_paths: AtomicU64,
    /// `ModelInfer` calls whose body is not one ModelInferRequest (answered
    /// INVALID_ARGUMENT).
    invalid: AtomicU64,
}

struct Model {
    dim: usize,
    shift: f32,
    delay: Duration,
    /// The framed answer to a one-item call.
    one: Bytes,
    counts: Counts,
}

impl Model {
    fn vector(&self) -> Vec<u8> {
        (0..self.dim)
            .flat_map(|i| {
                let v = ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) + self.shift;
                v.to_le_bytes()
            })
            .collect()
    }

    fn answer(&self, items: usize) -> Bytes {
        let row = self.vector();
        let raw: Vec<u8> = (0..items).flat_map(|_| row.iter().copied()).collect();
        frame::encode(&ModelInferResponse {
            model_name: "bench".into(),
            outputs: vec![InferOutputTensor {
                name: "embedding".into(),
                datatype: "FP32".into(),
                shape: vec![items as i64, self.dim as i64],
                ..Default::default()
            }],
            raw_output_contents: vec![Bytes::from(raw)],
            ..Default::default()
        })
    }
}

fn grpc_response(data: Option<Bytes>, status: &'static str) -> Response<Unary> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(status));
    let mut resp = Response::new(Unary {
        data,
        trailers: Some(trailers),
    });
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    resp
}

async fn infer(req: Request<Incoming>, model: Arc<Model>) -> Response<Unary> {
    if req.uri().path() == "/__count" {
        let mut resp = grpc_response(None, "0");
        let h = resp.headers_mut();
        h.insert("x-calls", model.counts.calls.load(Ordering::Relaxed).into());
        h.insert(
            "x-connections",
            model.counts.connections.load(Ordering::Relaxed).into(),
        );
        h.insert(
            "x-other-paths",
            model.counts.other_paths.load(Ordering::Relaxed).into(),
        );
        h.insert(
            "x-invalid",
            model.counts.invalid.load(Ordering::Relaxed).into(),
        );
        return resp;
    }
    if req.uri().path() != PATH {
        model.counts.other_paths.fetch_add(1, Ordering::Relaxed);
        return grpc_response(None, "12"); // UNIMPLEMENTED
    }
    model.counts.calls.fetch_add(1, Ordering::Relaxed);
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return grpc_response(None, "13");
    };
    let Some(request) = frame::unframe_bytes(&body, frame::DEFAULT_MAX_MESSAGE_BYTES)
        .ok()
        .and_then(|m| ModelInferRequest::decode(m).ok())
    else {
        model.counts.invalid.fetch_add(1, Ordering::Relaxed);
        return grpc_response(None, "3"); // INVALID_ARGUMENT (check-config's probe)
    };
    let items = request
        .inputs
        .first()
        .and_then(|i| i.contents.as_ref())
        .map_or(1, |c| c.bytes_contents.len().max(1));
    if !model.delay.is_zero() {
        tokio::time::sleep(model.delay).await;
    }
    let data = if items == 1 {
        model.one.clone()
    } else {
        model.answer(items)
    };
    grpc_response(Some(data), "0")
}

fn serve(args: &[String]) -> std::io::Result<()> {
    let port: u16 = args
        .first()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| usage());
    let (mut delay_ms, mut shift, mut dim) = (0u64, 0f32, 768usize);
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--delay-ms" => delay_ms = value.parse().unwrap_or_else(|_| usage()),
            "--shift" => shift = value.parse().unwrap_or_else(|_| usage()),
            "--dim" => dim = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let mut model = Model {
        dim,
        shift,
        delay: Duration::from_millis(delay_ms),
        one: Bytes::new(),
        counts: Counts::default(),
    };
    model.one = model.answer(1);
    let model = Arc::new(model);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(("127.0.0.1", port)).await?;
            loop {
                let (tcp, _) = listener.accept().await?;
                tcp.set_nodelay(true)?;
                model.counts.connections.fetch_add(1, Ordering::Relaxed);
                let model = model.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let model = model.clone();
                        async move { Ok::<_, Infallible>(infer(req, model).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(1024)
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        })
}

fn request_message() -> Bytes {
    frame::encode(&ModelInferRequest {
        model_name: "bench".into(),
        inputs: vec![InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![1, 1],
            contents: Some(InferTensorContents {
                bytes_contents: vec![Bytes::from_static(TEXT.as_bytes())],
                ..Default::default()
            }),
        }],
        ..Default::default()
    })
}

/// One call with hyper's HTTP/2 client; prints what came back, fails unless it is
/// HTTP 200, `grpc-status: 0` in the trailers and a decodable answer.
async fn check(url: &str, path: &str, request_id: Option<&str>) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let authority = uri.authority().ok_or("URL without host:port")?.to_string();
    let tcp = TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::post(format!("http://{authority}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(id) = request_id {
        req = req.header("x-request-id", id);
    }
    let req = req
        .body(Full::new(request_message()))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let body = collected.to_bytes();
    println!("http-status: {}", status.as_u16());
    for (k, v) in &headers {
        println!("header {k}: {}", v.to_str().unwrap_or("<binary>"));
    }
    for (k, v) in &trailers {
        println!("trailer {k}: {}", v.to_str().unwrap_or("<binary>"));
    }
    if path == "/__count" {
        return Ok(());
    }
    let grpc_status = trailers
        .get("grpc-status")
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok());
    let answer = frame::unframe_bytes(&body, frame::DEFAULT_MAX_MESSAGE_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|m| ModelInferResponse::decode(m).map_err(|e| e.to_string()));
    match &answer {
        Ok(a) => println!(
            "answer: {} bytes, outputs {:?}, shape {:?}, raw_output_contents {} bytes",
            body.len(),
            a.outputs.iter().map(|o| &o.name).collect::<Vec<_>>(),
            a.outputs.first().map(|o| &o.shape),
            a.raw_output_contents.first().map_or(0, |r| r.len())
        ),
        Err(e) => println!(
            "answer: {} bytes, not a ModelInferResponse: {e}",
            body.len()
        ),
    }
    if status != 200 || grpc_status != Some("0") || answer.is_err() {
        return Err(format!(
            "not a successful call: HTTP {status}, grpc-status {grpc_status:?}"
        ));
    }
    println!("ok");
    Ok(())
}

fn usage() -> ! {
    eprintln!(
        "usage: grpc_model serve PORT [--delay-ms N] [--shift X] [--dim D]\n       grpc_model request FILE\n       grpc_model check URL [x-request-id]\n       grpc_model count URL"
    );
    std::process::exit(64);
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let client = |path: &'static str, url: &str, id: Option<&str>| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        if let Err(e) = rt.block_on(check(url, path, id)) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        Ok(())
    };
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("request") => {
            std::fs::write(args.get(1).unwrap_or_else(|| usage()), request_message())
        }
        Some("check") => client(
            PATH,
            args.get(1).unwrap_or_else(|| usage()),
            args.get(2).map(String::as_str),
        ),
        Some("count") => client("/__count", args.get(1).unwrap_or_else(|| usage()), None),
        _ => usage(),
    }
}
