//! HTTP/1.1 (RFC 9110, RFC 9112) for a reverse proxy: the server side that clients
//! connect to and a keep-alive client for the origins behind it. It knows nothing of
//! what it carries; the product wires a handler to [`server::Server`] and sends with
//! [`client::Client`].
//!
//! It exists beside hyper because a proxy in front of model servers uses a small part
//! of HTTP/1.1, and doing only that part, with a socket per task and bodies as slices of
//! the read buffer, costs less per request than hyper's general machinery. Where a rule
//! leaves room, it answers as nginx 1.22 does by default, and reads as strictly as h11.
//!
//! # Layout
//!
//! - [`server`]: connections from clients, the accept loop, the connection cap;
//!   its wire format (request heads in, response heads out) in `server/wire.rs`.
//! - [`client`]: the pool of connections to one origin; its wire format (request heads
//!   out, response heads in) in `client/wire.rs`.
//! - [`body`]: bodies both ways: the length, chunked and read-until-close decoder, the
//!   chunk encoder.
//!
//! # Implemented
//!
//! - HTTP/1.1 and HTTP/1.0 requests, keep-alive (HTTP/1.0 only with
//!   `connection: keep-alive`), pipelining (answered in order), `expect: 100-continue`
//!   (`100 Continue` sent when the handler first reads the body).
//! - Request targets in origin form (`/path?query`), absolute form with an `http` or
//!   `https` scheme, and `*` for `OPTIONS`.
//! - Bodies framed by `content-length` (several equal values accepted, as h11 does) or
//!   `transfer-encoding: chunked`; responses also read until the connection closes.
//! - Timeouts: for a whole request head, for each pause in a request body; a cap on open
//!   connections; graceful shutdown.
//! - Client: idle connections pooled per origin and checked before reuse, TLS (rustls),
//!   interim `1xx` answers skipped, a request sent again on a fresh connection only when
//!   its method is idempotent (RFC 9110 section 9.2.2) and its kept connection closed
//!   before any answer.
//!
//! # Refused, with the status a client gets
//!
//! A refused request head is answered by the server itself and the connection closes;
//! the handler never sees it. An upstream's refused answer is a [`client::Error`], which
//! a proxy answers with `502`.
//!
//! | what | status |
//! |---|---|
//! | a head that is not HTTP/1.x (httparse: bad request line, field syntax, `Host : x`, obs-fold, HTTP/2.0) | 400 |
//! | a head over 64 KiB ([`MAX_HEAD_BYTES`]) or 100 fields ([`MAX_HEADERS`]) | 431 |
//! | `CONNECT` (nginx 1.21.1+: "client sent CONNECT method"), `TRACE` (nginx) | 405 |
//! | authority form (`GET host:443`), another scheme (`ftp://`), `*` for a method other than `OPTIONS` | 400 |
//! | HTTP/1.1 without `Host`, `Host` twice (any version), a `Host` that is not `uri-host[:port]` (`a b/c`, `user@h`) | 400 |
//! | `transfer-encoding` other than exactly `chunked` (`gzip, chunked`, `identity, chunked`, `identity`) | 501 |
//! | `transfer-encoding` twice, with an empty list element (`, chunked`), `chunked, chunked`; with `content-length`; in HTTP/1.0 | 400 |
//! | `content-length` that is not one decimal number (`-1`, `+1`, `3` and `4`) | 400 |
//! | a chunk size with whitespace or a sign before it, junk after it, a bare CR (or any control) in an extension, a line not ended by CRLF, chunk data not followed by CRLF, a trailer line that is not a header field, trailers over 64 KiB | the body fails with [`server::Error::Body`] (400) |
//! | part of a head, not all of it, within the head timeout | 408 |
//! | a pause in the body longer than the body timeout | the body fails with [`server::Error::BodyTimeout`] (408) |
//! | more open connections than the cap | 503, without reading the request |
//! | upstream: a head over 64 KiB, arriving in one read or many | client error (502) |
//! | upstream: `101 Switching Protocols` (never asked for: see below) | client error (502) |
//! | upstream: `transfer-encoding` other than exactly `chunked`, malformed as above, or a bad `content-length` | client error (502) |
//! | upstream: the same chunk rules as above | the body fails |
//!
//! Dropped silently, as nginx does by default:
//!
//! - request header names with `_` (`underscores_in_headers off`): `X_Forwarded_For`
//!   never reaches the handler, so it cannot pass for `X-Forwarded-For`;
//! - `upgrade` in requests: this crate switches no protocols (no WebSocket, no h2c), so
//!   an upgrade request is served as the plain HTTP request it also is, which is what
//!   nginx does without WebSocket configuration. The client never sends `upgrade`,
//!   so any `101` it receives is a broken answer.
//!
//! # Re-framed
//!
//! Bodies are streamed, not buffered, but their framing is regenerated on each hop:
//!
//! - Requests go upstream with `content-length` when the length is known (from the body
//!   or the client's own `content-length`), else `transfer-encoding: chunked`; a GET
//!   without a body with neither.
//! - Responses go to the client with `content-length` when known, else chunked
//!   (HTTP/1.1) or until close (HTTP/1.0); HEAD, 1xx, 204 and 304 keep their
//!   `content-length` and carry no body.
//! - Chunk sizes and extensions, trailer fields and the `trailer` field are dropped.
//! - `connection`, `keep-alive`, `proxy-connection`, `te` and `upgrade` are not copied
//!   from one connection to the other: each side writes its own `connection`
//!   (`close` when the connection ends after the message, `keep-alive` for an HTTP/1.0
//!   client that asked for it). `date` is added to responses that have none.
//! - An upstream response with both `transfer-encoding: chunked` and `content-length`
//!   is read as chunked and its connection not reused (RFC 9112 section 6.3).

#![forbid(unsafe_code)]

pub mod body;
pub mod client;
mod fields;
pub mod server;

/// Most header fields a head may carry (hyper's limit too).
pub const MAX_HEADERS: usize = 100;
/// Longest head accepted, from clients and from upstreams.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
