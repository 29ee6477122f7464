//! The HTTP agent a source reads with: its timeout and, for `https://`,
//! which certificates it trusts and which it shows (`tls` in the spec).
//!
//! The files are read once, when the source is built (a rollout's start):
//! a missing or unreadable file, or one without what it should hold, is an
//! error naming the field, before any traffic moves.

use std::sync::Arc;
use std::time::Duration;

use canary_core::spec::TlsSpec;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

/// An agent with `timeout` for each whole call and `tls` (at field path
/// `at`, e.g. `metrics.prometheus.tls`) for `https://` addresses.
///
/// # Errors
/// `(field, message)` for a file that cannot be read or holds no
/// certificate (or key).
pub fn agent(
    timeout: Duration,
    tls: Option<&TlsSpec>,
    at: &str,
) -> Result<ureq::Agent, (String, String)> {
    let mut config = TlsConfig::builder();
    if let Some(t) = tls {
        if let Some(ca) = &t.ca_file {
            let certs = certificates(&format!("{at}.ca_file"), ca)?;
            config = config.root_certs(RootCerts::Specific(Arc::new(certs)));
        }
        if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
            let chain = certificates(&format!("{at}.cert_file"), cert)?;
            let key = private_key(&format!("{at}.key_file"), key)?;
            config = config.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        config = config.disable_verification(t.insecure_skip_verify);
    }
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .tls_config(config.build())
        .build()
        .into())
}

fn read(field: &str, path: &str) -> Result<Vec<u8>, (String, String)> {
    std::fs::read(path).map_err(|e| (field.to_string(), format!("{path}: cannot read it: {e}")))
}

/// Every certificate in the PEM file at `path`; at least one.
fn certificates(field: &str, path: &str) -> Result<Vec<Certificate<'static>>, (String, String)> {
    let pem = read(field, path)?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => out.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err((
                    field.to_string(),
                    format!("{path}: not a valid PEM file: {e}"),
                ));
            }
        }
    }
    if out.is_empty() {
        return Err((
            field.to_string(),
            format!("{path}: holds no certificate (a PEM `-----BEGIN CERTIFICATE-----` block)"),
        ));
    }
    Ok(out)
}

/// The first private key in the PEM file at `path`.
fn private_key(field: &str, path: &str) -> Result<PrivateKey<'static>, (String, String)> {
    let pem = read(field, path)?;
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::PrivateKey(k)) => return Ok(k),
            Ok(_) => {}
            Err(e) => {
                return Err((
                    field.to_string(),
                    format!("{path}: not a valid PEM file: {e}"),
                ));
            }
        }
    }
    Err((
        field.to_string(),
        format!("{path}: holds no private key (a PEM `-----BEGIN PRIVATE KEY-----` block)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of one test's files, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(test: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("canary-tls-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn file(&self, name: &str, body: &str) -> String {
            let p = self.0.join(name);
            std::fs::write(&p, body).unwrap();
            p.display().to_string()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn spec(ca: Option<String>, cert: Option<String>, key: Option<String>) -> TlsSpec {
        TlsSpec {
            ca_file: ca,
            cert_file: cert,
            key_file: key,
            insecure_skip_verify: false,
        }
    }

    fn error_of(t: &TlsSpec) -> (String, String) {
        agent(Duration::from_secs(1), Some(t), "metrics.prometheus.tls").expect_err("an error")
    }

    #[test]
    fn a_missing_ca_file_is_named_with_its_field() {
        let (field, msg) = error_of(&spec(Some("/nonexistent/ca.pem".into()), None, None));
        assert_eq!(field, "metrics.prometheus.tls.ca_file");
        assert!(msg.contains("/nonexistent/ca.pem: cannot read it"), "{msg}");
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let dir = Scratch::new("no-cert");
        let p = dir.file("empty.pem", "just text\n");
        let (field, msg) = error_of(&spec(Some(p), None, None));
        assert_eq!(field, "metrics.prometheus.tls.ca_file");
        assert!(msg.contains("holds no certificate"), "{msg}");
    }

    #[test]
    fn a_key_file_without_a_key_is_refused() {
        let dir = Scratch::new("no-key");
        let cert = dir.file(
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        );
        let key = dir.file("nokey.pem", "nothing here\n");
        let (field, msg) = error_of(&spec(None, Some(cert), Some(key)));
        assert_eq!(field, "metrics.prometheus.tls.key_file");
        assert!(msg.contains("holds no private key"), "{msg}");
    }

    #[test]
    fn no_tls_section_builds_the_default_agent() {
        assert!(agent(Duration::from_secs(1), None, "metrics.scrape.tls").is_ok());
    }
}
