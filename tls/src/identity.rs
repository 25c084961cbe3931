//! Who a certificate says its holder is (DESIGN.md §6e-2): a member's name, and whether it is
//! a control-plane member. `hivemind tls cert create --server [--control-plane] --name N` writes
//! it as one URI subject alternative name, `hivemind:member:N` or `hivemind:control-plane:N`
//! (`openssl x509 -text` shows it under "X509v3 Subject Alternative Name"), in the spirit of
//! Consul's `server.<dc>.consul`. The CA's signature is what makes it true: the listener
//! parses it only from certificates that chained to the cluster CA in the handshake.
//!
//! A URI rather than a DNS name: a member may be named anything valid, and no member name can
//! turn into a URI with another scheme.

/// The URI prefix of a member's certificate.
pub const MEMBER_URI: &str = "hivemind:member:";
/// The URI prefix of a control-plane member's certificate.
pub const CONTROL_PLANE_URI: &str = "hivemind:control-plane:";

/// The identity a certificate carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertIdentity {
    /// The member's `--name`.
    pub name: String,
    /// Marked `--control-plane` when it was made: may be a Raft voter and read everything.
    pub control_plane: bool,
}

impl CertIdentity {
    /// The URI SAN that carries this identity.
    pub fn uri(&self) -> String {
        let prefix = if self.control_plane {
            CONTROL_PLANE_URI
        } else {
            MEMBER_URI
        };
        format!("{prefix}{}", self.name)
    }

    /// The identity in URI SANs `uris`: exactly one hivemind URI, else none (a client
    /// certificate, one made before identities, or an ambiguous one).
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut found = uris.into_iter().filter_map(|uri| {
            if let Some(name) = uri.strip_prefix(CONTROL_PLANE_URI) {
                Some(Self {
                    name: name.to_string(),
                    control_plane: true,
                })
            } else {
                uri.strip_prefix(MEMBER_URI).map(|name| Self {
                    name: name.to_string(),
                    control_plane: false,
                })
            }
        });
        let first = found.next()?;
        (found.next().is_none() && hivemind_common::names::is_valid_name(&first.name))
            .then_some(first)
    }

    /// The identity of a DER certificate (not verified here: the caller chained it).
    pub fn of_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        Self::from_uris(san.value.general_names.iter().filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
            _ => None,
        }))
    }
}

/// Why a member's own certificate does not fit how it was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "the certificate {cert} names no member; make one with `hivemind tls cert create \
         --server{cp} --name {name}`"
    )]
    Missing {
        cert: String,
        name: String,
        cp: &'static str,
    },
    #[error("--name {name}: the certificate {cert} is for member {certified:?}")]
    OtherName {
        cert: String,
        name: String,
        certified: String,
    },
    #[error(
        "--control-plane: the certificate {cert} is a member's, not a control-plane member's; \
         make one with `hivemind tls cert create --server --control-plane --name {name}`"
    )]
    NotControlPlane { cert: String, name: String },
}

/// Checks a member's own certificate identity against its `--name` and `--control-plane`
/// (sans IO). A control-plane certificate on a member outside the control plane is allowed
/// (an operator may start a CP machine without its Raft role), the reverse is not.
pub fn check_own(
    identity: Option<&CertIdentity>,
    cert: &str,
    name: &str,
    control_plane: bool,
) -> Result<(), IdentityError> {
    let Some(identity) = identity else {
        return Err(IdentityError::Missing {
            cert: cert.to_string(),
            name: name.to_string(),
            cp: if control_plane {
                " --control-plane"
            } else {
                ""
            },
        });
    };
    if identity.name != name {
        return Err(IdentityError::OtherName {
            cert: cert.to_string(),
            name: name.to_string(),
            certified: identity.name.clone(),
        });
    }
    if control_plane && !identity.control_plane {
        return Err(IdentityError::NotControlPlane {
            cert: cert.to_string(),
            name: name.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, control_plane: bool) -> CertIdentity {
        CertIdentity {
            name: name.into(),
            control_plane,
        }
    }

    #[test]
    fn one_hivemind_uri_is_an_identity() {
        assert_eq!(
            CertIdentity::from_uris(["hivemind:member:web-1"]),
            Some(id("web-1", false))
        );
        assert_eq!(
            CertIdentity::from_uris(["spiffe://x", "hivemind:control-plane:cp1"]),
            Some(id("cp1", true))
        );
        for uris in [
            vec![],
            vec!["spiffe://x"],
            // Two identities are none: the certificate is ambiguous.
            vec!["hivemind:member:a", "hivemind:control-plane:a"],
            vec!["hivemind:member:bad name"],
            vec!["hivemind:member:"],
        ] {
            assert_eq!(CertIdentity::from_uris(uris.clone()), None, "{uris:?}");
        }
        for identity in [id("a", false), id("cp-1", true)] {
            assert_eq!(
                CertIdentity::from_uris([identity.uri().as_str()]),
                Some(identity)
            );
        }
    }

    #[test]
    fn a_member_starts_only_with_its_own_certificate() {
        assert!(check_own(Some(&id("a", false)), "a.pem", "a", false).is_ok());
        assert!(check_own(Some(&id("a", true)), "a.pem", "a", true).is_ok());
        assert!(check_own(Some(&id("a", true)), "a.pem", "a", false).is_ok());
        let err = check_own(Some(&id("a", false)), "a.pem", "a", true).unwrap_err();
        assert!(err.to_string().starts_with("--control-plane"), "{err}");
        let err = check_own(Some(&id("b", true)), "b.pem", "a", true).unwrap_err();
        assert!(err.to_string().starts_with("--name a"), "{err}");
        let err = check_own(None, "old.pem", "a", true).unwrap_err();
        assert!(
            err.to_string().contains("--control-plane --name a"),
            "{err}"
        );
    }
}
