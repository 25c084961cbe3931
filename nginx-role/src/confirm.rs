//! Whether nginx serves a render (DESIGN.md §6b): `nginx -t` checks syntax, not sockets, and a
//! reload nginx cannot carry out (a listen address in use) leaves the old configuration
//! serving with nothing but a line in nginx's error log. So every render carries a loopback
//! status listener answering the render's hash ([`status_block`]), and a reload counts as
//! applied only once that listener answers the new hash ([`served`]). When it does not, the
//! failure is told in nginx's words ([`complaint`]) and with the process holding the port
//! ([`crate::port_holder`]).
//!
//! The rules here are sans IO; [`served`] is the one poll over loopback TCP.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status listener's one route.
pub const STATUS_PATH: &str = "/hivemind-render";

/// How long nginx gets to serve a render after the reload signal.
pub const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

/// The server block appended to every render: on `status` (loopback), `GET /hivemind-render`
/// answers `hash`, the SHA-256 of the render above it.
pub fn status_block(status: SocketAddr, hash: &str) -> String {
    format!(
        "\n# hivemind's check that nginx serves this render (loopback only).\n\
         server {{\n    listen {status};\n    access_log off;\n    \
         location = {STATUS_PATH} {{\n        default_type text/plain;\n        \
         return 200 \"{hash}\";\n    }}\n    location / {{\n        return 404;\n    }}\n}}\n"
    )
}

/// Why nginx is not serving a render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotServed {
    /// Nothing answers on the status listener (no nginx, or one that never took a render).
    NoAnswer(String),
    /// nginx answers an older render: it kept its configuration.
    Older(String),
}

impl std::fmt::Display for NotServed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotServed::NoAnswer(e) => write!(f, "nothing answers nginx's status listener ({e})"),
            NotServed::Older(hash) => {
                let short = hash.get(..12).unwrap_or(hash);
                write!(f, "nginx still serves render {short}")
            }
        }
    }
}

/// The hash in a status answer (`None` unless it is a 200 with a body).
pub fn answered_hash(response: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    let code = status_line.split_whitespace().nth(1)?;
    (code == "200").then(|| body.trim().to_string())
}

/// Polls the status listener until it answers `hash` or `within` passes.
pub async fn served(status: SocketAddr, hash: &str, within: Duration) -> Result<(), NotServed> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let answer = ask(status).await;
        match &answer {
            Ok(Some(served)) if served == hash => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                return Err(match answer {
                    Ok(Some(older)) => NotServed::Older(older),
                    Ok(None) => NotServed::NoAnswer("not a 200".into()),
                    Err(e) => NotServed::NoAnswer(e),
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// One `GET /hivemind-render` over HTTP/1.0 (the connection closes after the answer).
async fn ask(status: SocketAddr) -> Result<Option<String>, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(status).await?;
        let request = format!("GET {STATUS_PATH} HTTP/1.0\r\nHost: hivemind\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(4096).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    match tokio::time::timeout(Duration::from_secs(1), exchange).await {
        Ok(Ok(response)) => Ok(answered_hash(&response)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 1 s".into()),
    }
}

/// nginx's own complaint among the error-log lines it wrote since the reload: the first
/// `[emerg]`, `[alert]` or `[crit]` line, else the first `[error]` one.
pub fn complaint(appended: &str) -> Option<&str> {
    let lines = || appended.lines().map(str::trim).filter(|l| !l.is_empty());
    let line = lines()
        .find(|l| {
            ["[emerg]", "[alert]", "[crit]"]
                .iter()
                .any(|s| l.contains(s))
        })
        .or_else(|| lines().find(|l| l.contains("[error]")))?;
    // From the level on: no timestamp, so the same trouble tried again reads the same and is
    // reported once.
    Some(line.find(" [").map_or(line, |at| &line[at + 1..]))
}

/// The port of a `bind() to ADDR:PORT failed` complaint (IPv6 in brackets).
pub fn bind_failure_port(line: &str) -> Option<u16> {
    let rest = line.split("bind() to ").nth(1)?;
    let addr = rest.split_whitespace().next()?;
    addr.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_block_answers_the_hash_on_loopback() {
        let block = status_block("127.0.0.1:9000".parse().unwrap(), "ab12");
        assert!(block.contains("listen 127.0.0.1:9000;"), "{block}");
        assert!(block.contains("location = /hivemind-render"), "{block}");
        assert!(block.contains("return 200 \"ab12\";"), "{block}");
    }

    #[test]
    fn a_status_answer_gives_its_hash_only_with_a_200() {
        let ok = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 4\r\n\r\nab12";
        assert_eq!(answered_hash(ok).as_deref(), Some("ab12"));
        let missing = b"HTTP/1.1 404 Not Found\r\n\r\n<html></html>";
        assert_eq!(answered_hash(missing), None);
        assert_eq!(answered_hash(b"garbage"), None);
    }

    #[test]
    fn the_complaint_is_nginx_s_most_severe_line_since_the_reload() {
        let log = "2026/12/07 10:00:00 [notice] 7#7: signal process started\n\
                   2026/12/07 10:00:00 [error] 7#7: open() failed\n\
                   2026/12/07 10:00:00 [emerg] 7#7: bind() to 127.0.0.1:8080 failed (98: Address already in use)\n";
        let line = complaint(log).unwrap();
        assert!(line.starts_with("[emerg] 7#7: bind()"), "{line}");
        assert!(line.contains("Address already in use"));
        assert_eq!(bind_failure_port(line), Some(8080));
        assert_eq!(
            complaint("x [error] y\n").map(|l| l.contains("[error]")),
            Some(true)
        );
        assert_eq!(complaint("x [notice] started\n"), None);
        assert_eq!(
            bind_failure_port("[emerg] 1#1: bind() to [::1]:8443 failed (98: in use)"),
            Some(8443)
        );
        assert_eq!(bind_failure_port("[emerg] something else"), None);
    }

    #[test]
    fn not_served_says_which_render_nginx_kept() {
        let older = NotServed::Older("0123456789abcdef".into()).to_string();
        assert_eq!(older, "nginx still serves render 0123456789ab");
    }

    #[tokio::test]
    async fn served_waits_for_the_hash_and_names_the_older_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nold").await;
            }
        });
        assert_eq!(served(addr, "old", Duration::from_secs(2)).await, Ok(()));
        assert_eq!(
            served(addr, "new", Duration::from_millis(100)).await,
            Err(NotServed::Older("old".into()))
        );
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(matches!(
            served(closed, "new", Duration::from_millis(100)).await,
            Err(NotServed::NoAnswer(_))
        ));
    }
}
