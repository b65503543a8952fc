//! Object storage behind the shadow log: `s3://bucket/prefix` (and `az://`), through
//! the `object_store` crate. Google Cloud Storage is reached as `s3://` through its
//! S3-compatible XML API (`AWS_ENDPOINT_URL=https://storage.googleapis.com`, HMAC keys).
//!
//! Credentials come from the environment the way each cloud's SDKs read them (for S3:
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, IRSA's
//! `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`, the instance or container metadata;
//! `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP=true` for an S3-compatible server). Nothing here
//! prints them: errors carry the URL, the operation and the store's answer only.
//!
//! An object is written whole: one `PUT` below [`MULTIPART_MIN`], a multipart upload
//! above it. Either way the store shows the object only once it is complete, so a
//! reader of the bucket never sees part of a file.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload, RetryConfig, WriteMultipart};

/// Files from this size up are sent as a multipart upload.
pub const MULTIPART_MIN: usize = 16 << 20;
/// Part size of a multipart upload (S3 wants at least 5 MiB per part but the last).
const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once.
const PART_CONCURRENCY: usize = 4;

/// The URL schemes [`Remote::from_url`] takes.
pub const SCHEMES: &[&str] = &["s3", "az", "abfs", "abfss"];

/// Whether `dir` names an object store (`<scheme>://...`) rather than a local directory.
pub fn is_url(dir: &str) -> bool {
    dir.contains("://")
}

/// What went wrong talking to the store. Each names the URL and says what to change.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not a URL this build can write to.
    #[error("{url}: {reason}; use s3://bucket/prefix or az://container/prefix")]
    BadUrl { url: String, reason: String },
    /// The store's client could not be configured (region, endpoint, credentials source).
    #[error("{url}: cannot configure the object-store client: {source}")]
    Config {
        url: String,
        source: object_store::Error,
    },
    /// The bucket (or container) is missing.
    #[error("{url}: {op}: the bucket does not exist ({source}); create it, or fix shadow_log.dir")]
    NoBucket {
        url: String,
        op: &'static str,
        source: object_store::Error,
    },
    /// The store refused the credentials or the permission.
    #[error(
        "{url}: {op}: the store refused the credentials ({source}); check AWS_ACCESS_KEY_ID / \
         AWS_SECRET_ACCESS_KEY, the pod's IRSA role (AWS_ROLE_ARN), or the bucket policy"
    )]
    Denied {
        url: String,
        op: &'static str,
        source: object_store::Error,
    },
    /// Any other failed request.
    #[error("{url}: {op} failed: {source}")]
    Request {
        url: String,
        op: &'static str,
        source: object_store::Error,
    },
    /// No answer in time.
    #[error("{url}: {op}: no answer within {}s", .after.as_secs_f64())]
    Timeout {
        url: String,
        op: &'static str,
        after: Duration,
    },
    /// Reading the local file to send failed.
    #[error("{path}: cannot read the spooled file: {source}")]
    Local {
        path: String,
        source: std::io::Error,
    },
}

/// A store and the prefix under it that is the root of the tree.
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    timeout: Duration,
}

impl std::fmt::Debug for Remote {
    // The store's own Debug may show its configuration; only the URL is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish()
    }
}

impl Remote {
    /// Parses `url` and builds its client from the environment. Makes no request.
    /// `timeout` bounds each request; the client's own retries are kept short so that
    /// the caller's loop decides when to try again.
    pub fn from_url(url: &str, timeout: Duration) -> Result<Remote, StoreError> {
        Self::from_url_with(url, timeout, &[])
    }

    /// [`from_url`](Self::from_url), with settings that override the environment's, by
    /// the names the environment uses (`aws_endpoint_url`, `aws_access_key_id`, ...).
    pub fn from_url_with(
        url: &str,
        timeout: Duration,
        overrides: &[(&str, &str)],
    ) -> Result<Remote, StoreError> {
        let bad = |reason: String| StoreError::BadUrl {
            url: url.to_string(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("no bucket".into()));
        }
        // Set key by key: `with_client_options` would replace what `from_env` read
        // (`AWS_ALLOW_HTTP`, proxies).
        let timeout_s = format!("{}ms", timeout.as_millis());
        let connect_s = format!("{}ms", timeout.min(Duration::from_secs(5)).as_millis());
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: timeout,
            ..RetryConfig::default()
        };
        let config = |source| StoreError::Config {
            url: url.to_string(),
            source,
        };
        use object_store::ClientConfigKey::{ConnectTimeout, Timeout};
        // The three clouds' builders have the same calls on different types.
        macro_rules! build {
            ($builder:ty, $key:ty) => {{
                let mut b = <$builder>::from_env()
                    .with_url(url)
                    .with_config(<$key>::Client(Timeout), &timeout_s)
                    .with_config(<$key>::Client(ConnectTimeout), &connect_s)
                    .with_retry(retry);
                for (k, v) in overrides {
                    let key = k.parse::<$key>().map_err(config)?;
                    b = b.with_config(key, *v);
                }
                Arc::new(b.build().map_err(config)?)
            }};
        }
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "s3" => build!(
                object_store::aws::AmazonS3Builder,
                object_store::aws::AmazonS3ConfigKey
            ),
            "az" | "abfs" | "abfss" => build!(
                object_store::azure::MicrosoftAzureBuilder,
                object_store::azure::AzureConfigKey
            ),
            other => {
                return Err(bad(format!(
                    "unknown scheme {other:?} (known: {})",
                    SCHEMES.join(", ")
                )))
            }
        };
        let prefix = Path::from_url_path(parsed.path()).map_err(|e| bad(e.to_string()))?;
        Ok(Remote {
            store,
            prefix,
            url: url.trim_end_matches('/').to_string(),
            timeout,
        })
    }

    /// The URL the tree lives under, without a trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key of `rel` (a `/`-separated path under the tree's root). Segments are taken
    /// as they are (the writer's Hive names are already percent-encoded), not encoded
    /// again.
    pub fn key(&self, rel: &str) -> Result<Path, StoreError> {
        let joined = if self.prefix.as_ref().is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix.as_ref())
        };
        Path::parse(&joined).map_err(|e| StoreError::BadUrl {
            url: format!("{}/{rel}", self.url),
            reason: e.to_string(),
        })
    }

    /// `rel` of a key under the tree's root.
    pub fn rel<'a>(&self, key: &'a Path) -> &'a str {
        let k = key.as_ref();
        let p = self.prefix.as_ref();
        if p.is_empty() {
            k
        } else {
            k.strip_prefix(p)
                .map_or(k, |r| r.strip_prefix('/').unwrap_or(r))
        }
    }

    /// Writes a small object under `_shadowgate/` (hidden from pyarrow, Spark and the
    /// accuracy job): the credentials, the bucket and the write permission all show up
    /// here, at start, rather than on the first file.
    pub async fn probe(&self, pod: &str) -> Result<(), StoreError> {
        let key = self.key(&format!("_shadowgate/probe-{pod}"))?;
        self.timed(
            "write probe object",
            self.store.put(&key, PutPayload::from_static(b"ok")),
        )
        .await
        .map(drop)
    }

    /// Sends the local file `path` as the object `rel`, whole.
    pub async fn upload(&self, path: &FsPath, rel: &str) -> Result<u64, StoreError> {
        let key = self.key(rel)?;
        let data = tokio::fs::read(path)
            .await
            .map_err(|source| StoreError::Local {
                path: path.display().to_string(),
                source,
            })?;
        let len = data.len() as u64;
        if data.len() < MULTIPART_MIN {
            self.timed("put", self.store.put(&key, PutPayload::from(data)))
                .await?;
            return Ok(len);
        }
        let upload = self
            .timed("start multipart upload", self.store.put_multipart(&key))
            .await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let data = Bytes::from(data);
        let sent = async {
            for chunk in data.chunks(PART_SIZE) {
                w.wait_for_capacity(PART_CONCURRENCY).await?;
                w.write(chunk);
            }
            Ok::<_, object_store::Error>(w)
        };
        // A whole-file deadline: parts go at the store's pace, each bounded by the client.
        let deadline = self.timeout * (1 + data.len().div_ceil(PART_SIZE) as u32);
        match tokio::time::timeout(deadline, sent).await {
            Ok(Ok(w)) => match tokio::time::timeout(deadline, w.finish()).await {
                Ok(r) => r
                    .map(|_| len)
                    .map_err(|e| self.classify("multipart upload", e)),
                Err(_) => Err(self.timeout_error("multipart upload", deadline)),
            },
            Ok(Err(e)) => Err(self.classify("multipart upload", e)),
            Err(_) => Err(self.timeout_error("multipart upload", deadline)),
        }
    }

    /// Keys directly under `rel` (a directory of the tree, `""` for the root): the
    /// sub-directories and the objects, as paths relative to the root.
    pub async fn list_dir(&self, rel: &str) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let dir = if rel.is_empty() {
            self.prefix.clone()
        } else {
            self.key(rel)?
        };
        let listed = self
            .timed("list", self.store.list_with_delimiter(Some(&dir)))
            .await?;
        let dirs = listed
            .common_prefixes
            .iter()
            .map(|p| self.rel(p).to_string())
            .collect();
        let objects = listed
            .objects
            .iter()
            .map(|o| self.rel(&o.location).to_string())
            .collect();
        Ok((dirs, objects))
    }

    /// Every object under `rel`, recursively, relative to the root.
    pub async fn list_all(&self, rel: &str) -> Result<Vec<String>, StoreError> {
        let dir = if rel.is_empty() {
            self.prefix.clone()
        } else {
            self.key(rel)?
        };
        let mut out = Vec::new();
        let mut stream = self.store.list(Some(&dir));
        let timeout = self.timeout;
        loop {
            match tokio::time::timeout(timeout, stream.next()).await {
                Ok(Some(Ok(meta))) => out.push(self.rel(&meta.location).to_string()),
                Ok(Some(Err(e))) => return Err(self.classify("list", e)),
                Ok(None) => break,
                Err(_) => return Err(self.timeout_error("list", timeout)),
            }
        }
        Ok(out)
    }

    /// The whole object `rel`.
    pub async fn get(&self, rel: &str) -> Result<Bytes, StoreError> {
        let key = self.key(rel)?;
        let got = self.timed("get", self.store.get(&key)).await?;
        self.timed("get", got.bytes()).await
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(|e| self.classify(op, e)),
            Err(_) => Err(self.timeout_error(op, self.timeout)),
        }
    }

    fn timeout_error(&self, op: &'static str, after: Duration) -> StoreError {
        StoreError::Timeout {
            url: self.url.clone(),
            op,
            after,
        }
    }

    fn classify(&self, op: &'static str, source: object_store::Error) -> StoreError {
        let url = self.url.clone();
        match source {
            // A missing object on `get` is the object's absence, not the bucket's.
            object_store::Error::NotFound { .. } if op != "get" => {
                StoreError::NoBucket { url, op, source }
            }
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => StoreError::Denied { url, op, source },
            source => StoreError::Request { url, op, source },
        }
    }
}

/// Runs `f` on a one-off current-thread runtime in a thread of its own, so it can be
/// called from anywhere (the CLI, or inside another runtime at start-up).
pub fn block_on<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> std::io::Result<T> {
    std::thread::Builder::new()
        .name("object-store".into())
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(f))
        })?
        .join()
        .map_err(|_| std::io::Error::other("object-store thread panicked"))?
}
