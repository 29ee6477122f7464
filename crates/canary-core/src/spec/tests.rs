use super::*;

fn errors_of(text: &str) -> Vec<SpecError> {
    Policy::from_text(text)
        .expect_err("spec should be rejected")
        .0
}

#[test]
fn issue_example_is_valid() {
    let p = Policy::from_text(
        "name: checkout
stages:
  - weight: 1          # % of traffic to the canary
    duration: 5m       # bake time at this weight
  - weight: 5
    duration: 10m
  - weight: 25
    duration: 10m
    pause: true        # hold for a manual promote after this stage
  - weight: 100
    duration: 5m
analysis:
  judge: threshold
",
    )
    .unwrap();
    assert_eq!(p.stages.len(), 4);
    assert!(p.stages[2].pause_after);
    assert_eq!(p.stages[1].bake, Duration::from_secs(600));
    assert_eq!(p.stages[0].max_error_delta, 0.02);
    assert_eq!(p.stages[3].max_error_delta, 0.005);
    assert_eq!(p.analysis.judge, JudgeKind::Threshold);
    assert_eq!(p.stages[0].timeout, Duration::from_secs(900));
}

#[test]
fn json_spec_is_accepted() {
    let p = Policy::from_text(r#"{"name": "x", "stages": [{"weight": 10, "duration": "1m"}]}"#)
        .unwrap();
    assert_eq!(p.stages[0].weight, 10.0);
}

/// Seed "break it": stages with non-increasing weights (50, 25, 100).
#[test]
fn non_increasing_weights_name_the_stage() {
    let e = errors_of(
        "name: x
stages:
  - weight: 50
    duration: 1m
  - weight: 25
    duration: 1m
  - weight: 100
    duration: 1m
",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "stages[1].weight");
    assert_eq!(e[0].line, Some(5));
    assert_eq!(e[0].value, "25");
    assert!(e[0].rule.contains("increase strictly"), "{}", e[0].rule);
}

#[test]
fn empty_stage_list_names_stages() {
    let e = errors_of("name: x\nstages: []\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].path, "stages");
    assert_eq!(e[0].line, Some(2));
}

#[test]
fn every_error_is_reported() {
    let e = errors_of(
        "name: x
stages:
  - weight: 0
    duration: 0s
  - weight: 150
    duration: 1m
    max_error_delta: -0.1
analysis:
  alpha: 0.9
",
    );
    let paths: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "stages[0].weight",
            "stages[0].duration",
            "stages[1].weight",
            "stages[1].max_error_delta",
            "analysis.alpha"
        ]
    );
    assert_eq!(e[4].line, Some(9));
}

#[test]
fn unknown_fields_are_rejected_with_their_line() {
    let e = errors_of(
        "name: x
stages:
  - weight: 10
    duration: 1m
    wieght: 3
analysis:
  jduge: threshold
",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].path, "stages[0].wieght");
    assert_eq!(e[0].line, Some(5));
    assert!(e[0].rule.contains("unknown field"), "{}", e[0].rule);
    assert_eq!(e[1].path, "analysis.jduge");
    assert_eq!(e[1].line, Some(7));
}

#[test]
fn wrong_types_name_the_field() {
    let e = errors_of("name: x\nstages:\n  - weight: lots\n    duration: 1m\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "stages[0].weight");
    assert_eq!(e[0].line, Some(3));
}

#[test]
fn nan_threshold_is_rejected() {
    let e = errors_of(
        "name: x\nstages:\n  - weight: 10\n    duration: 1m\n    max_latency_delta_ms: .nan\n",
    );
    assert_eq!(e[0].path, "stages[0].max_latency_delta_ms");
}

#[test]
fn bad_duration_names_the_field() {
    let e = errors_of("name: x\nstages:\n  - weight: 10\n    duration: 5 parsecs\n");
    assert_eq!(e[0].path, "stages[0].duration");
    assert!(e[0].rule.contains("not a duration"), "{}", e[0].rule);
}

#[test]
fn unknown_judge_is_rejected() {
    let e = errors_of(
        "name: x\nstages:\n  - weight: 10\n    duration: 1m\nanalysis:\n  judge: vibes\n",
    );
    assert_eq!(e[0].path, "analysis.judge");
    assert_eq!(e[0].line, Some(6));
}

#[test]
fn syntax_errors_have_a_line() {
    let e = errors_of("name: x\nstages: [\n");
    assert!(e[0].rule.contains("not valid YAML"), "{}", e[0].rule);
}

/// Seed "break it": an error threshold of 0 is allowed (a zero-tolerance
/// stage), it is not an invalid spec.
#[test]
fn zero_error_threshold_is_allowed() {
    let p = Policy::from_text(
        "name: x\nstages:\n  - weight: 10\n    duration: 1m\n    max_error_delta: 0\n",
    )
    .unwrap();
    assert_eq!(p.stages[0].max_error_delta, 0.0);
}

#[test]
fn default_strategy_is_the_seeds() {
    let p = Policy::default_strategy();
    let w: Vec<_> = p.stages.iter().map(|s| s.weight).collect();
    assert_eq!(w, [1.0, 5.0, 25.0, 50.0, 100.0]);
    let d: Vec<_> = p.stages.iter().map(|s| s.max_error_delta).collect();
    assert_eq!(d, [0.02, 0.015, 0.01, 0.01, 0.005]);
}

#[test]
fn guardrails_default_to_a_ten_percent_error_ceiling_and_are_checked() {
    let p = Policy::default_strategy();
    assert_eq!(p.analysis.guardrails.max_error_rate, 0.1);
    assert_eq!(p.analysis.guardrails.max_latency_p99_ms, None);
    let p = Policy::from_text(
        "name: g\nstages: [{weight: 100, duration: 1m}]\nanalysis:\n  guardrails: {max_error_rate: 0.02, max_latency_p99_ms: 250}\n",
    )
    .unwrap();
    assert_eq!(p.analysis.guardrails.max_error_rate, 0.02);
    assert_eq!(p.analysis.guardrails.max_latency_p99_ms, Some(250.0));
    let e = Policy::from_text(
        "name: g\nstages: [{weight: 100, duration: 1m}]\nanalysis:\n  guardrails:\n    max_error_rate: 1.5\n    max_latency_p99_ms: -1\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("analysis.guardrails.max_error_rate (line 5)"),
        "{e}"
    );
    assert!(
        e.contains("analysis.guardrails.max_latency_p99_ms (line 6)"),
        "{e}"
    );
}

#[test]
fn guardrails_name_the_limit_the_canary_breaks_and_the_stable_numbers() {
    use crate::VersionStats;
    let g = crate::spec::Guardrails {
        max_error_rate: 0.1,
        max_latency_p99_ms: Some(100.0),
    };
    let v = |n: u64, e: u64, ms: f64| {
        let mut s = VersionStats {
            requests: n,
            errors: e,
            ..Default::default()
        };
        s.latency.record_n(ms, n);
        s
    };
    assert_eq!(
        g.breached(&v(100, 10, 50.0), &v(100, 0, 50.0)),
        None,
        "at the limit"
    );
    assert_eq!(
        g.breached(&v(0, 0, 1.0), &v(100, 100, 50.0)),
        None,
        "no requests yet"
    );
    let b = g.breached(&v(100, 11, 50.0), &v(100, 11, 50.0)).unwrap();
    assert!(b.contains("11.00 % (11 of 100)"), "{b}");
    assert!(b.contains("stable: 11.00 %"), "{b}");
    let b = g.breached(&v(100, 0, 300.0), &v(100, 0, 50.0)).unwrap();
    assert!(b.contains("p99 latency"), "{b}");
    assert!(!b.contains("error rate"), "{b}");
}

#[test]
fn margins_default_to_one_millisecond_of_latency_and_are_checked() {
    let m = Policy::default_strategy().analysis.margins;
    assert_eq!((m.latency_relative, m.latency_ms), (0.0, 1.0));
    assert_eq!((m.error_relative, m.error_absolute), (0.0, 0.0));
    let e = Policy::from_text(
        "name: g\nstages: [{weight: 100, duration: 1m}]\nanalysis:\n  margins:\n    latency_relative: -0.1\n    error_absolute: 1.5\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("analysis.margins.latency_relative (line 5)"),
        "{e}"
    );
    assert!(
        e.contains("analysis.margins.error_absolute (line 6)"),
        "{e}"
    );
    // Either margin makes a difference harmless: the larger counts.
    let m = crate::spec::Margins {
        latency_relative: 0.05,
        latency_ms: 1.0,
        error_relative: 0.5,
        error_absolute: 0.001,
    };
    assert!((m.latency_log_shift(100.0) - 0.05f64.ln_1p()).abs() < 1e-12);
    assert!((m.latency_log_shift(2.0) - 0.5f64.ln_1p()).abs() < 1e-12);
    assert_eq!(m.error_ratio(0.01), 1.5);
    assert!((m.error_ratio(0.0001) - 11.0).abs() < 1e-9);
    assert_eq!(m.error_ratio(0.0), 1e6);
}

#[test]
fn traffic_providers_take_only_their_own_fields() {
    let base = "name: p\nstages: [{weight: 100, duration: 1m}]\n";
    let ok = Policy::from_text(&format!(
        "{base}traffic: {{provider: simulated, scenario: errors-2x, requests_per_second: 200, seed: 3}}\n"
    ))
    .unwrap();
    let t = ok.traffic.unwrap();
    assert_eq!(t.provider, TrafficProvider::Simulated);
    assert_eq!(t.scenario.as_deref(), Some("errors-2x"));
    let proxy = Policy::from_text(&format!(
        "{base}traffic: {{listen: 127.0.0.1:8080, stable: http://a:1, canary: http://b:2}}\n"
    ))
    .unwrap();
    assert_eq!(proxy.traffic.unwrap().provider, TrafficProvider::Proxy);

    let errs = errors_of(&format!(
        "{base}traffic:\n  provider: simulated\n  listen: 127.0.0.1:8080\n  requests_per_second: -1\n"
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["traffic.listen", "traffic.requests_per_second"],
        "{errs:?}"
    );
    assert!(
        errs[0].rule.contains("only for `provider: proxy`"),
        "{}",
        errs[0].rule
    );
    assert_eq!(errs[0].line, Some(5));

    let errs = errors_of(&format!(
        "{base}traffic: {{listen: 127.0.0.1:8080, stable: http://a:1, canary: http://b:2, scenario: healthy}}\n"
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "traffic.scenario");
    let errs = errors_of(&format!("{base}traffic: {{provider: envoy}}\n"));
    assert_eq!(errs[0].path, "traffic.provider", "{errs:?}");
}

#[test]
fn nginx_and_haproxy_sections_are_checked_field_by_field() {
    let base = "name: p\nstages: [{weight: 10, duration: 1m}, {weight: 100, duration: 1m}]\n";
    let scrape = "metrics:\n  provider: scrape\n  scrape: {stable: [http://a:1/metrics], canary: [http://b:2/metrics], preset: http}\n";
    let good = format!(
        "{base}traffic:\n  provider: nginx\n  nginx:\n    config: /etc/nginx/conf.d/canary.conf\n    upstream: app\n    stable: [127.0.0.1:9001]\n    canary: [127.0.0.1:9002]\n{scrape}"
    );
    let p = Policy::from_text(&good).unwrap();
    assert_eq!(p.traffic.unwrap().provider, TrafficProvider::Nginx);

    // nginx does not count: without a metrics section it cannot be judged.
    let errs = errors_of(&good.replace(scrape, ""));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "metrics");

    // Anything that could inject nginx syntax is refused, with its place.
    let bad = good
        .replace("upstream: app", "upstream: \"app; }\"")
        .replace("[127.0.0.1:9002]", "[\"127.0.0.1:9002 backup\"]");
    let errs = errors_of(&bad);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["traffic.nginx.upstream", "traffic.nginx.canary[0]"],
        "{errs:?}"
    );
    assert_eq!(errs[1].line, Some(9));

    let hap = format!(
        "{base}traffic:\n  provider: haproxy\n  haproxy: {{socket: /run/haproxy.sock, backend: app, stable: [s1], canary: [c1]}}\n"
    );
    assert!(
        Policy::from_text(&hap).is_ok(),
        "{:?}",
        Policy::from_text(&hap)
    );
    let errs = errors_of(&hap.replace("[c1]", "[\"c1\\nshutdown sessions\"]"));
    assert_eq!(errs[0].path, "traffic.haproxy.canary[0]", "{errs:?}");
    let errs = errors_of(&hap.replace("/run/haproxy.sock", "haproxy.sock"));
    assert_eq!(errs[0].path, "traffic.haproxy.socket", "{errs:?}");
    // HAProxy's weights are integers up to 256: 0.1 % cannot be given.
    let errs = errors_of(&hap.replace("weight: 10,", "weight: 0.1,"));
    assert_eq!(errs[0].path, "stages[0].weight", "{errs:?}");
    assert!(errs[0].rule.contains("0–256"), "{}", errs[0].rule);
    // A section for another provider is refused.
    let errs = errors_of(&format!(
        "{base}traffic:\n  provider: simulated\n  haproxy: {{socket: /s, backend: a, stable: [s], canary: [c]}}\n"
    ));
    assert_eq!(errs[0].path, "traffic.haproxy", "{errs:?}");
    let errs = errors_of(&format!("{base}traffic: {{provider: haproxy}}\n"));
    assert_eq!(errs[0].path, "traffic.haproxy", "{errs:?}");
}

#[test]
fn alb_sections_are_checked_field_by_field() {
    let base = "name: p\nstages: [{weight: 10, duration: 1m}, {weight: 100, duration: 1m}]\n";
    let scrape = "metrics:\n  provider: scrape\n  scrape: {stable: [http://a:1/metrics], canary: [http://b:2/metrics], preset: http}\n";
    let arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012";
    let good = format!(
        "{base}traffic:\n  provider: alb\n  alb:\n    listener: {arn}:listener/app/web/50dc/f2f7\n    stable_target_group: {arn}:targetgroup/web-stable/73e2\n    canary_target_group: {arn}:targetgroup/web-canary/2453\n    region: us-east-1\n{scrape}"
    );
    let p = Policy::from_text(&good).unwrap();
    assert_eq!(p.traffic.unwrap().provider, TrafficProvider::Alb);

    // canary does not read an ALB's counts: a metrics section is needed.
    let errs = errors_of(&good.replace(scrape, ""));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "metrics");
    assert!(errs[0].rule.contains("alb"), "{}", errs[0].rule);

    // Each field names itself and its line.
    let bad = good
        .replace("listener/app/web", "loadbalancer/app/web")
        .replace("web-canary/2453", "web-stable/73e2")
        .replace("us-east-1\n", "\"us east\"\n");
    let errs = errors_of(&bad);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "traffic.alb.listener",
            "traffic.alb.canary_target_group",
            "traffic.alb.region"
        ],
        "{errs:?}"
    );
    assert_eq!(errs[0].line, Some(6));
    let errs = errors_of(&good.replace(
        "    region: us-east-1\n",
        "    endpoint_url: 127.0.0.1:5000\n    timeout: 0s\n    rule: x\n",
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "traffic.alb.rule",
            "traffic.alb.endpoint_url",
            "traffic.alb.timeout"
        ],
        "{errs:?}"
    );
    // ALB weights are integers 0–999: 0.04 % cannot be given, neither as a
    // stage nor as a rollback step.
    let errs = errors_of(&format!(
        "{}rollback: {{mode: gradual, steps: [5, 0.05, 0]}}\n",
        good.replace("weight: 10,", "weight: 0.04,")
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["stages[0].weight", "rollback.steps[1]"], "{errs:?}");
    assert!(errs[0].rule.contains("0–999"), "{}", errs[0].rule);
    let errs = errors_of(&format!("{base}traffic: {{provider: alb}}\n{scrape}"));
    assert_eq!(errs[0].path, "traffic.alb", "{errs:?}");
}

#[test]
fn mode_is_enforce_by_default_and_advisory_when_asked() {
    let base = "name: p\nstages: [{weight: 100, duration: 1m}]\n";
    assert_eq!(Policy::from_text(base).unwrap().mode, Mode::Enforce);
    let p = Policy::from_text(&format!("{base}mode: advisory\n")).unwrap();
    assert_eq!(p.mode, Mode::Advisory);
    let errs = errors_of(&format!("{base}mode: dry\n"));
    assert_eq!(errs[0].path, "mode", "{errs:?}");
}

#[test]
fn a_document_that_is_not_a_mapping_is_refused() {
    for text in [
        r#"["x", [{"weight": 100, "duration": "1m"}], {}, {"provider": "simulated"}]"#,
        "- x\n- [{weight: 100, duration: 1m}]\n",
        "42\n",
        "\"just a string\"\n",
    ] {
        let errs = errors_of(text);
        assert_eq!(errs.len(), 1, "{text}: {errs:?}");
        assert!(
            errs[0].rule.contains("must be a mapping"),
            "{text}: {errs:?}"
        );
    }
}

#[test]
fn a_prometheus_metrics_section_with_a_preset_is_three_lines() {
    let text = "name: p\nstages: [{weight: 100, duration: 1m}]\nmetrics:\n  provider: prometheus\n  prometheus: {address: 'http://127.0.0.1:9090', preset: http, labels: {app: checkout}}\n";
    let p = Policy::from_text(text).unwrap();
    let m = p.metrics.unwrap();
    assert_eq!(m.provider, crate::MetricsProvider::Prometheus);
    let prom = m.prometheus.unwrap();
    assert_eq!(prom.versions.canary, "canary");
    assert_eq!(prom.labels["app"], "checkout");
    assert_eq!(
        p.analysis.on_metrics_unavailable,
        super::OnMetricsUnavailable::Pause
    );
    assert_eq!(p.analysis.metrics_unavailable_after, 3);
}

#[test]
fn metrics_sections_are_checked_with_their_paths_and_lines() {
    let base = "name: p\nstages: [{weight: 100, duration: 1m}]\n";
    let cases = [
        ("metrics: {provider: prometheus}\n", "metrics.prometheus", "needs a `prometheus` section"),
        ("metrics: {provider: scrape, prometheus: {address: 'http://x:9090', preset: http}}\n", "metrics.prometheus", "only for `provider: prometheus`"),
        ("metrics:\n  provider: prometheus\n  prometheus: {address: 'ftp://x', preset: http}\n", "metrics.prometheus.address", "not an http:// or https:// URL"),
        ("metrics:\n  provider: prometheus\n  prometheus: {address: 'http://x:9090'}\n", "metrics.prometheus.requests", "required without a `preset`"),
        ("metrics:\n  provider: prometheus\n  prometheus:\n    address: 'http://x:9090'\n    requests: 'sum(rate(http_requests_total[1m]))'\n    errors: 'sum(x{v=\"$version\"})'\n", "metrics.prometheus.requests", "must contain `$version`"),
        ("metrics:\n  provider: prometheus\n  prometheus: {address: 'http://x:9090', preset: http, versions: {stable: v1, canary: v1}}\n", "metrics.prometheus.versions.canary", "must differ"),
        ("metrics:\n  provider: prometheus\n  prometheus: {address: 'http://x:9090', preset: http, labels: {'bad-name': x}}\n", "metrics.prometheus.labels.bad-name", "not a label name"),
        ("metrics:\n  provider: scrape\n  scrape: {stable: [], canary: ['http://b/metrics'], preset: http}\n", "metrics.scrape.stable", "at least one endpoint"),
        ("metrics:\n  provider: scrape\n  scrape: {stable: ['http://a/metrics'], canary: ['http://a/metrics'], preset: http}\n", "metrics.scrape.canary", "also a stable endpoint"),
        ("metrics:\n  provider: scrape\n  scrape: {stable: ['http://a/m'], canary: ['http://b/m'], preset: http, timeout: 0s}\n", "metrics.scrape.timeout", "must be positive"),
        ("metrics:\n  provider: prometheus\n  prometheus: {address: 'http://x:9090', preset: http, tls: {ca_file: /ca.pem}}\n", "metrics.prometheus.tls", "only applies to https://"),
        ("metrics:\n  provider: prometheus\n  prometheus: {address: 'https://x:9090', preset: http, tls: {cert_file: /c.pem}}\n", "metrics.prometheus.tls.key_file", "needs its private key"),
        ("metrics:\n  provider: prometheus\n  prometheus: {address: 'https://x:9090', preset: http, tls: {key_file: /k.pem}}\n", "metrics.prometheus.tls.cert_file", "needs its client certificate"),
        ("metrics:\n  provider: prometheus\n  prometheus: {address: 'https://x:9090', preset: http, tls: {ca_file: /ca.pem, insecure_skip_verify: true}}\n", "metrics.prometheus.tls.insecure_skip_verify", "not both"),
        ("metrics:\n  provider: scrape\n  scrape: {stable: ['https://a/m'], canary: ['https://b/m'], preset: http, tls: {ca_file: ''}}\n", "metrics.scrape.tls.ca_file", "must be a file path"),
        ("metrics:\n  provider: scrape\n  scrape: {stable: ['https://a/m'], canary: ['https://b/m'], preset: http, tls: {ca_file: /ca.pem, verify: false}}\n", "metrics.scrape.tls.verify", "unknown field `verify`"),
        ("analysis: {metrics_unavailable_after: 0}\n", "analysis.metrics_unavailable_after", "at least 1"),
        ("analysis: {on_metrics_unavailable: ignore}\n", "analysis.on_metrics_unavailable", ""),
    ];
    for (extra, path, rule) in cases {
        let text = format!("{base}{extra}");
        let errs = errors_of(&text);
        let hit = errs.iter().find(|e| e.path == path);
        assert!(hit.is_some(), "{extra}: no error at {path}: {errs:?}");
        let e = hit.unwrap();
        assert!(e.rule.contains(rule), "{extra}: {e:?}");
        assert!(e.line.is_some(), "{extra}: no line: {e:?}");
    }
}

#[test]
fn a_gradual_rollback_needs_decreasing_steps_ending_at_zero() {
    let base = "name: p\nstages: [{weight: 50, duration: 1m}, {weight: 100, duration: 1m}]\n";
    let p = Policy::from_text(&format!(
        "{base}rollback: {{mode: gradual, steps: [50, 25, 0]}}\n"
    ))
    .unwrap();
    assert_eq!(p.rollback.steps, [50.0, 25.0, 0.0]);
    assert_eq!(p.rollback.step_interval, Duration::from_secs(30));
    assert!(Policy::from_text(base).unwrap().rollback.steps.is_empty());
    for (rollback, path) in [
        ("{mode: gradual}", "rollback.steps"),
        ("{mode: gradual, steps: [50, 60, 0]}", "rollback.steps[1]"),
        ("{mode: gradual, steps: [50, 10]}", "rollback.steps[1]"),
        ("{mode: gradual, steps: [100, 0]}", "rollback.steps[0]"),
        (
            "{mode: gradual, steps: [10, 0], step_interval: 0s}",
            "rollback.step_interval",
        ),
        ("{mode: immediate, steps: [10, 0]}", "rollback.steps"),
        ("{mode: slowly}", "rollback.mode"),
    ] {
        let errs = errors_of(&format!("{base}rollback: {rollback}\n"));
        assert_eq!(errs[0].path, path, "{rollback}: {errs:?}");
        assert_eq!(errs[0].line, Some(3), "{rollback}: {errs:?}");
    }
}

#[test]
fn business_and_threshold_metrics_are_checked_field_by_field() {
    let base = "name: p\nstages: [{weight: 50, duration: 1m}]\nmetrics:\n  provider: prometheus\n  prometheus: {address: http://p:9090, preset: http}\n";
    let good = format!(
        "{base}  business:\n    - {{name: conversion, numerator: 'a{{v=\"$version\"}}', denominator: 'b{{v=\"$version\"}}', direction: higher_is_better}}\n  thresholds:\n    - {{name: memory, query: 'm{{v=\"$version\"}}', max: 5e8}}\n"
    );
    let p = Policy::from_text(&good).unwrap();
    let m = p.metrics.unwrap();
    assert_eq!(m.business[0].name, "conversion");
    assert_eq!(m.thresholds[0].consecutive, 1);
    for (from, to, path) in [
        (
            "name: conversion",
            "name: error_rate",
            "metrics.business[0].name",
        ),
        (
            "name: conversion",
            "name: Conversion",
            "metrics.business[0].name",
        ),
        (
            "name: memory",
            "name: conversion",
            "metrics.thresholds[0].name",
        ),
        (
            "'a{v=\"$version\"}'",
            "'a'",
            "metrics.business[0].numerator",
        ),
        ("max: 5e8", "consecutive: 2", "metrics.thresholds[0].max"),
        ("max: 5e8", "max: 1, min: 2", "metrics.thresholds[0].min"),
        (
            "max: 5e8",
            "max: 1, consecutive: 0",
            "metrics.thresholds[0].consecutive",
        ),
        ("higher_is_better", "up", "metrics.business[0].direction"),
    ] {
        let errs = errors_of(&good.replacen(from, to, 1));
        assert_eq!(errs[0].path, path, "{to}: {errs:?}");
        assert!(errs[0].line.is_some(), "{to}: {errs:?}");
    }
    // The proxy counts only requests: no business metrics with it.
    let proxy = good.replace(
        "  provider: prometheus\n  prometheus: {address: http://p:9090, preset: http}\n",
        "  provider: proxy\n",
    );
    let errs = errors_of(&proxy);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["metrics.business", "metrics.thresholds"],
        "{errs:?}"
    );
}

const HOOKED: &str = "name: x
stages:
  - {weight: 10, duration: 1m}
  - {weight: 100, duration: 1m}
webhooks:
  - name: smoke
    type: pre-rollout
    url: http://127.0.0.1:9000/smoke
    timeout: 30s
    secret: {env: HOOK_SECRET}
    metadata: {team: payments, runs: 3}
  - {name: approve, type: confirm-promotion, url: 'http://gate.internal/ok'}
notifications:
  - {name: ops, url: 'http://127.0.0.1:9000/n', format: slack, events: [promoted, rolled-back]}
  - {name: all, url: 'http://127.0.0.1:9000/all'}
pause_timeout: {after: 30m, action: keep-waiting}
gate_timeout: {after: 2h}
";

#[test]
fn webhooks_notifications_and_wait_limits_are_validated_into_the_policy() {
    let p = Policy::from_text(HOOKED).unwrap();
    let h = &p.hooks;
    assert_eq!(h.webhooks.len(), 2);
    assert_eq!(h.webhooks[0].kind, WebhookType::PreRollout);
    assert_eq!(h.webhooks[0].timeout, Duration::from_secs(30));
    assert_eq!(h.webhooks[0].metadata["runs"], serde_json::json!(3));
    assert_eq!(
        h.webhooks[0].secret.as_ref().and_then(|s| s.env.as_deref()),
        Some("HOOK_SECRET")
    );
    assert_eq!(h.webhooks[1].timeout, DEFAULT_WEBHOOK_TIMEOUT);
    assert!(h.has(WebhookType::ConfirmPromotion));
    assert!(!h.has(WebhookType::Rollback));
    assert_eq!(h.notifications[0].format, NotificationFormat::Slack);
    assert_eq!(h.notifications[0].events.len(), 2);
    assert_eq!(
        h.notifications[1].events.len(),
        NotificationEvent::ALL.len()
    );
    assert_eq!(h.notifications[1].retry_for, DEFAULT_RETRY_FOR);
    assert_eq!(
        h.pause_timeout,
        Some(WaitLimit {
            after: Duration::from_secs(1800),
            action: WaitAction::KeepWaiting
        })
    );
    assert_eq!(h.gate_timeout.after, Duration::from_secs(7200));
    assert_eq!(h.gate_timeout.action, WaitAction::Abort);
    // Without the sections: no hooks, gates wait at most 1h.
    let p = Policy::from_text("name: x\nstages: [{weight: 100, duration: 1m}]\n").unwrap();
    assert!(p.hooks.webhooks.is_empty());
    assert_eq!(p.hooks.gate_timeout.after, DEFAULT_GATE_TIMEOUT);
    assert_eq!(p.hooks.pause_timeout, None);
}

#[test]
fn an_unknown_webhook_type_names_its_field_and_line() {
    let e = errors_of(
        "name: x
stages: [{weight: 100, duration: 1m}]
webhooks:
  - name: a
    type: pre-deploy
    url: http://127.0.0.1:1/x
",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "webhooks[0].type");
    assert_eq!(e[0].line, Some(5));
    assert!(e[0].rule.contains("pre-rollout"), "{}", e[0].rule);
}

#[test]
fn every_bad_hook_field_is_reported_with_its_path() {
    let e = errors_of(
        "name: x
stages: [{weight: 100, duration: 1m}]
webhooks:
  - {name: 'a b', type: rollout, url: 'http://127.0.0.1:1/x'}
  - {name: ok, type: rollback, url: 'https://example.com/x'}
  - {name: ok, type: event, url: 'ftp://x', timeout: 0s}
  - {name: s, type: event, url: 'http://h/x', secret: {env: HOOK, file: /x}}
  - {name: t, type: event, url: 'http://h/x', secret: {env: '1BAD'}}
notifications:
  - {name: n, url: 'http://h:0/x', events: []}
pause_timeout: {after: 0s}
",
    );
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "webhooks[0].name",
            "webhooks[1].url",
            "webhooks[2].name",
            "webhooks[2].url",
            "webhooks[2].timeout",
            "webhooks[3].secret",
            "webhooks[4].secret.env",
            "notifications[0].url",
            "notifications[0].events",
            "pause_timeout.after",
        ],
        "{e:#?}"
    );
    assert!(
        e[1].rule.contains("https:// is not supported"),
        "{}",
        e[1].rule
    );
    assert!(e[2].rule.contains("used twice"), "{}", e[2].rule);
    assert_eq!(e[0].line, Some(4));
    assert_eq!(e[9].line, Some(11));
}

#[test]
fn kubernetes_sections_are_checked_field_by_field() {
    let base = "name: p\nstages: [{weight: 10, duration: 1m}, {weight: 100, duration: 1m}]\n";
    let scrape = "metrics:\n  provider: scrape\n  scrape: {stable: [http://a:1/metrics], canary: [http://b:2/metrics], preset: http}\n";
    let good = |provider: &str, fields: &str| {
        format!("{base}traffic:\n  provider: {provider}\n  kubernetes:\n    namespace: shop\n{fields}{scrape}")
    };
    let backends = "    stable: checkout-stable\n    canary: checkout-canary\n";
    for (provider, fields, want) in [
        ("gateway-api", format!("    http_route: checkout\n    route_cookie: \"\"\n{backends}"), TrafficProvider::GatewayApi),
        ("istio", format!("    virtual_service: checkout\n{backends}"), TrafficProvider::Istio),
        ("ingress-nginx", "    ingress: checkout-canary\n".to_string(), TrafficProvider::IngressNginx),
        ("smi", format!("    traffic_split: checkout\n    route_header: \"\"\n    route_cookie: \"\"\n{backends}"), TrafficProvider::Smi),
    ] {
        let text = good(provider, &fields);
        let p = Policy::from_text(&text).unwrap_or_else(|e| panic!("{provider}: {e}"));
        assert_eq!(p.traffic.unwrap().provider, want);
        // The mesh's counts are not read: a metrics section is needed.
        let errs = errors_of(&text.replace(scrape, ""));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "metrics");
    }
    // The object of another provider, a bad name, a missing backend.
    let errs = errors_of(&good(
        "istio",
        "    virtual_service: Checkout\n    http_route: checkout\n    stable: checkout-stable\n",
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "traffic.kubernetes.http_route",
            "traffic.kubernetes.virtual_service",
            "traffic.kubernetes.canary"
        ],
        "{errs:?}"
    );
    assert_eq!(errs[1].line, Some(7));
    // The same backend for both versions.
    let errs = errors_of(&good(
        "smi",
        "    traffic_split: t\n    route_header: \"\"\n    route_cookie: \"\"\n    stable: a\n    canary: a\n",
    ));
    assert_eq!(errs[0].path, "traffic.kubernetes.canary", "{errs:?}");
    // Istio's weights sum to 100 in whole percentages: 2.5 % cannot be set,
    // neither as a stage nor as a rollback step.
    let istio = good(
        "istio",
        &format!("    virtual_service: checkout\n{backends}"),
    );
    let errs = errors_of(&format!(
        "{}rollback: {{mode: gradual, steps: [5, 0.5, 0]}}\n",
        istio.replace("weight: 10,", "weight: 2.5,")
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["stages[0].weight", "rollback.steps[1]"], "{errs:?}");
    assert!(errs[0].rule.contains("sum"), "{}", errs[0].rule);
    // The Gateway API cannot match a cookie; SMI has no header routes.
    let errs = errors_of(&good(
        "gateway-api",
        &format!("    http_route: r\n    route_cookie: canary\n{backends}"),
    ));
    assert_eq!(errs[0].path, "traffic.kubernetes.route_cookie", "{errs:?}");
    // A section without the provider, and a provider without its section.
    let errs = errors_of(&format!(
        "{base}traffic:\n  provider: haproxy\n  haproxy: {{socket: /s, backend: a, stable: [s], canary: [c]}}\n  kubernetes: {{ingress: x}}\n"
    ));
    assert_eq!(errs[0].path, "traffic.kubernetes", "{errs:?}");
    let errs = errors_of(&format!("{base}traffic: {{provider: istio}}\n{scrape}"));
    assert_eq!(errs[0].path, "traffic.kubernetes", "{errs:?}");
    assert!(errs[0].rule.contains("virtual_service"), "{}", errs[0].rule);
}

#[test]
fn health_sections_are_checked() {
    let base = "name: p\nstages: [{weight: 10, duration: 1m}, {weight: 100, duration: 1m}]\n";
    let proxy = "traffic:\n  listen: 127.0.0.1:8080\n  stable: http://127.0.0.1:9001\n  canary: http://127.0.0.1:9002\n";
    let ok = format!(
        "{base}{proxy}  health:\n    http: {{stable: http://127.0.0.1:9001/healthz, canary: http://127.0.0.1:9002/healthz}}\n    deadline: 2m\n"
    );
    let p = Policy::from_text(&ok).unwrap();
    assert!(p.traffic.unwrap().health.is_some());
    // Deployments only with a Kubernetes provider; URLs must be http://.
    let errs = errors_of(&format!(
        "{base}{proxy}  health:\n    deployments: {{stable: a, canary: b}}\n    http: {{stable: ftp://x, canary: http://y:1/}}\n    deadline: 0s\n"
    ));
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "traffic.health.deployments",
            "traffic.health.http.stable",
            "traffic.health.deadline"
        ],
        "{errs:?}"
    );
    let errs = errors_of(&format!("{base}{proxy}  health: {{}}\n"));
    assert_eq!(errs[0].path, "traffic.health", "{errs:?}");
}

#[test]
fn the_holdback_is_a_percentage_below_50_that_keeps_the_last_stage_above_the_one_before() {
    let spec = |stages: &str, h: &str| {
        format!("name: h\nstages: [{stages}]\nanalysis:\n  holdback: {h}\n")
    };
    let usual =
        "{weight: 1, duration: 1m}, {weight: 50, duration: 1m}, {weight: 100, duration: 1m}";
    let p = Policy::from_text(&spec(usual, "2.5")).unwrap();
    assert_eq!(p.analysis.holdback, 2.5);
    assert_eq!(p.stages[2].routed_weight(), 97.5);
    assert_eq!(
        p.stages[2].describe_weight(),
        "100 %, 2.5 % held back on stable"
    );
    assert_eq!(
        (p.stages[1].holdback, p.stages[1].describe_weight()),
        (0.0, "50 %".into())
    );
    // 0 (off) is the default.
    assert_eq!(Policy::default_strategy().stages[4].routed_weight(), 100.0);
    assert_eq!(Policy::default_strategy().analysis.holdback, 0.0);
    assert_eq!(
        Policy::from_text(&spec(usual, "0")).unwrap().stages[2].routed_weight(),
        100.0
    );
    // Without a 100 % stage there is nothing to hold back.
    let p = Policy::from_text(&spec(
        "{weight: 10, duration: 1m}, {weight: 60, duration: 1m}",
        "5",
    ))
    .unwrap();
    assert!(p
        .stages
        .iter()
        .all(|s| s.holdback == 0.0 && s.routed_weight() == s.weight));
    for bad in ["-1", "50", "120"] {
        let e = errors_of(&spec(usual, bad));
        assert_eq!(e.len(), 1, "{bad}: {e:?}");
        assert_eq!(e[0].path, "analysis.holdback");
        assert_eq!(e[0].line, Some(4));
        assert!(e[0].rule.contains("[0, 50)"), "{}", e[0].rule);
    }
    // 100 − 30 = 70 is not above the 80 % stage before it.
    let e = errors_of(&spec(
        "{weight: 80, duration: 1m}, {weight: 100, duration: 1m}",
        "30",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(
        (e[0].path.as_str(), e[0].value.as_str()),
        ("analysis.holdback", "30")
    );
    assert!(
        e[0].rule.contains("would get 70 %") && e[0].rule.contains("stages[0].weight (80)"),
        "{}",
        e[0].rule
    );
    // The traffic layer must be able to give the split while it is judged:
    // Istio's whole percentages cannot route 97.5 %.
    let istio = "traffic:\n  provider: istio\n  kubernetes: {namespace: shop, virtual_service: v, stable: s, canary: c}\nmetrics:\n  provider: scrape\n  scrape: {stable: [http://a:1/metrics], canary: [http://b:2/metrics], preset: http}\n";
    let e = errors_of(&format!("{}{istio}", spec(usual, "2.5")));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].path, "analysis.holdback");
    assert!(Policy::from_text(&format!("{}{istio}", spec(usual, "5"))).is_ok());
}
