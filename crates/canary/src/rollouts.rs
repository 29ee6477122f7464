//! `canary rollouts`: the client of `canary serve`.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// Operate the rollouts of a `canary serve`: list, get, apply, pause,
/// resume, promote, abort, retry, delete, watch.
///
/// The server is `--server` or `CANARY_SERVER` (default
/// http://127.0.0.1:7070); the token is `CANARY_TOKEN` or `--token-file`.
/// Tables by default, `-o json` for scripts (the API's own JSON).
///
/// Exit codes: 0 done (for `watch`: the rollout succeeded); 1 `watch` saw
/// it roll back or abort; 2 bad input (flags, spec: 400, 413, 415, 422);
/// 3 no such rollout (404); 4 not allowed now (409, e.g. an action in the
/// wrong phase); 5 missing or wrong token (401); 6 the server is
/// unreachable or failed (5xx).
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  export CANARY_SERVER=http://127.0.0.1:7070 CANARY_TOKEN=$(cat canary.db.token)
  canary rollouts apply -f rollout.yaml
  canary rollouts list
  canary rollouts get checkout -o json | jq .verdict
  canary rollouts pause checkout --reason 'waiting for the DBA'
  canary rollouts promote checkout --full
  canary rollouts watch checkout && echo promoted
  canary rollouts delete checkout --force")]
pub struct Args {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "CANARY_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    server: String,
    /// Read the token from this file (otherwise CANARY_TOKEN).
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Output: `table` (default) or `json`.
    #[arg(short = 'o', long, global = true, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Every rollout: name, phase, stage, weight.
    List,
    /// One rollout's status, verdict and evidence.
    Get { name: String },
    /// Create and start a rollout from a spec file (`-` for stdin).
    Apply {
        /// The spec, YAML or JSON.
        #[arg(short = 'f', long = "file", value_name = "SPEC")]
        file: PathBuf,
    },
    /// Hold the current weight.
    Pause(ActionArgs),
    /// Go on after a pause or a gate.
    Resume(ActionArgs),
    /// Finish the current stage now (`--full`: straight to 100 %).
    Promote {
        #[command(flatten)]
        a: ActionArgs,
        /// Straight to 100 %.
        #[arg(long)]
        full: bool,
    },
    /// Stop: weight 0 at once.
    Abort(ActionArgs),
    /// Start a rolled-back or aborted rollout again from its first stage.
    Retry(ActionArgs),
    /// Delete a finished rollout (`--force`: abort it first).
    Delete {
        name: String,
        /// Abort an unfinished rollout first.
        #[arg(long)]
        force: bool,
    },
    /// The decision log, oldest first.
    Events { name: String },
    /// Follow a rollout live until it ends.
    Watch { name: String },
}

#[derive(clap::Args)]
struct ActionArgs {
    /// The rollout.
    name: String,
    /// Why, for the decision log.
    #[arg(long)]
    reason: Option<String>,
}

struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A failed call, with the exit code it maps to.
struct CallError {
    code: u8,
    message: String,
}

fn exit_for(status: u16) -> u8 {
    match status {
        401 | 403 => 5,
        404 => 3,
        409 => 4,
        400 | 405 | 413 | 415 | 422 => 2,
        _ => 6,
    }
}

impl Client {
    fn new(args: &Args) -> Result<Client> {
        let token = match &args.token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("--token-file {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("CANARY_TOKEN").ok().filter(|t| !t.is_empty()),
        };
        let base = args.server.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            anyhow::bail!("--server {base}: write an http:// URL, e.g. http://127.0.0.1:7070");
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Client { base, token, agent })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn actor() -> String {
        std::env::var("USER").unwrap_or_default()
    }

    fn finish(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, CallError> {
        let mut resp = r.map_err(|e| CallError {
            code: 6,
            message: format!("{}: {e}", self.base),
        })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let v: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status >= 400 {
            let mut message = v.get("error").and_then(Value::as_str).map_or_else(
                || format!("HTTP {status}"),
                |e| format!("{e} (HTTP {status})"),
            );
            if let Some(d) = v.get("details").and_then(Value::as_array) {
                for x in d {
                    message.push_str("\n  ");
                    message.push_str(x.as_str().unwrap_or(""));
                }
            }
            return Err(CallError {
                code: exit_for(status),
                message,
            });
        }
        Ok(v)
    }

    fn get(&self, path: &str) -> Result<Value, CallError> {
        let mut req = self.agent.get(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        self.finish(req.call())
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> Result<Value, CallError> {
        let url = self.url(path);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let r = match method {
            "DELETE" => {
                let mut req = self
                    .agent
                    .delete(url)
                    .header("X-Canary-Actor", &Self::actor());
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            _ => {
                let mut req = self
                    .agent
                    .post(url)
                    .header("X-Canary-Actor", &Self::actor())
                    .header("Content-Type", content_type);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.send(body)
            }
        };
        self.finish(r)
    }
}

fn num(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_f64)
        .map_or("-".into(), |x| format!("{x}"))
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn stage_of(v: &Value) -> String {
    let n = v.get("stages").and_then(Value::as_u64).unwrap_or(0);
    match v.get("stage").and_then(Value::as_u64) {
        Some(s) => format!("{}/{n}", s + 1),
        None => format!("-/{n}"),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i + 1 == r.len() {
                    s.clone()
                } else {
                    format!("{s:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn status_lines(s: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: String| out.push_str(&format!("{k:<15} {v}\n"));
    line(&mut out, "Name:", text(s, "name").into());
    line(&mut out, "Phase:", text(s, "phase").into());
    if let Some(r) = s.get("reason").and_then(Value::as_str) {
        line(&mut out, "Reason:", r.into());
    }
    if let Some(w) = s.get("waiting_for").and_then(Value::as_str) {
        line(&mut out, "Waiting for:", w.into());
    }
    line(&mut out, "Mode:", text(s, "mode").into());
    line(&mut out, "Stage:", stage_of(s));
    line(
        &mut out,
        "Weight:",
        format!(
            "{} % applied, {} % desired",
            num(s, "applied_weight"),
            num(s, "desired_weight")
        ),
    );
    if let (Some(e), Some(b)) = (
        s.get("stage_elapsed_seconds").and_then(Value::as_f64),
        s.get("stage_bake_seconds").and_then(Value::as_f64),
    ) {
        line(&mut out, "Bake:", format!("{e:.0} s of {b:.0} s"));
    }
    line(&mut out, "Started:", text(s, "started_at").into());
    line(&mut out, "Updated:", text(s, "updated_at").into());
    let t = s.get("traffic").cloned().unwrap_or(Value::Null);
    let mut tr = text(&t, "provider").to_string();
    if let Some(l) = t.get("listen").and_then(Value::as_str) {
        tr.push_str(&format!(" on http://{l}"));
    }
    line(&mut out, "Traffic:", tr);
    if let Some(c) = s.get("counts") {
        for v in ["stable", "canary"] {
            let x = &c[v];
            line(
                &mut out,
                &format!("{}:", if v == "stable" { "Stable" } else { "Canary" }),
                format!(
                    "{} requests, {} errors, p50 {} ms (this stage)",
                    x.get("requests").and_then(Value::as_u64).unwrap_or(0),
                    x.get("errors").and_then(Value::as_u64).unwrap_or(0),
                    x.get("latency_p50_ms")
                        .and_then(Value::as_f64)
                        .map_or("-".into(), |p| format!("{p:.1}"))
                ),
            );
        }
    }
    if let Some(v) = s.get("verdict").filter(|v| !v.is_null()) {
        line(
            &mut out,
            "Verdict:",
            format!(
                "{} {}: {}",
                text(v, "judge"),
                text(v, "outcome"),
                text(v, "reason")
            ),
        );
        let mut rows = vec![vec![
            "  METRIC".into(),
            "OUTCOME".into(),
            "STATISTIC".into(),
            "THRESHOLD".into(),
            "E-VALUE".into(),
            "INTERVAL".into(),
            "N (STABLE/CANARY)".into(),
        ]];
        for m in v
            .get("metrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let f = |k: &str| {
                m.get(k)
                    .and_then(Value::as_f64)
                    .map_or("-".into(), |x| format!("{x:.4}"))
            };
            let interval = m
                .get("interval")
                .and_then(Value::as_array)
                .map_or("-".into(), |a| {
                    format!(
                        "[{:.4}, {:.4}] {}",
                        a.first().and_then(Value::as_f64).unwrap_or(f64::NAN),
                        a.get(1).and_then(Value::as_f64).unwrap_or(f64::NAN),
                        text(m, "interval_of")
                    )
                });
            rows.push(vec![
                format!("  {}", text(m, "name")),
                text(m, "outcome").into(),
                f("statistic"),
                f("threshold"),
                f("e_value"),
                interval,
                format!(
                    "{}/{}",
                    m.get("n_baseline").and_then(Value::as_u64).unwrap_or(0),
                    m.get("n_canary").and_then(Value::as_u64).unwrap_or(0)
                ),
            ]);
        }
        out.push_str(&table(&rows));
    }
    if let Some(e) = s.get("last_error").and_then(Value::as_str) {
        line(&mut out, "Last error:", e.into());
    }
    out
}

fn print(output: Output, v: &Value, table_text: impl FnOnce() -> String) -> Result<()> {
    let s = match output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(v)?),
        Output::Table => table_text(),
    };
    crate::common::write_stdout(&s)
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<ExitCode> {
    let c = Client::new(&args)?;
    let out = args.output;
    let r = match &args.command {
        Cmd::List => c.get("/api/v1/rollouts").map(|v| {
            print(out, &v, || {
                let mut rows = vec![vec![
                    "NAME".into(),
                    "PHASE".into(),
                    "STAGE".into(),
                    "WEIGHT".into(),
                    "MODE".into(),
                    "UPDATED".into(),
                ]];
                for r in v["rollouts"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        text(r, "name").into(),
                        text(r, "phase").into(),
                        stage_of(r),
                        format!("{} %", num(r, "weight")),
                        text(r, "mode").into(),
                        text(r, "updated_at").into(),
                    ]);
                }
                if rows.len() == 1 {
                    "no rollouts\n".into()
                } else {
                    table(&rows)
                }
            })
        }),
        Cmd::Get { name } => c
            .get(&format!("/api/v1/rollouts/{}", seg(name)))
            .map(|v| print(out, &v, || status_lines(&v))),
        Cmd::Apply { file } => {
            let spec = crate::common::read_document(file, "spec")?;
            let ct = if spec.trim_start().starts_with('{') {
                "application/json"
            } else {
                "application/yaml"
            };
            c.send("POST", "/api/v1/rollouts", ct, &spec).map(|v| {
                print(out, &v, || {
                    format!(
                        "rollout {} created: {} at stage {}, {} %\n",
                        text(&v, "name"),
                        text(&v, "phase"),
                        stage_of(&v),
                        num(&v, "applied_weight")
                    )
                })
            })
        }
        Cmd::Pause(a) => act(&c, out, a, "pause"),
        Cmd::Resume(a) => act(&c, out, a, "resume"),
        Cmd::Promote { a, full } => act(&c, out, a, if *full { "promote-full" } else { "promote" }),
        Cmd::Abort(a) => act(&c, out, a, "abort"),
        Cmd::Retry(a) => act(&c, out, a, "retry"),
        Cmd::Delete { name, force } => {
            let q = if *force { "?force=true" } else { "" };
            c.send(
                "DELETE",
                &format!("/api/v1/rollouts/{}{q}", seg(name)),
                "",
                "",
            )
            .map(|_| {
                print(out, &serde_json::json!({"deleted": name}), || {
                    format!("rollout {name} deleted\n")
                })
            })
        }
        Cmd::Events { name } => c
            .get(&format!("/api/v1/rollouts/{}/events", seg(name)))
            .map(|v| {
                print(out, &v, || {
                    let mut rows = vec![vec![
                        "SEQ".into(),
                        "TIME".into(),
                        "ACTOR".into(),
                        "EVENT".into(),
                        "REASON".into(),
                    ]];
                    for e in v["events"].as_array().into_iter().flatten() {
                        rows.push(vec![
                            num(e, "seq"),
                            text(e, "time").into(),
                            text(e, "actor").into(),
                            text(e, "event").into(),
                            text(e, "reason").into(),
                        ]);
                    }
                    table(&rows)
                })
            }),
        Cmd::Watch { name } => return watch(&c, out, name),
    };
    match r {
        Ok(printed) => {
            printed?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {}", e.message);
            Ok(ExitCode::from(e.code))
        }
    }
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn act(c: &Client, out: Output, a: &ActionArgs, action: &str) -> Result<Result<()>, CallError> {
    let body = serde_json::json!({"reason": a.reason}).to_string();
    c.send(
        "POST",
        &format!("/api/v1/rollouts/{}/{action}", seg(&a.name)),
        "application/json",
        &body,
    )
    .map(|v| {
        print(out, &v, || {
            let mut s = format!(
                "rollout {}: {action} done; now {} at stage {}, {} % desired",
                a.name,
                text(&v, "phase"),
                stage_of(&v),
                num(&v, "desired_weight")
            );
            if let Some(r) = v.get("reason").and_then(Value::as_str) {
                s.push_str(&format!(" ({r})"));
            }
            s.push('\n');
            s
        })
    })
}

/// A verdict in one short line: judge, outcome, each metric's outcome and
/// e-value (or statistic) against its threshold.
fn brief(v: Option<&Value>) -> String {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return "no verdict yet".into();
    };
    let metrics: Vec<String> = v
        .get("metrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| {
            let mut s = format!("{} {}", text(m, "name"), text(m, "outcome"));
            let t = m.get("threshold").and_then(Value::as_f64);
            if let Some(e) = m.get("e_value").and_then(Value::as_f64) {
                s.push_str(&format!(" e={e:.3}"));
                if let Some(t) = t {
                    s.push_str(&format!("/{:.3}", t.exp()));
                }
            } else if let Some(x) = m.get("statistic").and_then(Value::as_f64) {
                s.push_str(&format!(" stat={x:.4}"));
                if let Some(t) = t {
                    s.push_str(&format!("/{t:.3}"));
                }
            }
            s
        })
        .collect();
    format!(
        "{} {}: {}",
        text(v, "judge"),
        text(v, "outcome"),
        metrics.join(", ")
    )
}

/// Follows the rollout's server-sent events; returns when it ends.
fn watch(c: &Client, out: Output, name: &str) -> Result<ExitCode> {
    let mut req = c
        .agent
        .get(c.url(&format!("/api/v1/rollouts/{}/watch", seg(name))));
    if let Some(t) = &c.token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.call() {
        Ok(r) if r.status().as_u16() < 400 => r,
        other => {
            return match c.finish(other) {
                Err(e) => {
                    eprintln!("error: {}", e.message);
                    Ok(ExitCode::from(e.code))
                }
                Ok(_) => Ok(ExitCode::from(6)),
            }
        }
    };
    let reader: Box<dyn Read> = Box::new(resp.into_body().into_reader());
    let mut kind = String::new();
    let mut last = String::new();
    for line in BufReader::new(reader).lines() {
        let line = line.map_err(|e| anyhow!("{}: the watch stream broke: {e}", c.base))?;
        if let Some(k) = line.strip_prefix("event:") {
            kind = k.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data:") {
            let v: Value = serde_json::from_str(d.trim()).unwrap_or(Value::Null);
            let s = &v["status"];
            if kind == "deleted" {
                eprintln!("rollout {name} was deleted");
                return Ok(ExitCode::from(3));
            }
            match out {
                Output::Json => crate::common::write_stdout(&format!("{}\n", v))?,
                Output::Table => {
                    for e in v["events"].as_array().into_iter().flatten() {
                        crate::common::write_stdout(&format!(
                            "» {} {}: {}\n",
                            text(e, "actor"),
                            text(e, "event"),
                            text(e, "reason")
                        ))?;
                    }
                    let canary = &s["counts"]["canary"];
                    let (applied, desired) = (num(s, "applied_weight"), num(s, "desired_weight"));
                    let weight = if applied == desired {
                        format!("{applied} %")
                    } else {
                        format!("{applied} % → {desired} %")
                    };
                    let l = format!(
                        "{} stage {} weight {weight} | canary {} req {} err | {}",
                        text(s, "phase"),
                        stage_of(s),
                        canary.get("requests").and_then(Value::as_u64).unwrap_or(0),
                        canary.get("errors").and_then(Value::as_u64).unwrap_or(0),
                        brief(s.get("verdict"))
                    );
                    if l != last {
                        crate::common::write_stdout(&format!("{l}\n"))?;
                        last = l;
                    }
                }
            }
            match text(s, "phase") {
                "succeeded" => return Ok(ExitCode::SUCCESS),
                "rolled_back" | "aborted" => return Ok(ExitCode::from(1)),
                _ => {}
            }
        }
    }
    eprintln!("{}: the server closed the watch stream", c.base);
    Ok(ExitCode::from(6))
}
