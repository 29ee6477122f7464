//! nginx: canary owns one include file holding the rollout's upstreams
//! and A/B maps. Every weight change writes the whole file to a temporary
//! beside it and renames it into place, runs the check command (`nginx
//! -t`) and then the reload command (`nginx -s reload`). A failed check or
//! reload puts the previous file back, so nginx's configuration on disk is
//! always one that nginx accepted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use canary_core::spec::{integer_split, NginxTraffic};
use canary_engine::{ActuatorError, TrafficActuator};
use tokio::process::Command;

/// The nginx traffic layer of one rollout.
#[derive(Debug)]
pub struct Nginx {
    spec: NginxTraffic,
    timeout: Duration,
}

impl Nginx {
    /// A layer writing `spec.config`.
    pub fn new(spec: &NginxTraffic) -> Self {
        Self {
            spec: spec.clone(),
            timeout: spec
                .command_timeout
                .map_or(Duration::from_secs(10), |t| t.0),
        }
    }

    /// The file canary writes.
    pub fn config_path(&self) -> &Path {
        Path::new(&self.spec.config)
    }

    /// The include file's text for `percent` % to the canary: the weighted
    /// upstream `<upstream>`, one upstream per version
    /// (`<upstream>_stable`, `<upstream>_canary`) and the map that sets
    /// `$<upstream>_route` (the A/B header first, then the cookie, then the
    /// weights).
    pub fn render(&self, percent: f64) -> String {
        let n = &self.spec;
        let u = &n.upstream;
        let split = integer_split(percent, n.stable.len() as u32, n.canary.len() as u32, None);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Written by canary (rollout traffic for upstream `{u}`); rewritten at every weight \
             change: do not edit.\n# canary {:.2} %: stable servers weight {}, canary servers \
             weight {}.",
            split.percent, split.stable, split.canary
        );
        let _ = writeln!(out, "upstream {u} {{\n    zone canary_{u} 64k;");
        for (servers, w) in [(&n.stable, split.stable), (&n.canary, split.canary)] {
            if w > 0 {
                for s in servers {
                    let _ = writeln!(out, "    server {s} weight={w};");
                }
            }
        }
        out.push_str("}\n");
        for (side, servers) in [("stable", &n.stable), ("canary", &n.canary)] {
            let _ = writeln!(
                out,
                "upstream {u}_{side} {{\n    zone canary_{u}_{side} 64k;"
            );
            for s in servers {
                let _ = writeln!(out, "    server {s};");
            }
            out.push_str("}\n");
        }
        let forced = |default: &str| {
            format!(
                "{{\n    default {default};\n    canary {u}_canary;\n    stable {u}_stable;\n}}\n"
            )
        };
        match (n.header(), n.cookie()) {
            (Some(h), Some(c)) => {
                let _ = write!(out, "map $cookie_{c} ${u}_by_cookie {}", forced(u));
                let _ = write!(
                    out,
                    "map $http_{} ${u}_route {}",
                    h.replace('-', "_"),
                    forced(&format!("${u}_by_cookie"))
                );
            }
            (Some(h), None) => {
                let _ = write!(
                    out,
                    "map $http_{} ${u}_route {}",
                    h.replace('-', "_"),
                    forced(u)
                );
            }
            (None, Some(c)) => {
                let _ = write!(out, "map $cookie_{c} ${u}_route {}", forced(u));
            }
            (None, None) => {
                let _ = writeln!(out, "map \"\" ${u}_route {{\n    default {u};\n}}");
            }
        }
        out
    }

    /// Writes the file for `percent`, checks and reloads; on failure the
    /// previous file is put back.
    async fn apply(&mut self, percent: f64) -> Result<(), ActuatorError> {
        let path = PathBuf::from(&self.spec.config);
        let previous = match tokio::fs::read(&path).await {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(ActuatorError::permanent(format!(
                    "nginx: cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        let text = self.render(percent);
        replace_file(&path, text.as_bytes()).await.map_err(|e| {
            ActuatorError::permanent(format!("nginx: cannot write {}: {e}", path.display()))
        })?;
        let mut old_workers = Vec::new();
        for (what, argv) in [
            ("check", self.spec.test_argv()),
            ("reload", self.spec.reload_argv()),
        ] {
            let mut done = Ok(());
            if what == "reload" {
                if let Some(pid) = self.spec.pid_path() {
                    match master_pid(pid).await {
                        Ok(m) => old_workers = accepting_workers(m),
                        Err(e) => done = Err(e),
                    }
                }
            }
            if done.is_ok() {
                done = self.command(&argv).await;
            }
            if let Err(why) = done {
                let restored = match &previous {
                    Some(b) => replace_file(&path, b).await,
                    None => tokio::fs::remove_file(&path).await,
                };
                let restored = match restored {
                    Ok(()) if previous.is_some() => "the previous file is back in place".into(),
                    Ok(()) => "the file is removed (there was none before)".to_string(),
                    Err(e) => format!("and putting the previous file back failed too: {e}"),
                };
                return Err(ActuatorError::permanent(format!(
                    "nginx: the {what} command `{}` failed with {} written for {percent} %: \
                     {why}; {restored}",
                    argv.join(" "),
                    path.display(),
                )));
            }
        }
        // The weight counts once no worker of the old configuration takes
        // new requests (they finish the ones they have).
        let deadline = tokio::time::Instant::now() + self.timeout;
        while old_workers.iter().any(|&w| is_accepting_worker(w)) {
            if tokio::time::Instant::now() >= deadline {
                return Err(ActuatorError::transient(format!(
                    "nginx: reloaded for {percent} %, but workers of the previous configuration \
                     still take requests after {:?}",
                    self.timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Runs `argv` (no shell) within the timeout; `Err` carries what it
    /// printed.
    async fn command(&self, argv: &[String]) -> Result<(), String> {
        let (program, args) = argv.split_first().ok_or("an empty command")?;
        let child = Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(self.timeout, child).await {
            Err(_) => return Err(format!("no answer within {:?}", self.timeout)),
            Ok(Err(e)) => return Err(format!("cannot start `{program}`: {e}")),
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.trim();
        let said = if said.is_empty() {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            said.to_string()
        };
        Err(format!("{}: {}", out.status, last_lines(&said, 4)))
    }
}

/// The master's PID from nginx's pid file.
async fn master_pid(path: &str) -> Result<u32, String> {
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        format!("cannot read nginx's pid file {path} (traffic.nginx.pid_file): {e}")
    })?;
    text.trim()
        .parse()
        .map_err(|_| format!("nginx's pid file {path} holds {:?}, not a PID", text.trim()))
}

/// The PIDs of `master`'s workers that take requests (Linux: from /proc;
/// elsewhere none, so reloads are not waited for).
fn accepting_workers(master: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(master) && is_accepting_worker(pid))
        .collect()
}

/// The parent PID of `pid`, from /proc/PID/stat.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether `pid` is an nginx worker still taking new requests: its title
/// is `nginx: worker process` (a worker of an old configuration becomes
/// `... is shutting down` once it has closed its listeners).
fn is_accepting_worker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let title = String::from_utf8_lossy(&c);
        title.contains("worker process") && !title.contains("shutting down")
    })
}

/// The last `n` lines of `s`, joined with ` / `.
fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames
/// it over `path`: a reader sees the old file or the new one, never half.
async fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".canary-tmp");
    let tmp = PathBuf::from(tmp);
    let write = async {
        let mut f = tokio::fs::File::create(&tmp).await?;
        tokio::io::AsyncWriteExt::write_all(&mut f, bytes).await?;
        f.sync_all().await?;
        tokio::fs::rename(&tmp, path).await
    };
    let r = write.await;
    if r.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    r
}

impl TrafficActuator for Nginx {
    async fn set_weight(&mut self, percent: f64) -> Result<(), ActuatorError> {
        self.apply(percent).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NginxTraffic {
        NginxTraffic {
            config: "/tmp/x.conf".into(),
            upstream: "app".into(),
            stable: vec!["127.0.0.1:9001".into()],
            canary: vec!["127.0.0.1:9002".into()],
            test_command: None,
            reload_command: None,
            command_timeout: None,
            pid_file: None,
            route_header: None,
            route_cookie: None,
        }
    }

    #[test]
    fn the_file_has_the_weights_and_the_routes() {
        let t = Nginx::new(&spec()).render(10.0);
        assert!(t.contains("server 127.0.0.1:9001 weight=9;"), "{t}");
        assert!(t.contains("server 127.0.0.1:9002 weight=1;"), "{t}");
        assert!(t.contains("map $http_x_canary $app_route"), "{t}");
        assert!(t.contains("map $cookie_canary $app_by_cookie"), "{t}");
        assert!(t.contains("upstream app_canary {"), "{t}");
    }

    #[test]
    fn zero_and_full_route_nothing_to_the_other_version() {
        let n = Nginx::new(&spec());
        let zero = n.render(0.0);
        let weighted = zero.split("upstream app_stable").next().unwrap_or("");
        assert!(weighted.contains("127.0.0.1:9001"), "{zero}");
        assert!(!weighted.contains("127.0.0.1:9002"), "{zero}");
        let full = n.render(100.0);
        let weighted = full.split("upstream app_stable").next().unwrap_or("");
        assert!(!weighted.contains("127.0.0.1:9001"), "{full}");
        assert!(weighted.contains("127.0.0.1:9002"), "{full}");
    }
}
