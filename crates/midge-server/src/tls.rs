//! TLS listeners on rustls (no OpenSSL): Mosquitto's certificate options
//! turned into a rustls server configuration, client certificates checked
//! against `cafile`/`capath` (and `crlfile`), and the client's identity
//! taken from its certificate for `use_identity_as_username` and
//! `use_subject_as_username`. The configuration sits behind a lock so a
//! SIGHUP can swap in renewed certificates for new connections.

use midge_config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Where the user name of a TLS client comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// From CONNECT, as usual.
    Connect,
    /// The certificate's Common Name (`use_identity_as_username`).
    CommonName,
    /// The certificate's whole subject (`use_subject_as_username`).
    Subject,
}

/// A listener's TLS settings, ready to accept with.
#[derive(Clone)]
pub struct TlsSettings {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub identity: Identity,
}

/// Shared, replaceable settings (SIGHUP reloads certificates).
pub type SharedTls = Arc<RwLock<TlsSettings>>;

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificates and key the configuration names. Errors say which
/// file and what is wrong with it.
pub fn build(cfg: &TlsConfig) -> Result<TlsSettings, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.certfile)
        .map_err(|e| format!("certfile {}: {e}", cfg.certfile.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certfile {}: {e}", cfg.certfile.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "certfile {}: no certificate found",
            cfg.certfile.display()
        ));
    }
    let key_text = std::fs::read_to_string(&cfg.keyfile)
        .map_err(|e| format!("keyfile {}: {e}", cfg.keyfile.display()))?;
    if key_text.contains("ENCRYPTED") {
        return Err(format!(
            "keyfile {} is protected by a password, which midge cannot ask for at start-up; \
             decrypt it (openssl pkey -in KEY -out KEY.plain) and keep it readable by the broker only",
            cfg.keyfile.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_text.as_bytes())
        .map_err(|e| format!("keyfile {}: {e}", cfg.keyfile.display()))?;

    let versions: &[&'static rustls::SupportedProtocolVersion] = match cfg.tls_version.as_deref() {
        Some("tlsv1.3") => &[&rustls::version::TLS13],
        _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;

    let builder = if cfg.cafile.is_some() || cfg.capath.is_some() {
        let mut roots = RootCertStore::empty();
        if let Some(f) = &cfg.cafile {
            add_pem_certs(&mut roots, f)?;
        }
        if let Some(dir) = &cfg.capath {
            let entries =
                std::fs::read_dir(dir).map_err(|e| format!("capath {}: {e}", dir.display()))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_file() {
                    // capath holds hashed links and other files too: take
                    // what parses.
                    let _ = add_pem_certs(&mut roots, &path);
                }
            }
        }
        if roots.is_empty() {
            return Err("cafile/capath hold no CA certificate".into());
        }
        let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        if let Some(crl) = &cfg.crlfile {
            let crls: Vec<CertificateRevocationListDer<'static>> =
                CertificateRevocationListDer::pem_file_iter(crl)
                    .map_err(|e| format!("crlfile {}: {e}", crl.display()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("crlfile {}: {e}", crl.display()))?;
            verifier = verifier.with_crls(crls);
        }
        if !cfg.require_certificate {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier
            .build()
            .map_err(|e| format!("client certificate verifier: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certfile/keyfile {}: {e}", cfg.certfile.display()))?;
    let identity = if cfg.use_identity_as_username {
        Identity::CommonName
    } else if cfg.use_subject_as_username {
        Identity::Subject
    } else {
        Identity::Connect
    };
    Ok(TlsSettings {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        identity,
    })
}

fn add_pem_certs(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// The user name a client certificate gives, per `identity`.
pub fn identity_of(cert: &CertificateDer<'_>, identity: Identity) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    match identity {
        Identity::Connect => None,
        Identity::CommonName => subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        // As Mosquitto prints it (RFC 2253): most specific first, no spaces.
        Identity::Subject => {
            let text = subject.to_string();
            let mut parts: Vec<&str> = text.split(", ").collect();
            parts.reverse();
            Some(parts.join(","))
        }
    }
}
