//! The primary's answer on its way to the client: passed through frame by frame, timed,
//! scanned for the generated-token count, and copied for the mirror when
//! `reuse_primary` makes it one side of the comparison.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::Proxy;
use crate::metrics::PrimaryMetrics;
use crate::reference_monitor::{Answer, ReferenceMonitor};
use crate::upstream::PooledBody;

/// Finds the generated-token count (`"completion_tokens": N`) in a streamed response
/// without parsing it: a byte search per chunk, carrying a short tail across chunks.
struct TokenScan {
    /// The last bytes of the previous chunk (`tail_len` of them): no allocation.
    tail: [u8; TOKEN_TAIL],
    tail_len: usize,
    found: Option<u64>,
}

/// Enough of the previous chunk to catch a key and its number split across chunks.
const TOKEN_TAIL: usize = 64;

impl Default for TokenScan {
    fn default() -> Self {
        Self {
            tail: [0; TOKEN_TAIL],
            tail_len: 0,
            found: None,
        }
    }
}

impl TokenScan {
    fn feed(&mut self, finder: &memchr::memmem::Finder<'_>, chunk: &[u8]) {
        if self.tail_len > 0 {
            let mut joined = [0u8; 2 * TOKEN_TAIL];
            let head = chunk.len().min(TOKEN_TAIL);
            joined[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            joined[self.tail_len..self.tail_len + head].copy_from_slice(&chunk[..head]);
            self.scan(finder, &joined[..self.tail_len + head]);
        }
        self.scan(finder, chunk);
        let keep = chunk.len().min(TOKEN_TAIL);
        self.tail[..keep].copy_from_slice(&chunk[chunk.len() - keep..]);
        self.tail_len = keep;
    }

    fn scan(&mut self, finder: &memchr::memmem::Finder<'_>, bytes: &[u8]) {
        for at in finder.find_iter(bytes) {
            let rest = &bytes[at + finder.needle().len()..];
            let rest = skip(rest, |b| b == b'"' || b.is_ascii_whitespace() || b == b':');
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            // A number cut by the chunk end is read again, whole, from the joined tail.
            if digits > 0 && digits < rest.len() {
                if let Some(n) = std::str::from_utf8(&rest[..digits])
                    .ok()
                    .and_then(|s| s.parse().ok())
                {
                    self.found = Some(n);
                }
            }
        }
    }
}

fn skip(mut s: &[u8], pred: impl Fn(u8) -> bool) -> &[u8] {
    while let Some((&b, rest)) = s.split_first() {
        if !pred(b) {
            break;
        }
        s = rest;
    }
    s
}

/// The primary's response body, passed through frame by frame (nothing is buffered),
/// observing the duration histogram when the last frame has gone out.
pub struct MeteredBody {
    inner: PooledBody,
    started: Instant,
    /// For the metrics and the token finder: one reference count, no per-request copies.
    proxy: Arc<Proxy>,
    scan: TokenScan,
    done: bool,
    tee: Option<Tee>,
}

/// A copy of the primary's answer for whoever needs it whole after the client has it:
/// the mirror (`reuse_primary`: one side of the comparison) and the reference monitor.
/// Frames are copied as they stream past; a failed, cut or oversized answer sends an
/// error instead.
pub struct Tee {
    buf: Vec<u8>,
    max: usize,
    tx: Vec<oneshot::Sender<Result<Bytes, String>>>,
    /// The reference monitor: handed the whole answer by [`Tee::complete`] itself, so no
    /// task and no channel wait for it (a failed answer is not scored).
    monitor: Option<Arc<ReferenceMonitor>>,
}

impl Tee {
    /// A copy of at most `max` bytes, and where the whole answer (or why there is none)
    /// arrives.
    pub(super) fn new(max: usize) -> (Self, oneshot::Receiver<Result<Bytes, String>>) {
        let (tx, rx) = oneshot::channel();
        let tee = Tee {
            buf: Vec::new(),
            max,
            tx: vec![tx],
            monitor: None,
        };
        (tee, rx)
    }

    /// A copy for the reference monitor alone (at most its `max_bytes`).
    pub(super) fn for_monitor(monitor: Arc<ReferenceMonitor>) -> Self {
        Tee {
            buf: Vec::new(),
            max: monitor.max_bytes,
            tx: Vec::new(),
            monitor: Some(monitor),
        }
    }

    /// The reference monitor gets the same copy too (the smaller of the two limits
    /// applies).
    pub(super) fn add_monitor(&mut self, monitor: Arc<ReferenceMonitor>) {
        self.max = self.max.min(monitor.max_bytes);
        self.monitor = Some(monitor);
    }

    fn push(&mut self, data: &[u8]) {
        if self.tx.is_empty() && self.monitor.is_none() {
            return;
        }
        if self.buf.len() + data.len() > self.max {
            self.fail(format!("primary answer over {} bytes", self.max));
            return;
        }
        self.buf.extend_from_slice(data);
    }

    pub(super) fn fail(&mut self, why: String) {
        for tx in self.tx.drain(..) {
            let _ = tx.send(Err(why.clone()));
        }
        self.monitor = None;
        self.buf = Vec::new();
    }

    fn complete(&mut self) {
        let whole = Bytes::from(std::mem::take(&mut self.buf));
        for tx in self.tx.drain(..) {
            let _ = tx.send(Ok(whole.clone()));
        }
        if let Some(m) = self.monitor.take() {
            m.offer(Answer::Http(whole));
        }
    }
}

impl MeteredBody {
    pub(super) fn new(
        inner: PooledBody,
        started: Instant,
        proxy: Arc<Proxy>,
        tee: Option<Tee>,
    ) -> Self {
        MeteredBody {
            inner,
            started,
            proxy,
            scan: TokenScan::default(),
            done: false,
            tee,
        }
    }

    fn finish(&mut self, failed: bool) {
        if self.done {
            return;
        }
        self.done = true;
        let metrics: &PrimaryMetrics = &self.proxy.metrics.primary;
        if failed {
            metrics.errors.inc();
        }
        if let Some(tee) = self.tee.as_mut() {
            if failed {
                tee.fail("primary answer cut off".into());
            } else {
                tee.complete();
            }
        }
        metrics
            .duration_for(self.scan.found)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = h1::client::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h1::client::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.scan.feed(&this.proxy.tokens_finder, data);
                    if let Some(tee) = this.tee.as_mut() {
                        tee.push(data);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish(false);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(true),
            Poll::Ready(None) => this.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // The client went away before the end: still a served request, still timed, but
        // the copy for the mirror is incomplete.
        if !self.done {
            if let Some(tee) = self.tee.as_mut() {
                tee.fail("client left before the end of the answer".into());
            }
        }
        self.finish(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_chunks(chunks: &[&[u8]]) -> Option<u64> {
        let finder = memchr::memmem::Finder::new(b"completion_tokens").into_owned();
        let mut s = TokenScan::default();
        for c in chunks {
            s.feed(&finder, c);
        }
        s.found
    }

    #[test]
    fn token_count_found_whole_and_split_across_chunks() {
        let body = br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":123,"total_tokens":128}}"#;
        assert_eq!(scan_chunks(&[body]), Some(123));
        for cut in 1..body.len() {
            assert_eq!(
                scan_chunks(&[&body[..cut], &body[cut..]]),
                Some(123),
                "cut at {cut}"
            );
        }
        assert_eq!(scan_chunks(&[b"{\"data\":[1,2,3]}"]), None);
    }
}
