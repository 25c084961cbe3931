//! Runs a host's HTTP and TCP checks (the IO of DESIGN.md §6g): one task per check, its first
//! run staggered within the interval as Consul staggers them, at most [`MAX_RUNNING`] runs at
//! once on the host, each bounded by the check's timeout. Verdicts go to the role's task, which
//! applies them ([`crate::services::Services::observe`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hivemind_common::records::Health;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use crate::health::{http_health, truncate};
use crate::registration::{CheckDef, CheckKind, ServiceDef, OUTPUT_MAX};

/// Checks of one host running at the same moment, at most.
pub const MAX_RUNNING: usize = 64;

/// A run's verdict on a check.
#[derive(Debug)]
pub struct Verdict {
    pub check: String,
    pub result: Health,
    pub output: String,
}

/// Runs checks: HTTP clients (verified against the system's roots, and one that skips
/// verification for `tls_skip_verify`) and the bound on runs at once.
pub struct Prober {
    http: reqwest::Client,
    insecure: reqwest::Client,
    permits: Semaphore,
    pub runs: AtomicU64,
    pub failures: AtomicU64,
}

fn client(skip_verify: bool) -> reqwest::Client {
    hivemind_tls::outside::outside_client(skip_verify)
        .user_agent("hivemind health check")
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .expect("an HTTP client builds")
}

impl Default for Prober {
    fn default() -> Self {
        Self {
            http: client(false),
            insecure: client(true),
            permits: Semaphore::new(MAX_RUNNING),
            runs: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl Prober {
    /// Runs `check` once (an HTTP or TCP check; a TTL check has nothing to run).
    pub async fn run(&self, check: &CheckDef) -> (Health, String) {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let (result, output) = match &check.kind {
            CheckKind::Http {
                url,
                method,
                header,
                body,
                tls_skip_verify,
                ..
            } => {
                let client = if *tls_skip_verify {
                    &self.insecure
                } else {
                    &self.http
                };
                self.http_run(client, url, method, header, body, check.timeout)
                    .await
            }
            CheckKind::Tcp { addr, .. } => {
                match tokio::time::timeout(check.timeout, tokio::net::TcpStream::connect(addr))
                    .await
                {
                    Ok(Ok(_)) => (Health::Passing, format!("TCP connect {addr}: Success")),
                    Ok(Err(e)) => (Health::Critical, format!("dial tcp {addr}: {e}")),
                    Err(_) => (Health::Critical, format!("dial tcp {addr}: i/o timeout")),
                }
            }
            CheckKind::Ttl { .. } => return (Health::Passing, String::new()),
        };
        self.runs.fetch_add(1, Ordering::Relaxed);
        if result != Health::Passing {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        (result, output)
    }

    async fn http_run(
        &self,
        client: &reqwest::Client,
        url: &str,
        method: &str,
        header: &BTreeMap<String, Vec<String>>,
        body: &str,
        timeout: Duration,
    ) -> (Health, String) {
        let Ok(verb) = reqwest::Method::from_bytes(method.as_bytes()) else {
            return (Health::Critical, format!("{method} is not an HTTP method"));
        };
        let mut request = client
            .request(verb, url)
            .timeout(timeout)
            .header("accept", "text/plain, text/*, */*");
        for (name, values) in header {
            for value in values {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        if !body.is_empty() {
            request = request.body(body.to_string());
        }
        let run = async {
            let mut response = request.send().await?;
            let status = response.status();
            let mut text = Vec::new();
            while text.len() < OUTPUT_MAX {
                match response.chunk().await? {
                    Some(chunk) => text.extend_from_slice(&chunk),
                    None => break,
                }
            }
            text.truncate(OUTPUT_MAX);
            Ok::<_, reqwest::Error>((status, text))
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok((status, text))) => {
                let output = format!(
                    "HTTP {method} {url}: {} Output: {}",
                    status,
                    String::from_utf8_lossy(&text)
                );
                (http_health(status.as_u16()), truncate(output, OUTPUT_MAX))
            }
            Ok(Err(e)) if e.is_timeout() => (
                Health::Critical,
                format!("{method} {url}: timeout after {timeout:?}"),
            ),
            Ok(Err(e)) => (
                Health::Critical,
                format!("{method} {url}: {}", error_chain(&e)),
            ),
            Err(_) => (
                Health::Critical,
                format!("{method} {url}: timeout after {timeout:?}"),
            ),
        }
    }
}

/// An error with its sources ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A random delay below `interval`: first runs spread out, as Consul's do.
fn stagger(interval: Duration) -> Duration {
    interval.mul_f64(rand::random::<f64>())
}

/// The running probes: one task per HTTP or TCP check, restarted when its definition changes.
#[derive(Default)]
pub struct Probes {
    running: BTreeMap<String, (CheckDef, JoinHandle<()>)>,
}

impl Probes {
    /// Runs exactly the checks of `services` that the host runs itself.
    pub fn sync(
        &mut self,
        services: &[ServiceDef],
        prober: &Arc<Prober>,
        sink: &mpsc::UnboundedSender<Verdict>,
    ) {
        let wanted: BTreeMap<&str, &CheckDef> = services
            .iter()
            .flat_map(|s| &s.checks)
            .filter(|c| c.kind.interval().is_some())
            .map(|c| (c.id.as_str(), c))
            .collect();
        self.running.retain(|id, (def, task)| {
            let keep = wanted.get(id.as_str()).is_some_and(|w| *w == def);
            if !keep {
                task.abort();
            }
            keep
        });
        for (id, def) in wanted {
            if self.running.contains_key(id) {
                continue;
            }
            let task = tokio::spawn(probe(def.clone(), prober.clone(), sink.clone()));
            self.running.insert(id.to_string(), (def.clone(), task));
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}

/// Runs `check` every interval until aborted or the role's task is gone.
async fn probe(check: CheckDef, prober: Arc<Prober>, sink: mpsc::UnboundedSender<Verdict>) {
    let Some(interval) = check.kind.interval() else {
        return;
    };
    tokio::time::sleep(stagger(interval)).await;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (result, output) = prober.run(&check).await;
        let verdict = Verdict {
            check: check.id.clone(),
            result,
            output,
        };
        if sink.send(verdict).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registration::parse_service;
    use serde_json::json;
    use tokio::io::AsyncWriteExt;

    fn check(kind: serde_json::Value) -> CheckDef {
        let s = json!({"name": "a", "port": 1, "check": kind});
        parse_service(&s, "s").unwrap().checks.remove(0)
    }

    /// A one-shot HTTP server answering `status` with `body` to every request.
    async fn server(status: &'static str, body: &'static str) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_checks_map_answers_to_statuses_with_the_body_as_output() {
        let prober = Prober::default();
        for (status, want) in [
            ("200 OK", Health::Passing),
            ("429 Too Many Requests", Health::Warning),
            ("503 Service Unavailable", Health::Critical),
        ] {
            let addr = server(status, "all good").await;
            let c = check(json!({"http": format!("http://{addr}/health"), "interval": "1s"}));
            let (result, output) = prober.run(&c).await;
            assert_eq!(result, want, "{status}");
            assert!(
                output.starts_with(&format!("HTTP GET http://{addr}/health: {}", &status[..3])),
                "{output}"
            );
            assert!(output.ends_with("Output: all good"), "{output}");
        }
        assert_eq!(prober.runs.load(Ordering::Relaxed), 3);
        assert_eq!(prober.failures.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn refused_and_silent_servers_are_critical() {
        let prober = Prober::default();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let tcp = check(json!({"tcp": addr.to_string(), "interval": "1s"}));
        assert_eq!(prober.run(&tcp).await.0, Health::Critical);
        let http = check(json!({"http": format!("http://{addr}/"), "interval": "1s"}));
        assert_eq!(prober.run(&http).await.0, Health::Critical);
        // A server that accepts and never answers: the timeout decides.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let slow =
            check(json!({"http": format!("http://{addr}/"), "interval": "1s", "timeout": "200ms"}));
        let (result, output) = prober.run(&slow).await;
        assert_eq!(result, Health::Critical);
        assert!(output.contains("timeout"), "{output}");
        let tcp = check(json!({"tcp": addr.to_string(), "interval": "1s"}));
        assert_eq!(prober.run(&tcp).await.0, Health::Passing);
    }
}
