//! Test kit: a stand-in Kubernetes API server (these machines run no real
//! one), for running the real kube client against in tests.
//!
//! It serves GET and PATCH on object paths (`/api/v1/...`,
//! `/apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME`) from an in-memory
//! store, with what canary relies on from a real API server: a
//! `resourceVersion` that changes on every write, JSON merge patches
//! (RFC 7386) and JSON patches (RFC 6902), 409 Conflict when a patch
//! carries a stale `resourceVersion`, and `Status` errors (403, 404, 503)
//! shaped as the API server's. Every request is recorded (method, path,
//! query, content type, body) so that tests can assert exactly what was
//! sent. Faults are injected by the test: a conflicting writer before
//! every other write, a forbidden verb on a resource, 503s.
//!
//! It runs on its own thread and runtime, on a free loopback port, and
//! stops when dropped.
#![allow(clippy::missing_panics_doc)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One request as the stand-in received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// The path.
    pub path: String,
    /// The query string (`""` when none).
    pub query: String,
    /// The `content-type` header (`""` when none).
    pub content_type: String,
    /// The body as JSON (`null` when empty).
    pub body: Value,
}

/// Faults the stand-in injects.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Before every other write (the 1st, 3rd, ...), another writer
    /// changes the object (an annotation `other-writer: N`), so that the
    /// write carries a stale resourceVersion and gets 409.
    pub conflict_every_first_write: bool,
    /// `(verb, plural)` pairs refused with 403, e.g. `("patch", "httproutes")`.
    pub forbid: Vec<(String, String)>,
    /// This many next requests get 503.
    pub unavailable: usize,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    version: u64,
    log: Vec<Recorded>,
    faults: Faults,
    writes: u64,
    /// Every version stored, per path.
    history: BTreeMap<String, Vec<Value>>,
}

/// A stand-in API server on a free loopback port, stopped when dropped.
pub struct StandIn {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The plural of a kind the stand-in knows.
fn plural(kind: &str) -> String {
    match kind {
        "Ingress" => "ingresses".into(),
        k => format!("{}s", k.to_ascii_lowercase()),
    }
}

/// The path of an object (its apiVersion, kind, namespace and name).
pub fn path_of(obj: &Value) -> String {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
    let api = s("/apiVersion");
    let prefix = if api.contains('/') {
        format!("/apis/{api}")
    } else {
        format!("/api/{api}")
    };
    format!(
        "{prefix}/namespaces/{}/{}/{}",
        s("/metadata/namespace"),
        plural(s("/kind")),
        s("/metadata/name")
    )
}

fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Some(t) = target.as_object_mut() {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

impl StandIn {
    /// Starts one.
    pub fn start() -> StandIn {
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the stand-in");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind a loopback port");
                let addr = listener.local_addr().expect("its address");
                let app = axum::Router::new().fallback(
                    move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                        let st = st.clone();
                        async move { handle(&st, &method, &uri, &headers, &body) }
                    },
                );
                let _ = ready_tx.send(addr);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = ready_rx.recv().expect("the stand-in started");
        StandIn {
            url: format!("http://{addr}"),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `obj` (with a fresh resourceVersion) at its path.
    pub fn put(&self, mut obj: Value) {
        let mut s = self.lock();
        s.version += 1;
        let rv = s.version.to_string();
        obj["metadata"]["resourceVersion"] = json!(rv);
        let path = path_of(&obj);
        s.history.entry(path.clone()).or_default().push(obj.clone());
        s.objects.insert(path, obj);
    }

    /// Every version of the object stored so far (by [`StandIn::put`] and
    /// by each accepted write), oldest first.
    pub fn history(&self, like: &Value) -> Vec<Value> {
        self.lock()
            .history
            .get(&path_of(like))
            .cloned()
            .unwrap_or_default()
    }

    /// The object stored at its path (apiVersion, kind, namespace, name as
    /// in `like`).
    pub fn get(&self, like: &Value) -> Option<Value> {
        self.lock().objects.get(&path_of(like)).cloned()
    }

    /// A Deployment with `replicas` desired and `ready` ready, whose
    /// controller has seen its generation when `observed`.
    pub fn put_deployment(&self, ns: &str, name: &str, replicas: i64, ready: i64, observed: bool) {
        self.put(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}},
            "status": {"replicas": replicas, "readyReplicas": ready,
                       "observedGeneration": if observed { 2 } else { 1 }},
        }));
    }

    /// Sets the faults to inject from now on.
    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().log.clone()
    }

    /// Every request so far, then forgets them.
    pub fn take_requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.lock().log)
    }

    /// A kube client for it (its default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let mut c = kube::Config::new(self.url.parse().expect("the stand-in's URL"));
        c.default_namespace = "default".into();
        // As `connect` does: 503s come back at once, not retried.
        c.default_retry = false;
        kube::Client::try_from(c).expect("a client for the stand-in")
    }

    /// Writes a kubeconfig for it into `dir` (context `stand-in`,
    /// namespace `namespace`) and gives its path.
    pub fn kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {}\n\
             contexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: canary\n    namespace: {namespace}\n\
             current-context: stand-in\nusers:\n- name: canary\n  user: {{}}\n",
            self.url
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }
}

fn handle(
    st: &Arc<Mutex<State>>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let mut s = st.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let parsed: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or_else(|_| json!(String::from_utf8_lossy(body)))
    };
    let path = uri.path().to_string();
    s.log.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or("").to_string(),
        content_type: content_type.clone(),
        body: parsed.clone(),
    });
    if s.faults.unavailable > 0 {
        s.faults.unavailable -= 1;
        return status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request".into(),
        );
    }
    // .../namespaces/NS/PLURAL/NAME
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let n = parts.len();
    if n < 5 || parts[n - 4] != "namespaces" {
        return status(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        );
    }
    let (ns, plural, name) = (parts[n - 3], parts[n - 2], parts[n - 1]);
    let group = if parts[0] == "apis" { parts[1] } else { "" };
    let verb = match *method {
        Method::GET => "get",
        Method::PATCH => "patch",
        _ => {
            return status(
                405,
                "MethodNotAllowed",
                format!("{method} is not served here"),
            )
        }
    };
    if s.faults
        .forbid
        .iter()
        .any(|(v, p)| v == verb && p == plural)
    {
        let api_group = if group.is_empty() { "\"\"" } else { group };
        return status(
            403,
            "Forbidden",
            format!(
                "{plural}{} \"{name}\" is forbidden: User \"system:serviceaccount:{ns}:canary\" \
                 cannot {verb} resource \"{plural}\" in API group \"{api_group}\" in the namespace \"{ns}\"",
                if group.is_empty() { String::new() } else { format!(".{group}") }
            ),
        );
    }
    let resource = if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    };
    let Some(current) = s.objects.get(&path).cloned() else {
        return status(404, "NotFound", format!("{resource} \"{name}\" not found"));
    };
    if verb == "get" {
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            current.to_string(),
        )
            .into_response();
    }
    s.writes += 1;
    let mut current = current;
    if s.faults.conflict_every_first_write && s.writes % 2 == 1 {
        // Another writer gets there first.
        s.version += 1;
        let rv = s.version.to_string();
        current["metadata"]["resourceVersion"] = json!(rv);
        let w = s.writes;
        if !current["metadata"]["annotations"].is_object() {
            current["metadata"]["annotations"] = json!({});
        }
        current["metadata"]["annotations"]["other-writer"] = json!(w.to_string());
        s.objects.insert(path.clone(), current.clone());
    }
    let mut next = current.clone();
    match content_type.as_str() {
        "application/merge-patch+json" => merge_patch(&mut next, &parsed),
        "application/json-patch+json" => {
            let p: json_patch::Patch = match serde_json::from_value(parsed) {
                Ok(p) => p,
                Err(e) => return status(400, "BadRequest", format!("not a JSON patch: {e}")),
            };
            if let Err(e) = json_patch::patch(&mut next, &p) {
                return status(
                    422,
                    "Invalid",
                    format!("the JSON patch does not apply: {e}"),
                );
            }
        }
        other => {
            return status(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format: {other}"),
            )
        }
    }
    let stored_rv = current.pointer("/metadata/resourceVersion").cloned();
    let sent_rv = next.pointer("/metadata/resourceVersion").cloned();
    if sent_rv != stored_rv {
        return status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    s.version += 1;
    next["metadata"]["resourceVersion"] = json!(s.version.to_string());
    s.history
        .entry(path.clone())
        .or_default()
        .push(next.clone());
    s.objects.insert(path, next.clone());
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        next.to_string(),
    )
        .into_response()
}
