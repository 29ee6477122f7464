//! Upstream keep-alive connections: a stack of idle HTTP/1.1 senders per
//! upstream, over hyper's low-level client (`hyper::client::conn::http1`).
//!
//! Why not hyper-util's `legacy::Client`: its pool is keyed by scheme and
//! authority in a shared map behind a lock, hands connections over through
//! waiter channels and spawns a task per request to return the connection
//! once it is ready again. The proxy talks to exactly two fixed upstreams, so
//! a pool is one short mutex-protected `Vec` per upstream: take the most
//! recently used idle sender (its connection is the warmest), or connect; put
//! it back when the response body has been read to its end.
//!
//! A connection closed by the upstream while idle is noticed on checkout
//! (`is_closed`, or `ready` failing); a request that could not even be
//! written to a pooled connection is retried once on a fresh one, so a
//! keep-alive race never shows as an upstream failure.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request could not be forwarded.
pub(crate) enum SendError {
    /// No connection to the upstream could be opened in time.
    Connect,
    /// The connection failed while sending or awaiting the response.
    Upstream,
}

type Sender = SendRequest<Incoming>;

/// How long a connection may stay idle in the pool before it is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The idle connections of one upstream.
pub(crate) struct Pool {
    /// `host:port`, for connecting.
    addr: String,
    /// Idle senders with the time each was returned, oldest first.
    idle: Mutex<Vec<(Sender, Instant)>>,
    max_idle: usize,
    connect_timeout: Duration,
}

impl Pool {
    pub(crate) fn new(addr: String, max_idle: usize, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            addr,
            idle: Mutex::new(Vec::new()),
            max_idle,
            connect_timeout,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Sender, Instant)>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently returned idle sender that is still open.
    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.lock();
        while let Some((s, _)) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push((sender, crate::now()));
        }
    }

    /// Closes the connections idle for longer than `limit` (and any the
    /// upstream closed).
    pub(crate) fn evict_idle(&self, limit: Duration) {
        let now = crate::now();
        self.lock()
            .retain(|(s, since)| !s.is_closed() && now.duration_since(*since) <= limit);
    }

    async fn connect(&self) -> Result<Sender, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| SendError::Connect)?
            .map_err(|_| SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| SendError::Connect)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends `req` (origin-form URI, `Host` set) and returns the response,
    /// whose body gives the connection back to the pool when read to its end.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
    ) -> Result<Response<PooledBody>, SendError> {
        // Pooled connections first; each may turn out to be closed, in which
        // case the request comes back unsent and the next one is tried.
        while let Some(mut sender) = self.take_idle() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.wrap(resp, sender)),
                Err(mut e) => match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(SendError::Upstream),
                },
            }
        }
        let mut sender = self.connect().await?;
        match sender.send_request(req).await {
            Ok(resp) => Ok(self.wrap(resp, sender)),
            Err(_) => Err(SendError::Upstream),
        }
    }

    fn wrap(self: &Arc<Self>, resp: Response<Incoming>, sender: Sender) -> Response<PooledBody> {
        resp.map(|body| PooledBody {
            body,
            give_back: Some((sender, self.clone())),
        })
    }
}

/// An upstream response body that returns its connection to the pool once
/// it has been read to its end (a body dropped early closes the connection:
/// HTTP/1.1 cannot reuse it).
pub(crate) struct PooledBody {
    body: Incoming,
    give_back: Option<(Sender, Arc<Pool>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((sender, pool)) = self.give_back.take() {
            pool.put(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.give_back = None,
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.release(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304) may be dropped unpolled.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
