//! DNS benchmarks against a running cluster:
//! - `hivemind-bench propagation`: changes one host's services N times and measures, for each
//!   change, the time until every dns member answers the new SRV record (polling over UDP).
//! - `hivemind-bench dns-publishers`: admits N synthetic host members (one node, one process)
//!   and serves their sealed subscription streams, so a dns member holds N host records for a
//!   query-rate benchmark (dnsperf) without N processes. Runs until Ctrl-C (or, in a test, until
//!   its shutdown token is cancelled).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use base64::Engine;
use clap::Args;
use hickory_proto::op::{Message, MessageType, OpCode, Query as DnsQuery};
use hickory_proto::rr::{Name, RData, RecordType};
use hivemind_common::records::{self, HostRecord};
use hivemind_common::stats::percentile_f64 as percentile;
use hivemind_common::MemberId;
use hivemind_control_plane::network::InternalClient;
use hivemind_control_plane::ops::{self, Op};
use hivemind_control_plane::registry::MemberInfo;
use hivemind_control_plane::CpError;
use hivemind_member::cp::join::{JoinAccepted, JoinRequest};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct PropagationArgs {
    /// HOST:PORT of the host member whose services change.
    #[arg(long)]
    pub host: String,
    /// That host's name (the SRV target's first label).
    #[arg(long)]
    pub host_name: String,
    /// DNS ports of the dns members on 127.0.0.1 (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub dns_ports: Vec<u16>,
    /// The keygroup's zone, e.g. hosts.default.hivemind.hivemind.
    #[arg(long, default_value = "hosts.default.hivemind.hivemind.")]
    pub zone: String,
    #[arg(long, default_value_t = 200)]
    pub changes: usize,
}

pub(crate) fn srv_ports(dns_port: u16, name: &Name, target: &str) -> Option<Vec<u16>> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok()?;
    let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    message.add_query(DnsQuery::query(name.clone(), RecordType::SRV));
    socket
        .send_to(&message.to_vec().ok()?, (Ipv4Addr::LOCALHOST, dns_port))
        .ok()?;
    let mut buf = [0u8; 4096];
    let len = socket.recv(&mut buf).ok()?;
    let answer = Message::from_vec(&buf[..len]).ok()?;
    Some(
        answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) if srv.target.to_ascii().starts_with(target) => Some(srv.port),
                _ => None,
            })
            .collect(),
    )
}

pub async fn propagation(args: PropagationArgs, json_out: bool) -> Result<()> {
    let http = hivemind_tls::http_client(None)
        .build()
        .expect("an HTTP client builds");
    let name = Name::from_ascii(format!("_bench._tcp.{}", args.zone))
        .with_context(|| format!("--zone: {:?} is not a DNS name", args.zone))?;
    let target = format!("{}.", args.host_name);
    let mut samples = Vec::with_capacity(args.changes);
    for i in 0..args.changes {
        let port = 20_000 + (i % 40_000) as u16;
        let started = Instant::now();
        let response = http
            .put(format!("http://{}/v1/roles/host/services", args.host))
            .json(&json!([{"name": "bench", "port": port, "proto": "tcp"}]))
            .send()
            .await
            .with_context(|| format!("cannot reach the host at {}", args.host))?;
        if !response.status().is_success() {
            bail!("the host answered {}", response.status());
        }
        let deadline = started + Duration::from_secs(10);
        for dns_port in &args.dns_ports {
            loop {
                let (name, target, dns_port) = (name.clone(), target.clone(), *dns_port);
                let ports =
                    tokio::task::spawn_blocking(move || srv_ports(dns_port, &name, &target))
                        .await?;
                if ports.is_some_and(|p| p.contains(&port)) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("dns member on port {dns_port} did not answer change {i} within 10 s");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        sorted[sorted.len() - 1],
    );
    if json_out {
        println!(
            "{}",
            json!({"changes": args.changes, "dns_members": args.dns_ports.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max})
        );
    } else {
        println!(
            "propagation: {} changes to {} dns members: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
            args.changes,
            args.dns_ports.len()
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct PublishersArgs {
    /// HOST:PORT of a member whose node replicates the keygroup (e.g. a dns member): the
    /// publishers' node is added as a replica through it and the secret read through it.
    #[arg(long)]
    pub via: String,
    #[arg(long, default_value = "hivemind/default/hosts")]
    pub keygroup: String,
    /// Synthetic hosts to publish (`bench-0` ... ).
    #[arg(long, default_value_t = 1000)]
    pub hosts: usize,
    /// Where their subscription streams are served (one address for all of them).
    #[arg(long, default_value = "127.0.0.1:7790")]
    pub listen: SocketAddr,
    /// Seal the records with a random key instead of the keygroup's secret (subscribers must
    /// refuse and count them).
    #[arg(long)]
    pub wrong_secret: bool,
    /// Name prefix of the synthetic hosts.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
}

struct Publishers {
    keygroup: String,
    secret: Vec<u8>,
    records: std::collections::HashMap<MemberId, HostRecord>,
}

#[derive(serde::Deserialize)]
struct SubscribeQuery {
    keygroup: String,
    member: MemberId,
}

async fn serve_stream(
    State(publishers): State<Arc<Publishers>>,
    Query(q): Query<SubscribeQuery>,
) -> axum::response::Response {
    let Some(record) = publishers.records.get(&q.member) else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    if q.keygroup != publishers.keygroup {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    }
    let Some(sealed) = records::seal(&publishers.secret, rand::random(), record) else {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let first = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(records::frame(&sealed)))
    });
    // The record never changes: keep the stream open after it.
    let rest = futures::stream::pending();
    axum::body::Body::from_stream(futures::StreamExt::chain(first, rest)).into_response()
}

pub async fn publishers(args: PublishersArgs, shutdown: CancellationToken) -> Result<()> {
    let http = hivemind_tls::http_client(None)
        .build()
        .expect("an HTTP client builds");
    let node = "bench-hosts";
    let url = format!("http://{}/v1/keygroups/{}", args.via, args.keygroup);
    let response = http
        .patch(&url)
        .json(&json!({"add_replicas": [node]}))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!(
            "--via: adding {node} as a replica answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let config: Value = http.get(&url).send().await?.json().await?;
    let mut secret = base64::engine::general_purpose::STANDARD
        .decode(config["secret_base64"].as_str().unwrap_or_default())
        .context("--via: its node does not see the keygroup's secret")?;
    if args.wrong_secret {
        secret = rand::random::<[u8; 32]>().to_vec();
    }
    let client = InternalClient::new(None, None);
    let mut records = std::collections::HashMap::new();
    let mut infos = Vec::new();
    for i in 0..args.hosts {
        let id = MemberId::random(&mut rand::thread_rng());
        let ip = Ipv4Addr::new(10, 77, (i / 250) as u8, (i % 250) as u8 + 1);
        infos.push(MemberInfo {
            id,
            name: format!("{}-{i}", args.prefix),
            node: node.to_string(),
            roles: vec!["host".into()],
            http_addr: args.listen.to_string(),
            gossip_addr: SocketAddr::new(args.listen.ip(), 9).to_string(),
            generation: 1,
            control_plane: false,
        });
        records.insert(
            id,
            HostRecord {
                member: id,
                host: format!("{}-{i}", args.prefix),
                keygroup: args.keygroup.clone(),
                addrs: vec![ip.into()],
                services: vec![],
                seq: 1,
                generation: 1,
                keygroup_version: 1,
            },
        );
    }
    let publishers = Arc::new(Publishers {
        keygroup: args.keygroup.clone(),
        secret,
        records,
    });
    let app = axum::Router::new()
        .route(
            "/internal/v1/roles/host/subscribe",
            axum::routing::get(serve_stream),
        )
        .with_state(publishers);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen: cannot bind {}", args.listen))?;
    let serving = shutdown.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(serving.cancelled_owned())
            .await
    });
    // Admit them, 16 at a time.
    let mut joins = futures::stream::iter(infos.into_iter().map(|member| {
        let client = client.clone();
        let via = args.via.clone();
        async move {
            let request = JoinRequest {
                member,
                token: None,
                cluster_proof: None,
                epoch: None,
            };
            client
                .call::<_, Result<JoinAccepted, CpError>>(
                    &via,
                    ops::Join::PATH,
                    &request,
                    Duration::from_secs(10),
                )
                .await
        }
    }))
    .buffer_unordered(16);
    use futures::StreamExt;
    let mut admitted = 0;
    while let Some(answer) = joins.next().await {
        match answer {
            Ok(Ok(_)) => admitted += 1,
            Ok(Err(e)) => bail!("a synthetic host was refused: {e}"),
            Err(e) => bail!("--via: {e}"),
        }
    }
    println!(
        "{admitted} synthetic hosts admitted, streams served on {}",
        args.listen
    );
    shutdown.cancelled().await;
    Ok(())
}
