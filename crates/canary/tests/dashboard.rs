//! The dashboard as `canary serve` serves it, and the evidence history its
//! charts draw: a real server process on loopback (port 0, its own
//! temporary store, stopped by its PID), read over HTTP. The page itself is
//! exercised in a real browser by `tests/dashboard/` (Node and Chromium,
//! run by CI); these tests need neither.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

mod support;

use support::{api_agent as agent, ServeProc, TempDir, SERVE_TOKEN as TOKEN};

/// `canary serve` on `db` with `extra` arguments.
fn serve(db: &Path, extra: &[&str]) -> ServeProc {
    ServeProc::start_with(db, extra, &[])
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn get(base: &str, path: &str, token: Option<&str>) -> Reply {
    let mut q = agent().get(&format!("{base}{path}"));
    if let Some(t) = token {
        q = q.header("Authorization", &format!("Bearer {t}"));
    }
    let mut r = q.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let headers = r
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    Reply {
        status: r.status().as_u16(),
        headers,
        body: r.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn post(base: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let mut r = agent()
        .post(&format!("{base}{path}"))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .header("Content-Type", content_type)
        .send(body.as_bytes())
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `f` until it returns `Some` (or panics after about `limit`).
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let step = Duration::from_millis(50);
    let mut polls = 0;
    loop {
        if let Some(v) = f() {
            return v;
        }
        polls += 1;
        assert!(step * polls < limit, "never happened: {what}");
        std::thread::sleep(step);
    }
}

/// The page and every file it loads come from the binary, each with its
/// content type and a Content-Security-Policy that allows only the page's
/// own resources; they need no token even where reads do (the page asks
/// for it), while the API's reads still refuse without one.
#[test]
fn the_dashboard_is_served_from_the_binary_with_a_strict_csp() {
    let dir = TempDir::new("assets");
    let srv = serve(&dir.0.join("d.db"), &["--auth-reads"]);
    let base = &srv.base;

    let page = get(base, "/", None);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").expect("a CSP");
    assert_eq!(csp, canary_server::DASHBOARD_CSP);
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp} lacks {directive}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(!csp.contains('*') && !csp.contains("http"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert!(page
        .body
        .contains("<script type=\"module\" src=\"/assets/app.js\">"));

    let expected = [
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ];
    for (path, ct) in expected {
        assert!(page.body.contains(path), "the page loads {path}");
        let r = get(base, path, None);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ct), "{path}");
        assert_eq!(
            r.header("content-security-policy"),
            Some(canary_server::DASHBOARD_CSP),
            "{path}"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert!(!r.body.is_empty(), "{path}");
    }
    let missing = get(base, "/assets/nothing.js", None);
    assert_eq!(missing.status, 404);
    assert!(
        missing.json()["error"].as_str().is_some(),
        "{}",
        missing.body
    );

    // --auth-reads: the data needs the token; the page does not.
    assert_eq!(get(base, "/api/v1/rollouts", None).status, 401);
    assert_eq!(get(base, "/api/v1/rollouts", Some(TOKEN)).status, 200);
    assert_eq!(get(base, "/api/v1/rollouts/x/history", None).status, 401);
}

fn spec(name: &str) -> String {
    format!(
        "name: {name}\nstages:\n  - {{weight: 10, duration: 1h}}\n  - {{weight: 100, duration: 1h}}\nanalysis: {{interval: 100ms}}\ntraffic: {{provider: simulated, scenario: healthy, requests_per_second: 400}}\n"
    )
}

fn history(base: &str, name: &str) -> Value {
    let r = get(base, &format!("/api/v1/rollouts/{name}/history"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Every judged window is a look with each metric's evidence; the watch
/// stream carries each new look; a retry starts a new generation's
/// history; a restart rebuilds the history from the journal.
#[test]
fn the_history_holds_every_look_and_survives_a_restart() {
    let dir = TempDir::new("history");
    let db = dir.0.join("h.db");
    let mut srv = serve(&db, &[]);
    let base = srv.base.clone();

    let doc = get(&base, "/api/v1/openapi.json", None).json();
    assert!(
        doc["paths"]["/api/v1/rollouts/{name}/history"]["get"].is_object(),
        "the OpenAPI document has the history"
    );
    assert!(doc["components"]["schemas"]["Look"].is_object());

    // The stream, from before the rollout exists.
    let rx = support::follow_events(format!("{base}/api/v1/watch"));

    let (s, v) = post(&base, "/api/v1/rollouts", "application/yaml", &spec("h"));
    assert_eq!(s, 201, "{v}");

    let streamed: Vec<Value> = wait_for("three looks on the stream", Duration::from_secs(30), {
        let mut got = Vec::new();
        move || {
            while let Ok((kind, v)) = rx.try_recv() {
                if kind == "change" && v["look"].is_object() {
                    got.push(v["look"].clone());
                }
            }
            (got.len() >= 3).then(|| got.clone())
        }
    });
    for w in streamed.windows(2) {
        assert!(w[1]["seq"].as_u64() > w[0]["seq"].as_u64(), "{w:?}");
    }

    let h = wait_for("five looks", Duration::from_secs(30), || {
        let h = history(&base, "h");
        (h["looks"].as_array().unwrap().len() >= 5).then_some(h)
    });
    assert_eq!(h["rollout"], "h");
    assert_eq!(h["generation"], 0);
    assert_eq!(h["stride"], 1);
    let looks = h["looks"].as_array().unwrap();
    for (i, l) in looks.iter().enumerate() {
        assert_eq!(l["seq"], i as u64 + 1, "{l}");
        assert_eq!(l["stage"], 0);
        assert_eq!(l["weight"], 10.0);
        let names: Vec<&str> = l["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"error_rate"), "{l}");
        let err = &l["metrics"][0];
        assert!(err["e_value"].as_f64().unwrap() > 0.0, "{l}");
        assert!(err["threshold"].as_f64().unwrap() > 0.0, "{l}");
    }
    // The looks on the stream are the looks in the history.
    for s in &streamed {
        let seq = s["seq"].as_u64().unwrap() as usize;
        if seq <= looks.len() {
            assert_eq!(&looks[seq - 1], s);
        }
    }

    // kill -9 and start again on the same store: the journal replays into
    // the same looks.
    let before = history(&base, "h");
    drop(srv);
    srv = serve(&db, &[]);
    let base = srv.base.clone();
    let after = history(&base, "h");
    let b = before["looks"].as_array().unwrap();
    let a = after["looks"].as_array().unwrap();
    assert!(
        a.len() >= b.len(),
        "{} looks before, {} after",
        b.len(),
        a.len()
    );
    assert_eq!(&a[..b.len()], &b[..], "the same looks, rebuilt");

    // A retry is a new generation with a history of its own.
    let (s, v) = post(&base, "/api/v1/rollouts/h/abort", "application/json", "{}");
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(&base, "/api/v1/rollouts/h/retry", "application/json", "{}");
    assert_eq!(s, 200, "{v}");
    let h = wait_for(
        "a look in the new generation",
        Duration::from_secs(30),
        || {
            let h = history(&base, "h");
            (h["generation"] == 1 && !h["looks"].as_array().unwrap().is_empty()).then_some(h)
        },
    );
    assert_eq!(h["looks"][0]["seq"], 1);
    assert!(h["looks"][0]["at_seconds"].as_f64().unwrap() < 60.0);

    assert_eq!(
        get(&base, "/api/v1/rollouts/none/history", None).status,
        404
    );
}
