//! The traffic layers canary drives but does not run: nginx (a weighted
//! upstream in an include file canary owns) and HAProxy (server weights
//! over its runtime API). Their spec sections, their checks, and the
//! integer weights that give a requested split.
//!
//! Names written here end up in nginx's configuration and in HAProxy
//! runtime-API commands, so the checks admit only characters those
//! grammars treat as plain words: nothing in a spec can inject a directive
//! or a second command.

use serde::{Deserialize, Serialize};

use super::policy::Findings;
use crate::duration::HumanDuration;

/// `traffic.nginx`: the upstream canary writes, and how nginx is checked
/// and reloaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NginxTraffic {
    /// The file canary owns and rewrites (atomically), included in nginx's
    /// `http` block, e.g. `/etc/nginx/conf.d/canary-checkout.conf`.
    pub config: String,
    /// The upstream's name: `proxy_pass http://$<upstream>_route;` sends
    /// a request where the weights (or an A/B route) say.
    pub upstream: String,
    /// The stable version's servers, `host:port` each.
    pub stable: Vec<String>,
    /// The canary's servers.
    pub canary: Vec<String>,
    /// Checks the configuration with the new file in place (default
    /// `nginx -t`); argv, no shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_command: Option<Vec<String>>,
    /// Loads it (default `nginx -s reload`); argv, no shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_command: Option<Vec<String>>,
    /// How long each command may take (default 10s); also how long canary
    /// waits for nginx's old workers to stop taking requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_timeout: Option<HumanDuration>,
    /// nginx's pid file (default `/run/nginx.pid`): after a reload canary
    /// waits until every worker of the old configuration has stopped
    /// taking requests before it counts the weight as applied. `""` skips
    /// that wait (the weight counts once the reload command returns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<String>,
    /// A/B route: a request header whose value `canary` or `stable` forces
    /// that version (default `x-canary`; `""` turns it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_header: Option<String>,
    /// A/B route: a cookie whose value `canary` or `stable` forces that
    /// version (default `canary`; `""` turns it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_cookie: Option<String>,
}

impl NginxTraffic {
    /// The check command, as written or the default.
    pub fn test_argv(&self) -> Vec<String> {
        self.test_command
            .clone()
            .unwrap_or_else(|| vec!["nginx".into(), "-t".into()])
    }

    /// The reload command, as written or the default.
    pub fn reload_argv(&self) -> Vec<String> {
        self.reload_command
            .clone()
            .unwrap_or_else(|| vec!["nginx".into(), "-s".into(), "reload".into()])
    }

    /// The pid file to confirm reloads with, unless turned off.
    pub fn pid_path(&self) -> Option<&str> {
        let p = self.pid_file.as_deref().unwrap_or("/run/nginx.pid");
        (!p.is_empty()).then_some(p)
    }

    /// The A/B header, lower case, unless turned off.
    pub fn header(&self) -> Option<String> {
        let h = self.route_header.as_deref().unwrap_or("x-canary");
        (!h.is_empty()).then(|| h.to_ascii_lowercase())
    }

    /// The A/B cookie, unless turned off.
    pub fn cookie(&self) -> Option<String> {
        let c = self.route_cookie.as_deref().unwrap_or("canary");
        (!c.is_empty()).then(|| c.to_string())
    }
}

/// `traffic.haproxy`: the runtime API and the servers whose weights canary
/// sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxyTraffic {
    /// The runtime API: a unix socket path (`/run/haproxy/admin.sock`,
    /// `stats socket ... level admin`) or `HOST:PORT`.
    pub socket: String,
    /// The backend holding both versions' servers.
    pub backend: String,
    /// The stable version's server names in that backend.
    pub stable: Vec<String>,
    /// The canary's server names.
    pub canary: Vec<String>,
    /// How long one runtime-API command may take (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// HAProxy's largest server weight.
pub const HAPROXY_MAX_WEIGHT: u32 = 256;

/// `traffic.alb`: the AWS Application Load Balancer listener (or one of
/// its rules) whose forward action splits traffic between two weighted
/// target groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlbTraffic {
    /// The listener's ARN. Without `rule`, canary sets the weights of its
    /// default action.
    pub listener: String,
    /// A rule of that listener (its ARN) whose forward action canary sets
    /// instead of the listener's default action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The stable version's target group ARN.
    pub stable_target_group: String,
    /// The canary's target group ARN.
    pub canary_target_group: String,
    /// The AWS region (default: the standard configuration chain,
    /// `AWS_REGION` or the profile's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Another endpoint for the Elastic Load Balancing API (a stand-in such
    /// as moto or LocalStack, or a VPC endpoint), `http://` or `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// How long one API call may take, retries included (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// An ALB forward action's largest target group weight.
pub const ALB_MAX_WEIGHT: u32 = 999;

/// Integer server weights for a split, and the split they give.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntegerSplit {
    /// Each stable server's weight.
    pub stable: u32,
    /// Each canary server's weight.
    pub canary: u32,
    /// The canary's share these weights give, percent.
    pub percent: f64,
}

/// The integer weights, one for every stable server and one for every
/// canary server, whose split is closest to `percent` % to the canary.
///
/// Without `max`, the split is exact to 0.01 % (weights reduced by their
/// greatest common divisor); with `max` (HAProxy's 256), each weight is at
/// most `max` and the closest split is found by search. 0 % gives the
/// canary weight 0 and 100 % the stable side 0.
pub fn integer_split(percent: f64, n_stable: u32, n_canary: u32, max: Option<u32>) -> IntegerSplit {
    let p = percent.clamp(0.0, 100.0);
    let (ns, nc) = (u64::from(n_stable.max(1)), u64::from(n_canary.max(1)));
    let share = |s: u64, c: u64| {
        let (s, c) = (s * ns, c * nc);
        if s + c == 0 {
            0.0
        } else {
            100.0 * c as f64 / (s + c) as f64
        }
    };
    let (s, c) = match max {
        None => {
            let c = (p * 100.0).round() as u64;
            let s = 10_000 - c;
            let (ws, wc) = (s * nc, c * ns);
            let g = gcd(ws, wc).max(1);
            (ws / g, wc / g)
        }
        Some(m) => {
            let m = u64::from(m.max(1));
            let mut best = (1, 0, f64::INFINITY);
            for total in 1..=2 * m {
                for c in total.saturating_sub(m)..=total.min(m) {
                    let err = (share(total - c, c) - p).abs();
                    if err < best.2 - 1e-12 {
                        best = (total - c, c, err);
                    }
                }
                if best.2 == 0.0 {
                    break;
                }
            }
            (best.0, best.1)
        }
    };
    IntegerSplit {
        stable: s as u32,
        canary: c as u32,
        percent: share(s, c),
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Whether `s` is a plain word of `[A-Za-z0-9_]` (nginx variable parts,
/// cookie names).
fn is_word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `s` is an HTTP header name nginx can read as `$http_...`.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `s` is `host:port` (a name, IPv4 or `[IPv6]`) or `unix:/path`
/// with nothing nginx would read as syntax.
fn is_server_address(s: &str) -> bool {
    if let Some(path) = s.strip_prefix("unix:") {
        return path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']').is_some_and(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        })
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    };
    host_ok && matches!(port.parse::<u16>(), Ok(p) if p > 0)
}

/// Whether `s` is an HAProxy proxy or server name (letters, digits, `-`,
/// `_`, `.`, `:`).
fn is_haproxy_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// A timeout, when written, must be longer than zero.
fn check_timeout(path: &str, t: Option<HumanDuration>, found: &mut Findings) {
    if let Some(t) = t.filter(|t| t.0.is_zero()) {
        found.add(path.into(), t.to_string(), "must be longer than 0s".into());
    }
}

/// Checks `traffic.nginx` for `provider: nginx`.
pub(super) fn check_nginx(n: &NginxTraffic, found: &mut Findings) {
    if n.config.trim().is_empty() || n.config.chars().any(char::is_control) {
        found.add(
            "traffic.nginx.config".into(),
            format!("{:?}", n.config),
            "must be the path of the file canary writes (and nginx includes)".into(),
        );
    }
    if !is_word(&n.upstream) || n.upstream.starts_with(|c: char| c.is_ascii_digit()) {
        found.add(
            "traffic.nginx.upstream".into(),
            format!("{:?}", n.upstream),
            "must be a name of letters, digits and `_`, not starting with a digit (it also \
             names nginx variables)"
                .into(),
        );
    }
    for (side, list) in [("stable", &n.stable), ("canary", &n.canary)] {
        if list.is_empty() {
            found.add(
                format!("traffic.nginx.{side}"),
                "[]".into(),
                "needs at least one server, `host:port`".into(),
            );
        }
        for (i, a) in list.iter().enumerate() {
            if !is_server_address(a) {
                found.add(
                    format!("traffic.nginx.{side}[{i}]"),
                    format!("{a:?}"),
                    "must be `host:port` (or `unix:/path`), e.g. 127.0.0.1:9001".into(),
                );
            }
        }
    }
    for (field, argv) in [
        ("test_command", &n.test_command),
        ("reload_command", &n.reload_command),
    ] {
        if let Some(a) = argv {
            if a.first().is_none_or(|p| p.trim().is_empty()) {
                found.add(
                    format!("traffic.nginx.{field}"),
                    format!("{a:?}"),
                    "must be a command and its arguments, e.g. [nginx, -t]".into(),
                );
            }
        }
    }
    if let Some(p) = &n.pid_file {
        if p.chars().any(char::is_control) || !(p.is_empty() || p.starts_with('/')) {
            found.add(
                "traffic.nginx.pid_file".into(),
                format!("{p:?}"),
                "must be an absolute path (or \"\" to skip confirming reloads)".into(),
            );
        }
    }
    check_timeout("traffic.nginx.command_timeout", n.command_timeout, found);
    if let Some(h) = &n.route_header {
        if !h.is_empty() && !is_header_name(h) {
            found.add(
                "traffic.nginx.route_header".into(),
                format!("{h:?}"),
                "must be a header name of letters, digits, `-` and `_` (or \"\" for none)".into(),
            );
        }
    }
    if let Some(c) = &n.route_cookie {
        if !c.is_empty() && !is_word(c) {
            found.add(
                "traffic.nginx.route_cookie".into(),
                format!("{c:?}"),
                "must be a cookie name of letters, digits and `_` (or \"\" for none)".into(),
            );
        }
    }
}

/// Checks `traffic.haproxy` for `provider: haproxy`, and that every stage
/// weight is one HAProxy's integer weights (0–256) can give.
pub(super) fn check_haproxy(h: &HaproxyTraffic, weights: &[(String, f64)], found: &mut Findings) {
    let s = h.socket.trim();
    let tcp = s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if !(s.starts_with('/') || s.starts_with("unix:/") || tcp) || s.chars().any(char::is_control) {
        found.add(
            "traffic.haproxy.socket".into(),
            format!("{:?}", h.socket),
            "must be the runtime API's unix socket path (e.g. /run/haproxy/admin.sock) or \
             HOST:PORT"
                .into(),
        );
    }
    if !is_haproxy_name(&h.backend) {
        found.add(
            "traffic.haproxy.backend".into(),
            format!("{:?}", h.backend),
            "must be an HAProxy backend name (letters, digits, `-`, `_`, `.`, `:`)".into(),
        );
    }
    for (side, list) in [("stable", &h.stable), ("canary", &h.canary)] {
        if list.is_empty() {
            found.add(
                format!("traffic.haproxy.{side}"),
                "[]".into(),
                "needs at least one server name of the backend".into(),
            );
        }
        for (i, a) in list.iter().enumerate() {
            if !is_haproxy_name(a) {
                found.add(
                    format!("traffic.haproxy.{side}[{i}]"),
                    format!("{a:?}"),
                    "must be an HAProxy server name (letters, digits, `-`, `_`, `.`, `:`)".into(),
                );
            }
        }
    }
    check_timeout("traffic.haproxy.timeout", h.timeout, found);
    let (ns, nc) = (h.stable.len().max(1) as u32, h.canary.len().max(1) as u32);
    for (path, w) in weights {
        let w = *w;
        let split = integer_split(w, ns, nc, Some(HAPROXY_MAX_WEIGHT));
        if (split.percent - w).abs() > (0.02 * w).max(0.01) {
            found.add(
                path.clone(),
                format!("{w}"),
                format!(
                    "HAProxy's server weights are integers 0–{HAPROXY_MAX_WEIGHT}: the closest \
                     split to {w} % is {:.3} % (weights {} and {}); use a weight of at least \
                     0.4 %",
                    split.percent, split.stable, split.canary
                ),
            );
        }
    }
}

/// Whether `s` is an Elastic Load Balancing ARN of the given resource
/// kind (`listener`, `listener-rule`, `targetgroup`).
fn is_elb_arn(s: &str, kind: &str) -> bool {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && !parts[1].is_empty()
        && parts[2] == "elasticloadbalancing"
        && !parts[3].is_empty()
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && !parts[4].is_empty()
        && parts[5]
            .strip_prefix(kind)
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|r| {
                !r.is_empty()
                    && r.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
            })
}

/// Checks `traffic.alb` for `provider: alb`, and that every weight the
/// rollout can set (its stages and its rollback steps) has target group
/// weights within ALB's 0–999.
pub(super) fn check_alb(a: &AlbTraffic, weights: &[(String, f64)], found: &mut Findings) {
    let arn = |found: &mut Findings, field: &str, v: &str, kind: &str, example: &str| {
        if !is_elb_arn(v, kind) {
            found.add(
                format!("traffic.alb.{field}"),
                format!("{v:?}"),
                format!("must be an Elastic Load Balancing {kind} ARN, e.g. {example}"),
            );
        }
    };
    arn(
        found,
        "listener",
        &a.listener,
        "listener",
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2",
    );
    if let Some(r) = &a.rule {
        arn(
            found,
            "rule",
            r,
            "listener-rule",
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener-rule/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2/9683b2d02a6cabee",
        );
    }
    for (field, v) in [
        ("stable_target_group", &a.stable_target_group),
        ("canary_target_group", &a.canary_target_group),
    ] {
        arn(
            found,
            field,
            v,
            "targetgroup",
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-stable/73e2d6bc24d8a067",
        );
    }
    if a.stable_target_group == a.canary_target_group && !a.stable_target_group.is_empty() {
        found.add(
            "traffic.alb.canary_target_group".into(),
            format!("{:?}", a.canary_target_group),
            "is the stable target group too: the versions need a target group each".into(),
        );
    }
    if let Some(r) = &a.region {
        let ok = !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            found.add(
                "traffic.alb.region".into(),
                format!("{r:?}"),
                "must be an AWS region name such as us-east-1".into(),
            );
        }
    }
    if let Some(u) = &a.endpoint_url {
        let rest = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"));
        if !rest.is_some_and(|r| !r.is_empty() && !r.chars().any(|c| c.is_whitespace())) {
            found.add(
                "traffic.alb.endpoint_url".into(),
                format!("{u:?}"),
                "must be an http:// or https:// URL".into(),
            );
        }
    }
    check_timeout("traffic.alb.timeout", a.timeout, found);
    for (path, w) in weights {
        let w = *w;
        let split = integer_split(w, 1, 1, Some(ALB_MAX_WEIGHT));
        if (split.percent - w).abs() > (0.02 * w).max(0.01) {
            found.add(
                path.clone(),
                format!("{w}"),
                format!(
                    "ALB target group weights are integers 0–{ALB_MAX_WEIGHT}: the closest split \
                     to {w} % is {:.3} % (weights {} and {}); use a weight of at least 0.1 %",
                    split.percent, split.stable, split.canary
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbounded_weights_give_the_split_exactly_and_reduced() {
        let s = integer_split(10.0, 1, 1, None);
        assert_eq!((s.stable, s.canary), (9, 1));
        assert!((s.percent - 10.0).abs() < 1e-12);
        let s = integer_split(2.5, 1, 1, None);
        assert_eq!((s.stable, s.canary), (39, 1));
        // Two stable servers, one canary: each stable server carries half of 75 %.
        let s = integer_split(25.0, 2, 1, None);
        assert_eq!((s.stable, s.canary), (3, 2));
        assert!((s.percent - 25.0).abs() < 1e-12, "{s:?}");
        let s = integer_split(0.0, 1, 1, None);
        assert_eq!((s.stable, s.canary, s.percent), (1, 0, 0.0));
        let s = integer_split(100.0, 1, 1, None);
        assert_eq!((s.stable, s.canary, s.percent), (0, 1, 100.0));
    }

    #[test]
    fn bounded_weights_stay_within_the_bound_and_come_closest() {
        for p in [0.0, 0.5, 1.0, 5.0, 10.0, 25.0, 33.3, 50.0, 99.0, 100.0] {
            let s = integer_split(p, 1, 1, Some(256));
            assert!(s.stable <= 256 && s.canary <= 256, "{p}: {s:?}");
            assert!((s.percent - p).abs() < 0.2, "{p}: {s:?}");
        }
        let s = integer_split(10.0, 1, 1, Some(256));
        assert_eq!((s.stable, s.canary), (9, 1));
        let s = integer_split(1.0, 1, 1, Some(256));
        assert_eq!((s.stable, s.canary), (99, 1));
        // Below 1/257 the closest split is far off.
        let s = integer_split(0.1, 1, 1, Some(256));
        assert!(s.percent == 0.0 || s.percent > 0.3, "{s:?}");
    }

    #[test]
    fn addresses_and_names_admit_no_syntax() {
        assert!(is_server_address("127.0.0.1:9001"));
        assert!(is_server_address("app-1.internal:80"));
        assert!(is_server_address("[::1]:8080"));
        assert!(is_server_address("unix:/run/app.sock"));
        for bad in [
            "127.0.0.1",
            "a:0",
            "a b:80",
            "a:80;",
            "a:80 weight=5",
            "x:80\nserver evil:1",
            "unix:relative",
            "[::1:80",
        ] {
            assert!(!is_server_address(bad), "{bad:?}");
        }
        assert!(is_haproxy_name("be_app"));
        assert!(!is_haproxy_name("be app"));
        assert!(!is_haproxy_name("a;show info"));
        assert!(!is_haproxy_name(""));
    }
}
