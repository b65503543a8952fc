//! A real Prometheus server on loopback for tests: writes its config, starts the Debian
//! `prometheus` binary on a free port with its own storage, waits until it is ready,
//! answers instant queries, and is killed on drop.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub struct Prometheus {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

pub use super::free_port;

impl Prometheus {
    /// Start Prometheus scraping `targets` (host:port) every `interval`; `honor_labels`
    /// as a Pushgateway scrape needs. Extra rule files may be passed.
    pub fn start(
        targets: &[SocketAddr],
        interval: &str,
        honor_labels: bool,
        rule_files: &[PathBuf],
    ) -> Prometheus {
        Self::start_labeled(targets, &[], interval, honor_labels, rule_files)
    }

    /// [`start`](Self::start), with `target_labels` added to every scraped series (as a
    /// PodMonitor copies pod labels such as `rollouts_pod_template_hash`).
    pub fn start_labeled(
        targets: &[SocketAddr],
        target_labels: &[(&str, &str)],
        interval: &str,
        honor_labels: bool,
        rule_files: &[PathBuf],
    ) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let labels: String = target_labels
            .iter()
            .map(|(k, v)| format!("          {k}: '{v}'\n"))
            .collect();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rules: Vec<String> = rule_files
            .iter()
            .map(|p| format!("  - '{}'", p.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\nrule_files:\n{}\nscrape_configs:\n  - job_name: shadowgate\n    honor_labels: {honor_labels}\n    static_configs:\n      - targets: [{}]\n{}",
            if rules.is_empty() { "  []".to_string() } else { rules.join("\n") },
            targets.join(", "),
            if labels.is_empty() { String::new() } else { format!("        labels:\n{labels}") }
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write config");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus: the test command installs the Debian package `prometheus`");
        let prom = Prometheus {
            addr,
            child,
            _dir: dir,
        };
        prom.wait_ready();
        prom
    }

    fn wait_ready(&self) {
        super::wait_for(
            &format!("prometheus at {} to answer /-/ready", self.addr),
            Duration::from_secs(30),
            || http_get(self.addr, "/-/ready").is_ok_and(|b| b.contains("Ready")),
        );
    }

    /// An instant query; returns the `data` object (resultType + result) or the error text.
    pub fn query(&self, promql: &str) -> Result<Value, String> {
        let path = format!("/api/v1/query?query={}", urlencode(promql));
        let body = http_get(self.addr, &path).map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{}: {}", v["errorType"], v["error"]))
        }
    }

    /// The single scalar value of a query (first vector element or scalar).
    pub fn value(&self, promql: &str) -> Option<f64> {
        let data = self.query(promql).ok()?;
        let v = match data["resultType"].as_str()? {
            "vector" => data["result"].get(0)?["value"][1].clone(),
            "scalar" => data["result"][1].clone(),
            _ => return None,
        };
        parse_prom_float(v.as_str()?)
    }

    /// Poll `promql` until `pred` holds on its value or `timeout` passes; returns the last value.
    pub fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> Option<f64> {
        let mut last = None;
        super::poll(timeout, || {
            last = self.value(promql);
            last.filter(|v| pred(*v))
        })
        .or(last)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn parse_prom_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Minimal blocking HTTP/1.0 GET (no client dependency needed in sync tests).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}
