//! Test support: moto's server mode (the AWS stand-in these machines can
//! run) started on a free loopback port and stopped by its PID, and a load
//! balancer set up on it as a user's would be before a rollout.
#![allow(clippy::missing_panics_doc)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, ProtocolEnum};
use aws_sdk_elasticloadbalancingv2::Client;
use canary_core::spec::AlbTraffic;

/// A moto server on a free loopback port, stopped by its PID when dropped.
pub struct Moto {
    child: Child,
    /// The endpoint URL.
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto, or says "skipped" and gives `None` when it is not
/// installed (a failure when `CANARY_REQUIRE_MOTO` is set).
///
/// # Panics
/// moto is required but missing, or does not come up.
pub fn moto() -> Option<Moto> {
    let found = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CANARY_REQUIRE_MOTO").is_err(),
            "CANARY_REQUIRE_MOTO is set but moto_server is not installed (pip install 'moto[server]')"
        );
        eprintln!("skipped: moto_server is not installed (pip install 'moto[server]')");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server");
    let url = format!("http://127.0.0.1:{port}");
    let m = Moto { child, url };
    // Up to 30 s, in 100 ms waits.
    let mut waits = 0;
    while ureq::get(&format!("{}/moto-api/", m.url)).call().is_err() {
        waits += 1;
        assert!(waits < 300, "moto_server did not come up within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(m)
}

/// An ELBv2 client for moto at `url`, with dummy credentials.
pub fn client(url: &str) -> Client {
    let conf = aws_sdk_elasticloadbalancingv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    Client::from_conf(conf)
}

/// The default VPC's subnets moto creates, read with EC2's query API (the
/// test's setup only; canary itself never calls EC2).
fn subnets(url: &str) -> Vec<String> {
    let body = ureq::post(url)
        .header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send("Action=DescribeSubnets&Version=2016-11-15")
        .expect("DescribeSubnets")
        .into_body()
        .read_to_string()
        .unwrap();
    body.split("<subnetId>")
        .skip(1)
        .filter_map(|s| s.split("</subnetId>").next())
        .map(str::to_string)
        .collect()
}

/// A load balancer with two target groups and a listener forwarding all
/// traffic to the stable one, as a user's would be before a rollout.
pub struct Setup {
    /// The client that made it.
    pub client: Client,
    /// The listener's ARN.
    pub listener: String,
    /// The stable target group's ARN.
    pub stable: String,
    /// The canary target group's ARN.
    pub canary: String,
    /// A `traffic.alb` section for it.
    pub spec: AlbTraffic,
}

/// Creates it on the moto at `url`.
///
/// # Panics
/// A setup call fails.
pub async fn setup(url: &str) -> Setup {
    let c = client(url);
    let nets = subnets(url);
    assert!(nets.len() >= 2, "moto's default VPC has subnets: {nets:?}");
    let lb = c
        .create_load_balancer()
        .name("web")
        .set_subnets(Some(nets[..2].to_vec()))
        .send()
        .await
        .expect("CreateLoadBalancer");
    let lb = lb.load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_string();
    let vpc = c
        .describe_load_balancers()
        .load_balancer_arns(&lb)
        .send()
        .await
        .unwrap()
        .load_balancers()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let mut tgs = Vec::new();
    for name in ["web-stable", "web-canary"] {
        let tg = c
            .create_target_group()
            .name(name)
            .protocol(ProtocolEnum::Http)
            .port(8080)
            .vpc_id(&vpc)
            .send()
            .await
            .expect("CreateTargetGroup");
        tgs.push(
            tg.target_groups()[0]
                .target_group_arn()
                .unwrap()
                .to_string(),
        );
    }
    let forward = Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .target_group_arn(&tgs[0])
        .build();
    let l = c
        .create_listener()
        .load_balancer_arn(&lb)
        .protocol(ProtocolEnum::Http)
        .port(80)
        .default_actions(forward)
        .send()
        .await
        .expect("CreateListener");
    let listener = l.listeners()[0].listener_arn().unwrap().to_string();
    let spec = AlbTraffic {
        listener: listener.clone(),
        rule: None,
        stable_target_group: tgs[0].clone(),
        canary_target_group: tgs[1].clone(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(url.into()),
        timeout: None,
    };
    Setup {
        client: c,
        listener,
        stable: tgs[0].clone(),
        canary: tgs[1].clone(),
        spec,
    }
}
