//! The cluster the nginx and health-check benchmarks run on loopback: 3 control-plane members,
//! a dns member (`ns-1`), an nginx member (`edge-1`, a managed real nginx) and a host (`web-1`),
//! started from one base port and waited on until every role member is ready.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::harness::{
    agent_args, control_plane_procs, hivemind_binary, join_flags, wait, Output, Proc,
};

pub struct Edge {
    /// cp1..cp3, ns-1, edge-1, web-1: stopped by PID when dropped.
    pub procs: Vec<Proc>,
    pub base_port: u16,
    /// Where nginx listens.
    pub listen: String,
    pub dns_port: u16,
}

/// Index of each member in [`Edge::procs`].
pub const NS: u16 = 3;
pub const EDGE: u16 = 4;
pub const WEB: u16 = 5;

async fn get(http: &reqwest::Client, url: &str) -> Option<Value> {
    http.get(url).send().await.ok()?.json().await.ok()
}

impl Edge {
    /// The HTTP port of member `i` (two ports each: HTTP, then gossip).
    pub fn port(&self, i: u16) -> u16 {
        self.base_port + 2 * i
    }

    pub fn url(&self, i: u16, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port(i))
    }

    /// Starts the cluster with its data and logs under `dir` and waits until the role members
    /// are ready; `host_flags` go to the host.
    pub async fn start(
        dir: &Path,
        base_port: u16,
        nginx_bin: &str,
        host_flags: &[&str],
    ) -> Result<Self> {
        let program = hivemind_binary()?;
        let port = |i: u16| base_port + 2 * i;
        let joins = join_flags((0..3).map(port));
        let listen = format!("127.0.0.1:{}", base_port + 50);
        let dns_port = base_port + 51;
        let mut procs = control_plane_procs(&program, dir, port, &[]);
        let role = |roles: &str, more: &[&str]| {
            let mut extra = joins.clone();
            extra.extend(["--roles".to_string(), roles.to_string()]);
            extra.extend(more.iter().map(|s| s.to_string()));
            extra
        };
        let dns_flag = dns_port.to_string();
        let members = [
            ("ns-1", role("dns", &["--dns-port", &dns_flag])),
            (
                "edge-1",
                role(
                    "nginx",
                    &["--nginx-listen", &listen, "--nginx-bin", nginx_bin],
                ),
            ),
            ("web-1", role("host", host_flags)),
        ];
        for (i, (name, extra)) in members.into_iter().enumerate() {
            procs.push(Proc::new(
                &program,
                agent_args(dir, name, port(NS + i as u16), "local", &extra),
            ));
        }
        for (i, p) in procs.iter_mut().enumerate() {
            p.start(Output::File(dir.join(format!("{i}.log"))))?;
        }
        let http = hivemind_tls::http_client(None)
            .timeout(Duration::from_secs(2))
            .build()?;
        for i in NS..=WEB {
            let url = format!("http://127.0.0.1:{}/v1/status", port(i));
            wait("every member ready", Duration::from_secs(90), || async {
                (get(&http, &url).await?["ready"] == true).then_some(())
            })
            .await?;
        }
        Ok(Self {
            procs,
            base_port,
            listen,
            dns_port,
        })
    }

    /// Stops the nginx member gracefully, which stops its nginx; the others go by PID on drop.
    pub fn stop_nginx(&mut self) {
        if let Some(edge) = self.procs.get_mut(EDGE as usize) {
            edge.terminate(Duration::from_secs(10));
        }
    }
}
