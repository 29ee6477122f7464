//! HAProxy over its runtime API (`stats socket ... level admin`, a unix
//! socket or a TCP address): `set weight <backend>/<server>` for every
//! server of both versions, read back with `get weight` before the weight
//! counts as applied; no reload, so no connection is dropped. And
//! `show stat`, HAProxy's per-server counters, as a metrics source.

use std::time::Duration;

use canary_core::spec::{integer_split, HaproxyTraffic, HAPROXY_MAX_WEIGHT};
use canary_core::{Pair, VersionStats};
use canary_engine::{ActuatorError, MetricsSource, SourceError, TrafficActuator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The runtime API of one HAProxy, as one rollout's spec names it.
#[derive(Debug, Clone)]
struct RuntimeApi {
    socket: String,
    timeout: Duration,
}

/// The largest answer read from one command (a `show stat` of a large
/// configuration is well below it).
const MAX_ANSWER: u64 = 16 << 20;

impl RuntimeApi {
    fn new(spec: &HaproxyTraffic) -> Self {
        Self {
            socket: spec.socket.trim().to_string(),
            timeout: spec.timeout.map_or(Duration::from_secs(2), |t| t.0),
        }
    }

    /// Sends one command (HAProxy answers and closes the connection).
    /// `Err` says what failed and whether it may pass by itself: a unix
    /// socket path that does not exist will not; a refused connection or
    /// a timeout may (HAProxy restarting).
    async fn command(&self, cmd: &str) -> Result<String, ApiError> {
        let io = async {
            let mut answer = Vec::new();
            let line = format!("{cmd}\n");
            let path = self.socket.strip_prefix("unix:").unwrap_or(&self.socket);
            if path.starts_with('/') {
                let mut s = tokio::net::UnixStream::connect(path).await?;
                s.write_all(line.as_bytes()).await?;
                s.take(MAX_ANSWER).read_to_end(&mut answer).await?;
            } else {
                let mut s = tokio::net::TcpStream::connect(&self.socket).await?;
                s.write_all(line.as_bytes()).await?;
                s.take(MAX_ANSWER).read_to_end(&mut answer).await?;
            }
            Ok::<_, std::io::Error>(answer)
        };
        match tokio::time::timeout(self.timeout, io).await {
            Err(_) => Err(ApiError {
                permanent: false,
                message: format!(
                    "`{cmd}` on {}: no answer within {:?}",
                    self.socket, self.timeout
                ),
            }),
            Ok(Err(e)) => Err(ApiError {
                permanent: matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ),
                message: format!("`{cmd}` on {}: {e}", self.socket),
            }),
            Ok(Ok(a)) => Ok(String::from_utf8_lossy(&a).into_owned()),
        }
    }
}

/// A runtime-API command that got no answer.
#[derive(Debug)]
struct ApiError {
    permanent: bool,
    message: String,
}

impl ApiError {
    fn actuator(self) -> ActuatorError {
        let m = format!("haproxy: {}", self.message);
        if self.permanent {
            ActuatorError::permanent(m)
        } else {
            ActuatorError::transient(m)
        }
    }

    /// For the counters every failure is a look without numbers (skipped,
    /// never judged; after `analysis.metrics_unavailable_after` of them
    /// `on_metrics_unavailable` applies): the same HAProxy's runtime API
    /// also refuses the weight, and that refusal is what pauses the rollout.
    fn source(self) -> SourceError {
        SourceError::transient(format!("haproxy: {}", self.message))
    }
}

/// Sets and reads back the servers' weights in one backend.
#[derive(Debug)]
pub struct Haproxy {
    api: RuntimeApi,
    spec: HaproxyTraffic,
}

impl Haproxy {
    /// The layer `spec` names.
    pub fn new(spec: &HaproxyTraffic) -> Self {
        Self {
            api: RuntimeApi::new(spec),
            spec: spec.clone(),
        }
    }

    /// An HAProxy `backend` section for this spec at weight 0: round robin
    /// over both versions' servers (their addresses as given, in order),
    /// and the A/B routes: the header `x-canary` or the cookie `canary`
    /// with the value `canary` or `stable` forces that version's first
    /// server (`use-server` holds whatever the server's weight).
    pub fn backend_snippet(&self, stable: &[String], canary: &[String]) -> String {
        use std::fmt::Write as _;
        let h = &self.spec;
        let mut out = format!(
            "# The backend canary drives over the runtime API (traffic.haproxy):\n\
             # `set weight {b}/<server>` moves the split; no reload.\n\
             backend {b}\n    balance roundrobin\n",
            b = h.backend
        );
        // The header's rules first: the header wins over the cookie.
        for (how, fetch) in [
            ("header", "req.hdr(x-canary)"),
            ("cookie", "req.cook(canary)"),
        ] {
            for (side, names) in [("stable", &h.stable), ("canary", &h.canary)] {
                if let Some(first) = names.first() {
                    let _ = writeln!(
                        out,
                        "    use-server {first} if {{ {fetch} -m str {side} }}   # A/B route by {how}"
                    );
                }
            }
        }
        for (names, addrs, w) in [(&h.stable, stable, 1), (&h.canary, canary, 0)] {
            for (i, n) in names.iter().enumerate() {
                let a = addrs.get(i).map_or("ADDRESS:PORT", String::as_str);
                let _ = writeln!(out, "    server {n} {a} weight {w}");
            }
        }
        out
    }

    fn servers(&self) -> impl Iterator<Item = (bool, &str)> {
        let s = self.spec.stable.iter().map(|s| (false, s.as_str()));
        let c = self.spec.canary.iter().map(|s| (true, s.as_str()));
        s.chain(c)
    }

    /// The weight HAProxy reports for `server` of the backend.
    async fn get_weight(&self, server: &str) -> Result<u32, ActuatorError> {
        let cmd = format!("get weight {}/{server}", self.spec.backend);
        let answer = self.api.command(&cmd).await.map_err(ApiError::actuator)?;
        // "10 (initial 1)"
        answer
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| {
                ActuatorError::permanent(format!(
                    "haproxy: `{cmd}` on {} answered {:?}",
                    self.api.socket,
                    answer.trim()
                ))
            })
    }

    async fn set_one(&self, server: &str, w: u32) -> Result<(), ActuatorError> {
        let cmd = format!("set weight {}/{server} {w}", self.spec.backend);
        let answer = self.api.command(&cmd).await.map_err(ApiError::actuator)?;
        if answer.trim().is_empty() {
            Ok(())
        } else {
            Err(ActuatorError::permanent(format!(
                "haproxy: `{cmd}` on {} answered {:?}",
                self.api.socket,
                answer.trim()
            )))
        }
    }

    async fn apply(&mut self, percent: f64) -> Result<(), ActuatorError> {
        let split = integer_split(
            percent,
            self.spec.stable.len() as u32,
            self.spec.canary.len() as u32,
            Some(HAPROXY_MAX_WEIGHT),
        );
        let servers: Vec<(bool, String)> =
            self.servers().map(|(c, s)| (c, s.to_string())).collect();
        // Every server must exist before any weight moves.
        let mut before = Vec::with_capacity(servers.len());
        for (_, s) in &servers {
            before.push(self.get_weight(s).await?);
        }
        for (i, (canary, s)) in servers.iter().enumerate() {
            let w = if *canary { split.canary } else { split.stable };
            if let Err(e) = self.set_one(s, w).await {
                // Put back the ones already moved: nothing half-set.
                for ((_, s), w) in servers.iter().zip(&before).take(i) {
                    let _ = self.set_one(s, *w).await;
                }
                return Err(e);
            }
        }
        for (canary, s) in &servers {
            let want = if *canary { split.canary } else { split.stable };
            let got = self.get_weight(s).await?;
            if got != want {
                return Err(ActuatorError::transient(format!(
                    "haproxy: {}/{s} reads back weight {got} after `set weight ... {want}`",
                    self.spec.backend
                )));
            }
        }
        Ok(())
    }
}

impl TrafficActuator for Haproxy {
    async fn set_weight(&mut self, percent: f64) -> Result<(), ActuatorError> {
        self.apply(percent).await
    }
}

/// One server's cumulative counters from `show stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Responses by class (1xx–5xx and other).
    pub responses: u64,
    /// 5xx responses.
    pub server_errors: u64,
    /// Connections to the server that failed (`econ`).
    pub connect_errors: u64,
    /// Responses that broke off (`eresp`).
    pub response_errors: u64,
}

impl ServerCounters {
    fn add(&mut self, o: &ServerCounters) {
        self.responses += o.responses;
        self.server_errors += o.server_errors;
        self.connect_errors += o.connect_errors;
        self.response_errors += o.response_errors;
    }

    /// Requests and failed requests since `earlier`, or `None` if a counter
    /// went backwards (HAProxy restarted or reloaded).
    fn since(&self, earlier: &ServerCounters) -> Option<VersionStats> {
        let d = |a: u64, b: u64| a.checked_sub(b);
        let responses = d(self.responses, earlier.responses)?;
        let e5 = d(self.server_errors, earlier.server_errors)?;
        let econ = d(self.connect_errors, earlier.connect_errors)?;
        let eresp = d(self.response_errors, earlier.response_errors)?;
        Some(VersionStats {
            requests: responses + econ + eresp,
            errors: e5 + econ + eresp,
            ..VersionStats::default()
        })
    }
}

/// The rows of a `show stat` answer for `backend`, by server name.
///
/// # Errors
/// The answer has no header line, or lacks a column canary reads.
pub fn parse_stat(
    answer: &str,
    backend: &str,
) -> Result<std::collections::BTreeMap<String, ServerCounters>, String> {
    let mut lines = answer.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| format!("not a `show stat` answer: {:?}", first_line(answer)))?;
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("`show stat` has no `{name}` column"))
    };
    let (px, sv) = (col("pxname")?, col("svname")?);
    let classes = [
        col("hrsp_1xx")?,
        col("hrsp_2xx")?,
        col("hrsp_3xx")?,
        col("hrsp_4xx")?,
        col("hrsp_5xx")?,
        col("hrsp_other")?,
    ];
    let (econ, eresp) = (col("econ")?, col("eresp")?);
    let mut out = std::collections::BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.get(px) != Some(&backend) {
            continue;
        }
        let Some(name) = f.get(sv) else { continue };
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.insert(
            (*name).to_string(),
            ServerCounters {
                responses: classes.iter().map(|&i| n(i)).sum(),
                server_errors: n(classes[4]),
                connect_errors: n(econ),
                response_errors: n(eresp),
            },
        );
    }
    Ok(out)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// HAProxy's per-server counters as a metrics source: requests (responses
/// of every class, plus connections and responses that failed) and errors
/// (5xx, failed connections, broken responses), summed over each
/// version's servers. They carry no latency distribution (HAProxy keeps
/// only an average of the last 1024 responses), so the latency judges see
/// no samples; see docs/traffic.md for judging latency too.
#[derive(Debug)]
pub struct HaproxyStats {
    api: RuntimeApi,
    spec: HaproxyTraffic,
    last: Option<Pair<ServerCounters>>,
}

impl HaproxyStats {
    /// A source reading `spec`'s backend.
    pub fn new(spec: &HaproxyTraffic) -> Self {
        Self {
            api: RuntimeApi::new(spec),
            spec: spec.clone(),
            last: None,
        }
    }

    async fn read(&self) -> Result<Pair<ServerCounters>, SourceError> {
        let answer = self
            .api
            .command("show stat")
            .await
            .map_err(ApiError::source)?;
        let rows = parse_stat(&answer, &self.spec.backend)
            .map_err(|w| SourceError::transient(format!("haproxy: `show stat`: {w}")))?;
        let sum = |names: &[String]| {
            let mut total = ServerCounters::default();
            for n in names {
                // Transient: a reload of HAProxy's configuration can add
                // it; meanwhile the look is skipped (never judged).
                let Some(c) = rows.get(n) else {
                    return Err(SourceError::transient(format!(
                        "haproxy: `show stat` on {} has no server {}/{n}",
                        self.api.socket, self.spec.backend
                    )));
                };
                total.add(c);
            }
            Ok(total)
        };
        Ok(Pair {
            baseline: sum(&self.spec.stable)?,
            canary: sum(&self.spec.canary)?,
        })
    }
}

impl MetricsSource for HaproxyStats {
    async fn read_window(&mut self) -> Result<Pair<VersionStats>, SourceError> {
        let now = self.read().await?;
        let Some(last) = self.last.replace(now.clone()) else {
            // The first read sets where the counting starts.
            return Ok(Pair::default());
        };
        match (
            now.baseline.since(&last.baseline),
            now.canary.since(&last.canary),
        ) {
            (Some(baseline), Some(canary)) => Ok(Pair { baseline, canary }),
            _ => Err(SourceError::transient(format!(
                "haproxy: the counters of backend {} went backwards (HAProxy restarted or \
                 reloaded); counting starts again",
                self.spec.backend
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_stat_rows_are_read_by_column_name() {
        let a =
            "# pxname,svname,econ,eresp,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,\n\
                 app,FRONTEND,,,0,100,0,0,0,0,\n\
                 app,stable,1,0,0,90,0,3,2,0,\n\
                 app,canary,0,2,0,9,0,0,4,0,\n\
                 other,canary,0,0,0,1000,0,0,0,0,\n";
        let rows = parse_stat(a, "app").unwrap();
        assert_eq!(
            rows["stable"],
            ServerCounters {
                responses: 95,
                server_errors: 2,
                connect_errors: 1,
                response_errors: 0
            }
        );
        assert_eq!(rows["canary"].responses, 13);
        let later = ServerCounters {
            responses: 23,
            server_errors: 5,
            connect_errors: 0,
            response_errors: 2,
        };
        let w = later.since(&rows["canary"]).unwrap();
        assert_eq!((w.requests, w.errors), (10, 1));
        assert!(rows["canary"].since(&later).is_none());
        assert!(parse_stat("Unknown command.\n", "app").is_err());
    }
}
