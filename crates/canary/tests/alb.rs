//! The ALB provider through the `canary` binary: with `--features alb`,
//! `canary traffic set` sets a listener's weights on moto (the AWS stand-in
//! these machines run) through the standard AWS configuration chain
//! (credentials from the environment); without it, a spec naming `alb` is
//! valid but `canary run` says how to get a build that drives it.

use std::process::Command;

fn canary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_canary"))
}

fn spec(listener: &str, stable: &str, canary: &str, endpoint: &str) -> String {
    format!(
        "name: web\n\
         stages:\n  - {{weight: 10, duration: 1m}}\n  - {{weight: 100, duration: 1m}}\n\
         analysis: {{interval: 1s}}\n\
         traffic:\n  provider: alb\n  alb:\n    listener: {listener}\n    \
         stable_target_group: {stable}\n    canary_target_group: {canary}\n    \
         region: us-east-1\n    endpoint_url: {endpoint}\n\
         metrics:\n  provider: scrape\n  scrape:\n    preset: http\n    \
         stable: [\"http://127.0.0.1:9/metrics\"]\n    canary: [\"http://127.0.0.1:8/metrics\"]\n"
    )
}

/// `canary traffic set --spec FILE --weight W`, with dummy AWS credentials
/// in the environment (the standard chain's first link).
#[cfg(feature = "alb")]
fn set(file: &std::path::Path, weight: &str) -> std::process::Output {
    canary()
        .args(["traffic", "set", "--spec"])
        .arg(file)
        .args(["--weight", weight])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap()
}

#[cfg(feature = "alb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_set_moves_an_alb_listener_and_reads_it_back() {
    use canary_alb::testing::{moto, setup};
    let Some(m) = moto() else { return };
    let s = setup(&m.url).await;
    let dir = std::env::temp_dir().join(format!("canary-alb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("alb.yaml");
    std::fs::write(&file, spec(&s.listener, &s.stable, &s.canary, &m.url)).unwrap();
    let out = set(&file, "10");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "alb: 10 % to the canary, applied\n"
    );
    let mut alb = canary_alb::Alb::with_client(&s.spec, s.client.clone());
    assert_eq!(
        alb.weights().await.unwrap(),
        canary_alb::Weights {
            stable: 9,
            canary: 1
        }
    );
    // A listener that does not exist: a clear error, non-zero exit.
    let gone = format!("{}0", s.listener.trim_end_matches(char::is_alphanumeric));
    std::fs::write(&file, spec(&gone, &s.stable, &s.canary, &m.url)).unwrap();
    let out = set(&file, "50");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ListenerNotFound") && stderr.contains(&gone),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(not(feature = "alb"))]
#[test]
fn a_default_build_validates_alb_specs_and_says_how_to_drive_them() {
    let dir = std::env::temp_dir().join(format!("canary-alb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("alb.yaml");
    let arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012";
    std::fs::write(
        &file,
        spec(
            &format!("{arn}:listener/app/web/1a2b/3c4d"),
            &format!("{arn}:targetgroup/web-stable/5e6f"),
            &format!("{arn}:targetgroup/web-canary/7a8b"),
            "http://127.0.0.1:9",
        ),
    )
    .unwrap();
    let out = canary().args(["validate"]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for args in [
        &["run", "--spec"][..],
        &["traffic", "set", "--weight", "10", "--spec"],
    ] {
        let out = canary().args(args).arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains("--features alb"), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
