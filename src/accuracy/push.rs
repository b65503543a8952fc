//! Pushing the report to a Prometheus Pushgateway: one PUT per model of the text
//! format to `<url>/metrics/job/shadowgate_accuracy/model/<model>`, so each run
//! replaces that model's previous numbers and leaves other models' groups alone.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::report::Report;
use super::AccuracyError;

/// Job name of the pushed group.
pub const JOB: &str = "shadowgate_accuracy";
/// Per request: a Pushgateway answers in milliseconds; more means it is not there.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The grouping-key path for `model`: plain when it is URL-safe, else the
/// Pushgateway's base64 form (`model@base64/...`), which any value survives.
pub fn group_path(base: &str, model: &str) -> String {
    let base = base.trim_end_matches('/');
    let safe = !model.is_empty()
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if safe {
        format!("{base}/metrics/job/{JOB}/model/{model}")
    } else {
        let enc = base64::engine::general_purpose::URL_SAFE.encode(model);
        // An empty value is encoded as `=` per the Pushgateway's documentation.
        let enc = if enc.is_empty() { "=".to_string() } else { enc };
        format!("{base}/metrics/job/{JOB}/model@base64/{enc}")
    }
}

/// PUTs every model's series; the first failure is returned.
pub fn push(url: &str, report: &Report) -> Result<(), AccuracyError> {
    let err = |problem: String| AccuracyError::Push {
        url: url.to_string(),
        problem,
    };
    if !url.starts_with("http://") {
        return Err(err("only http:// URLs are supported".into()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(format!("cannot start a runtime: {e}")))?;
    rt.block_on(async {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        for m in &report.models {
            let target = group_path(url, &m.model);
            let req = http::Request::put(&target)
                .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(Bytes::from(report.prometheus_text(m))))
                .map_err(|e| err(format!("{target}: {e}")))?;
            let resp = tokio::time::timeout(TIMEOUT, client.request(req))
                .await
                .map_err(|_| err(format!("{target}: no answer within {TIMEOUT:?}")))?
                .map_err(|e| err(format!("{target}: {e}")))?;
            let status = resp.status();
            if !status.is_success() {
                let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                    .unwrap_or_default();
                return Err(err(format!("{target}: {status}: {}", body.trim())));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_key_paths() {
        assert_eq!(
            group_path("http://h:9091/", "llm-inference"),
            "http://h:9091/metrics/job/shadowgate_accuracy/model/llm-inference"
        );
        assert_eq!(
            group_path("http://h:9091", "a/b"),
            "http://h:9091/metrics/job/shadowgate_accuracy/model@base64/YS9i"
        );
    }
}
