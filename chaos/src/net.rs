//! Where the members live on the network, and cutting links between them (IO).
//!
//! As root, each member gets a network namespace of its own, joined to the harness by a veth
//! pair on a bridge made for the run (`10.213.<run>.0/24`: the members at `.1`, `.2`, …, the
//! harness, which runs the clients, at `.254`). A cut link is an nftables table in both
//! members' namespaces dropping the other's address, so clients always reach every member
//! while members lose each other. Without root the members share loopback and nothing can be
//! cut. Everything made is removed on drop.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use crate::nemesis::Link;

/// The members' network.
pub struct Net {
    members: usize,
    /// `Some(run)` in namespaces, `None` on loopback.
    run: Option<u8>,
}

/// What went wrong setting up or changing the network.
#[derive(Debug, thiserror::Error)]
#[error("{command}: {detail}")]
pub struct NetError {
    command: String,
    detail: String,
}

fn sh(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), NetError> {
    use std::io::Write;
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).map_err(|e| NetError {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    }
    let out = child.wait_with_output().map_err(|e| NetError {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether this process may make namespaces (root, with `ip` and `nft` installed).
pub fn namespaces_available() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let has = |tool: &str| {
        Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    root && has("ip") && has("nft")
}

impl Net {
    /// Loopback: every member on 127.0.0.1, no partitions.
    pub fn loopback(members: usize) -> Self {
        Self { members, run: None }
    }

    /// A namespace per member on a fresh bridge. `run` tells concurrent runs apart (1–250).
    pub fn namespaces(members: usize, run: u8) -> Result<Self, NetError> {
        let net = Self {
            members,
            run: Some(run),
        };
        net.teardown(); // leftovers of a run that died
        let bridge = net.bridge();
        sh("ip", &["link", "add", &bridge, "type", "bridge"], None)?;
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.harness_ip()),
                "dev",
                &bridge,
            ],
            None,
        )?;
        sh("ip", &["link", "set", &bridge, "up"], None)?;
        for m in 0..members {
            let (ns, host_end) = (net.namespace(m), net.veth(m));
            sh("ip", &["netns", "add", &ns], None)?;
            sh(
                "ip",
                &[
                    "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
                None,
            )?;
            sh("ip", &["link", "set", &host_end, "master", &bridge], None)?;
            sh("ip", &["link", "set", &host_end, "up"], None)?;
            let ip = format!("{}/24", net.member_ip(m));
            sh("ip", &["-n", &ns, "addr", "add", &ip, "dev", "eth0"], None)?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"], None)?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"], None)?;
        }
        Ok(net)
    }

    pub fn in_namespaces(&self) -> bool {
        self.run.is_some()
    }

    fn bridge(&self) -> String {
        format!("hmchaos{}", self.run.unwrap_or(0))
    }

    fn namespace(&self, member: usize) -> String {
        format!("hmchaos{}-{member}", self.run.unwrap_or(0))
    }

    fn veth(&self, member: usize) -> String {
        format!("hmc{}v{member}", self.run.unwrap_or(0))
    }

    fn harness_ip(&self) -> String {
        format!("10.213.{}.254", self.run.unwrap_or(0))
    }

    /// The address member `m` binds and is reached at.
    pub fn member_ip(&self, member: usize) -> String {
        match self.run {
            Some(run) => format!("10.213.{run}.{}", member + 1),
            None => "127.0.0.1".to_string(),
        }
    }

    /// A command that runs `program` where member `m` lives.
    pub fn command(&self, member: usize, program: &std::path::Path) -> Command {
        match self.run {
            Some(_) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.namespace(member)])
                    .arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Cuts exactly the links in `cut` (healing every other).
    pub fn cut(&self, cut: &BTreeSet<Link>) -> Result<(), NetError> {
        if self.run.is_none() {
            return if cut.is_empty() {
                Ok(())
            } else {
                Err(NetError {
                    command: "partition".into(),
                    detail: "members on loopback cannot be partitioned".into(),
                })
            };
        }
        for m in 0..self.members {
            let peers: Vec<String> = cut
                .iter()
                .filter_map(|&(a, b)| match m {
                    _ if m == a => Some(self.member_ip(b)),
                    _ if m == b => Some(self.member_ip(a)),
                    _ => None,
                })
                .collect();
            let ns = self.namespace(m);
            let _ = sh(
                "ip",
                &[
                    "netns", "exec", &ns, "nft", "delete", "table", "inet", "chaos",
                ],
                None,
            );
            if peers.is_empty() {
                continue;
            }
            let set = peers.join(", ");
            let rules = format!(
                "table inet chaos {{\n\
                 chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
                 chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
                 }}\n"
            );
            sh(
                "ip",
                &["netns", "exec", &ns, "nft", "-f", "-"],
                Some(&rules),
            )?;
        }
        Ok(())
    }

    /// Heals every link.
    pub fn heal(&self) -> Result<(), NetError> {
        self.cut(&BTreeSet::new())
    }

    fn teardown(&self) {
        if self.run.is_none() {
            return;
        }
        for m in 0..self.members {
            let _ = sh("ip", &["link", "del", &self.veth(m)], None);
            let _ = sh("ip", &["netns", "del", &self.namespace(m)], None);
        }
        let _ = sh("ip", &["link", "del", &self.bridge()], None);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}
