use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::*;

/// Reads one request's head and its `Content-Length` body; returns them.
fn read_request(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return (String::from_utf8_lossy(&buf).into(), Vec::new()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    (head, body)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn a_signature_checks_out_and_a_changed_byte_or_an_old_timestamp_does_not() {
    let secret = b"s3cret";
    let body = br#"{"rollout":"checkout","phase":"progressing"}"#;
    let sig = sign(secret, 1_700_000_000, body);
    assert!(sig.starts_with("sha256="), "{sig}");
    assert_eq!(
        verify(secret, "1700000000", &sig, body, 1_700_000_010, 300),
        Ok(())
    );
    for i in 0..body.len() {
        let mut changed = body.to_vec();
        changed[i] ^= 1;
        assert_eq!(
            verify(secret, "1700000000", &sig, &changed, 1_700_000_010, 300),
            Err(VerifyError::Mismatch),
            "byte {i} changed"
        );
    }
    // The same request replayed 301 s later is refused, as is one whose
    // timestamp was moved forward to pass the window.
    assert_eq!(
        verify(secret, "1700000000", &sig, body, 1_700_000_301, 300),
        Err(VerifyError::Stale {
            age: 301,
            window: 300
        })
    );
    assert_eq!(
        verify(secret, "1700000300", &sig, body, 1_700_000_301, 300),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verify(b"other", "1700000000", &sig, body, 1_700_000_010, 300),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        verify(secret, "1700000000", "md5=00", body, 1_700_000_010, 300),
        Err(VerifyError::Malformed)
    );
    // The reference value, as Python's hmac module computes it:
    // hmac.new(b"key", b"1.x", hashlib.sha256).hexdigest()
    assert_eq!(
        sign(b"key", 1, b"x"),
        "sha256=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec"
    );
}

#[test]
fn a_signed_post_carries_the_body_the_timestamp_and_a_valid_signature() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let (head, body) = read_request(&mut s);
        let _ = s.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\nnot yet");
        tx.send((head, body)).unwrap();
    });
    std::env::set_var("CANARY_TEST_HOOK_SECRET", "topsecret");
    let secret = SecretRef {
        env: Some("CANARY_TEST_HOOK_SECRET".into()),
        file: None,
    };
    let a = post(
        &url,
        b"{\"a\":1}",
        Some(&secret),
        &[],
        Duration::from_secs(5),
        1_700_000_000,
    );
    assert!(!a.ok());
    assert_eq!(a.status, Some(403));
    assert_eq!(a.describe(), "HTTP 403: not yet");
    let (head, body) = rx.recv().unwrap();
    assert_eq!(body, b"{\"a\":1}");
    assert_eq!(header(&head, "x-canary-timestamp"), Some("1700000000"));
    let sig = header(&head, "x-canary-signature").unwrap();
    assert_eq!(
        verify(b"topsecret", "1700000000", sig, &body, 1_700_000_001, 300),
        Ok(())
    );
}

#[test]
fn a_secret_that_cannot_be_read_fails_the_call_without_sending_it() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let secret = SecretRef {
        env: Some("CANARY_TEST_NO_SUCH_SECRET_VARIABLE".into()),
        file: None,
    };
    let a = post(&url, b"{}", Some(&secret), &[], Duration::from_secs(5), 1);
    assert!(!a.ok());
    assert!(a.describe().contains("is not set"), "{}", a.describe());
    assert!(l.accept().is_err(), "nothing was sent");
}

#[test]
fn an_unreachable_url_is_a_failed_call_in_words() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let a = post(
        &format!("http://127.0.0.1:{port}/x"),
        b"{}",
        None,
        &[],
        Duration::from_secs(5),
        1,
    );
    assert!(!a.ok());
    assert_eq!(a.status, None);
    assert!(a.describe().starts_with("unreachable"), "{}", a.describe());
}

#[test]
fn a_hook_that_hangs_costs_its_timeout_and_no_more() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", l.local_addr().unwrap());
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = read_request(&mut s);
        // Never answers; holds the connection until the test ends.
        let _ = stop_rx.recv_timeout(Duration::from_secs(60));
    });
    // The receiver holds the connection for a minute: an answer in words
    // about the timeout means the call gave up at 0.3 s, not at the close.
    let a = post(&url, b"{}", None, &[], Duration::from_millis(300), 1);
    drop(stop_tx);
    assert!(!a.ok());
    assert!(
        a.describe().contains("no answer within 0.3s"),
        "{}",
        a.describe()
    );
}

#[test]
fn a_300_mb_answer_is_not_read_past_the_limit() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let _ = read_request(&mut s);
        let total: u64 = 300 << 20;
        let _ =
            s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").as_bytes());
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0u64;
        // Until the client closes (or everything went, which would mean
        // it read it all).
        while sent < total {
            match s.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(_) => break,
            }
        }
        tx.send(sent).unwrap();
    });
    let a = post(&url, b"{}", None, &[], Duration::from_secs(20), 1);
    assert!(a.ok(), "{}", a.describe());
    assert!(a.body.starts_with("xxxx") && a.body.ends_with('…'));
    let sent = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    // What the server got into the socket before the client hung up: the
    // 64 KiB read plus the kernel's buffers, far from 300 MB.
    assert!(sent < 64 << 20, "{sent} bytes were taken");
}

#[test]
fn notification_bodies_tell_the_event_with_its_evidence() {
    let detail = json!({
        "stage": 1, "weight_before": 25.0, "weight_after": 0.0,
        "verdict": {"metrics": [{"name": "error_rate", "outcome": "fail",
                                  "reason": "canary 4.0 % vs stable 1.0 %"}]}
    });
    let t = Told {
        rollout: "checkout",
        event: NotificationEvent::RolledBack,
        log_event: "rollback",
        actor: "controller",
        reason: "error rate worse",
        detail: &detail,
        time: "2026-01-01T00:00:00.000Z".into(),
        at_ms: 5,
    };
    let g: Value =
        serde_json::from_str(&notification_body(NotificationFormat::Generic, &t)).unwrap();
    assert_eq!(g["event"], "rolled-back");
    assert_eq!(g["rollout"], "checkout");
    assert_eq!(g["weight_after"], 0.0);
    assert_eq!(
        g["evidence"][0],
        "error_rate (fail): canary 4.0 % vs stable 1.0 %"
    );
    let s: Value = serde_json::from_str(&notification_body(NotificationFormat::Slack, &t)).unwrap();
    let text = s["text"].as_str().unwrap();
    assert!(
        text.contains("*checkout* rolled back (canary 25 % → 0 %)"),
        "{text}"
    );
    assert!(text.contains("*Why:* error rate worse"), "{text}");
    assert!(
        text.contains("• error_rate (fail): canary 4.0 % vs stable 1.0 %"),
        "{text}"
    );
}
