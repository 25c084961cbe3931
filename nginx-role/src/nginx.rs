//! The IO edge of the nginx role: the files under its prefix, `nginx -t` on a candidate, the
//! atomic install, the reload (SIGHUP to the master), and the managed nginx process.
//!
//! Layout under the prefix (`<data-dir>/nginx/`): `nginx.conf` (the main config of a managed
//! nginx: daemon off, its own pid, error log and temp paths, `include` of the render),
//! `hivemind.conf` (the render, unless `--nginx-conf` names another file), `check.conf` (the
//! main config `nginx -t` checks a candidate with), `nginx.pid`, `error.log`, `tmp/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hivemind_common::backoff::Backoff;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

/// How one member runs nginx.
#[derive(Debug, Clone)]
pub struct Nginx {
    pub bin: PathBuf,
    pub prefix: PathBuf,
    /// The render's path (an `http`-level include).
    pub conf: PathBuf,
    /// Run nginx as a supervised child (else signal the master in `pid_file`).
    pub managed: bool,
    pub pid_file: Option<PathBuf>,
    /// The loopback status listener every render carries ([`crate::confirm`]).
    pub status: std::net::SocketAddr,
}

impl Nginx {
    /// The main config: everything under the prefix, the render included in `http`.
    fn main_conf(&self, include: &Path) -> String {
        let p = self.prefix.display();
        format!(
            "# Written by hivemind's nginx role; the services are in the include below.\n\
             daemon off;\nmaster_process on;\nworker_processes 1;\n\
             pid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n    access_log off;\n\
             \x20   client_body_temp_path {p}/tmp/client_body;\n\
             \x20   proxy_temp_path {p}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {p}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {p}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {p}/tmp/scgi;\n\
             \x20   include {};\n}}\n",
            include.display()
        )
    }

    /// Creates the prefix, writes the main config, and an empty render if there is none yet
    /// (a valid config to start nginx with before the first render).
    pub fn prepare(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.prefix.join("tmp"))?;
        if let Some(dir) = self.conf.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if !self.conf.exists() {
            std::fs::write(&self.conf, "# No services rendered yet.\n")?;
        }
        std::fs::write(self.prefix.join("nginx.conf"), self.main_conf(&self.conf))
    }

    /// The managed nginx's error log (an unmanaged nginx logs where its operator said).
    pub fn error_log(&self) -> Option<PathBuf> {
        self.managed.then(|| self.prefix.join("error.log"))
    }

    /// What the error log holds now (its length): where the lines of the next reload begin.
    pub fn error_log_mark(&self) -> u64 {
        self.error_log()
            .and_then(|log| std::fs::metadata(log).ok())
            .map_or(0, |m| m.len())
    }

    /// The error-log lines nginx wrote since `mark` (at most the last 64 KiB of them).
    pub fn error_log_since(&self, mark: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let Some(Ok(mut file)) = self.error_log().map(std::fs::File::open) else {
            return String::new();
        };
        let len = file.metadata().map_or(0, |m| m.len());
        let from = mark.min(len).max(len.saturating_sub(64 * 1024));
        let mut text = Vec::new();
        if file.seek(SeekFrom::Start(from)).is_ok() {
            let _ = file.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    fn candidate(&self) -> PathBuf {
        let mut name = self.conf.file_name().unwrap_or_default().to_os_string();
        name.push(".new");
        self.conf.with_file_name(name)
    }

    /// Writes `text` as the candidate render and checks it with `nginx -t`; answers the
    /// candidate's path, or nginx's complaint (the candidate is removed).
    pub async fn check(&self, text: &str) -> Result<PathBuf, String> {
        let candidate = self.candidate();
        write_synced(&candidate, text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", candidate.display()))?;
        let check = self.prefix.join("check.conf");
        std::fs::write(&check, self.main_conf(&candidate))
            .map_err(|e| format!("cannot write {}: {e}", check.display()))?;
        let output = tokio::process::Command::new(&self.bin)
            .arg("-t")
            .arg("-q")
            .arg("-p")
            .arg(&self.prefix)
            .arg("-e")
            .arg(self.prefix.join("error.log"))
            .arg("-c")
            .arg(&check)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        if output.status.success() {
            return Ok(candidate);
        }
        let _ = std::fs::remove_file(&candidate);
        Err(format!(
            "nginx -t refused the render: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }

    /// Puts a checked candidate in place of the render (atomic rename in one directory).
    pub fn install(&self, candidate: &Path) -> std::io::Result<()> {
        std::fs::rename(candidate, &self.conf)?;
        if let Some(dir) = self.conf.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Asks the master to reload (SIGHUP): the managed child's pid, or `--nginx-pid-file`'s.
    pub fn reload(&self, managed_pid: Option<u32>) -> Result<(), String> {
        let pid = match (self.managed, &self.pid_file) {
            (true, _) => managed_pid.ok_or("the managed nginx is not running")?,
            (false, Some(file)) => read_pid(file)?,
            (false, None) => return Err("--nginx-pid-file is not set".into()),
        };
        kill(Pid::from_raw(pid as i32), Signal::SIGHUP)
            .map_err(|e| format!("cannot signal nginx (pid {pid}): {e}"))
    }
}

fn read_pid(file: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{} does not hold a pid", file.display()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Runs the managed nginx until `shutdown`, restarting it (with backoff) when it exits;
/// `pid` holds the running master's pid (0 while none runs), `restarts` counts restarts.
pub async fn supervise(
    nginx: Nginx,
    pid: Arc<AtomicU32>,
    restarts: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    // An nginx left by an earlier run of this member (killed with -9) still holds the port.
    if let Ok(old) = read_pid(&nginx.prefix.join("nginx.pid")) {
        let old = Pid::from_raw(old as i32);
        if kill(old, Signal::SIGQUIT).is_ok() {
            tracing::warn!(pid = %old, "stopping the nginx an earlier run left behind");
            // Until it is gone (signal 0 fails), at most a few seconds: it holds the port.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while kill(old, None).is_ok() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let child = tokio::process::Command::new(&nginx.bin)
            .arg("-p")
            .arg(&nginx.prefix)
            .arg("-e")
            .arg(nginx.prefix.join("error.log"))
            .arg("-c")
            .arg(nginx.prefix.join("nginx.conf"))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                tracing::error!(bin = %nginx.bin.display(), error = %e, "cannot start nginx");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_wait()) => {}
                }
                continue;
            }
        };
        pid.store(child.id().unwrap_or(0), Ordering::Relaxed);
        tracing::info!(pid = child.id(), "nginx started");
        tokio::select! {
            _ = shutdown.cancelled() => {
                if let Some(id) = child.id() {
                    // Graceful: finish the requests in flight.
                    let _ = kill(Pid::from_raw(id as i32), Signal::SIGQUIT);
                }
                if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
                pid.store(0, Ordering::Relaxed);
                return;
            }
            status = child.wait() => {
                pid.store(0, Ordering::Relaxed);
                restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(?status, "nginx exited; restarting it");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_wait()) => {}
        }
    }
}
