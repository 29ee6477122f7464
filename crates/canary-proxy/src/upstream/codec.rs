//! The HTTP/1.1 codec of the upstream client (RFC 9112), without I/O:
//! encoding a request head, parsing a response head, and framing a response
//! body (`Content-Length`, chunked, or delimited by the connection's close)
//! out of the bytes read so far.
//!
//! `step` and the helpers under it run once per body frame inside the
//! pool's `poll_frame`; they are `#[inline]` so that they are inlined there
//! although they live in another module (another codegen unit). Once per
//! request, `encode_head` and `parse_head` are called from the pool's
//! generic code, which is compiled where the server uses it: ordinary calls.

use std::io;

use bytes::{Bytes, BytesMut};
use hyper::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING,
};
use hyper::{HeaderMap, StatusCode};

use super::Failed;

/// The longest response head accepted.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields accepted in a response head.
const MAX_HEADERS: usize = 128;
/// How the request body is sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RequestFraming {
    /// No body.
    None,
    /// Copied as it is: the head has a `Content-Length`.
    Length,
    /// Chunked: the length is not known in advance.
    Chunked,
}

impl RequestFraming {
    pub(super) fn of(headers: &HeaderMap, end_stream: bool) -> Self {
        if headers.contains_key(TRANSFER_ENCODING) {
            RequestFraming::Chunked
        } else if let Some(len) = headers.get(CONTENT_LENGTH) {
            if len.as_bytes() == b"0" {
                RequestFraming::None
            } else {
                RequestFraming::Length
            }
        } else if end_stream {
            RequestFraming::None
        } else {
            RequestFraming::Chunked
        }
    }
}

pub(super) fn encode_head(
    out: &mut Vec<u8>,
    parts: &hyper::http::request::Parts,
    framing: RequestFraming,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if name == EXPECT || (framing == RequestFraming::Chunked && name == CONTENT_LENGTH) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == RequestFraming::Chunked && !parts.headers.contains_key(TRANSFER_ENCODING) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed response head.
pub(super) struct ResponseHead {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: BodyState,
    pub(super) keep_alive: bool,
}

/// Parses a complete response head off the front of `buf`; `None` when
/// more bytes are needed.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, Failed> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Failed::Upstream),
    };
    let (status, http10) = status_of(parsed.code, parsed.version)?;
    let named = name_fields(parsed.headers, buf.as_ptr() as usize)?;
    let head = buf.split_to(len).freeze();
    if status.is_informational() {
        return Ok(Some(ResponseHead::interim(status)));
    }
    let mut fields = read_fields(named, &head, http10)?;
    let body = body_framing(status, head_request, &mut fields);
    Ok(Some(ResponseHead {
        status,
        // A body that runs to the close leaves nothing to reuse.
        keep_alive: fields.keep_alive && !matches!(body, BodyState::Close),
        headers: fields.headers,
        body,
    }))
}

impl ResponseHead {
    /// A `1xx` interim response: skipped, its fields are not kept.
    fn interim(status: StatusCode) -> Self {
        ResponseHead {
            status,
            headers: HeaderMap::new(),
            body: BodyState::Done,
            keep_alive: true,
        }
    }
}

/// The status of the status line, and whether the response is HTTP/1.0.
fn status_of(code: Option<u16>, version: Option<u8>) -> Result<(StatusCode, bool), Failed> {
    let code = code.ok_or(Failed::Upstream)?;
    let status = StatusCode::from_u16(code).map_err(|_| Failed::Upstream)?;
    if code == 101 {
        // An upgrade was never asked for: `Upgrade` is not forwarded.
        return Err(Failed::Upstream);
    }
    Ok((status, version == Some(0)))
}

/// A field's name and where its value lies in the head (`start..end`).
type NamedField = (HeaderName, usize, usize);

/// Each field's name, and its value as offsets into the head that starts
/// at `base`: values are kept as slices of the head's bytes, one copy-free
/// `Bytes` for the whole head.
fn name_fields(fields: &[httparse::Header<'_>], base: usize) -> Result<Vec<NamedField>, Failed> {
    let mut named = Vec::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Failed::Upstream)?;
        let start = field.value.as_ptr() as usize - base;
        named.push((name, start, start + field.value.len()));
    }
    Ok(named)
}

/// A final response's fields, and what they say about framing and reuse.
struct Fields {
    headers: HeaderMap,
    /// Whether the connection may be reused (`Connection`, or the version's
    /// default).
    keep_alive: bool,
    /// With `Transfer-Encoding`: whether its last coding is `chunked`.
    chunked: Option<bool>,
    /// With `Content-Length` (every copy of it the same).
    length: Option<u64>,
}

/// Builds the header map from the fields of `head` and reads the ones that
/// frame the body or decide reuse.
fn read_fields(named: Vec<NamedField>, head: &Bytes, http10: bool) -> Result<Fields, Failed> {
    let mut fields = Fields {
        headers: HeaderMap::with_capacity(named.len()),
        keep_alive: !http10,
        chunked: None,
        length: None,
    };
    for (name, start, end) in named {
        let value =
            HeaderValue::from_maybe_shared(head.slice(start..end)).map_err(|_| Failed::Upstream)?;
        if name == TRANSFER_ENCODING {
            fields.chunked = Some(last_coding_is_chunked(value.as_bytes()));
        } else if name == CONTENT_LENGTH {
            let n = content_length(value.as_bytes()).ok_or(Failed::Upstream)?;
            if fields.length.is_some_and(|l| l != n) {
                return Err(Failed::Upstream);
            }
            fields.length = Some(n);
        } else if name == CONNECTION {
            fields.keep_alive = connection_keep_alive(value.as_bytes(), fields.keep_alive);
        }
        fields.headers.append(name, value);
    }
    Ok(fields)
}

/// Whether the last coding of a `Transfer-Encoding` value is `chunked`.
fn last_coding_is_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|&b| b == b',').next().unwrap_or(b"");
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// A `Content-Length` value as a number; `None` when it is not one.
fn content_length(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
}

/// `keep_alive` as the `close` and `keep-alive` tokens of a `Connection`
/// value leave it.
fn connection_keep_alive(value: &[u8], mut keep_alive: bool) -> bool {
    for token in value.split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            keep_alive = false;
        } else if token.eq_ignore_ascii_case(b"keep-alive") {
            keep_alive = true;
        }
    }
    keep_alive
}

/// How the body of a final response is framed (RFC 9112 §6.3); with
/// `Transfer-Encoding`, the `Content-Length` it overrides is dropped.
fn body_framing(status: StatusCode, head_request: bool, fields: &mut Fields) -> BodyState {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        BodyState::Done
    } else if let Some(chunked) = fields.chunked {
        fields.headers.remove(CONTENT_LENGTH);
        if chunked {
            BodyState::Chunked(Chunk::Size)
        } else {
            BodyState::Close
        }
    } else if let Some(n) = fields.length {
        BodyState::Length(n)
    } else {
        BodyState::Close
    }
}

/// Where reading a response body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyState {
    /// This many bytes to go.
    Length(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// Everything until the upstream closes the connection.
    Close,
    /// Read to its end.
    Done,
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes to go.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailer,
}

impl BodyState {
    #[inline]
    pub(super) fn is_done(&self) -> bool {
        matches!(self, BodyState::Done | BodyState::Length(0))
    }
}

/// What the buffered bytes gave.
pub(super) enum Step {
    Data(Bytes),
    Done,
    NeedMore,
}

/// The longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Takes one line (without its CRLF) off the front of `buf`.
#[inline]
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, io::Error> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(bad("chunk line too long")),
        None => Ok(None),
    }
}

#[inline]
pub(super) fn bad(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Up to `left` bytes of body data off the front of `buf` (`left` counts
/// down); `NeedMore` when `buf` is empty.
#[inline]
fn take_data(left: &mut u64, buf: &mut BytesMut) -> Step {
    if buf.is_empty() {
        return Step::NeedMore;
    }
    let n = (*left).min(buf.len() as u64) as usize;
    *left -= n as u64;
    Step::Data(buf.split_to(n).freeze())
}

/// Advances `state` over the bytes in `buf`.
#[inline]
pub(super) fn step(state: &mut BodyState, buf: &mut BytesMut) -> io::Result<Step> {
    loop {
        match state {
            BodyState::Done | BodyState::Length(0) => {
                *state = BodyState::Done;
                return Ok(Step::Done);
            }
            BodyState::Length(left) => {
                let step = take_data(left, buf);
                if *left == 0 {
                    *state = BodyState::Done;
                }
                return Ok(step);
            }
            BodyState::Close => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                return Ok(Step::Data(buf.split().freeze()));
            }
            BodyState::Chunked(chunk) => match chunk {
                Chunk::Size => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    let digits = line[..]
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or(&[])
                        .trim_ascii();
                    let size = std::str::from_utf8(digits)
                        .ok()
                        .filter(|d| !d.is_empty() && d.len() <= 16)
                        .and_then(|d| u64::from_str_radix(d, 16).ok())
                        .ok_or_else(|| bad("bad chunk size"))?;
                    *chunk = if size == 0 {
                        Chunk::Trailer
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    let step = take_data(left, buf);
                    if *left == 0 {
                        *chunk = Chunk::DataEnd;
                    }
                    return Ok(step);
                }
                Chunk::DataEnd => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    if !line.is_empty() {
                        return Err(bad("chunk data longer than its size"));
                    }
                    *chunk = Chunk::Size;
                }
                Chunk::Trailer => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        *state = BodyState::Done;
                    }
                }
            },
        }
    }
}
