//! TLS for a run (`--tls`, DESIGN.md §6e-2): certificates made by the binary under test's own
//! `hivemind tls`, one per control-plane member (marked `--control-plane`, valid for its
//! address), one for the harness's setup (a control-plane certificate: it creates the churn
//! keygroups as an operator would), and one per synthetic churn member name, so that every
//! synthetic member calls the control plane as itself ([`Access::client`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How many names the synthetic churn members share (`churn-0` ..): a name is reused only once
/// the member that may hold it surely left (a join or leave of unknown outcome keeps it held
/// for good: the registry refuses a second live member of one name), so a run needs several
/// times the [`crate::churn`] target of live members.
pub const CHURN_NAMES: usize = 48;
/// The harness's own certificate.
pub const HARNESS: &str = "harness";

/// The churn member name `k`.
pub fn churn_name(k: usize) -> String {
    format!("churn-{k}")
}

/// A run's certificates, in one directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes the CA and every certificate in `dir` with `bin tls ...`: the control-plane members
    /// `cp` (name, IP they serve on), the harness, and the churn names.
    pub fn create(bin: &Path, dir: &Path, cp: &[(String, String)]) -> std::io::Result<Self> {
        let d = dir.display().to_string();
        run(bin, &["tls", "ca", "create", "--dir", &d])?;
        for (name, ip) in cp {
            run(
                bin,
                &[
                    "tls",
                    "cert",
                    "create",
                    "--server",
                    "--control-plane",
                    "--name",
                    name,
                    "--ip",
                    ip,
                    "--dir",
                    &d,
                ],
            )?;
        }
        let cp_flags = ["--server", "--control-plane"];
        let mut members: Vec<(String, &[&str])> = vec![(HARNESS.to_string(), &cp_flags)];
        members.extend((0..CHURN_NAMES).map(|k| (churn_name(k), &["--server"][..])));
        for (name, flags) in members {
            let mut args = vec!["tls", "cert", "create"];
            args.extend_from_slice(flags);
            args.extend(["--name", &name, "--dir", &d]);
            run(bin, &args)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The `--tls-*` flags of member `name`.
    pub fn member_args(&self, name: &str) -> Vec<String> {
        hivemind_tls::TlsFiles::in_dir(&self.dir, name).flags()
    }
}

fn run(bin: &Path, args: &[&str]) -> std::io::Result<()> {
    let out = std::process::Command::new(bin).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "hivemind {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// How the harness reaches the members: plain HTTP, or TLS with the run's [`Pki`].
#[derive(Debug, Clone, Default)]
pub struct Access {
    pki: Option<Arc<Pki>>,
}

impl Access {
    pub fn plain() -> Self {
        Self::default()
    }

    pub fn tls(pki: Pki) -> Self {
        Self {
            pki: Some(Arc::new(pki)),
        }
    }

    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_deref()
    }

    /// `addr` and `path` as a URL of the right scheme.
    pub fn url(&self, addr: &str, path: &str) -> String {
        let scheme = if self.pki.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}{path}")
    }

    /// A client with `timeout` that presents certificate `name` (with TLS; `None`: none, as a
    /// user's client does).
    pub fn client(&self, name: Option<&str>, timeout: Duration) -> reqwest::Client {
        let tls = self.pki.as_ref().map(|pki| {
            let own = name.map(|n| hivemind_tls::TlsFiles::in_dir(&pki.dir, n));
            hivemind_tls::cli_client(
                &pki.dir.join("ca.pem"),
                own.as_ref().map(|f| (f.cert.as_path(), f.key.as_path())),
            )
            .expect("the run's own certificates load")
        });
        hivemind_tls::http_client(tls.as_ref())
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(1))
            .build()
            .expect("static client settings")
    }
}
