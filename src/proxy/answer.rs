//! Answers the sidecar makes itself (413, 408, 400, 502, 504): a short text naming the
//! setting or the upstream at fault, with the request id set.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full, LengthLimitError};

use super::{ClientBody, Proxy};

impl Proxy {
    /// A response the sidecar itself makes: `shadowgate: {why}`, request id set.
    pub(super) fn local_response(
        &self,
        status: StatusCode,
        why: &str,
        id: &HeaderValue,
    ) -> Response<ClientBody> {
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!(
            "shadowgate: {why}\n"
        )))));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(self.request_id_header.clone(), id.clone());
        resp
    }

    /// The answer to a request whose body failed on the client's side (`e` or a cause of
    /// it): `413` over `limits.max_body_bytes`, `408` for a pause over
    /// `limits.body_read_timeout`, `400` naming a framing error or saying the body ended
    /// early. `None` when the client's body is not what failed.
    pub(super) fn body_failed(
        &self,
        e: &(dyn std::error::Error + 'static),
        request_id: &str,
        id: &HeaderValue,
    ) -> Option<Response<ClientBody>> {
        if find_in_chain::<LengthLimitError>(e).is_some() {
            return Some(self.local_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body over limits.max_body_bytes",
                id,
            ));
        }
        Some(match find_in_chain::<h1::server::Error>(e)? {
            h1::server::Error::BodyTimeout(_) => {
                // The rest of the body is never read, so the connection cannot be reused.
                tracing::debug!(request_id = %request_id, "request body stalled; answering 408");
                let mut resp = self.local_response(
                    StatusCode::REQUEST_TIMEOUT,
                    "request body stalled longer than limits.body_read_timeout",
                    id,
                );
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                resp
            }
            framing @ h1::server::Error::Body(h1::body::Error::Chunk(_)) => {
                self.local_response(StatusCode::BAD_REQUEST, &framing.to_string(), id)
            }
            _ => self.local_response(StatusCode::BAD_REQUEST, "request body ended early", id),
        })
    }
}

/// `e` or the first of its causes that is an `E`: a request body's own error reaches us
/// wrapped in the client's (`request body for …` → `E`).
fn find_in_chain<'e, E: std::error::Error + 'static>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e E> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(found) = s.downcast_ref::<E>() {
            return Some(found);
        }
        source = s.source();
    }
    None
}

/// The innermost cause: "Connection refused (os error 111)" rather than "client error (Connect)".
pub(super) fn short_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}
