//! `--logs s3://bucket/prefix` and `--labels s3://...` (also `az://`): the
//! objects the local readers need, fetched into a temporary directory with their paths
//! under the prefix kept, so that partition values still come from the Hive names.
//!
//! The shadow-log tree is pruned while it is listed: a `model=`, `date=` or `hour=`
//! prefix that cannot hold rows for `--model`, `--since`, `--until` is never listed
//! further, and none of its objects is fetched. Hidden names (`_shadowgate/`, `.tmp`,
//! `_SUCCESS`) are skipped as the local walk skips them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};

use super::files::{has_extension, is_hidden, Partition};
use super::AccuracyError;
use crate::store::{self, Remote, StoreError};

/// Per-request bound when fetching.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Objects fetched at once.
const CONCURRENCY: usize = 8;

/// Which partitions of a shadow-log tree to keep.
#[derive(Debug, Clone, Default)]
pub struct Prune {
    pub model: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// A temporary directory of fetched objects; removed when dropped.
#[derive(Debug)]
pub struct Fetched {
    root: PathBuf,
    next: usize,
    /// Partition prefixes not listed because they cannot match.
    pub prefixes_pruned: u64,
    /// Objects fetched and their bytes.
    pub objects: u64,
    pub bytes: u64,
}

impl Fetched {
    pub fn new() -> Result<Fetched, AccuracyError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let root = std::env::temp_dir().join(format!(
            "shadowgate-accuracy-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&root).map_err(|source| AccuracyError::Io {
            path: root.clone(),
            source,
        })?;
        Ok(Fetched {
            root,
            next: 0,
            prefixes_pruned: 0,
            objects: 0,
            bytes: 0,
        })
    }

    /// `inputs` with every object-store URL replaced by a local directory holding its
    /// objects whose names end in one of `extensions`; local paths are kept as they are.
    pub fn localize(
        &mut self,
        inputs: &[PathBuf],
        extensions: &[&str],
        prune: Option<&Prune>,
    ) -> Result<Vec<PathBuf>, AccuracyError> {
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            let Some(url) = input.to_str().filter(|s| store::is_url(s)) else {
                out.push(input.clone());
                continue;
            };
            self.next += 1;
            let dir = self.root.join(self.next.to_string());
            let exts: Vec<String> = extensions.iter().map(|e| e.to_string()).collect();
            let (url_s, prune) = (url.to_string(), prune.cloned());
            let dir2 = dir.clone();
            let got = store::block_on(async move { fetch(&url_s, &dir2, &exts, prune).await })
                .map_err(|source| AccuracyError::Io {
                    path: input.clone(),
                    source,
                })?
                .map_err(|e| store_error(url, e))?;
            self.prefixes_pruned += got.0;
            self.objects += got.1;
            self.bytes += got.2;
            std::fs::create_dir_all(&dir).map_err(|source| AccuracyError::Io {
                path: dir.clone(),
                source,
            })?;
            out.push(dir);
        }
        Ok(out)
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn store_error(url: &str, e: StoreError) -> AccuracyError {
    match e {
        StoreError::BadUrl { .. } => AccuracyError::Usage(e.to_string()),
        e => AccuracyError::Io {
            path: PathBuf::from(url),
            source: std::io::Error::other(e.to_string()),
        },
    }
}

/// Lists (pruning) and fetches; returns (prefixes pruned, objects, bytes).
async fn fetch(
    url: &str,
    dir: &Path,
    extensions: &[String],
    prune: Option<Prune>,
) -> Result<(u64, u64, u64), StoreError> {
    let remote = Remote::from_url(url, TIMEOUT)?;
    let mut keys = Vec::new();
    let mut pruned = 0u64;
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let (dirs, objects) = remote.list_dir(&rel).await?;
        for d in dirs {
            let name = d.rsplit('/').next().unwrap_or(&d);
            if is_hidden(name) {
                continue;
            }
            if let Some(p) = &prune {
                // A file name under the prefix, so that its directories are read as
                // partition values.
                let part = Partition::from_path(Path::new(&format!("{d}/f.parquet")));
                if !part.may_match(p.model.as_deref(), p.since, p.until) {
                    pruned += 1;
                    continue;
                }
            }
            todo.push(d);
        }
        for o in objects {
            let name = o.rsplit('/').next().unwrap_or(&o);
            if !is_hidden(name) && extensions.iter().any(|e| has_extension(name, e)) {
                keys.push(o);
            }
        }
    }
    let bytes = AtomicU64::new(0);
    let n = keys.len() as u64;
    futures_util::stream::iter(keys.into_iter().map(|k| {
        let (remote, bytes) = (&remote, &bytes);
        async move {
            let data = remote.get(&k).await?;
            let path = dir.join(&k);
            let local = |source| StoreError::Local {
                path: path.display().to_string(),
                source,
            };
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(local)?;
            }
            tokio::fs::write(&path, &data).await.map_err(local)?;
            bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            Ok::<_, StoreError>(())
        }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    Ok((pruned, n, bytes.into_inner()))
}
