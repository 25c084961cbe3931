//! The process harness every benchmark that starts a cluster shares: the `hivemind` binary (or
//! a peer such as serf) started as real processes, their output to a file or read line by line,
//! each stopped by its PID (SIGKILL, then reaped) when killed or dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where a process's stdout and stderr go.
pub enum Output {
    /// Both appended to this file.
    File(PathBuf),
    /// Each line handed to the callback, on a thread per stream.
    Lines(Arc<dyn Fn(&str) + Send + Sync>),
}

/// One process: how to start it, and the running child if it runs.
pub struct Proc {
    pub program: PathBuf,
    pub args: Vec<String>,
    child: Option<Child>,
}

impl Proc {
    pub fn new(program: &Path, args: Vec<String>) -> Self {
        Self {
            program: program.to_path_buf(),
            args,
            child: None,
        }
    }

    /// Starts (or restarts) the process.
    pub fn start(&mut self, output: Output) -> Result<()> {
        let mut command = Command::new(&self.program);
        command.args(&self.args).stdin(Stdio::null());
        match &output {
            Output::File(path) => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                command.stdout(log.try_clone()?).stderr(log);
            }
            Output::Lines(_) => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.program.display()))?;
        if let Output::Lines(each) = output {
            let streams = [
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            ];
            for stream in streams.into_iter().flatten() {
                let each = each.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines() {
                        let Ok(line) = line else { return };
                        each(&line);
                    }
                });
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL by PID, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM by PID (a member then stops gracefully, its children too), SIGKILL after
    /// `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The running process's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The exit status if the process ended on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// The peak resident set size (VmHWM) of the running process, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// The resident set size now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// A `/proc/PID/status` field in KiB (`VmHWM:`, `RssAnon:`, ...).
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `hivemind` binary the benchmarks start: `$HIVEMIND_BIN`, else the one built beside
/// `hivemind-bench` (`cargo build --release` builds both into `target/release/`).
pub fn hivemind_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("HIVEMIND_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe()?;
    let beside = me.with_file_name("hivemind");
    if !beside.is_file() {
        bail!(
            "no hivemind binary at {} (build it: cargo build --release, or set HIVEMIND_BIN)",
            beside.display()
        );
    }
    Ok(beside)
}

/// `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// The flags of a `hivemind agent` named `name` on loopback: data under `dir/name`, HTTP on
/// `http_port`, gossip on the next port, the gossip `profile`, then `extra`.
pub fn agent_args(
    dir: &Path,
    name: &str,
    http_port: u16,
    profile: &str,
    extra: &[String],
) -> Vec<String> {
    let data: PathBuf = dir.join(name);
    let mut args: Vec<String> = [
        "agent",
        "--name",
        name,
        "--data-dir",
        &data.display().to_string(),
        "--http-port",
        &http_port.to_string(),
        "--gossip-port",
        &(http_port + 1).to_string(),
        "--gossip-profile",
        profile,
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    args
}

/// The 3 control-plane members of a loopback cluster, not started: `cp1`..`cp3` with HTTP on
/// `port(0..3)`, bootstrapping together (each joins all three), local gossip, then `extra`.
pub fn control_plane_procs(
    program: &Path,
    dir: &Path,
    port: impl Fn(u16) -> u16,
    extra: &[String],
) -> Vec<Proc> {
    let joins = join_flags((0..3).map(&port));
    (0..3u16)
        .map(|i| {
            let mut flags = vec![
                "--control-plane".to_string(),
                "--bootstrap-expect".into(),
                "3".into(),
            ];
            flags.extend(joins.iter().cloned());
            flags.extend(extra.iter().cloned());
            let name = format!("cp{}", i + 1);
            Proc::new(program, agent_args(dir, &name, port(i), "local", &flags))
        })
        .collect()
}

/// `--join 127.0.0.1:PORT` for each of `http_ports` (the CP members a member joins through).
pub fn join_flags(http_ports: impl IntoIterator<Item = u16>) -> Vec<String> {
    http_ports
        .into_iter()
        .flat_map(|port| ["--join".to_string(), format!("127.0.0.1:{port}")])
        .collect()
}

/// Polls `condition` every 5 ms until it answers, at most `limit`.
pub async fn wait<T, F, Fut>(what: &str, limit: Duration, mut condition: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = condition().await {
            return Ok(v);
        }
        if Instant::now() > until {
            bail!("timed out after {limit:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
