//! Test harness for end-to-end tests: real `hivemind` processes on 127.0.0.1, each with its own
//! data dir and ports, stopped by PID; HTTP helpers; polling with generous deadlines.

#![allow(dead_code)]

pub mod dns;
pub mod pki;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_hivemind");

/// A check that cannot run here (a tool or root missing): a note on a developer's machine, a
/// failure in CI (`CI=true`), where `.ci/run` installs what every check needs.
pub fn cannot_run(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what}, and CI=true: a skipped check is a failed check in CI");
    }
    eprintln!("{what}: skipped");
}
/// A base port for `hivemind dev --base-port` with every port it takes free: HTTP base+10i,
/// gossip base+10i+1, DNS base+53. Below the ephemeral range, where outgoing connections would
/// take ports from under it.
pub fn dev_base_port() -> u16 {
    loop {
        let candidate = 20_000 + 10 * (rand::random::<u16>() % 1000);
        let free = (0..6).all(|i| {
            let http = candidate + 10 * i;
            std::net::TcpListener::bind(("127.0.0.1", http)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", http + 1)).is_ok()
        }) && std::net::UdpSocket::bind(("127.0.0.1", candidate + 53)).is_ok()
            && TcpListener::bind(("127.0.0.1", candidate + 53)).is_ok();
        if free {
            return candidate;
        }
    }
}

/// How long a condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

static USED_PORTS: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free loopback port not handed out before in this test process.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if USED_PORTS.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// One `hivemind agent` process (or a stopped one that can be restarted from its data dir).
pub struct Agent {
    pub name: String,
    pub http_port: u16,
    pub gossip_port: u16,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    child: Option<Child>,
    pub log: PathBuf,
    /// The program it runs ([`BIN`] unless a test says otherwise, e.g. `hivemind-lite`).
    pub bin: PathBuf,
}

impl Agent {
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("agent")
            .args(&self.args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start hivemind agent");
        self.child = Some(child);
    }

    /// Runs the agent in the foreground until it exits (for joins that must fail).
    pub fn run_to_exit(&self) -> Output {
        Command::new(&self.bin)
            .arg("agent")
            .args(&self.args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run hivemind agent")
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// kill -9 by PID, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Sends `signal` (e.g. "HUP") by PID; the process keeps running.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        assert!(Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap()
            .success());
    }

    /// SIGTERM by PID; returns the exit status once it stopped.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_ref().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        self.wait_exit()
    }

    /// Waits (up to the deadline) for the process to exit by itself; returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().ok();
                panic!("{} did not stop", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- last log lines of {} ----\n{}",
                self.name,
                self.log_tail(40)
            );
        }
        self.kill9();
    }
}

/// The flags every test agent gets: its name, data dir and ports.
fn base_args(
    name: &str,
    data_dir: &std::path::Path,
    http_port: u16,
    gossip_port: u16,
) -> Vec<String> {
    vec![
        "--name".to_string(),
        name.to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--http-port".into(),
        http_port.to_string(),
        "--gossip-port".into(),
        gossip_port.to_string(),
    ]
}

/// A set of agents sharing one temp dir.
pub struct Cluster {
    // Before `dir`: agents drop first, so a failing test still shows their logs.
    pub agents: Vec<Agent>,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` control-plane members that bootstrap together; `extra` is added to every agent's flags.
    pub fn control_plane(n: usize, extra: &[&str]) -> Self {
        Self::control_plane_with(n, extra, |_| Vec::new())
    }

    /// As [`Cluster::control_plane`], with flags of each member's own after `extra` (its TLS
    /// certificate, named for it): `own(name)`.
    pub fn control_plane_with(n: usize, extra: &[&str], own: impl Fn(&str) -> Vec<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let joins: Vec<String> = ports
            .iter()
            .map(|(h, _)| format!("127.0.0.1:{h}"))
            .collect();
        let mut agents = Vec::new();
        for (i, (http_port, gossip_port)) in ports.into_iter().enumerate() {
            let name = format!("cp{}", i + 1);
            let data_dir = dir.path().join(&name);
            let mut args = [
                base_args(&name, &data_dir, http_port, gossip_port),
                vec![
                    "--control-plane".into(),
                    "--bootstrap-expect".into(),
                    n.to_string(),
                ],
            ]
            .concat();
            for j in &joins {
                args.push("--join".into());
                args.push(j.clone());
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            args.extend(own(&name));
            agents.push(Agent {
                log: dir.path().join(format!("{name}.log")),
                name,
                http_port,
                gossip_port,
                data_dir,
                args,
                child: None,
                bin: BIN.into(),
            });
        }
        let mut cluster = Cluster { dir, agents };
        for a in &mut cluster.agents {
            a.start();
        }
        cluster
    }

    /// Adds an agent with fresh ports and its own data dir (two agents may share a name, as in
    /// a join that must be refused, never a data dir); not started.
    fn push_agent(&mut self, name: &str, flags: Vec<String>) -> usize {
        let (http_port, gossip_port) = (free_port(), free_port());
        let data_dir = self.dir.path().join(format!("{name}-{http_port}"));
        let args = [base_args(name, &data_dir, http_port, gossip_port), flags].concat();
        self.agents.push(Agent {
            log: self.dir.path().join(format!("{name}-{http_port}.log")),
            name: name.to_string(),
            http_port,
            gossip_port,
            data_dir,
            args,
            child: None,
            bin: BIN.into(),
        });
        self.agents.len() - 1
    }

    /// One more CP member that does not bootstrap (to be added with `cp voters add`); started.
    pub fn add_standby(&mut self, name: &str) -> usize {
        let index = self.push_agent(name, vec!["--control-plane".into()]);
        self.agents[index].start();
        index
    }

    /// A member outside the control plane that joins through `via` (HOST:PORT); not started.
    pub fn add_member(&mut self, name: &str, via: &str, extra: &[&str]) -> usize {
        let mut flags = vec!["--join".to_string(), via.to_string()];
        flags.extend(extra.iter().map(|s| s.to_string()));
        self.push_agent(name, flags)
    }

    /// A member outside the control plane with the `local` gossip profile and `--roles
    /// roles` (plus `extra`), joined through the first agent; started.
    pub fn start_role_member(&mut self, name: &str, roles: &str, extra: &[&str]) -> usize {
        let via = self.agents[0].http_addr();
        let mut flags = vec!["--gossip-profile", "local", "--roles", roles];
        flags.extend_from_slice(extra);
        let index = self.add_member(name, &via, &flags);
        self.agents[index].start();
        index
    }

    /// A dns member on a fresh DNS port (see [`Cluster::start_role_member`]); answers its index
    /// and DNS port.
    pub fn start_dns_member(&mut self, name: &str, extra: &[&str]) -> (usize, u16) {
        let port = free_port();
        let port_text = port.to_string();
        let mut flags = vec!["--dns-port", port_text.as_str()];
        flags.extend_from_slice(extra);
        (self.start_role_member(name, "dns", &flags), port)
    }

    /// 3 control-plane members with the `local` gossip profile, healthy.
    pub async fn local_control_plane() -> Self {
        let cluster = Cluster::control_plane(3, &["--gossip-profile", "local"]);
        cluster.wait_healthy().await;
        cluster
    }

    pub fn running(&self) -> impl Iterator<Item = &Agent> {
        self.agents.iter().filter(|a| a.is_running())
    }

    /// Waits until every running member is healthy and they agree on one leader that is itself
    /// running (right after a kill, followers trust the dead leader for an election timeout);
    /// returns the leader's index in `agents`.
    pub async fn wait_healthy(&self) -> usize {
        wait_for("a healthy control plane with one agreed leader", || async {
            let mut leaders = BTreeSet::new();
            for a in self.running() {
                let status = get_json(&a.url("/v1/cp/status")).await.ok()?;
                if status["health"] != "healthy" {
                    return None;
                }
                leaders.insert(status["leader"]["name"].as_str()?.to_string());
            }
            if leaders.len() != 1 {
                return None;
            }
            let leader = leaders.into_iter().next()?;
            self.agents
                .iter()
                .position(|a| a.name == leader && a.is_running())
        })
        .await
    }
}

pub fn client() -> reqwest::Client {
    hivemind_tls::http_client(None)
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
}

pub async fn get_json(url: &str) -> anyhow::Result<Value> {
    let response = client().get(url).send().await?;
    anyhow::ensure!(response.status().is_success(), "HTTP {}", response.status());
    Ok(response.json().await?)
}

/// Polls `condition` until it yields a value; fails the test after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_for_within(what, DEADLINE, condition).await
}

/// [`wait_for`] with a deadline of its own (for what many processes on two cores must do).
pub async fn wait_for_within<T, F, Fut>(what: &str, limit: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the CLI with `args` and returns its output.
/// Waits until `agent`'s `/v1/status` says `ready`.
pub async fn wait_ready(agent: &Agent) {
    let url = agent.url("/v1/status");
    wait_for(&format!("{} ready", agent.name), || async {
        let s = get_json(&url).await.ok()?;
        (s["ready"] == true).then_some(())
    })
    .await;
}

/// `PUT /v1/roles/host/services` on a host member; answers the status code.
pub async fn put_services(agent: &Agent, services: Value) -> u16 {
    client()
        .put(agent.url("/v1/roles/host/services"))
        .json(&services)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `GET /` through nginx at `listen` with `Host: host`: the status and body.
pub async fn through(listen: &str, host: &str) -> Option<(u16, String)> {
    let response = client()
        .get(format!("http://{listen}/"))
        .header("Host", host)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Stops the managed nginx (its master, by its command line, which names the member's prefix;
/// the master takes its workers along) once the members are gone: a member killed with -9
/// cannot stop its child. Declared before the cluster, so dropped after it.
pub struct NginxGuard(pub Option<PathBuf>);

impl Drop for NginxGuard {
    fn drop(&mut self) {
        if let Some(prefix) = &self.0 {
            let _ = Command::new("pkill")
                .args(["-QUIT", "-f", &format!("nginx -p {}", prefix.display())])
                .status();
        }
    }
}

/// `agent`'s `/metrics` as it stands (Prometheus text).
pub async fn metrics_text(agent: &Agent) -> String {
    let response = client().get(agent.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}'s /metrics", agent.name);
    response.text().await.unwrap()
}

/// Waits until `agent`'s `/metrics` holds exactly the line `line` (e.g. `name 1`).
pub async fn wait_metric_line(agent: &Agent, line: &str) {
    let url = agent.url("/metrics");
    wait_for(&format!("{} /metrics: {line}", agent.name), || async {
        let text = client().get(&url).send().await.ok()?.text().await.ok()?;
        text.lines().any(|l| l == line).then_some(())
    })
    .await;
}

pub fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("HIVEMIND_HTTP_ADDR")
        .env_remove("HIVEMIND_TOKEN")
        .output()
        .expect("run hivemind")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What a webhook receiver collected: every JSON body POSTed to it, in order.
pub type Received = std::sync::Arc<Mutex<Vec<Value>>>;

/// A webhook receiver on a free loopback port (served until the test ends); answers its URL
/// and what it collects.
pub async fn webhook_receiver() -> (String, Received) {
    let received: Received = Default::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(r): axum::extract::State<Received>,
                 axum::Json(v): axum::Json<Value>| async move {
                    r.lock().unwrap().push(v);
                },
            ),
        )
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (hook, received)
}
