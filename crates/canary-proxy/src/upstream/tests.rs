//! The upstream client against scripted upstreams on loopback: each test
//! server answers the requests it reads with canned bytes, so every framing
//! rule is exercised exactly as it arrives on the wire.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame};
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::pool::KEEP_BUFFER;
use super::*;

/// One scripted answer.
enum Reply {
    /// These bytes, then wait for the next request.
    Send(&'static [u8]),
    /// These bytes, then close the connection.
    SendAndClose(&'static [u8]),
    /// These bytes one at a time, a millisecond apart.
    Dribble(&'static [u8]),
    /// A body of this many bytes with a content-length head.
    Large(usize),
}

#[derive(Default)]
struct Seen {
    accepts: AtomicUsize,
    requests: Mutex<Vec<Vec<u8>>>,
}

impl Seen {
    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
    fn request(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.requests.lock().unwrap()[i]).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request (head and body, raw) off `s`; `None` at the end.
async fn read_request(s: &mut tokio::net::TcpStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(end) = find(pending, b"\r\n\r\n") {
            let head_len = end + 4;
            let head = String::from_utf8_lossy(&pending[..head_len]).to_lowercase();
            let total = if head.contains("transfer-encoding: chunked") {
                find(&pending[head_len..], b"0\r\n\r\n").map(|i| head_len + i + 5)
            } else if let Some(i) = head.find("content-length: ") {
                let n: usize = head[i + 16..]
                    .split("\r\n")
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                Some(head_len + n).filter(|&t| t <= pending.len())
            } else {
                Some(head_len)
            };
            if let Some(total) = total {
                return Some(pending.drain(..total).collect());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// Starts a scripted upstream; answers are used in order, across connections.
async fn upstream(replies: Vec<Reply>) -> (Arc<Pool>, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Seen::default());
    let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            seen2.accepts.fetch_add(1, Ordering::SeqCst);
            let (seen, replies) = (seen2.clone(), replies.clone());
            tokio::spawn(async move {
                let mut pending = Vec::new();
                while let Some(req) = read_request(&mut s, &mut pending).await {
                    seen.requests.lock().unwrap().push(req);
                    let Some(reply) = replies.lock().unwrap().pop_front() else {
                        return;
                    };
                    match reply {
                        Reply::Send(b) => s.write_all(b).await.unwrap(),
                        Reply::SendAndClose(b) => {
                            s.write_all(b).await.unwrap();
                            return;
                        }
                        Reply::Dribble(b) => {
                            for byte in b {
                                s.write_all(&[*byte]).await.unwrap();
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                        Reply::Large(n) => {
                            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n");
                            s.write_all(head.as_bytes()).await.unwrap();
                            let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
                            s.write_all(&body).await.unwrap();
                        }
                    }
                }
            });
        }
    });
    (
        Pool::new(
            addr,
            64,
            Duration::from_secs(2),
            Duration::from_secs(5),
            Arc::default(),
        ),
        seen,
    )
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "upstream")
        .body(Empty::new())
        .unwrap()
}

async fn body_of(r: Response<UpstreamBody>) -> Result<Bytes, Box<dyn StdError + Send + Sync>> {
    r.into_body().collect().await.map(|c| c.to_bytes())
}

const OK_HELLO: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello";

#[tokio::test]
async fn content_length_responses_reuse_one_connection() {
    let (pool, seen) = upstream(vec![
        Reply::Send(OK_HELLO),
        Reply::Send(OK_HELLO),
        Reply::Send(OK_HELLO),
    ])
    .await;
    for i in 0..3 {
        let r = pool.send(get(&format!("/p/{i}?q=1"))).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(body_of(r).await.unwrap(), "hello");
    }
    assert_eq!(seen.accepts(), 1);
    assert_eq!(pool.idle_len(), 1);
    assert!(seen
        .request(2)
        .starts_with("GET /p/2?q=1 HTTP/1.1\r\nhost: upstream\r\n"));
}

#[tokio::test]
async fn a_chunked_body_is_decoded_and_its_connection_reused() {
    let (pool, seen) = upstream(vec![
        Reply::Send(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
        ),
        Reply::Send(OK_HELLO),
    ])
    .await;
    let r = pool.send(get("/")).await.unwrap();
    assert_eq!(r.headers()["transfer-encoding"], "chunked");
    assert!(!r.headers().contains_key("content-length"));
    assert_eq!(body_of(r).await.unwrap(), "hello world");
    let r = pool.send(get("/")).await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), "hello");
    assert_eq!(seen.accepts(), 1);
}

#[tokio::test]
async fn a_body_without_a_length_runs_to_the_close() {
    let (pool, seen) = upstream(vec![
        Reply::SendAndClose(b"HTTP/1.1 200 OK\r\nx-b: 2\r\n\r\nall of it"),
        Reply::Send(OK_HELLO),
    ])
    .await;
    let r = pool.send(get("/")).await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), "all of it");
    assert_eq!(pool.idle_len(), 0);
    let r = pool.send(get("/")).await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), "hello");
    assert_eq!(seen.accepts(), 2);
}

#[tokio::test]
async fn head_204_and_304_responses_have_no_body() {
    let (pool, seen) = upstream(vec![
        Reply::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"),
        Reply::Send(b"HTTP/1.1 204 No Content\r\n\r\n"),
        Reply::Send(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n"),
        Reply::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx"),
    ])
    .await;
    let head = Request::head("/")
        .header("host", "u")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let r = pool.send(head).await.unwrap();
    assert_eq!(r.headers()["content-length"], "100");
    assert!(r.body().is_end_stream());
    assert_eq!(pool.idle_len(), 1, "given back without the body being read");
    drop(r);
    for status in [204, 304] {
        let r = pool.send(get("/")).await.unwrap();
        assert_eq!(r.status(), status);
        assert_eq!(body_of(r).await.unwrap(), "");
    }
    let r = pool.send(get("/")).await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), "x");
    assert_eq!(seen.accepts(), 1);
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let (pool, _) = upstream(vec![Reply::Send(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
          HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    let r = pool.send(get("/")).await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(!r.headers().contains_key("link"));
    assert_eq!(body_of(r).await.unwrap(), "ok");
}

#[tokio::test]
async fn request_bodies_are_forwarded_with_their_framing() {
    let (pool, seen) = upstream(vec![Reply::Send(OK_HELLO), Reply::Send(OK_HELLO)]).await;
    let with_length = Request::post("/a")
        .header("host", "u")
        .header("content-length", "3")
        .header("expect", "100-continue")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    body_of(pool.send(with_length).await.unwrap())
        .await
        .unwrap();
    let frames = frames(&[b"abc", b"", b"de"]);
    let streamed = Request::post("/b")
        .header("host", "u")
        .body(frames)
        .unwrap();
    body_of(pool.send(streamed).await.unwrap()).await.unwrap();
    let first = seen.request(0);
    assert!(first.ends_with("content-length: 3\r\n\r\nabc"), "{first:?}");
    assert!(!first.contains("expect"));
    let second = seen.request(1);
    assert!(
        second.ends_with("transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        "{second:?}"
    );
    assert_eq!(seen.accepts(), 1);
}

/// A body of these frames, with no length known in advance.
struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn frames(parts: &[&'static [u8]]) -> Frames {
    Frames(parts.iter().map(|p| Bytes::from_static(p)).collect())
}

#[tokio::test]
async fn a_pooled_connection_closed_while_idle_is_replaced() {
    let (pool, seen) = upstream(vec![
        Reply::SendAndClose(OK_HELLO),
        Reply::Send(OK_HELLO),
        Reply::SendAndClose(OK_HELLO),
        Reply::Send(OK_HELLO),
    ])
    .await;
    // A GET is resent on a fresh connection when the pooled one is dead.
    body_of(pool.send(get("/")).await.unwrap()).await.unwrap();
    assert_eq!(pool.idle_len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = pool.send(get("/")).await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), "hello");
    assert_eq!(seen.accepts(), 2);
    // A POST is never sent on a connection already closed.
    body_of(pool.send(get("/")).await.unwrap()).await.unwrap();
    assert_eq!(pool.idle_len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let post = Request::post("/")
        .header("host", "u")
        .header("content-length", "1")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let r = pool.send(post).await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), "hello");
    assert_eq!(seen.accepts(), 3);
    assert_eq!(pool.opened.load(Ordering::Relaxed), 3);
    assert_eq!(seen.requests.lock().unwrap().len(), 4, "nothing sent twice");
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let (pool, _) = upstream(vec![Reply::Send(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    )])
    .await;
    let r = pool.send(get("/")).await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), "ok");
    assert_eq!(pool.idle_len(), 0);
}

#[tokio::test]
async fn a_response_in_pieces_is_assembled() {
    let (pool, _) = upstream(vec![Reply::Dribble(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )])
    .await;
    let r = pool.send(get("/")).await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), "abc");
    assert_eq!(pool.idle_len(), 1);
}

#[tokio::test]
async fn a_large_body_streams_intact_and_its_buffer_is_not_kept() {
    let n = 1 << 20;
    let (pool, _) = upstream(vec![Reply::Large(n), Reply::Send(OK_HELLO)]).await;
    let r = pool.send(get("/")).await.unwrap();
    let body = body_of(r).await.unwrap();
    assert_eq!(body.len(), n);
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    let conn = pool.take_idle().unwrap();
    assert!(conn.buf.capacity() <= KEEP_BUFFER);
    pool.put(conn);
    let r = pool.send(get("/")).await.unwrap();
    assert_eq!(body_of(r).await.unwrap(), "hello");
}

#[tokio::test]
async fn malformed_or_cut_short_responses_are_upstream_errors() {
    let (pool, _) = upstream(vec![Reply::SendAndClose(b"NOT HTTP AT ALL\r\n\r\n")]).await;
    assert!(matches!(
        pool.send(get("/")).await,
        Err(SendError::Upstream)
    ));
    let (pool, _) = upstream(vec![Reply::SendAndClose(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
    )])
    .await;
    let r = pool.send(get("/")).await.unwrap();
    assert!(body_of(r).await.is_err());
    assert_eq!(pool.idle_len(), 0);
    let (pool, _) = upstream(vec![Reply::SendAndClose(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    )])
    .await;
    let r = pool.send(get("/")).await.unwrap();
    assert!(body_of(r).await.is_err());
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pool = Pool::new(
        format!("127.0.0.1:{port}"),
        4,
        Duration::from_secs(1),
        Duration::from_secs(1),
        Arc::default(),
    );
    assert!(matches!(pool.send(get("/")).await, Err(SendError::Connect)));
}

#[tokio::test]
async fn connections_closed_by_the_upstream_are_swept() {
    let (pool, _) = upstream(vec![Reply::SendAndClose(OK_HELLO)]).await;
    body_of(pool.send(get("/")).await.unwrap()).await.unwrap();
    assert_eq!(pool.idle_len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    pool.evict_idle();
    assert_eq!(pool.idle_len(), 0);
}

#[tokio::test]
async fn a_body_that_stalls_fails_after_the_body_timeout() {
    let (pool, _) = upstream(vec![Reply::Send(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
    )])
    .await;
    let pool = Pool::new(
        pool.addr.clone(),
        4,
        Duration::from_secs(1),
        Duration::from_millis(100),
        Arc::default(),
    );
    let r = pool.send(get("/")).await.unwrap();
    let started = crate::now();
    // Bounded, so that a body that never times out fails the test instead
    // of hanging it.
    let e = tokio::time::timeout(Duration::from_secs(3), body_of(r))
        .await
        .expect("the stalled body was not cut off within 3 s")
        .unwrap_err();
    assert!(e.to_string().contains("stalled"), "{e}");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(pool.idle_len(), 0);
}

/// A request body that fails after its first frame, like a client that
/// goes away mid-upload.
struct BrokenUpload(bool);

impl Body for BrokenUpload {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(Some(Err(std::io::Error::other("client went away"))))
        } else {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"part")))))
        }
    }
}

#[tokio::test]
async fn a_client_upload_that_breaks_off_is_the_clients_failure() {
    let (pool, _) = upstream(vec![Reply::Send(OK_HELLO)]).await;
    let req = Request::post("/")
        .header("host", "u")
        .header("content-length", "100")
        .body(BrokenUpload(false))
        .unwrap();
    assert!(matches!(pool.send(req).await, Err(SendError::Client)));
    assert_eq!(
        pool.idle_len(),
        0,
        "a half-sent request's connection is not reused"
    );
}

/// An upstream that answers after the request head, reads no body and
/// closes (as a server refusing an upload with 413, or answering 200 to a
/// request whose body it does not need).
async fn early_answerer(reply: &'static [u8]) -> Arc<Pool> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut pending = Vec::new();
        while find(&pending, b"\r\n\r\n").is_none() {
            let mut chunk = [0u8; 1024];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = s.write_all(reply).await;
        // Closing with most of the body unread resets the connection.
        drop(s);
    });
    Pool::new(
        addr,
        64,
        Duration::from_secs(2),
        Duration::from_secs(5),
        Arc::default(),
    )
}

/// Issue 10: a 1 MB POST got a 502 (the upstream's failure) where the
/// backend alone answered: the whole body was written before the response
/// was read, so an upstream that answered early and closed was an error.
#[tokio::test]
async fn an_upstream_that_answers_before_reading_the_body_is_answered() {
    for (reply, status) in [
        (&b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!"[..], 413),
        (&b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"[..], 200),
    ] {
        let pool = early_answerer(reply).await;
        // More than the socket buffers hold, so the upstream's close comes
        // while the body is still being written.
        let body = Full::new(Bytes::from(vec![b'x'; 32 << 20]));
        let req = Request::post("/upload")
            .header("content-length", (32u32 << 20).to_string())
            .body(body)
            .unwrap();
        let r = pool.send(req).await.unwrap_or_else(|e| panic!("{status}: {e:?}"));
        assert_eq!(r.status().as_u16(), status);
        let got = body_of(r).await.unwrap();
        assert!(got == "big!" || got == "ok", "{got:?}");
        assert_eq!(pool.idle_len(), 0, "a connection cut mid-body is not reused");
    }
}
