//! The proxy's own metrics in the Prometheus text exposition format.
//!
//! Labels are fixed, bounded sets (`version` is `stable` or `canary`, `class`
//! a status class, `kind` a failure kind), never built from request data.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::route::Version;
use crate::Shared;

/// Bucket bounds of the latency histogram, seconds.
const LE: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

pub(crate) fn render(shared: &Shared) -> String {
    let mut out = String::with_capacity(4096);
    let counters: Vec<_> = Version::BOTH
        .iter()
        .map(|v| (v.name(), shared.recorder.counters(*v)))
        .collect();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "canary_proxy_canary_weight_percent",
        "gauge",
        "Share of traffic routed to the canary, percent.",
    );
    let _ = writeln!(
        out,
        "canary_proxy_canary_weight_percent {}",
        shared.router.weight()
    );
    family(
        &mut out,
        "canary_proxy_weight_changes_total",
        "counter",
        "Weight changes applied.",
    );
    let _ = writeln!(
        out,
        "canary_proxy_weight_changes_total {}",
        shared.weight_changes.load(Ordering::Relaxed)
    );
    family(
        &mut out,
        "canary_proxy_requests_total",
        "counter",
        "Requests answered, per version.",
    );
    for (v, c) in &counters {
        let _ = writeln!(
            out,
            "canary_proxy_requests_total{{version=\"{v}\"}} {}",
            c.requests
        );
    }
    family(
        &mut out,
        "canary_proxy_errors_total",
        "counter",
        "Requests that failed (5xx or an upstream failure), per version.",
    );
    for (v, c) in &counters {
        let _ = writeln!(
            out,
            "canary_proxy_errors_total{{version=\"{v}\"}} {}",
            c.errors
        );
    }
    family(
        &mut out,
        "canary_proxy_responses_total",
        "counter",
        "Upstream responses by status class, per version.",
    );
    for (v, c) in &counters {
        for (class, n) in CLASSES.iter().zip(c.classes) {
            let _ = writeln!(
                out,
                "canary_proxy_responses_total{{version=\"{v}\",class=\"{class}\"}} {n}"
            );
        }
    }
    family(
        &mut out,
        "canary_proxy_upstream_failures_total",
        "counter",
        "Requests the upstream did not answer, by kind, per version (abandoned: the client left first).",
    );
    for (v, c) in &counters {
        for (kind, n) in [
            ("connect", c.connect_errors),
            ("timeout", c.timeouts),
            ("other", c.upstream_errors),
            ("abandoned", c.abandoned),
        ] {
            let _ = writeln!(
                out,
                "canary_proxy_upstream_failures_total{{version=\"{v}\",kind=\"{kind}\"}} {n}"
            );
        }
    }
    family(
        &mut out,
        "canary_proxy_upstream_connections_opened_total",
        "counter",
        "Upstream connections opened, per version: with keep-alive a few per worker; a count that keeps growing with the requests means connections are not being reused.",
    );
    for v in Version::BOTH {
        let _ = writeln!(
            out,
            "canary_proxy_upstream_connections_opened_total{{version=\"{}\"}} {}",
            v.name(),
            shared.upstream_connects[v.index()].load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "canary_proxy_stale_requests_total",
        "counter",
        "Requests that finished after a weight change and were left out of the judged windows, per version.",
    );
    for (v, c) in &counters {
        let _ = writeln!(
            out,
            "canary_proxy_stale_requests_total{{version=\"{v}\"}} {}",
            c.stale
        );
    }
    family(
        &mut out,
        "canary_proxy_in_flight_requests",
        "gauge",
        "Requests routed and not yet answered, per version.",
    );
    for (v, c) in &counters {
        let _ = writeln!(
            out,
            "canary_proxy_in_flight_requests{{version=\"{v}\"}} {}",
            c.in_flight
        );
    }
    family(
        &mut out,
        "canary_proxy_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to the upstream's response head, per version.",
    );
    let cumulative = shared.recorder.cumulative();
    for (v, stats) in [
        ("stable", &cumulative.baseline),
        ("canary", &cumulative.canary),
    ] {
        let buckets: Vec<(f64, u64)> = stats.latency.buckets().collect();
        let mut seen = 0u64;
        let mut i = 0;
        for le in LE {
            // A log bucket counts below `le` when its upper edge is: the
            // recorder's buckets are 2.2 % wide, so this is that close.
            while i < buckets.len() && buckets[i].0 / 1000.0 <= le {
                seen += buckets[i].1;
                i += 1;
            }
            let _ = writeln!(
                out,
                "canary_proxy_request_duration_seconds_bucket{{version=\"{v}\",le=\"{le}\"}} {seen}"
            );
        }
        let count = stats.latency.count();
        let sum = stats.latency.mean().unwrap_or(0.0) * count as f64 / 1000.0;
        let _ = writeln!(
            out,
            "canary_proxy_request_duration_seconds_bucket{{version=\"{v}\",le=\"+Inf\"}} {count}\n\
             canary_proxy_request_duration_seconds_sum{{version=\"{v}\"}} {sum}\n\
             canary_proxy_request_duration_seconds_count{{version=\"{v}\"}} {count}"
        );
    }
    out
}
