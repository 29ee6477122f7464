//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off by
//! default): the parts of the proxy that read bytes a peer controls.

use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Uri};

use crate::route::{KeySource, RouteConfig, Router};
use crate::Upstream;

/// An upstream's response, arriving in pieces of `piece` bytes: the head
/// parser and the body framing (content-length, chunked, close-delimited).
pub fn upstream_response(data: &[u8], head_request: bool, piece: usize) {
    crate::upstream::exercise_response(data, head_request, piece);
}

/// What the proxy itself does with a client's request head (hyper parses
/// the bytes): hop-by-hop stripping, routing by override header, cookie and
/// sticky key, and the upstream request target.
pub fn request_head(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(data), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let mut map = HeaderMap::new();
    for h in req.headers.iter() {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            map.append(n, v);
        }
    }
    let router = Router::new(RouteConfig {
        overrides: vec![
            KeySource::Header(HeaderName::from_static("x-canary")),
            KeySource::Cookie("canary".into()),
        ],
        sticky: Some(KeySource::Cookie("session".into())),
        ..RouteConfig::default()
    });
    router.set_weight_ppm(250_000);
    let _ = router.route(&map);
    crate::server::strip_hop_by_hop(&mut map);
    if let Some(Ok(uri)) = req.path.map(|p| p.parse::<Uri>()) {
        for base in ["http://127.0.0.1:9", "http://127.0.0.1:9/prefix/"] {
            if let Ok(u) = Upstream::parse(base) {
                let _ = u.origin_form(&uri);
            }
        }
    }
}
