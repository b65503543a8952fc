//! Fewer syscalls per HTTP/2 call: one write per turn of a connection's task, and reads
//! that take what the socket holds.
//!
//! - Writes. The h2 crate's frame writer keeps a DATA frame's payload as a buffer of its
//!   own and hands it to the socket before it encodes the next frame, so a unary gRPC
//!   answer (its head and message in one DATA frame, then its trailers) left in two
//!   writes: two TCP segments and two wake-ups of the client per call. Here a
//!   connection's writes are gathered in memory while its task runs, and go out in one
//!   write when the turn ends ([`FlushAfterTurn`]). A write that would take the gathered
//!   bytes over [`GATHER_LIMIT`] sends them first, waiting for the socket if it must, so
//!   a slow reader still holds the writer back (HTTP/2 flow control and the socket's own
//!   buffer do the rest).
//! - Reads. The frame reader reads into what is left of its buffer, often under 2 KiB,
//!   so an answer of a few KiB took two reads. A read into less than [`READ_AHEAD`] goes
//!   through a buffer of that size here, and the rest is kept for the next read.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes gathered before they are written in the middle of a turn.
pub const GATHER_LIMIT: usize = 64 * 1024;

/// A read into less room than this reads this much ahead.
pub const READ_AHEAD: usize = 16 * 1024;

/// The connection and its bytes not yet written or not yet taken, shared by the side
/// the HTTP/2 connection owns ([`GatheredIo`]) and the wrapper around its task
/// ([`FlushAfterTurn`]). Both are polled by the same task: the lock is never contended.
type Shared<T> = Arc<Mutex<State<T>>>;

struct State<T> {
    io: T,
    /// Gathered, not yet written.
    out: BytesMut,
    /// Read ahead, not yet taken.
    ahead: BytesMut,
    /// A write error found by the wrapper's flush, reported to the connection's next
    /// write.
    failed: Option<io::Error>,
}

fn lock<T>(shared: &Shared<T>) -> MutexGuard<'_, State<T>> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T: AsyncWrite + Unpin> State<T> {
    /// Write the gathered bytes until none are left, then flush the connection (a TLS
    /// stream may still hold records); `Pending` when the socket is full, with the task
    /// woken when it can take more.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

/// `(io, flusher)`: give `io` to the HTTP/2 connection and poll the connection's future
/// through [`Flusher::wrap`], which writes what each turn gathered.
pub fn gathered<T>(io: T) -> (GatheredIo<T>, Flusher<T>) {
    let shared = Arc::new(Mutex::new(State {
        io,
        out: BytesMut::new(),
        ahead: BytesMut::new(),
        failed: None,
    }));
    (
        GatheredIo {
            shared: shared.clone(),
        },
        Flusher { shared },
    )
}

/// A connection whose writes are gathered until the end of the task's turn.
pub struct GatheredIo<T> {
    shared: Shared<T>,
}

/// The write end of [`gathered`], for [`Flusher::wrap`].
pub struct Flusher<T> {
    shared: Shared<T>,
}

impl<T> Flusher<T> {
    /// Poll `conn`, then write what it gathered; when it is done, its last bytes are
    /// written before its result is returned.
    pub fn wrap<F: Future>(self, conn: F) -> FlushAfterTurn<F, T> {
        FlushAfterTurn {
            conn,
            shared: self.shared,
            done: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's future that sends its gathered writes after every poll.
    pub struct FlushAfterTurn<F: Future, T> {
        #[pin]
        conn: F,
        shared: Shared<T>,
        done: Option<F::Output>,
    }
}

impl<F: Future, T> FlushAfterTurn<F, T> {
    /// The connection's future inside (for hyper's `graceful_shutdown`).
    pub fn conn(self: Pin<&mut Self>) -> Pin<&mut F> {
        self.project().conn
    }
}

impl<F: Future, T: AsyncWrite + Unpin> Future for FlushAfterTurn<F, T> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let me = self.project();
        if me.done.is_none() {
            if let Poll::Ready(out) = me.conn.poll(cx) {
                *me.done = Some(out);
            }
        }
        let mut state = lock(me.shared);
        match state.poll_send(cx) {
            Poll::Ready(Err(e)) => {
                // The peer is gone and the bytes cannot be delivered. The connection learns
                // it from its next write, as it would have without gathering; it is polled
                // again now so that it does not wait for another event to find out.
                state.out.clear();
                state.failed.get_or_insert(e);
                if me.done.is_none() {
                    cx.waker().wake_by_ref();
                }
            }
            Poll::Pending if me.done.is_some() => return Poll::Pending,
            _ => {}
        }
        match me.done.take() {
            Some(out) => Poll::Ready(out),
            None => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GatheredIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = lock(&self.shared);
        let state = &mut *state;
        if state.ahead.is_empty() {
            if buf.remaining() >= READ_AHEAD {
                return Pin::new(&mut state.io).poll_read(cx, buf);
            }
            state.ahead.reserve(READ_AHEAD);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut state.io),
                cx,
                &mut state.ahead
            ))?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        let n = state.ahead.len().min(buf.remaining());
        buf.put_slice(&state.ahead[..n]);
        state.ahead.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GatheredIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut state = lock(&self.shared);
        if let Some(e) = state.failed.take() {
            return Poll::Ready(Err(e));
        }
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if state.out.len() + len > GATHER_LIMIT {
            ready!(state.poll_send(cx))?;
            if len > GATHER_LIMIT {
                // Nothing gathered is left: a write this big goes out as it is.
                return Pin::new(&mut state.io).poll_write_vectored(cx, bufs);
            }
        }
        state.out.reserve(len);
        for b in bufs {
            state.out.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Gathered bytes go out when the turn ends ([`FlushAfterTurn`]); a flush only
    /// reports an earlier write error.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match lock(&self.shared).failed.take() {
            Some(e) => Poll::Ready(Err(e)),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = lock(&self.shared);
        if let Some(e) = state.failed.take() {
            return Poll::Ready(Err(e));
        }
        ready!(state.poll_send(cx))?;
        Pin::new(&mut state.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::task::Waker;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A socket that records each write and each read's room, takes at most `room`
    /// bytes before it is full, and fails writes when `broken`.
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
        room: usize,
        broken: bool,
        incoming: VecDeque<u8>,
        read_rooms: Vec<usize>,
        flushes: usize,
    }

    #[derive(Clone, Default)]
    struct Mock(Arc<Mutex<Socket>>);

    impl Mock {
        fn with(&self, f: impl FnOnce(&mut Socket)) {
            f(&mut self.0.lock().unwrap());
        }
        fn writes(&self) -> Vec<Vec<u8>> {
            self.0.lock().unwrap().writes.clone()
        }
    }

    impl AsyncWrite for Mock {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let mut s = self.0.lock().unwrap();
            if s.broken {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            let n = buf.len().min(s.room);
            if n == 0 {
                return Poll::Pending;
            }
            s.room -= n;
            s.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.0.lock().unwrap().flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Mock {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let mut s = self.0.lock().unwrap();
            s.read_rooms.push(buf.remaining());
            let n = buf.remaining().min(s.incoming.len());
            let bytes: Vec<u8> = s.incoming.drain(..n).collect();
            buf.put_slice(&bytes);
            Poll::Ready(Ok(()))
        }
    }

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_turn_of_writes_and_flushes_leaves_in_one_write() {
        let mock = Mock::default();
        mock.with(|s| s.room = usize::MAX);
        let (mut io, flusher) = gathered(mock.clone());
        let conn = async move {
            // An answer's head and message (the frame writer hands them over as two
            // buffers), a flush, then its trailers and another flush: as h2 does.
            let n = io
                .write_vectored(&[IoSlice::new(b"head+"), IoSlice::new(b"message+")])
                .await
                .unwrap();
            assert_eq!(n, 13, "taken whole");
            io.flush().await.unwrap();
            io.write_all(b"trailers").await.unwrap();
            io.flush().await.unwrap();
            std::future::pending::<()>().await;
        };
        let mut turn = std::pin::pin!(flusher.wrap(conn));
        assert!(poll_once(turn.as_mut()).is_pending());
        assert_eq!(mock.writes(), vec![b"head+message+trailers".to_vec()]);
        // A TLS stream keeps records until it is flushed: the turn ends with a flush.
        assert_eq!(mock.0.lock().unwrap().flushes, 1);
    }

    #[test]
    fn over_the_limit_the_gathered_bytes_go_first_and_a_full_socket_holds_the_writer() {
        let mock = Mock::default();
        let (mut io, flusher) = gathered(mock.clone());
        let first = vec![1u8; 40 << 10];
        let second = vec![2u8; 40 << 10];
        let (a, b) = (first.clone(), second.clone());
        let conn = async move {
            io.write_all(&a).await.unwrap();
            io.write_all(&b).await.unwrap();
        };
        let mut turn = std::pin::pin!(flusher.wrap(conn));
        // The socket takes nothing: the first 40 KiB are gathered, the second write
        // would pass GATHER_LIMIT and waits for the socket.
        assert!(poll_once(turn.as_mut()).is_pending());
        assert!(mock.writes().is_empty());
        mock.with(|s| s.room = usize::MAX);
        assert!(poll_once(turn.as_mut()).is_ready());
        let sent: Vec<u8> = mock.writes().concat();
        assert_eq!(sent, [first, second].concat(), "in order, nothing lost");
        assert_eq!(
            mock.writes()[0].len(),
            40 << 10,
            "the gathered bytes were sent before the write that passed the limit"
        );
    }

    #[test]
    fn the_last_bytes_are_written_before_the_connection_ends() {
        let mock = Mock::default();
        let (mut io, flusher) = gathered(mock.clone());
        let conn = async move {
            io.write_all(b"goaway").await.unwrap();
            7
        };
        let mut turn = std::pin::pin!(flusher.wrap(conn));
        assert!(poll_once(turn.as_mut()).is_pending(), "the socket is full");
        mock.with(|s| s.room = 3);
        assert!(poll_once(turn.as_mut()).is_pending(), "half written");
        mock.with(|s| s.room = 3);
        assert_eq!(poll_once(turn.as_mut()), Poll::Ready(7));
        assert_eq!(mock.writes().concat(), b"goaway");
    }

    #[test]
    fn a_write_error_found_after_the_turn_reaches_the_connection() {
        let mock = Mock::default();
        mock.with(|s| s.broken = true);
        let (mut io, flusher) = gathered(mock.clone());
        let conn = async move {
            io.write_all(b"answer").await.unwrap();
            // The wrapper's write fails after this turn; the next write learns it.
            tokio::task::yield_now().await;
            io.write_all(b"more").await.map_err(|e| e.kind())
        };
        let mut turn = std::pin::pin!(flusher.wrap(conn));
        let mut result = poll_once(turn.as_mut());
        for _ in 0..3 {
            if result.is_ready() {
                break;
            }
            result = poll_once(turn.as_mut());
        }
        assert_eq!(result, Poll::Ready(Err(io::ErrorKind::BrokenPipe)));
    }

    #[test]
    fn small_reads_take_a_read_ahead_and_large_ones_read_directly() {
        let mock = Mock::default();
        mock.with(|s| s.incoming.extend((0..3000u32).map(|i| i as u8)));
        let (mut io, _flusher) = gathered(mock.clone());
        let mut got = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut small = [0u8; 1000];
            for _ in 0..3 {
                let n = io.read(&mut small).await.unwrap();
                got.extend_from_slice(&small[..n]);
            }
            mock.with(|s| s.incoming.extend([9u8; 100]));
            let mut large = vec![0u8; 32 << 10];
            let n = io.read(&mut large).await.unwrap();
            assert_eq!(&large[..n], &[9u8; 100]);
        });
        assert_eq!(got, (0..3000u32).map(|i| i as u8).collect::<Vec<_>>());
        let rooms = mock.0.lock().unwrap().read_rooms.clone();
        assert_eq!(
            rooms.len(),
            2,
            "one read for the three small ones: {rooms:?}"
        );
        assert!(rooms[0] >= READ_AHEAD, "{rooms:?}");
        assert_eq!(rooms[1], 32 << 10, "straight into the caller's buffer");
    }
}
