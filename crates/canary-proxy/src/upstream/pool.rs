//! The upstream connection pool and the exchanges on its connections: idle
//! keep-alive connections per upstream, writing a request on one, reading
//! the response head, and streaming the response body back, after which the
//! connection returns to the pool.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Method, Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::codec::{
    bad, encode_head, parse_head, step, BodyState, RequestFraming, ResponseHead, Step, MAX_HEAD,
};
use super::{Failed, SendError};

/// How long a connection may stay idle in the pool before it is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections beyond the [`KEEP_WARM`] most recently used are closed
/// once idle this long, so a burst's connections do not outlive it.
pub(crate) const PURGE_AFTER: Duration = Duration::from_secs(5);
/// How many idle connections per pool are kept for the whole idle timeout.
const KEEP_WARM: usize = 8;
/// First read size; doubled while reads fill it, up to [`MAX_READ`].
const MIN_READ: usize = 4096;
const MAX_READ: usize = 64 * 1024;
/// A read buffer larger than this is freed when its connection goes idle.
pub(super) const KEEP_BUFFER: usize = 16 * 1024;

/// One upstream connection.
pub(super) struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    pub(super) buf: BytesMut,
    /// The size of the next read.
    read_size: usize,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            read_size: MIN_READ,
        }
    }

    /// Reads more bytes into `buf`; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let want = self.read_size;
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want);
        }
        // `poll_read`, unlike `try_read`, takes a short read as the socket
        // drained, so the read after the next request waits for readiness
        // instead of spending a system call on EAGAIN.
        let n = ready!(poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf))?;
        if n >= want && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// False when the upstream has closed the connection (or sent bytes
    /// nobody asked for) while it was idle. Costs no system call unless the
    /// socket was reported readable.
    fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Ready to go idle: the read buffer is shrunk back if a large body grew it.
    fn idle(mut self) -> Self {
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = BytesMut::new();
        }
        self.read_size = MIN_READ;
        self
    }
}

/// The idle connections of one upstream.
pub(crate) struct Pool {
    /// `host:port`, for connecting.
    pub(super) addr: String,
    /// Idle connections with the time each was returned, oldest first.
    idle: Mutex<Vec<(Conn, Instant)>>,
    max_idle: usize,
    connect_timeout: Duration,
    /// How long a response body may go without a byte.
    body_timeout: Duration,
    /// Connections opened, counted for the metrics (shared by the pools of
    /// one upstream across workers).
    pub(super) opened: Arc<AtomicU64>,
}

impl Pool {
    pub(crate) fn new(
        addr: String,
        max_idle: usize,
        connect_timeout: Duration,
        body_timeout: Duration,
        opened: Arc<AtomicU64>,
    ) -> Arc<Self> {
        Arc::new(Self {
            addr,
            idle: Mutex::new(Vec::new()),
            max_idle,
            connect_timeout,
            body_timeout,
            opened,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(Conn, Instant)>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently returned idle connection (its socket is the warmest).
    pub(super) fn take_idle(&self) -> Option<Conn> {
        self.lock().pop().map(|(c, _)| c)
    }

    pub(super) fn put(&self, conn: Conn) {
        let mut idle = self.lock();
        if idle.len() < self.max_idle {
            idle.push((conn.idle(), crate::now()));
        }
    }

    /// How many connections are idle.
    #[cfg(test)]
    pub(super) fn idle_len(&self) -> usize {
        self.lock().len()
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`], those
    /// beyond the [`KEEP_WARM`] most recent idle for longer than
    /// [`PURGE_AFTER`], and any the upstream closed.
    pub(crate) fn evict_idle(&self) {
        let now = crate::now();
        let mut idle = self.lock();
        let warm_from = idle.len().saturating_sub(KEEP_WARM);
        let mut i = 0;
        idle.retain(|(c, since)| {
            let limit = if i < warm_from {
                PURGE_AFTER
            } else {
                IDLE_TIMEOUT
            };
            i += 1;
            now.duration_since(*since) <= limit && c.is_open()
        });
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| SendError::Connect)?
            .map_err(|_| SendError::Connect)?;
        let _ = stream.set_nodelay(true);
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Conn::new(stream))
    }

    /// Sends `req` (origin-form URI, `Host` set, hop-by-hop headers gone)
    /// and returns the response; its body gives the connection back to the
    /// pool when read to its end.
    pub(crate) async fn send<B>(
        self: &Arc<Self>,
        req: Request<B>,
    ) -> Result<Response<UpstreamBody>, SendError>
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let (parts, mut body) = req.into_parts();
        let framing = RequestFraming::of(&parts.headers, body.is_end_stream());
        let mut head = Vec::with_capacity(512);
        encode_head(&mut head, &parts, framing);
        let head_request = parts.method == Method::HEAD;
        // Safe to send twice: nothing to replay, and the method says a
        // repeat has the effect of one (RFC 9110 §9.2.2).
        let replayable = framing == RequestFraming::None && parts.method.is_idempotent();
        let mut pooled_tries = 0;
        while pooled_tries < 3 {
            let Some(mut conn) = self.take_idle() else {
                break;
            };
            if !replayable && !conn.is_open() {
                continue;
            }
            pooled_tries += 1;
            match exchange(&mut conn, &head, &mut body, framing, head_request).await {
                Ok(response) => return Ok(self.respond(conn, response)),
                Err(Failed::BeforeResponse) if replayable => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let mut conn = self.connect().await?;
        match exchange(&mut conn, &head, &mut body, framing, head_request).await {
            Ok(response) => Ok(self.respond(conn, response)),
            Err(e) => Err(e.into()),
        }
    }

    fn respond(self: &Arc<Self>, conn: Conn, head: ResponseHead) -> Response<UpstreamBody> {
        let mut body = UpstreamBody {
            conn: Some(conn),
            pool: self.clone(),
            state: head.body,
            keep_alive: head.keep_alive,
            stalled: None,
        };
        if body.state.is_done() {
            body.finish();
        }
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        response
    }
}

/// Writes the request, reads the response head.
async fn exchange<B>(
    conn: &mut Conn,
    head: &[u8],
    body: &mut B,
    framing: RequestFraming,
    head_request: bool,
) -> Result<ResponseHead, Failed>
where
    B: Body<Data = Bytes> + Unpin,
{
    conn.stream
        .write_all(head)
        .await
        .map_err(|_| Failed::BeforeResponse)?;
    if framing != RequestFraming::None {
        if let Some(early) = send_while_reading(conn, body, framing, head_request).await? {
            return Ok(early);
        }
    }
    loop {
        if !conn.buf.is_empty() {
            match parse_head(&mut conn.buf, head_request)? {
                Some(h) if h.status.is_informational() => continue,
                Some(h) => return Ok(h),
                None if conn.buf.len() > MAX_HEAD => return Err(Failed::Upstream),
                None => {}
            }
        }
        let first = conn.buf.is_empty();
        match conn.fill().await {
            Ok(0) | Err(_) if first => return Err(Failed::BeforeResponse),
            Ok(0) | Err(_) => return Err(Failed::Upstream),
            Ok(_) => {}
        }
    }
}

/// Sends the request body while reading what the upstream says meanwhile.
/// An upstream may answer before it has read the whole body (an early 413,
/// or a 200 it needed no more for) and close the connection; that answer is
/// the response, not a failure. `Some(head)` when the response head came
/// before the body was all sent (the connection is then not reused), `None`
/// when the body went out first (the head is read next, as usual).
async fn send_while_reading<B>(
    conn: &mut Conn,
    body: &mut B,
    framing: RequestFraming,
    head_request: bool,
) -> Result<Option<ResponseHead>, Failed>
where
    B: Body<Data = Bytes> + Unpin,
{
    use tokio::io::AsyncReadExt;
    let (mut rd, mut wr) = conn.stream.split();
    let buf = &mut conn.buf;
    let mut sending = std::pin::pin!(send_body(&mut wr, body, framing));
    let (mut sent, mut write_failed, mut read_closed) = (false, false, false);
    loop {
        while !buf.is_empty() {
            match parse_head(buf, head_request)? {
                Some(h) if h.status.is_informational() => continue,
                Some(mut h) => {
                    h.keep_alive = false;
                    return Ok(Some(h));
                }
                None if buf.len() > MAX_HEAD => return Err(Failed::Upstream),
                None => break,
            }
        }
        if sent && !write_failed {
            return Ok(None);
        }
        if read_closed && (sent || write_failed) {
            // Neither more to send nor anything more to read.
            return Err(Failed::Upstream);
        }
        if buf.capacity() - buf.len() < MIN_READ {
            buf.reserve(MIN_READ);
        }
        tokio::select! {
            r = &mut sending, if !sent => match r {
                Ok(()) => sent = true,
                // The upstream stopped reading: look for its answer.
                Err(Failed::Upstream) => (sent, write_failed) = (true, true),
                Err(e) => return Err(e),
            },
            n = rd.read_buf(buf), if !read_closed => match n {
                Ok(0) | Err(_) => read_closed = true,
                Ok(_) => {}
            },
        }
    }
}

async fn send_body<W, B>(
    stream: &mut W,
    body: &mut B,
    framing: RequestFraming,
) -> Result<(), Failed>
where
    W: tokio::io::AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
{
    let chunked = framing == RequestFraming::Chunked;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Failed::Client)?;
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers are not forwarded
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let size = format!("{:x}\r\n", data.len());
            stream
                .write_all(size.as_bytes())
                .await
                .map_err(|_| Failed::Upstream)?;
        }
        stream
            .write_all_buf(&mut data)
            .await
            .map_err(|_| Failed::Upstream)?;
        if chunked {
            stream
                .write_all(b"\r\n")
                .await
                .map_err(|_| Failed::Upstream)?;
        }
    }
    if chunked {
        stream
            .write_all(b"0\r\n\r\n")
            .await
            .map_err(|_| Failed::Upstream)?;
    }
    Ok(())
}

/// An upstream response body, streamed from the connection; the connection
/// goes back to the pool once the body has been read to its end (a body
/// dropped early closes it: HTTP/1.1 cannot reuse it). A body that goes the
/// pool's body timeout without a byte fails, so a stalled upstream cannot
/// hold the client forever.
pub(crate) struct UpstreamBody {
    conn: Option<Conn>,
    pool: Arc<Pool>,
    state: BodyState,
    keep_alive: bool,
    /// Armed only while waiting for bytes (a body that is already buffered,
    /// the usual case, never sets a timer).
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl UpstreamBody {
    /// The body has been read to its end: the connection is reusable unless
    /// the upstream said otherwise or sent more than the response.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.pool.put(conn);
            }
        }
    }

    /// Ends the body with `error`; the connection is closed, not reused.
    fn fail(&mut self, error: io::Error) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.stalled = None;
        Poll::Ready(Some(Err(error.into())))
    }
}

/// The body's error type.
type BoxError = Box<dyn StdError + Send + Sync>;

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match step(&mut this.state, &mut conn.buf) {
                Ok(Step::Data(data)) => {
                    if this.state == BodyState::Done {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Done) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => return this.fail(e),
            }
            let filled = match conn.poll_fill(cx) {
                Poll::Ready(r) => r,
                Poll::Pending => {
                    let limit = this.pool.body_timeout;
                    let stalled = this
                        .stalled
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                    if stalled.as_mut().poll(cx).is_ready() {
                        return this.fail(bad("upstream body stalled"));
                    }
                    return Poll::Pending;
                }
            };
            this.stalled = None;
            match filled {
                Ok(0) if this.state == BodyState::Close => {
                    this.conn = None;
                    this.state = BodyState::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(bad("upstream closed mid-body")),
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Length(n) => SizeHint::with_exact(n),
            BodyState::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
