//! The control-plane members under test: real `hivemind agent` processes, each started where
//! [`Net`] puts it, killed, paused and resumed by PID (IO).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::net::Net;
use crate::pki::Pki;
use crate::powerfs::PowerFs;

/// One member process (or a stopped one that restarts from its data directory).
pub struct Member {
    pub name: String,
    pub http_addr: String,
    data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    paused: bool,
    /// The power-loss filesystem holding `data_dir`, when the run uses one.
    fs: Option<PowerFs>,
}

/// The members of one run.
pub struct Cluster {
    pub net: Net,
    pub members: Vec<Member>,
    bin: PathBuf,
}

/// How the members are started.
pub struct ClusterSpec<'a> {
    pub members: usize,
    pub bin: &'a Path,
    pub dir: &'a Path,
    /// Put each member's data directory on a [`PowerFs`].
    pub power_loss: bool,
    /// Flags every member gets (e.g. the test-only durability switch).
    pub extra_args: Vec<String>,
    /// TLS: each member gets its own certificate from here.
    pub pki: Option<&'a Pki>,
}

impl Cluster {
    pub fn start(net: Net, spec: &ClusterSpec) -> std::io::Result<Self> {
        let n = spec.members;
        // On loopback the members need ports of their own; in namespaces each has its address.
        let ports: Vec<(u16, u16)> = match net.in_namespaces() {
            true => vec![(7700, 7701); n],
            false => {
                let free = free_ports(2 * n);
                (0..n).map(|m| (free[2 * m], free[2 * m + 1])).collect()
            }
        };
        let addrs: Vec<String> = (0..n)
            .map(|m| format!("{}:{}", net.member_ip(m), ports[m].0))
            .collect();
        let mut members = Vec::new();
        for m in 0..n {
            let name = member_name(m);
            let data_dir = spec.dir.join(&name);
            std::fs::create_dir_all(&data_dir)?;
            let fs = if spec.power_loss {
                Some(PowerFs::mount(&data_dir)?)
            } else {
                None
            };
            let mut args: Vec<String> = [
                "agent",
                "--control-plane",
                "--name",
                &name,
                "--data-dir",
                &data_dir.display().to_string(),
                "--bind",
                &net.member_ip(m),
                // Addresses in the harness's own namespaces, reachable by nothing else.
                "--insecure",
                "--http-port",
                &ports[m].0.to_string(),
                "--gossip-port",
                &ports[m].1.to_string(),
                "--bootstrap-expect",
                &n.to_string(),
                "--gossip-profile",
                "local",
                "--log-format",
                "json",
                // The churn's synthetic members never gossip: the leader must not report them.
                "--fail-unheard-after",
                "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            for a in &addrs {
                args.extend(["--join".to_string(), a.clone()]);
            }
            args.extend(spec.extra_args.iter().cloned());
            if let Some(pki) = spec.pki {
                args.extend(pki.member_args(&name));
            }
            members.push(Member {
                name: name.clone(),
                http_addr: addrs[m].clone(),
                log: spec.dir.join(format!("{name}.log")),
                data_dir,
                args,
                child: None,
                paused: false,
                fs,
            });
        }
        let mut cluster = Self {
            net,
            members,
            bin: spec.bin.to_path_buf(),
        };
        for m in 0..n {
            cluster.start_member(m)?;
        }
        Ok(cluster)
    }

    pub fn start_member(&mut self, m: usize) -> std::io::Result<()> {
        let member = &self.members[m];
        if member.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)?;
        let child = self
            .net
            .command(m, &self.bin)
            .args(&member.args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.members[m].child = Some(child);
        Ok(())
    }

    pub fn is_running(&self, m: usize) -> bool {
        self.members[m].child.is_some()
    }

    /// `kill -9` by PID, and reap.
    pub fn kill9(&mut self, m: usize) {
        let member = &mut self.members[m];
        if let Some(mut child) = member.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
        member.paused = false;
    }

    /// Power loss: the process dies and what it wrote but did not sync is gone.
    pub fn power_fail(&mut self, m: usize) {
        self.kill9(m);
        if let Some(fs) = &self.members[m].fs {
            fs.lose_unsynced();
        }
    }

    /// SIGSTOP (`stop = true`) or SIGCONT by PID.
    pub fn pause(&mut self, m: usize, stop: bool) {
        let member = &mut self.members[m];
        let Some(child) = &member.child else { return };
        let signal = if stop { "-STOP" } else { "-CONT" };
        let _ = std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        member.paused = stop;
    }

    /// Resumes paused members and starts stopped ones.
    pub fn restore_all(&mut self) -> std::io::Result<()> {
        for m in 0..self.members.len() {
            if self.members[m].paused {
                self.pause(m, false);
            }
            self.start_member(m)?;
        }
        Ok(())
    }

    /// Every member's log so far.
    pub fn logs(&self) -> Vec<(String, String)> {
        self.members
            .iter()
            .map(|m| {
                let text = std::fs::read_to_string(&m.log).unwrap_or_default();
                (m.name.clone(), text)
            })
            .collect()
    }

    pub fn data_dir(&self, m: usize) -> &Path {
        &self.members[m].data_dir
    }

    /// Bytes that power losses dropped, over every member.
    pub fn power_lost_bytes(&self) -> u64 {
        self.members
            .iter()
            .filter_map(|m| m.fs.as_ref())
            .map(PowerFs::lost_bytes)
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in 0..self.members.len() {
            if self.members[m].paused {
                self.pause(m, false);
            }
            self.kill9(m);
        }
        // The filesystems unmount when their members are dropped, after the processes died.
        let _ = self.net.heal();
    }
}

/// The name of member `m` (0-based).
pub fn member_name(m: usize) -> String {
    format!("cp{}", m + 1)
}

/// `count` distinct free loopback ports (held together while chosen, then released; another
/// process may race for one, as everywhere ports are chosen this way).
fn free_ports(count: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..count)
        .filter_map(|_| std::net::TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    held.iter()
        .filter_map(|l| l.local_addr().ok().map(|a| a.port()))
        .collect()
}
