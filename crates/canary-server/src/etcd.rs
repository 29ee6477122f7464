//! A small blocking client of etcd's v3 API through its JSON gateway
//! (`POST /v3/kv/range`, `/v3/kv/txn`, `/v3/lease/grant`,
//! `/v3/lease/keepalive`, `/v3/lease/timetolive`, `/v3/lease/revoke`; keys
//! and values in base64),
//! over the `ureq` client the workspace already has.
//!
//! Why the gateway and not a gRPC client: the store trait is synchronous
//! (the controller calls it from blocking threads), the gateway needs no
//! new dependency, no code generation and no `protoc`, so `canary serve
//! --store etcd` is in the default build that a fresh machine with only
//! Rust compiles. The gateway is part of every etcd v3 server (3.4 and
//! newer serve it at `/v3/`). docs/ha.md has the comparison.
//!
//! Every request goes to one endpoint; on a connection failure or a
//! timeout the next endpoint is tried, and the one that answered is used
//! first next time. A request that timed out may still have been carried
//! out by etcd: callers treat such a failure as "unknown" (the store
//! reloads what is stored before its next write).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

/// What a call to etcd can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered (connection refused, timed out, ...): each
    /// endpoint with its failure.
    #[error("no etcd endpoint answered: {0}")]
    Unreachable(String),
    /// An endpoint answered with an error (no quorum, a bad request, ...).
    #[error("etcd at {endpoint} answered {status}: {message}")]
    Answered {
        /// Who answered.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// etcd's message.
        message: String,
    },
    /// An answer that is not what the API documents.
    #[error("etcd at {endpoint}: unexpected answer: {message}")]
    Unexpected {
        /// Who answered.
        endpoint: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Checks a list of endpoints as `--etcd-endpoints` takes them:
/// `http://host:port` or `https://host:port` URLs, comma-separated.
///
/// # Errors
/// The first entry that is not such a URL, in words.
pub fn parse_endpoints(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for raw in text.split(',') {
        let e = raw.trim().trim_end_matches('/');
        if e.is_empty() {
            continue;
        }
        let rest = e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"))
            .ok_or_else(|| {
                format!(
                    "`{e}` is not an http:// URL (nor https://; for example http://127.0.0.1:2379)"
                )
            })?;
        let ok = !rest.is_empty()
            && !rest.contains('/')
            && rest
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(format!(
                "`{e}` is not host:port after the scheme (for example http://127.0.0.1:2379)"
            ));
        }
        out.push(e.to_string());
    }
    if out.is_empty() {
        return Err("no endpoint given (for example http://127.0.0.1:2379)".into());
    }
    Ok(out)
}

/// A key-value pair as etcd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: i64,
    /// The revision that last wrote it.
    pub mod_revision: i64,
    /// The lease it is bound to (0: none).
    pub lease: i64,
}

/// The client: endpoints and a per-request time limit.
pub struct Client {
    endpoints: Vec<String>,
    agent: ureq::Agent,
    /// The endpoint that answered last.
    current: AtomicUsize,
}

/// Base64 of `b`, as the gateway wants bytes.
pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// The end of the range of every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every key: etcd's "\0" range end.
    vec![0]
}

/// An int64 the gateway may write as a string or a number; absent is 0.
pub fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn kv_of(v: &Value) -> Option<Kv> {
    Some(Kv {
        key: unb64(v["key"].as_str()?)?,
        value: v["value"].as_str().map_or(Some(Vec::new()), unb64)?,
        create_revision: int(&v["create_revision"]),
        mod_revision: int(&v["mod_revision"]),
        lease: int(&v["lease"]),
    })
}

/// The key-value pairs of a range answer.
pub fn kvs(range: &Value) -> Vec<Kv> {
    range["kvs"]
        .as_array()
        .map(|a| a.iter().filter_map(kv_of).collect())
        .unwrap_or_default()
}

/// A compare of a transaction: `target` (`CREATE`, `MOD`, `VERSION`) of
/// `key` equal to `value`.
pub fn compare(target: &str, key: &[u8], value: i64) -> Value {
    let field = match target {
        "CREATE" => "create_revision",
        "MOD" => "mod_revision",
        _ => "version",
    };
    json!({"target": target, "result": "EQUAL", "key": b64(key), field: value.to_string()})
}

/// A put operation of a transaction (bound to `lease` when not 0).
pub fn put(key: &[u8], value: &[u8], lease: i64) -> Value {
    let mut p = json!({"key": b64(key), "value": b64(value)});
    if lease != 0 {
        p["lease"] = json!(lease.to_string());
    }
    json!({"request_put": p})
}

/// A delete operation of a transaction: `key`, or every key from `key` up
/// to `end`.
pub fn delete(key: &[u8], end: Option<&[u8]>) -> Value {
    let mut d = json!({"key": b64(key)});
    if let Some(e) = end {
        d["range_end"] = json!(b64(e));
    }
    json!({"request_delete_range": d})
}

/// A range operation of a transaction (one key).
pub fn get(key: &[u8]) -> Value {
    json!({"request_range": {"key": b64(key)}})
}

impl Client {
    /// A client of `endpoints` whose requests each give up after `timeout`.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Client {
        Client::with_tls(endpoints, timeout, None)
            .unwrap_or_else(|e| unreachable!("no TLS files to read: {e}"))
    }

    /// A client of `endpoints` for `https://` ones: `tls` says which CA to
    /// trust (else the system's) and which client certificate to show
    /// (etcd's `--client-cert-auth`). Its files are read now.
    ///
    /// # Errors
    /// A file that cannot be read or holds no certificate (or key): the
    /// flag (`--etcd-ca-file`, `--etcd-cert-file`, `--etcd-key-file`) and
    /// what is wrong.
    pub fn with_tls(
        endpoints: Vec<String>,
        timeout: Duration,
        tls: Option<&canary_core::spec::TlsSpec>,
    ) -> Result<Client, String> {
        let agent =
            canary_prometheus::tls::agent(timeout, tls, "--etcd").map_err(|(field, message)| {
                let flag = field.replace("--etcd.", "--etcd-").replace('_', "-");
                format!("{flag}: {message}")
            })?;
        Ok(Client {
            endpoints,
            agent,
            current: AtomicUsize::new(0),
        })
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// POSTs `body` to `path` on the first endpoint that answers.
    ///
    /// # Errors
    /// [`EtcdError`].
    pub fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed) % n.max(1);
        let mut failures = Vec::new();
        let text = body.to_string();
        for i in 0..n {
            let at = (start + i) % n;
            let endpoint = &self.endpoints[at];
            let r = self
                .agent
                .post(format!("{endpoint}{path}"))
                .header("Content-Type", "application/json")
                .send(text.as_bytes());
            let mut r = match r {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{endpoint}: {e}"));
                    continue;
                }
            };
            let status = r.status().as_u16();
            let answer = match r.body_mut().read_to_string() {
                Ok(t) => t,
                Err(e) => {
                    failures.push(format!("{endpoint}: {e}"));
                    continue;
                }
            };
            let v: Value = serde_json::from_str(&answer).map_err(|e| EtcdError::Unexpected {
                endpoint: endpoint.clone(),
                message: format!("not JSON ({e}): {}", cut(&answer)),
            })?;
            if status != 200 || v.get("error").is_some() {
                let message = v["message"]
                    .as_str()
                    .or_else(|| v["error"].as_str())
                    .or_else(|| v["error"]["message"].as_str())
                    .unwrap_or("")
                    .to_string();
                // A member without a raft leader (no quorum) cannot serve:
                // another member may.
                if message.contains("no leader") || message.contains("timed out") {
                    failures.push(format!("{endpoint}: {message}"));
                    continue;
                }
                return Err(EtcdError::Answered {
                    endpoint: endpoint.clone(),
                    status,
                    message,
                });
            }
            self.current.store(at, Ordering::Relaxed);
            return Ok(v);
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }

    /// The keys from `key` up to `end` (just `key` when `None`), at
    /// `revision` (the latest when 0).
    ///
    /// # Errors
    /// [`EtcdError`].
    pub fn range(&self, key: &[u8], end: Option<&[u8]>, revision: i64) -> Result<Value, EtcdError> {
        let mut body = json!({"key": b64(key)});
        if let Some(e) = end {
            body["range_end"] = json!(b64(e));
        }
        if revision > 0 {
            body["revision"] = json!(revision.to_string());
        }
        self.call("/v3/kv/range", &body)
    }

    /// A transaction: if every compare holds, `success`, else `failure`.
    /// Returns (whether it succeeded, the answer).
    ///
    /// # Errors
    /// [`EtcdError`].
    pub fn txn(
        &self,
        compares: Vec<Value>,
        success: Vec<Value>,
        failure: Vec<Value>,
    ) -> Result<(bool, Value), EtcdError> {
        let v = self.call(
            "/v3/kv/txn",
            &json!({"compare": compares, "success": success, "failure": failure}),
        )?;
        Ok((v["succeeded"].as_bool().unwrap_or(false), v))
    }

    /// The remaining time of `lease` (etcd's raft leader answers, whichever
    /// member is asked).
    ///
    /// # Errors
    /// [`EtcdError`].
    pub fn time_to_live(&self, lease: i64) -> Result<TimeToLive, EtcdError> {
        let v = self.call("/v3/lease/timetolive", &json!({"ID": lease.to_string()}))?;
        Ok(TimeToLive::of(&v))
    }
}

/// A lease's remaining time as `/v3/lease/timetolive` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeToLive {
    /// The remaining time in whole seconds, truncated toward zero (etcd
    /// computes `int64(lease.Remaining().Seconds())`): 0 in the last second
    /// before the expiry and until etcd revokes the expired lease; -1 once
    /// the lease is gone (revoked, or never granted).
    pub ttl: i64,
    /// The TTL that a renewal gives the lease again, in seconds (0 when the
    /// lease is gone).
    pub granted: i64,
}

impl TimeToLive {
    /// Reads an answer of `/v3/lease/timetolive`. The gateway leaves out
    /// fields that are 0 (proto3's JSON), so an absent `TTL` is 0.
    pub fn of(v: &Value) -> TimeToLive {
        TimeToLive {
            ttl: int(&v["TTL"]),
            granted: int(&v["grantedTTL"]),
        }
    }
}

/// Whether `e` is etcd saying that a lease does not exist (any more).
pub fn is_lease_not_found(e: &EtcdError) -> bool {
    matches!(e, EtcdError::Answered { message, .. } if message.contains("lease not found"))
}

fn cut(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The revision of an answer's header.
pub fn header_revision(v: &Value) -> i64 {
    int(&v["header"]["revision"])
}

/// The range answer of operation `i` of a transaction's answer.
pub fn txn_range(v: &Value, i: usize) -> &Value {
    &v["responses"][i]["response_range"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_or_https_host_port_urls() {
        assert_eq!(
            parse_endpoints("http://127.0.0.1:2379, https://e2:2379/").unwrap(),
            vec!["http://127.0.0.1:2379", "https://e2:2379"]
        );
        for bad in [
            "",
            ",",
            "127.0.0.1:2379",
            "ftp://e:2379",
            "https://e",
            "http://e",
            "http://e:port",
            "http://:2379",
            "http://e:2379/v3",
        ] {
            assert!(parse_endpoints(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn int64s_come_as_strings_numbers_or_not_at_all() {
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(7)), 7);
        assert_eq!(int(&Value::Null), 0);
        let kv = kv_of(
            &json!({"key": b64(b"k"), "create_revision": "3", "mod_revision": "5", "lease": "9"}),
        )
        .unwrap();
        assert_eq!(
            (
                kv.key,
                kv.value,
                kv.create_revision,
                kv.mod_revision,
                kv.lease
            ),
            (b"k".to_vec(), Vec::new(), 3, 5, 9)
        );
    }

    /// The answers etcd 3.4.23 gave for a lease of 2 s read every 50 ms
    /// (docs/records/2026-12-07-etcd-failover-v2.md): `TTL` 1 right after
    /// the grant, absent (0) in its last second and after it expired
    /// until revoked, -1 (and no `grantedTTL`) once gone.
    #[test]
    fn time_to_live_reads_etcds_answers() {
        let live = json!({"header": {"revision": "2"}, "ID": "23", "TTL": "1", "grantedTTL": "2"});
        let last = json!({"header": {"revision": "2"}, "ID": "23", "grantedTTL": "2"});
        let gone = json!({"header": {"revision": "3"}, "ID": "23", "TTL": "-1"});
        assert_eq!(TimeToLive::of(&live), TimeToLive { ttl: 1, granted: 2 });
        assert_eq!(TimeToLive::of(&last), TimeToLive { ttl: 0, granted: 2 });
        assert_eq!(
            TimeToLive::of(&gone),
            TimeToLive {
                ttl: -1,
                granted: 0
            }
        );
        let not_found = EtcdError::Answered {
            endpoint: "http://e:2379".into(),
            status: 404,
            message: "etcdserver: requested lease not found".into(),
        };
        assert!(is_lease_not_found(&not_found));
        assert!(!is_lease_not_found(&EtcdError::Unreachable("x".into())));
    }
}
