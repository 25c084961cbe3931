//! End-to-end: the command line itself: bad flags name the flag and exit 2, config files and
//! env vars are read, `keygen` prints a usable key, client errors exit 1.

mod support;

use support::*;

fn agent_with(args: &[&str]) -> std::process::Output {
    let mut all = vec!["agent"];
    all.extend_from_slice(args);
    cli(&all)
}

#[test]
fn bad_flags_name_the_flag_and_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--http-port", "abc"], "--http-port"),
        (&["--bind", "0.0.0.0", "--control-plane"], "--advertise"),
        (&["--name", "bad name", "--control-plane"], "--name"),
        (&["--join", "nohost", "--control-plane"], "--join"),
        (&["--bootstrap-expect", "3"], "--bootstrap-expect"),
        (
            &["--bootstrap-expect", "0", "--control-plane"],
            "--bootstrap-expect",
        ),
        (
            &["--gossip-key", "short", "--control-plane"],
            "--gossip-key",
        ),
        (&["--keygroup", "a/b", "--control-plane"], "--keygroup"),
        (
            &["--request-timeout", "5h", "--control-plane"],
            "--request-timeout",
        ),
        (
            &["--reread-every", "0s", "--control-plane"],
            "--reread-every",
        ),
        (
            &["--reread-every", "often", "--control-plane"],
            "--reread-every",
        ),
        (&["--no-such-flag"], "--no-such-flag"),
        // Secure by default: beyond loopback, a member needs a gossip key and TLS.
        (
            &[
                "--bind",
                "0.0.0.0",
                "--advertise",
                "127.0.0.1",
                "--control-plane",
            ],
            "--gossip-key",
        ),
        (
            &[
                "--bind",
                "0.0.0.0",
                "--advertise",
                "127.0.0.1",
                "--control-plane",
            ],
            "--tls-cert",
        ),
        (&["--tls-cert", "x.pem", "--control-plane"], "--tls-key"),
        (
            &[
                "--tls-cert",
                "/nonexistent/x.pem",
                "--tls-key",
                "/nonexistent/x-key.pem",
                "--tls-ca",
                "/nonexistent/ca.pem",
                "--control-plane",
            ],
            "/nonexistent/ca.pem",
        ),
        (&["--roles", "nope", "--control-plane"], "--roles"),
        (
            &["--worker-threads", "0", "--control-plane"],
            "--worker-threads",
        ),
        (&["--name", "x"], "--join"),
        (
            &["--backup-path", "relative/dir", "--control-plane"],
            "--backup-path",
        ),
        (
            &["--backup-batch", "1k", "--control-plane"],
            "--backup-batch",
        ),
        (
            &["--backup-every", "0s", "--control-plane"],
            "--backup-every",
        ),
        (
            &["--backup-replicas", "0", "--control-plane"],
            "--backup-replicas",
        ),
    ];
    for (args, flag) in cases {
        let out = agent_with(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(flag),
            "{args:?} should name {flag}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn config_file_errors_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "control_plane = true\nhttp_prot = 1\n").unwrap();
    let out = agent_with(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("http_prot"), "{}", stderr(&out));

    std::fs::write(&path, "control_plane = true\nhttp_port = \"many\"\n").unwrap();
    let out = agent_with(&["--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--http-port"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_runs_from_a_config_file_and_env_vars() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"from-file\"\ncontrol_plane = true\nbootstrap_expect = 1\nhttp_port = {port}\ngossip_port = {}\ndata_dir = \"{}\"\n",
            free_port(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["agent", "--config", path.to_str().unwrap()])
        .env("HIVEMIND_NODE", "node-from-env")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1/status");
    let status = wait_for("the single-member cluster to be ready", || async {
        let s = get_json(&url).await.ok()?;
        (s["ready"] == true).then_some(s)
    })
    .await;
    assert_eq!(status["name"], "from-file");
    assert_eq!(status["node"], "node-from-env");
    // SIGTERM stops it gracefully with exit 0.
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn keygen_prints_a_32_byte_base64_key_the_agent_accepts() {
    let out = cli(&["keygen"]);
    assert!(out.status.success());
    let key = stdout(&out).trim().to_string();
    assert_eq!(key.len(), 44);
    // Accepted by flag validation (the run then fails on the port, not on the key).
    let out = agent_with(&["--gossip-key", &key, "--http-port", "abc"]);
    assert!(!stderr(&out).contains("--gossip-key"), "{}", stderr(&out));
}

#[test]
fn client_commands_fail_clearly_when_no_member_answers() {
    let addr = format!("127.0.0.1:{}", free_port());
    let out = cli(&["status", "--http-addr", &addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach hivemind"),
        "{}",
        stderr(&out)
    );
    let out = cli(&["kv", "get", "--http-addr", &addr]);
    assert!(stderr(&out).contains("KEY"), "{}", stderr(&out));
}

#[test]
fn shell_completions_cover_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = cli(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for command in ["agent", "keygroup", "members", "kv"] {
            assert!(
                script.contains(command),
                "{shell} completions lack {command}"
            );
        }
    }
    let out = cli(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tcsh"), "{}", stderr(&out));
}
