//! Hostile and careless input, run through the binary as a user would: each
//! case ends in a clear error (exit 2) or a correct result, never a crash, a
//! hang or exhausted memory. One test per case, named for it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn canary(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(args)
        .output()
        .expect("the canary binary runs")
}

fn file(name: &str, text: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit 2 with `needle` in the error.
fn refused(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[test]
fn validate_dev_zero_is_refused_at_the_size_limit() {
    let o = canary(&["validate", "/dev/zero"]);
    refused(&o, "larger than the 16 MiB limit");
}

#[test]
fn an_endless_stdin_is_refused_at_the_size_limit() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'#'; 1 << 16];
        // Stops when canary closes its end (after the limit).
        while stdin.write_all(&chunk).is_ok() {}
    });
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    writer.join().unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("standard input") || err.contains("16 MiB"),
        "{err}"
    );
}

#[test]
fn a_spec_that_is_not_utf8_names_the_offset() {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("latin1.yaml");
    std::fs::write(&p, b"name: caf\xe9\n").unwrap();
    let o = canary(&["validate", p.to_str().unwrap()]);
    refused(&o, "not UTF-8 text (invalid byte at offset 9)");
}

#[test]
fn simulate_into_a_closed_pipe_exits_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_canary"))
        .args(["simulate", "--timeline", "--seed", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, then close the pipe, as `| head -1` does.
    let mut out = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {}
    drop(out);
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(o.status.code(), Some(0), "{err}");
}

#[test]
fn simulate_at_ten_million_requests_per_second_is_refused_with_the_limit() {
    let s = file(
        "huge-rate.scenario.yaml",
        "name: huge\nrequest_rate: 10000000\n",
    );
    let o = canary(&["simulate", "--scenario", s.to_str().unwrap()]);
    refused(&o, "a simulated rollout may draw at most 5e8");
}

#[test]
fn simulate_with_stages_lasting_most_of_a_year_is_refused_with_the_limit() {
    let spec = file(
        "years.yaml",
        "name: years\nstages:\n  - {weight: 10, duration: 300d}\n  - {weight: 100, duration: 300d}\nanalysis: {interval: 1s}\n",
    );
    let o = canary(&["simulate", "--spec", spec.to_str().unwrap()]);
    refused(&o, "at most 1000000 looks");
    let o = canary(&["evaluate", "--runs", "2", "--spec", spec.to_str().unwrap()]);
    refused(&o, "at most 1000000 looks");
}

#[test]
fn evaluate_with_a_hundred_thousand_threads_is_refused() {
    let o = canary(&["evaluate", "--runs", "1", "--threads", "100000"]);
    refused(&o, "--threads");
    let o = canary(&["evaluate", "--runs", "100000000000"]);
    refused(&o, "--runs");
}

/// Both versions answering 100 % errors (a broken release into a broken
/// world): the comparison alone would promote; the default guardrail holds
/// the first stage, for every judge.
#[test]
fn a_canary_as_broken_as_stable_is_never_promoted() {
    let s = file(
        "broken-world.scenario.yaml",
        "name: broken-world\nrequest_rate: 100\nbaseline:\n  error_rate: 1.0\n",
    );
    for judge in ["threshold", "sequential", "deviation", "ztest", "kayenta"] {
        let o = canary(&[
            "simulate",
            "--judge",
            judge,
            "--scenario",
            s.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{judge}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(!out.contains("\"phase\": \"succeeded\""), "{judge}: {out}");
        assert!(
            out.contains("\"phase\": \"paused\"") || out.contains("\"phase\": \"rolled_back\""),
            "{judge}: {out}"
        );
        assert!(!out.contains("\"final_weight\": 100.0"), "{judge}");
        if out.contains("\"phase\": \"paused\"") {
            assert!(
                out.contains("analysis.guardrails.max_error_rate"),
                "{judge}: {out}"
            );
        }
    }
}

/// Documents that broke `validate` (a crash, a blow-up, or accepted when
/// they should not be): each is now refused with exit 1 (a spec with
/// errors) and a message naming the line or field, and nothing panics.
#[test]
fn hostile_documents_are_refused_with_the_line_or_field() {
    let cases: Vec<(&str, String, &str)> = vec![
        ("deep.yaml", format!("{}1\n", "- ".repeat(40_000)), "nesting deeper than 64 levels"),
        (
            "alias-bomb.yaml",
            format!(
                "name: &a {}\nstages: [{}]\n",
                "x".repeat(1_000_000),
                vec!["*a"; 3_000].join(", ")
            ),
            "aliases expand",
        ),
        (
            "trailing.json",
            "{\"name\": \"t\", \"stages\": [{\"weight\": 100, \"duration\": \"1m\"}]} garbage\n".into(),
            "line 1",
        ),
        (
            "two-docs.yaml",
            "name: t\nstages: [{weight: 100, duration: 1m}]\n---\nname: u\n".into(),
            "a second document",
        ),
        (
            "merge.yaml",
            "name: t\nstages: [{<<: {weight: 100}, duration: 1m}]\n".into(),
            "merge keys",
        ),
        (
            "nul.yaml",
            "name: t\nstages: [{weight: 100, duration: 1m}]\0\n".into(),
            "NUL byte",
        ),
        (
            "no-host.yaml",
            "name: t\nstages: [{weight: 100, duration: 1m}]\ntraffic: {listen: '127.0.0.1:8080', stable: 'http://', canary: 'http://127.0.0.1:99999'}\n".into(),
            "traffic.stable (line 3): http:// — the URL has no host",
        ),
        (
            "control.yaml",
            "name: \"evil\\x1b[31mred\"\nstages: [{weight: 100, duration: 1m}]\n".into(),
            "name (line 1): evil\\u{1b}[31mred — must not contain control characters",
        ),
        (
            "huge-duration.yaml",
            "name: t\nstages: [{weight: 100, duration: 10000000000000000000}]\n".into(),
            "stages[0].duration (line 2)",
        ),
        (
            "huge-timeouts.yaml",
            "name: t\nstages: [{weight: 50, duration: 1m, timeout: 5000000000000000000}, {weight: 100, duration: 1m, timeout: 5000000000000000000}]\n".into(),
            "365-day maximum",
        ),
        (
            "huge-interval.yaml",
            "name: t\nstages: [{weight: 100, duration: 1m}]\nanalysis: {interval: 10000000000000000000}\n".into(),
            "analysis.interval (line 3)",
        ),
    ];
    for (name, text, needle) in cases {
        let p = file(name, &text);
        let o = canary(&["validate", p.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(needle), "{name}: expected `{needle}` in {err}");
        assert!(
            !err.contains('\u{1b}'),
            "{name}: a raw escape reached the terminal"
        );
    }
    // The canary's port in no-host.yaml is out of range too.
    let o = canary(&["validate", file("no-host2.yaml", "name: t\nstages: [{weight: 100, duration: 1m}]\ntraffic: {listen: '127.0.0.1:8080', stable: 'http://127.0.0.1:9001', canary: 'http://127.0.0.1:99999'}\n").to_str().unwrap()]);
    assert!(
        stderr(&o).contains("port is not a number in 1–65535"),
        "{}",
        stderr(&o)
    );
}

/// A byte-order mark is skipped, and anchors on maps keep the map.
#[test]
fn a_bom_and_aliases_to_maps_are_read_as_meant() {
    let p = file(
        "bom.yaml",
        "\u{feff}name: t\nstages:\n  - &s {weight: 100, duration: 1m}\n",
    );
    let o = canary(&["validate", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let p = file(
        "alias-map.json",
        "{\"name\": \"t\", \"stages\": [{\"weight\": 50, \"duration\": \"1m\"}, {\"weight\": 100, \"duration\": \"1m\"}]}\n",
    );
    assert_eq!(
        canary(&["validate", p.to_str().unwrap()]).status.code(),
        Some(0)
    );
}

/// Issue 10: a second SIGINT during the drain was ignored for up to 30 s.
/// `canary proxy` with a request in flight to a 60 s backend: the first
/// SIGINT starts the drain (the proxy waits for the request), the second
/// stops it at once with exit 130.
#[test]
fn a_second_sigint_stops_the_drain_at_once() {
    use canary_demo::launch::ChildBackend;
    use std::io::BufRead;
    let slow = ChildBackend::start(
        env!("CARGO_BIN_EXE_canary"),
        "slow",
        &["--latency-ms", "60000"],
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_canary"))
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--stable",
        ])
        .arg(slow.url())
        .arg("--canary")
        .arg(slow.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{line}"));
    line.clear();
    out.read_line(&mut line).unwrap();
    let admin: std::net::SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{line}"));
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    // Wait until the proxy has the request in flight.
    let in_flight = || {
        let mut m = std::net::TcpStream::connect(admin).unwrap();
        m.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        let _ = m.read_to_string(&mut text);
        text.contains("canary_proxy_in_flight_requests{version=\"stable\"} 1")
    };
    let mut routed = false;
    for _ in 0..500 {
        if in_flight() {
            routed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(routed, "the request reached the proxy");
    let int = |pid: u32| {
        assert!(Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
            .success());
    };
    int(child.id());
    // Draining: still running while the request is in flight.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first signal drains"
    );
    int(child.id());
    let mut code = None;
    for _ in 0..500 {
        if let Some(st) = child.try_wait().unwrap() {
            code = st.code();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if code.is_none() {
        let _ = child.kill();
    }
    assert_eq!(code, Some(130), "the second signal stops at once");
    drop(s);
}
