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

mod pool;

pub(crate) use pool::{Pool, SendError, UpstreamBody, PURGE_AFTER};

#[cfg(test)]
mod tests;
