//! Upstream HTTP/1.1: the proxy's own small client and its keep-alive pool.
//!
//! Why not hyper's client: measured under `bench/proxy.sh`, every upstream
//! connection of `hyper::client::conn::http1` held about 27 KiB (an 8 KiB
//! read buffer, a write buffer, and a request channel whose first blocks
//! alone are 2 × 6 KiB) and ran as a task of its own, so every request went
//! from the client connection's task to the upstream connection's task and
//! back: two wake-ups and two channel hand-offs. The proxy talks to two fixed
//! upstreams with plain HTTP/1.1, so here the request's own task writes the
//! request on a pooled socket and reads the response from it; an idle
//! connection is a socket and a small read buffer.
//!
//! What it speaks (RFC 9112):
//! - requests: the head as received (minus `Expect`, which the server side
//!   has answered already); a body with `Content-Length` is copied, any
//!   other body is sent chunked;
//! - responses: `1xx` interim responses are skipped; the body is framed by
//!   `Transfer-Encoding: chunked` (decoded here; the server side re-frames
//!   it; trailer fields are dropped), `Content-Length`, or the end of the
//!   connection; responses to `HEAD` and `204`/`304` have none;
//! - keep-alive unless the response says `Connection: close` (or is an
//!   HTTP/1.0 response without `keep-alive`), or its body ran to the close.
//!
//! A pooled connection the upstream closed while it was idle is noticed
//! when the request fails before any byte of the response came back; an
//! idempotent request without a body is then sent again on another
//! connection, so the keep-alive race never shows as an upstream failure. A
//! request with a body cannot be replayed, so its connection is checked for
//! a pending close before it is used.
//!
//! `pool` holds the connections and does the I/O: the pool, one exchange
//! on a connection, and the streamed response body. `codec` holds the
//! HTTP/1.1 message rules it applies, as functions of bytes.

mod codec;
mod pool;

pub(crate) use pool::{Pool, UpstreamBody, PURGE_AFTER};

/// Why a request could not be forwarded.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection to the upstream could be opened in time.
    Connect,
    /// The connection failed, or the upstream's answer was not HTTP/1.1.
    Upstream,
    /// The client's request body failed (the client went away mid-upload).
    Client,
}

/// Why an exchange failed.
enum Failed {
    /// The connection failed before any byte of a response came back (on a
    /// pooled connection: most likely closed by the upstream while idle).
    BeforeResponse,
    /// The connection or the response failed later.
    Upstream,
    /// The client's body failed.
    Client,
}

impl From<Failed> for SendError {
    fn from(f: Failed) -> Self {
        match f {
            Failed::BeforeResponse | Failed::Upstream => SendError::Upstream,
            Failed::Client => SendError::Client,
        }
    }
}

/// Feeds `data` to the response parser as an upstream would send it, in
/// pieces of `piece` bytes: the head (interim responses skipped), then the
/// body to its end. For the fuzz targets: any input must end in a head and
/// a body, or an error, never a panic or a loop.
#[cfg(feature = "fuzzing")]
pub(crate) fn exercise_response(data: &[u8], head_request: bool, piece: usize) {
    use bytes::BytesMut;
    let piece = piece.max(1);
    let mut chunks = data.chunks(piece);
    let mut buf = BytesMut::new();
    let mut head = None;
    while head.is_none() {
        match codec::parse_head(&mut buf, head_request) {
            Ok(Some(h)) if h.status.is_informational() => continue,
            Ok(Some(h)) => head = Some(h),
            Ok(None) if buf.len() > codec::MAX_HEAD => return,
            Ok(None) => match chunks.next() {
                Some(c) => buf.extend_from_slice(c),
                None => return,
            },
            Err(_) => return,
        }
    }
    let Some(mut h) = head else { return };
    loop {
        match codec::step(&mut h.body, &mut buf) {
            Ok(codec::Step::Done) | Err(_) => return,
            Ok(codec::Step::Data(_)) => {}
            Ok(codec::Step::NeedMore) => match chunks.next() {
                Some(c) => buf.extend_from_slice(c),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests;
