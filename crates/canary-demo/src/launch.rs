//! Launchers of demo backends for tests and benchmarks: one served in this
//! process ([`InProcess`]) or a `canary demo-backend` child process
//! ([`ChildBackend`]).
//!
//! Both bind a free port (port 0) and are ready to serve when `start`
//! returns: the in-process one has bound its socket, the child has printed
//! the address it bound. Both stop when dropped, the child by its PID, so a
//! failing test leaves nothing behind.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::backend::{Backend, BackendConfig};
use crate::DemoError;

/// Loopback, any free port: the address launched backends listen on.
pub const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// A demo backend served on the caller's tokio runtime; stops when dropped.
pub struct InProcess {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl InProcess {
    /// Binds `config` and serves it on a task of the current tokio runtime.
    ///
    /// # Errors
    /// What [`Backend::bind`] returns.
    pub async fn start(config: BackendConfig) -> Result<Self, DemoError> {
        let listen = config.listen;
        let backend = Backend::bind(config).await?;
        let addr = backend.local_addr().unwrap_or(listen);
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(backend.serve(async move {
            let _ = rx.await;
        }));
        Ok(Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and waits until in-flight requests are answered and
    /// the listener is closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A `canary demo-backend` child process on a free loopback port; killed
/// (by its PID) when dropped.
pub struct ChildBackend {
    child: Child,
    addr: SocketAddr,
}

impl ChildBackend {
    /// Runs `canary demo-backend --port 0 --threads 1 --name NAME EXTRA...`,
    /// where `canary` is the binary at `canary` (in the binary's own tests,
    /// `env!("CARGO_BIN_EXE_canary")`), and waits until it prints the
    /// address it listens on. Its stderr goes to the caller's.
    ///
    /// # Errors
    /// [`DemoError::Spawn`] when the program cannot be started,
    /// [`DemoError::NoAddress`] (after killing it) when its first line does
    /// not name an address.
    pub fn start(canary: impl AsRef<OsStr>, name: &str, extra: &[&str]) -> Result<Self, DemoError> {
        let canary = canary.as_ref();
        let mut child = Command::new(canary)
            .args([
                "demo-backend",
                "--port",
                "0",
                "--threads",
                "1",
                "--name",
                name,
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| DemoError::Spawn {
                program: canary.to_string_lossy().into_owned(),
                source,
            })?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Ok(Self { child, addr }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err(DemoError::NoAddress {
                    program: canary.to_string_lossy().into_owned(),
                    line,
                })
            }
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process (SIGKILL to its PID) and reaps it; a second call
    /// does nothing.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::{InProcess, LOOPBACK};
    use crate::backend::BackendConfig;
    use crate::loadgen::{self, LoadConfig, StopLoad};

    #[test]
    fn an_in_process_backend_serves_the_load_until_stopped() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = InProcess::start(BackendConfig::new(LOOPBACK, "b"))
                .await
                .unwrap();
            assert_ne!(b.addr().port(), 0);
            let mut cfg = LoadConfig::new(format!("{}/", b.url()).parse().unwrap(), 4);
            cfg.max_requests = Some(200);
            let r = loadgen::run(cfg, StopLoad::new()).await;
            // 200 answers, none from a proxy (no x-canary-version header).
            assert_eq!((r.sent, r.classes[1], r.failed), (200, 200, 0), "{r:?}");
            assert_eq!(r.by_version, [0, 0]);
            let addr = b.addr();
            b.stop().await;
            assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        });
    }
}
