//! The web dashboard: a page and its script, style sheet and icon, embedded
//! in the binary at build time (`crates/canary-server/dashboard/`) and
//! served at `/` and `/assets/…` — no separate server, no CDN, no fonts or
//! scripts from elsewhere, so it works offline.
//!
//! The page is plain HTML, CSS and one ES module; it reads the API with
//! `fetch` and follows `GET /api/v1/watch` (or one rollout's watch) as a
//! streamed response, so the bearer token, when reads need it, travels in
//! a header from the browser's session storage and never in a URL.
//!
//! Every file is served with a Content-Security-Policy that allows only
//! the page's own resources (no inline script or style, no other origin,
//! no framing) and `X-Content-Type-Options: nosniff`. The files themselves
//! hold no data and no secret, so they are served without the token even
//! with `--auth-reads`: the page asks for the token when the API answers
//! 401.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The Content-Security-Policy of every dashboard file: the page's own
/// resources only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The page (`/`).
const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../dashboard/index.html"),
};

/// What `/assets/{name}` serves.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../dashboard/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../dashboard/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../dashboard/favicon.svg"),
    },
];

fn respond(a: &Asset) -> Response {
    let mut r = (StatusCode::OK, a.body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // A new binary serves new files: have the browser check every time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

async fn index() -> Response {
    respond(&INDEX)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => respond(a),
        None => crate::rollout::ApiError::new(404, format!("no dashboard file `{name}`"))
            .into_response(),
    }
}

/// The dashboard's routes: `/` and `/assets/{name}`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the page loads is one the server embeds, and the page
    /// loads nothing from elsewhere and runs nothing inline.
    #[test]
    fn the_page_refers_only_to_embedded_files() {
        let html = std::str::from_utf8(INDEX.body).unwrap();
        let mut refs = Vec::new();
        for attr in ["src=\"", "href=\""] {
            for (i, _) in html.match_indices(attr) {
                let rest = &html[i + attr.len()..];
                refs.push(rest[..rest.find('"').unwrap()].to_string());
            }
        }
        assert!(!refs.is_empty());
        for r in &refs {
            if r.starts_with('#') {
                continue;
            }
            let name = r
                .strip_prefix("/assets/")
                .unwrap_or_else(|| panic!("{r}: the page loads only /assets/…"));
            assert!(ASSETS.iter().any(|a| a.name == name), "{r} is not embedded");
        }
        assert!(!html.contains("style=\""), "no inline style");
        let handler = html.split(|c: char| c.is_whitespace()).any(|w| {
            w.strip_prefix("on")
                .and_then(|r| r.split_once('='))
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_lowercase()))
        });
        assert!(!handler, "no inline event handlers");
        let script_tags = html.matches("<script").count();
        let external = html.matches("<script type=\"module\" src=").count();
        assert_eq!(script_tags, external, "no inline script");
    }

    /// The script talks to its own origin only, and never puts the token
    /// in a URL.
    #[test]
    fn the_script_fetches_relative_paths_only() {
        let js = std::str::from_utf8(ASSETS[0].body)
            .unwrap()
            .replace("'http://www.w3.org/2000/svg'", "SVG_NS");
        for other in ["http://", "https://", "//cdn", "@import", "import("] {
            assert!(!js.contains(other), "the script refers to {other}");
        }
        assert!(
            !js.contains("localStorage"),
            "the token stays in session storage"
        );
        assert!(!js.contains("innerHTML"), "text is set as text");
    }
}
