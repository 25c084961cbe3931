//! `hivemind tls ca create` / `tls cert create` (DESIGN.md §6e), checked by an independent
//! implementation: openssl verifies the chain, the names and the key usages.

mod support;

use std::process::Command;

use support::{cannot_run, cli, stderr, stdout};

fn openssl(args: &[&str]) -> Option<std::process::Output> {
    Command::new("openssl").args(args).output().ok()
}

#[test]
fn the_cli_makes_a_ca_and_certificates_openssl_accepts() {
    let Some(version) = openssl(&["version"]) else {
        cannot_run("openssl is not installed (.ci/run installs it)");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = cli(&["tls", "ca", "create", "--dir", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ca.pem"), "{}", stdout(&out));
    let out = cli(&[
        "tls",
        "cert",
        "create",
        "--server",
        "--name",
        "cp1",
        "--dir",
        d,
        "--ip",
        "10.1.2.3",
        "--dns",
        "cp1.hivemind.example",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cli(&[
        "tls", "cert", "create", "--client", "--name", "ops", "--dir", d,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let path = |f: &str| dir.path().join(f).display().to_string();
    for cert in ["cp1.pem", "ops.pem"] {
        let v = openssl(&["verify", "-CAfile", &path("ca.pem"), &path(cert)]).unwrap();
        assert!(
            v.status.success(),
            "{cert}: {}",
            String::from_utf8_lossy(&v.stderr)
        );
    }
    // The server certificate serves and calls (mutual TLS between members) for its names.
    let text = openssl(&["x509", "-in", &path("cp1.pem"), "-noout", "-text"]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    for want in [
        "DNS:cp1",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:10.1.2.3",
        "DNS:cp1.hivemind.example",
        "TLS Web Server Authentication",
        "TLS Web Client Authentication",
        // Whom it names (DESIGN.md §6e-2): a member outside the control plane.
        "URI:hivemind:member:cp1",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
    assert!(!text.contains("hivemind:control-plane"), "{text}");
    // A control-plane certificate says so; a client certificate names no member.
    let out = cli(&[
        "tls",
        "cert",
        "create",
        "--server",
        "--control-plane",
        "--name",
        "cp2",
        "--dir",
        d,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = openssl(&["x509", "-in", &path("cp2.pem"), "-noout", "-text"]).unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("URI:hivemind:control-plane:cp2"), "{text}");
    let text = openssl(&["x509", "-in", &path("ops.pem"), "-noout", "-text"]).unwrap();
    assert!(!String::from_utf8_lossy(&text.stdout).contains("URI:hivemind"));
    let out = cli(&[
        "tls",
        "cert",
        "create",
        "--client",
        "--control-plane",
        "--name",
        "x",
        "--dir",
        d,
    ]);
    assert_eq!(out.status.code(), Some(2), "--control-plane needs --server");
    let v = openssl(&[
        "verify",
        "-CAfile",
        &path("ca.pem"),
        "-purpose",
        "sslserver",
        &path("ops.pem"),
    ])
    .unwrap();
    assert!(!v.status.success(), "a client certificate must not serve");
    // The keys match their certificates.
    let pubkey = |args: &[&str]| openssl(args).unwrap().stdout;
    assert_eq!(
        pubkey(&["x509", "-in", &path("cp1.pem"), "-noout", "-pubkey"]),
        pubkey(&["pkey", "-in", &path("cp1-key.pem"), "-pubout"])
    );

    // Nothing is overwritten; bad input names what is wrong and writes nothing.
    let before = std::fs::read(path("ca-key.pem")).unwrap();
    let out = cli(&["tls", "ca", "create", "--dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    assert_eq!(std::fs::read(path("ca-key.pem")).unwrap(), before);
    let out = cli(&["tls", "cert", "create", "--name", "x", "--dir", d]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--server or --client is required"
    );
    let out = cli(&[
        "tls", "cert", "create", "--server", "--name", "a b", "--dir", d,
    ]);
    assert!(stderr(&out).contains("--name"), "{}", stderr(&out));
    assert!(!dir.path().join("a b.pem").exists());
}
