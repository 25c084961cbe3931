//! `hivemind tls ca create` and `hivemind tls cert create` (DESIGN.md §6e, like `consul tls`):
//! a cluster CA and the certificates signed by it, as PEM files in a directory: `ca.pem`,
//! `ca-key.pem`, `N.pem`, `N-key.pem`. Keys are written with mode 0600 and no file is ever
//! overwritten. A server certificate is valid for its name, `localhost`, 127.0.0.1 and the
//! `--ip`/`--dns` it is given, for both server and client authentication (members call each
//! other's internal routes with it), and names its member (`hivemind_tls::identity`: a
//! member's, or with `--control-plane` a control-plane member's); a client certificate is for
//! client authentication only and names no member.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The CA's files in `dir`.
pub fn ca_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ca.pem"), dir.join("ca-key.pem"))
}

/// A certificate's files in `dir` (the layout members read: `hivemind_tls::TlsFiles::in_dir`).
pub fn cert_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let files = hivemind_tls::TlsFiles::in_dir(dir, name);
    (files.cert, files.key)
}

/// Writes `text` to a new file (never over an existing one); `secret` files get mode 0600.
fn write_new(path: &Path, text: &str, secret: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            anyhow::anyhow!("{} exists; not overwriting it", path.display())
        }
        _ => anyhow::anyhow!("{}: {e}", path.display()),
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| path.display().to_string())
}

fn refuse_existing(paths: &[&Path]) -> Result<()> {
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        bail!("{} exists; not overwriting it", p.display());
    }
    Ok(())
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// Makes a new CA in `dir`: `ca.pem` and `ca-key.pem`.
pub fn create_ca(dir: &Path, days: u32) -> Result<(PathBuf, PathBuf)> {
    let (cert_path, key_path) = ca_files(dir);
    refuse_existing(&[&cert_path, &key_path])?;
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "hivemind cluster CA");
    dn.push(DnType::OrganizationName, "hivemind");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days);
    let cert = params.self_signed(&key).context("signing the CA")?;
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A member outside the control plane.
    Server,
    /// A control-plane member (`--server --control-plane`).
    ControlPlane,
    /// A CLI or tool: client authentication only, no member identity.
    Client,
}

impl Kind {
    fn serves(self) -> bool {
        self != Kind::Client
    }
}

/// Makes certificate `name` signed by the CA in `dir`: `name.pem` and `name-key.pem`.
pub fn create_cert(
    dir: &Path,
    name: &str,
    kind: Kind,
    ips: &[IpAddr],
    dns: &[String],
    days: u32,
) -> Result<(PathBuf, PathBuf)> {
    if !hivemind_common::names::is_valid_name(name) {
        bail!("--name: {name:?} is not a valid name (letters, digits, '-', '_', '.')");
    }
    let (ca_cert, ca_key) = ca_files(dir);
    let ca_cert_pem = std::fs::read_to_string(&ca_cert).with_context(|| {
        format!(
            "{}: no CA here (hivemind tls ca create --dir {})",
            ca_cert.display(),
            dir.display()
        )
    })?;
    let ca_key_pem =
        std::fs::read_to_string(&ca_key).with_context(|| ca_key.display().to_string())?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .with_context(|| format!("{}: not a private key", ca_key.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)
        .with_context(|| format!("{}: not a CA certificate", ca_cert.display()))?;
    let (cert_path, key_path) = cert_files(dir, name);
    refuse_existing(&[&cert_path, &key_path])?;

    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = if kind.serves() {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    let mut sans = vec![SanType::DnsName(name.try_into().context("--name")?)];
    if kind.serves() {
        let identity = hivemind_tls::CertIdentity {
            name: name.to_string(),
            control_plane: kind == Kind::ControlPlane,
        };
        sans.push(SanType::URI(identity.uri().try_into().context("--name")?));
        sans.push(SanType::DnsName(
            "localhost".try_into().expect("a DNS name"),
        ));
        sans.push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
        for d in dns {
            let san = d
                .as_str()
                .try_into()
                .with_context(|| format!("--dns: {d:?} is not a DNS name"))?;
            sans.push(SanType::DnsName(san));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    } else if !ips.is_empty() || !dns.is_empty() {
        bail!("--ip/--dns: only a --server certificate names addresses");
    }
    params.subject_alt_names = sans;
    validity(&mut params, days);
    let key = KeyPair::generate().context("generating the key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the certificate")?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_signs_server_and_client_certificates_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = create_ca(dir.path(), 30).unwrap();
        assert!(std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ca_key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the CA key is the cluster's: owner only");
        let err = create_ca(dir.path(), 30).unwrap_err().to_string();
        assert!(err.contains("ca.pem exists"), "{err}");

        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        create_cert(
            dir.path(),
            "cp1",
            Kind::Server,
            &[ip],
            &["cp1.example".into()],
            30,
        )
        .unwrap();
        create_cert(dir.path(), "ops", Kind::Client, &[], &[], 30).unwrap();
        create_cert(dir.path(), "cp2", Kind::ControlPlane, &[], &[], 30).unwrap();
        let identity = |name: &str| {
            let pem = std::fs::read(dir.path().join(format!("{name}.pem"))).unwrap();
            let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
            hivemind_tls::CertIdentity::of_der(&der)
        };
        use rustls_pki_types::pem::PemObject;
        let member = |name: &str, control_plane| hivemind_tls::CertIdentity {
            name: name.into(),
            control_plane,
        };
        assert_eq!(identity("cp1"), Some(member("cp1", false)));
        assert_eq!(identity("cp2"), Some(member("cp2", true)));
        assert_eq!(
            identity("ops"),
            None,
            "a client certificate names no member"
        );
        let err = create_cert(dir.path(), "cp1", Kind::Server, &[], &[], 30).unwrap_err();
        assert!(err.to_string().contains("cp1.pem exists"), "{err}");
        let err = create_cert(dir.path(), "bad name", Kind::Server, &[], &[], 30).unwrap_err();
        assert!(err.to_string().contains("--name"), "{err}");
        let err = create_cert(dir.path(), "c2", Kind::Client, &[ip], &[], 30).unwrap_err();
        assert!(err.to_string().contains("--ip"), "{err}");
        let elsewhere = tempfile::tempdir().unwrap();
        let err = create_cert(elsewhere.path(), "cp1", Kind::Server, &[], &[], 30).unwrap_err();
        assert!(err.to_string().contains("no CA here"), "{err}");
    }
}
