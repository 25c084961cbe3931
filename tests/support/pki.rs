//! A cluster's certificates from `hivemind tls`, and the clients that use them: curl, the CLI
//! and a Rust client holding a member's certificate (to call internal routes as that member).

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::{cli, stderr};

/// A CA in `dir` and one certificate per `(kind, name)`; `kind` is the `tls cert create`
/// flags, e.g. `--server --control-plane`.
pub fn make_pki(dir: &Path, names: &[(&str, &str)]) {
    let d = dir.to_str().unwrap();
    let out = cli(&["tls", "ca", "create", "--dir", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (kind, name) in names {
        let mut args = vec!["tls", "cert", "create"];
        args.extend(kind.split(' '));
        args.extend(["--name", name, "--dir", d]);
        let out = cli(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

/// `--tls-cert`, `--tls-key`, `--tls-ca` for the certificate `name` in `dir`.
pub fn tls_flags(dir: &Path, name: &str) -> Vec<String> {
    hivemind_tls::TlsFiles::in_dir(dir, name).flags()
}

/// curl with a 10 s limit (`None`: curl is not installed).
pub fn curl(args: &[&str]) -> Option<Output> {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .ok()
}

/// The CLI against `addr` over TLS with the cluster CA, as `token` (if any).
pub fn hm(ca: &Path, addr: &str, token: Option<&str>, args: &[&str]) -> Output {
    let ca = ca.display().to_string();
    let url = format!("https://{addr}");
    let mut all = vec!["--http-addr", url.as_str(), "--ca-file", ca.as_str()];
    if let Some(token) = token {
        all.extend(["--token", token]);
    }
    all.extend_from_slice(args);
    cli(&all)
}

/// The `secret` of a `--json` token answer.
pub fn secret_of(output: &Output) -> String {
    assert!(output.status.success(), "{}", stderr(output));
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    v["secret"].as_str().unwrap().to_string()
}

/// An HTTPS client presenting certificate `name` from `dir` (as that member would).
pub fn client_as(dir: &Path, name: &str) -> reqwest::Client {
    let files = hivemind_tls::TlsFiles::in_dir(dir, name);
    let tls = hivemind_tls::cli_client(&files.ca, Some((&files.cert, &files.key))).unwrap();
    hivemind_tls::http_client(Some(&tls))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}
