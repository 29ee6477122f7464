//! The HTTP API of `canary serve` (axum), with its OpenAPI document
//! (utoipa) generated from the same types.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use serde::Deserialize;
use tokio::sync::{broadcast, oneshot, Mutex};
use utoipa::OpenApi;

use crate::auth::Token;
use crate::model::{
    ActionBody, ErrorBody, EventLog, Health, History, RolloutList, RolloutSpecBody, RolloutStatus,
    RolloutSummary,
};
use crate::rollout::{entry_of, Action, ApiError, Change, Cmd, Ctx, Entry, Runner};

/// The largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

pub(crate) struct App {
    pub ctx: Arc<Ctx>,
    pub rollouts: Mutex<BTreeMap<String, Arc<Entry>>>,
    pub token: Token,
    pub auth_reads: bool,
    pub ready: AtomicBool,
}

type Shared = State<Arc<App>>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (
            status,
            Json(ErrorBody {
                error: self.error,
                details: self.details,
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// The caller of a mutating endpoint, once its token checks out.
fn authorize(app: &App, headers: &HeaderMap) -> Result<String, ApiError> {
    let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if !app.token.accepts(given) {
        return Err(ApiError::new(
            401,
            if given.is_none() {
                "missing `Authorization: Bearer <token>`"
            } else {
                "wrong token"
            },
        ));
    }
    let actor = headers
        .get("x-canary-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()));
    Ok(match actor {
        Some(a) => format!("api:{a}"),
        None => "api".into(),
    })
}

fn authorize_read(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    if app.auth_reads {
        authorize(app, headers)?;
    }
    Ok(())
}

/// Reads a request body of at most [`MAX_BODY`] bytes. A declared
/// `Content-Length` over the limit is refused before any of the body is
/// read; a body that turns out longer is cut off there.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::new(413, format!("request body over {MAX_BODY} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        let over = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if over {
            too_large()
        } else {
            ApiError::new(400, format!("cannot read the request body: {e}"))
        }
    })
}

fn path_name(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    p.map(|Path(n)| n)
        .map_err(|e| ApiError::new(400, format!("bad path: {}", e.body_text())))
}

/// A rollout name as `canary serve` takes it: it is part of URLs.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(422, "the spec is not valid for canary serve").with_details(vec![format!(
            "name: {name:?} — for canary serve a name is 1–63 letters, digits, `-`, `_` or `.` (it is part of URLs)"
        )]))
    }
}

/// With high availability, a follower refuses every write: 503, and who
/// leads (the details have the leader's URL alone, for clients).
fn require_leader(app: &App) -> Result<(), ApiError> {
    let Some(l) = &app.ctx.leadership else {
        return Ok(());
    };
    if l.acting() {
        return Ok(());
    }
    let mut details = vec![format!("role: {}", l.status().role)];
    if let Some(u) = l.leader_url() {
        details.push(format!("leader: {u}"));
    }
    Err(ApiError::new(
        503,
        format!(
            "this replica (`{}`) does not lead, so it changes nothing; {}",
            l.options().id,
            l.leader_words()
        ),
    )
    .with_details(details))
}

/// Whether reads come from the store (a follower with high availability)
/// rather than from this server's runners.
fn reads_from_store(app: &App) -> bool {
    app.ctx
        .leadership
        .as_ref()
        .is_some_and(|l| l.role() == crate::ha::Role::Follower)
}

/// The stored record of `name` (a follower's reads).
async fn stored(app: &App, name: &str) -> Result<crate::store::RolloutRecord, ApiError> {
    let store = app.ctx.store.clone();
    let n = name.to_string();
    tokio::task::spawn_blocking(move || store.get(&n))
        .await
        .map_err(|e| ApiError::new(503, format!("store: {e}")))??
        .ok_or_else(|| ApiError::new(404, format!("no rollout `{name}`")))
}

/// Every rollout's status: this server's runners', or a follower's from
/// the store.
async fn current_statuses(app: &App) -> Result<Vec<RolloutStatus>, ApiError> {
    if reads_from_store(app) {
        return stored_statuses(app).await;
    }
    Ok(app
        .rollouts
        .lock()
        .await
        .values()
        .map(|e| e.status())
        .collect())
}

/// Every stored rollout's status (a follower's reads).
async fn stored_statuses(app: &App) -> Result<Vec<RolloutStatus>, ApiError> {
    let store = app.ctx.store.clone();
    let recs = tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(|e| ApiError::new(503, format!("store: {e}")))??;
    let mut out = Vec::with_capacity(recs.len());
    for r in recs {
        out.push(crate::rollout::stored_status(&app.ctx, r).await?);
    }
    Ok(out)
}

async fn entry(app: &App, name: &str) -> Result<Arc<Entry>, ApiError> {
    app.rollouts
        .lock()
        .await
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::new(404, format!("no rollout `{name}`")))
}

/// The example of a text/plain (YAML) spec in the document.
const SPEC_EXAMPLE_YAML: &str = "name: checkout
stages:
  - {weight: 50, duration: 1m}
  - {weight: 100, duration: 1m}
analysis: {interval: 1s}
traffic: {provider: simulated, scenario: healthy}
";

/// Create a rollout from a spec (YAML or JSON, the shape `canary run`
/// reads) and start it.
#[utoipa::path(
    post, path = "/api/v1/rollouts", tag = "rollouts",
    request_body(
        description = "A rollout spec (docs/spec.md) in JSON or YAML; as text/plain, YAML (or JSON) text. What a schema cannot check (weights strictly increasing, durations, the analysis settings) is answered with 422.",
        content(
            (RolloutSpecBody = "application/json"),
            (RolloutSpecBody = "application/yaml"),
            (String = "text/plain", example = json!(SPEC_EXAMPLE_YAML)),
        ),
    ),
    responses(
        (status = 201, description = "Created and started", body = RolloutStatus),
        (status = 400, description = "Body not UTF-8", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 409, description = "A rollout of this name is running", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Content type neither YAML, JSON nor text", body = ErrorBody),
        (status = 422, description = "The spec is invalid (details: one per field)", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn create(
    State(app): Shared,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<RolloutStatus>), ApiError> {
    let actor = authorize(&app, &headers)?;
    require_leader(&app)?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or("").trim();
        let ok = matches!(
            essence,
            "application/json"
                | "application/yaml"
                | "application/x-yaml"
                | "text/yaml"
                | "text/x-yaml"
                | "text/plain"
                | ""
        );
        if !ok {
            return Err(ApiError::new(
                415,
                format!("content type `{essence}`: send the spec as application/yaml or application/json"),
            ));
        }
    }
    let body = read_body(&headers, body).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::new(400, format!("the body is not UTF-8: {e}")))?
        .to_string();
    let policy = canary_prometheus::policy_from_text(&text).map_err(|errs| {
        ApiError::new(
            422,
            format!("the spec is invalid: {} problem(s)", errs.0.len()),
        )
        .with_details(errs.0.iter().map(ToString::to_string).collect())
    })?;
    check_name(&policy.name)?;
    crate::driver::scenario_of(&policy).map_err(|e| {
        ApiError::new(422, "the spec is invalid: 1 problem(s)").with_details(vec![e])
    })?;
    if policy.traffic.is_none() {
        return Err(ApiError::new(422, "the spec is invalid: 1 problem(s)").with_details(vec![
            "traffic: required by canary serve: `provider: proxy` with listen, stable and canary, or `provider: simulated`".into(),
        ]));
    }
    let name = policy.name.clone();
    let mut map = app.rollouts.lock().await;
    if let Some(old) = map.get(&name) {
        let s = old.status();
        if !matches!(s.phase.as_str(), "succeeded" | "rolled_back" | "aborted") {
            return Err(
                ApiError::new(409, format!("rollout `{name}` is running ({})", s.phase))
                    .with_details(vec![format!("phase: {}", s.phase)]),
            );
        }
        // A finished rollout of the same name is replaced: stop its
        // traffic layer first (it may hold the listen address).
        let (tx, rx) = oneshot::channel();
        if old.tx.send(Cmd::Stop { reply: tx }).await.is_ok() {
            let _ = rx.await;
        }
        map.remove(&name);
    }
    let runner = Runner::create(app.ctx.clone(), text, policy, &actor).await?;
    let entry = runner.spawn();
    let status = entry.status();
    map.insert(name, entry);
    Ok((StatusCode::CREATED, Json(status)))
}

/// Every rollout, with phase, stage and weight.
#[utoipa::path(
    get, path = "/api/v1/rollouts", tag = "rollouts",
    responses((status = 200, body = RolloutList), (status = 401, body = ErrorBody))
)]
async fn list(State(app): Shared, headers: HeaderMap) -> Result<Json<RolloutList>, ApiError> {
    authorize_read(&app, &headers)?;
    let statuses = current_statuses(&app).await?;
    let rollouts = statuses
        .into_iter()
        .map(|s| RolloutSummary {
            name: s.name,
            phase: s.phase,
            mode: s.mode,
            stage: s.stage,
            stages: s.stages,
            weight: s.applied_weight,
            desired_weight: s.desired_weight,
            updated_at: s.updated_at,
        })
        .collect();
    Ok(Json(RolloutList { rollouts }))
}

/// One rollout's status: phase, stage, weights, the latest verdict with
/// its evidence, the stage's counts per version, the reason for a pause or
/// rollback.
#[utoipa::path(
    get, path = "/api/v1/rollouts/{name}", tag = "rollouts",
    params(("name" = String, Path, description = "Rollout name")),
    responses((status = 200, body = RolloutStatus), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn get_one(
    State(app): Shared,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<RolloutStatus>, ApiError> {
    authorize_read(&app, &headers)?;
    let name = path_name(name)?;
    if reads_from_store(&app) {
        let rec = stored(&app, &name).await?;
        return Ok(Json(crate::rollout::stored_status(&app.ctx, rec).await?));
    }
    Ok(Json(entry(&app, &name).await?.status()))
}

/// The decision log, oldest first.
#[utoipa::path(
    get, path = "/api/v1/rollouts/{name}/events", tag = "rollouts",
    params(("name" = String, Path, description = "Rollout name")),
    responses((status = 200, body = EventLog), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody))
)]
async fn events(
    State(app): Shared,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<EventLog>, ApiError> {
    authorize_read(&app, &headers)?;
    let name = path_name(name)?;
    if reads_from_store(&app) {
        stored(&app, &name).await?;
    } else {
        entry(&app, &name).await?;
    }
    let store = app.ctx.store.clone();
    let n = name.clone();
    let evs = tokio::task::spawn_blocking(move || store.events(&n, 0))
        .await
        .map_err(|e| ApiError::new(503, format!("store: {e}")))??;
    Ok(Json(EventLog {
        rollout: name,
        events: evs.iter().map(entry_of).collect(),
    }))
}

/// The judge's looks in the current generation, oldest first: each
/// metric's statistic, threshold, e-value and p-value at every look (a
/// long history keeps every `stride`-th look).
#[utoipa::path(
    get, path = "/api/v1/rollouts/{name}/history", tag = "rollouts",
    params(("name" = String, Path, description = "Rollout name")),
    responses((status = 200, body = History), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn history(
    State(app): Shared,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<History>, ApiError> {
    authorize_read(&app, &headers)?;
    let name = path_name(name)?;
    if !reads_from_store(&app) {
        entry(&app, &name).await?;
    }
    Ok(Json(crate::rollout::history_of(&app.ctx, &name).await?))
}

/// `pause`, `resume`, `promote` (finish the stage now), `promote-full`
/// (straight to 100 %), `abort` (weight 0 at once) or `retry` (start a
/// rolled-back or aborted rollout again).
#[utoipa::path(
    post, path = "/api/v1/rollouts/{name}/{action}", tag = "rollouts",
    params(
        ("name" = String, Path, description = "Rollout name"),
        ("action" = Action, Path, description = "pause, resume, promote, promote-full, abort or retry"),
    ),
    request_body(content = Option<ActionBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "Done; the new status", body = RolloutStatus),
        (status = 400, description = "Body not JSON of this shape", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such rollout or action", body = ErrorBody),
        (status = 409, description = "Not allowed in the current phase", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn action(
    State(app): Shared,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Json<RolloutStatus>, ApiError> {
    let actor = authorize(&app, &headers)?;
    require_leader(&app)?;
    let Path((name, action)) =
        path.map_err(|e| ApiError::new(400, format!("bad path: {}", e.body_text())))?;
    let act = Action::parse(&action).ok_or_else(|| {
        ApiError::new(
            404,
            format!(
                "no action `{action}`: one of pause, resume, promote, promote-full, abort, retry"
            ),
        )
    })?;
    let body = read_body(&headers, body).await?;
    let parsed = action_body(&body)?;
    if let Some(r) = &parsed.reason {
        check_reason(r)?;
    }
    let e = entry(&app, &name).await?;
    let (tx, rx) = oneshot::channel();
    e.tx.send(Cmd::Act {
        action: act,
        actor,
        reason: parsed.reason,
        reply: tx,
    })
    .await
    .map_err(|_| ApiError::new(503, format!("rollout `{name}` is stopping")))?;
    let status = rx
        .await
        .map_err(|_| ApiError::new(503, format!("rollout `{name}` is stopping")))??;
    Ok(Json(status))
}

/// An action's body: nothing, `null` (the document's `oneOf: [null,
/// ActionBody]`) or an `ActionBody` object. serde would also read a struct
/// from a JSON array (`[]`, `["why"]`); the schema says object, so only an
/// object is one.
fn action_body(body: &[u8]) -> Result<ActionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ActionBody::default());
    }
    let bad = |e: String| {
        ApiError::new(
            400,
            format!("body: {e}: send {{\"reason\": \"...\"}} or nothing"),
        )
    };
    match serde_json::from_slice::<serde_json::Value>(body).map_err(|e| bad(e.to_string()))? {
        serde_json::Value::Null => Ok(ActionBody::default()),
        v @ serde_json::Value::Object(_) => {
            serde_json::from_value(v).map_err(|e| bad(e.to_string()))
        }
        _ => Err(bad("not a JSON object".into())),
    }
}

/// An action's reason, as `ActionBody`'s schema has it: at most 4096
/// characters (not bytes), none of them a control character.
fn check_reason(r: &str) -> Result<(), ApiError> {
    if r.chars().count() > 4096 || r.chars().any(char::is_control) {
        return Err(ApiError::new(
            400,
            "reason: at most 4096 characters, no control characters",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    /// Abort an unfinished rollout first.
    #[serde(default)]
    force: bool,
}

/// Delete a finished rollout (or, with `force=true`, abort it first).
#[utoipa::path(
    delete, path = "/api/v1/rollouts/{name}", tag = "rollouts",
    params(("name" = String, Path, description = "Rollout name"), DeleteQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not finished and no force", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
async fn delete(
    State(app): Shared,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let actor = authorize(&app, &headers)?;
    require_leader(&app)?;
    let name = path_name(name)?;
    let Query(q) = q.map_err(|e| ApiError::new(400, format!("bad query: {}", e.body_text())))?;
    let mut map = app.rollouts.lock().await;
    let e = map
        .get(&name)
        .cloned()
        .ok_or_else(|| ApiError::new(404, format!("no rollout `{name}`")))?;
    let (tx, rx) = oneshot::channel();
    e.tx.send(Cmd::Delete {
        force: q.force,
        actor,
        reply: tx,
    })
    .await
    .map_err(|_| ApiError::new(503, format!("rollout `{name}` is stopping")))?;
    rx.await
        .map_err(|_| ApiError::new(503, format!("rollout `{name}` is stopping")))??;
    map.remove(&name);
    Ok(StatusCode::NO_CONTENT)
}

fn sse_of(change: &Change) -> SseEvent {
    let kind = if change.deleted { "deleted" } else { "change" };
    let mut data = serde_json::json!({"status": change.status, "events": change.events});
    if let Some(look) = &change.look {
        data["look"] = serde_json::to_value(look).unwrap_or_default();
    }
    SseEvent::default().event(kind).data(data.to_string())
}

fn snapshot_event(status: &RolloutStatus) -> SseEvent {
    let data = serde_json::json!({"status": status, "events": []});
    SseEvent::default().event("snapshot").data(data.to_string())
}

/// The stream of one watcher: a snapshot of what it watches, then one
/// event per change (a fresh snapshot if it fell behind).
fn watch_stream(
    app: Arc<App>,
    only: Option<String>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let rx = app.ctx.changes.subscribe();
    futures_util::stream::unfold(
        (app, only, rx, Some(Vec::<SseEvent>::new()), false),
        |(app, only, mut rx, mut pending, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(p) = pending.as_mut() {
                    if p.is_empty() {
                        // First call, or after a lag: the current state
                        // (a follower's from the store).
                        let statuses = current_statuses(&app).await.unwrap_or_default();
                        for s in &statuses {
                            if only.as_deref().is_none_or(|o| o == s.name) {
                                p.push(snapshot_event(s));
                            }
                        }
                        p.reverse();
                        if p.is_empty() {
                            pending = None;
                            continue;
                        }
                    }
                    let ev = p.pop();
                    if p.is_empty() {
                        pending = None;
                    }
                    if let Some(ev) = ev {
                        return Some((Ok(ev), (app, only, rx, pending, false)));
                    }
                }
                match rx.recv().await {
                    Ok(c) => {
                        if only.as_deref().is_some_and(|o| o != c.status.name) {
                            continue;
                        }
                        let end = c.deleted && only.is_some();
                        return Some((Ok(sse_of(&c)), (app, only, rx, None, end)));
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        pending = Some(Vec::new());
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    )
}

/// Server-sent events for every rollout: `snapshot` (each rollout's
/// status at connect), then `change` (status, new log entries and, when
/// the change judged a window, the judge's `look` as `/history` has it)
/// and `deleted`.
#[utoipa::path(
    get, path = "/api/v1/watch", tag = "watch",
    responses((status = 200, description = "text/event-stream of `snapshot`, `change` and `deleted` events", content_type = "text/event-stream", body = String), (status = 401, body = ErrorBody))
)]
async fn watch_all(
    State(app): Shared,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    authorize_read(&app, &headers)?;
    Ok(Sse::new(watch_stream(app.clone(), None)).keep_alive(KeepAlive::default()))
}

/// Server-sent events for one rollout; the stream ends when it is deleted.
#[utoipa::path(
    get, path = "/api/v1/rollouts/{name}/watch", tag = "watch",
    params(("name" = String, Path, description = "Rollout name")),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream", body = String), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn watch_one(
    State(app): Shared,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    authorize_read(&app, &headers)?;
    let name = path_name(name)?;
    if reads_from_store(&app) {
        stored(&app, &name).await?;
    } else {
        entry(&app, &name).await?;
    }
    Ok(Sse::new(watch_stream(app.clone(), Some(name))).keep_alive(KeepAlive::default()))
}

/// Liveness: the process serves.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        ha: None,
    })
}

/// Readiness: stored rollouts recovered and the store answers. With high
/// availability, `ha` says this replica's role (`leader` or `follower`),
/// the term, who leads and the seconds since the lease was last renewed;
/// a replica that cannot read the store answers 503 with the same in
/// `details`.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(app): Shared) -> Result<Json<Health>, ApiError> {
    let ha = app.ctx.leadership.as_ref().map(|l| l.status());
    let ha_details = || {
        ha.as_ref().map_or_else(Vec::new, |h| {
            vec![
                format!("role: {}", h.role),
                format!("term: {}", h.term),
                format!(
                    "leader: {}",
                    h.leader_url.as_deref().unwrap_or("none known")
                ),
            ]
        })
    };
    if !app.ready.load(Ordering::SeqCst) {
        return Err(ApiError::new(503, "recovering stored rollouts"));
    }
    let store = app.ctx.store.clone();
    tokio::task::spawn_blocking(move || store.get(""))
        .await
        .map_err(|e| ApiError::new(503, format!("store: {e}")))?
        .map_err(|e| ApiError::from(e).with_details(ha_details()))?;
    Ok(Json(Health {
        status: "ok".into(),
        ha,
    }))
}

/// Prometheus metrics: rollouts by phase, verdicts and decisions by
/// outcome, each rollout's weights, and each judge's latest statistic and
/// threshold per rollout and metric.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String), (status = 401, body = ErrorBody)))]
async fn metrics(State(app): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize_read(&app, &headers)?;
    // A follower counts the rollouts from the store; while it cannot read
    // it (etcd without a quorum, say) it shows none, but its role and the
    // rest still come: /metrics must answer during an outage.
    let statuses = current_statuses(&app).await.unwrap_or_default();
    let ha = app.ctx.leadership.as_ref().map(|l| l.status());
    // Left out when the store does not answer (its outage shows on
    // /readyz).
    let store = app.ctx.store.clone();
    let outbox = tokio::task::spawn_blocking(move || store.outbox_counts())
        .await
        .ok()
        .and_then(Result::ok);
    let text = {
        let c = app.ctx.counters.lock().unwrap_or_else(|p| p.into_inner());
        crate::metrics::render(&statuses, &c, ha.as_ref(), outbox)
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// The OpenAPI 3 document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "canary serve", description = "Progressive delivery: many rollouts, judged on statistical evidence."),
    paths(create, list, get_one, events, history, action, delete, watch_all, watch_one, healthz, readyz, metrics, openapi),
    components(schemas(RolloutStatus, RolloutList, RolloutSummary, EventLog, crate::model::EventEntry, History, crate::model::Look, crate::model::LookMetric, Action, ActionBody, ErrorBody, Health, crate::ha::HaStatus, crate::model::Counts, crate::model::TrafficInfo, crate::model::MetricsInfo)),
    modifiers(&Security),
)]
struct ApiDoc;

/// The OpenAPI document, as JSON text.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

async fn not_found() -> ApiError {
    ApiError::new(404, "no such endpoint: see /api/v1/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "method not allowed on this endpoint: see /api/v1/openapi.json",
    )
}

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/v1/rollouts", post(create).get(list))
        .route("/api/v1/rollouts/{name}", get(get_one).delete(delete))
        .route("/api/v1/rollouts/{name}/events", get(events))
        .route("/api/v1/rollouts/{name}/history", get(history))
        .route("/api/v1/rollouts/{name}/watch", get(watch_one))
        .route("/api/v1/rollouts/{name}/{action}", post(action))
        .route("/api/v1/watch", get(watch_all))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn doc() -> Value {
        serde_json::from_str(&super::openapi_json()).unwrap()
    }

    #[test]
    fn delete_documents_force_as_an_optional_query_parameter() {
        let d = doc();
        let params = d["paths"]["/api/v1/rollouts/{name}"]["delete"]["parameters"]
            .as_array()
            .unwrap()
            .clone();
        let force = params.iter().find(|p| p["name"] == "force").unwrap();
        assert_eq!(force["in"], "query");
        assert_eq!(force["required"], false);
    }

    #[test]
    fn the_documented_actions_are_the_ones_the_server_parses() {
        let d = doc();
        let names = d["components"]["schemas"]["Action"]["enum"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(names.len(), 6);
        for n in names {
            let n = n.as_str().unwrap();
            assert_eq!(super::Action::parse(n).map(|a| a.name()), Some(n));
        }
    }

    #[test]
    fn the_documented_spec_examples_are_specs_canary_serve_accepts() {
        let d = doc();
        let json = d["components"]["schemas"]["RolloutSpecBody"]["example"].to_string();
        let content = &d["paths"]["/api/v1/rollouts"]["post"]["requestBody"]["content"];
        let yaml = content["text/plain"]["example"].as_str().unwrap();
        for text in [json.as_str(), yaml] {
            let p = canary_core::Policy::from_text(text).unwrap();
            super::check_name(&p.name).unwrap();
            assert!(crate::driver::scenario_of(&p).unwrap().is_some());
        }
        serde_json::from_str::<crate::model::RolloutSpecBody>(&json).unwrap();
    }

    #[test]
    fn the_documented_scenarios_are_the_built_in_ones() {
        let d = doc();
        let names: Vec<String> = d["components"]["schemas"]["ScenarioName"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, canary_sim::BUILT_IN);
    }

    #[test]
    fn an_action_body_is_nothing_null_or_an_object() {
        let reason = |b: &str| super::action_body(b.as_bytes()).map(|a| a.reason);
        assert_eq!(reason("").unwrap(), None);
        assert_eq!(reason(" \n").unwrap(), None);
        assert_eq!(reason("null").unwrap(), None);
        assert_eq!(reason("{}").unwrap(), None);
        assert_eq!(
            reason(r#"{"reason": "why"}"#).unwrap().as_deref(),
            Some("why")
        );
        assert_eq!(reason(r#"{"reason": null}"#).unwrap(), None);
        for bad in [
            "[]",
            r#"["why"]"#,
            "5",
            r#""why""#,
            r#"{"x": 1}"#,
            "{",
            "true",
        ] {
            assert_eq!(reason(bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn a_reason_is_limited_in_characters_not_bytes() {
        assert!(super::check_reason(&"é".repeat(4096)).is_ok());
        assert!(super::check_reason(&"a".repeat(4097)).is_err());
        assert!(super::check_reason("line\nbreak").is_err());
        assert!(super::check_reason("\u{85}").is_err());
        assert!(super::check_reason("").is_ok());
    }
}
