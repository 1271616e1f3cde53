//! The TLS layer under the MQTT connection, on rustls (no OpenSSL), with
//! libmosquitto 2.0's rules for what is checked:
//!
//! - the server's chain must lead to a trusted CA: the `cafile` bundle, the
//!   hashed certificates of a `capath` directory (`<8 hex digits>.<n>`, as
//!   `openssl rehash` names them: OpenSSL looks nothing else up there),
//!   and the system's store with `use_os_certs`;
//! - the host name is then checked against the certificate: its DNS or IP
//!   subjectAltNames, or — like libmosquitto, unlike browsers — its Common
//!   Name when it has no DNS subjectAltName. `insecure` skips the name check
//!   only, never the chain; a Unix socket has no name to check;
//! - `tls13_only` allows TLS 1.3 alone; otherwise 1.2 and 1.3 (libmosquitto's
//!   `tls_version` is a minimum, and rustls has nothing older than 1.2);
//! - a client certificate is sent when `certfile` and `keyfile` are given;
//!   a key protected by a password is refused with [`Error::TlsKeyPassword`]
//!   rather than prompting for it on the terminal as OpenSSL does.
//!
//! Files are read at each connection, as libmosquitto does, so a failure to
//! load them is a connection failure ([`Error::TlsSetup`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::client::Error;

/// What to trust and what to present, as the tools' TLS flags say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of trusted CA certificates (`--cafile`).
    pub cafile: Option<PathBuf>,
    /// Directory of hashed CA certificates (`--capath`).
    pub capath: Option<PathBuf>,
    /// Trust the system's CA store too (`--tls-use-os-certs`, `mqtts://`,
    /// port 8883).
    pub use_os_certs: bool,
    /// Client certificate chain, PEM (`--cert`).
    pub certfile: Option<PathBuf>,
    /// Its private key, PEM, not encrypted (`--key`).
    pub keyfile: Option<PathBuf>,
    /// Do not check the server's name (`--insecure`); the chain still is.
    pub insecure: bool,
    /// TLS 1.3 only (`--tls-version tlsv1.3`).
    pub tls13_only: bool,
    /// ALPN protocol to offer (`--tls-alpn`).
    pub alpn: Option<Vec<u8>>,
}

/// Opens TLS over `stream` to `host`; `check_name` is false for a Unix
/// socket. With `debug`, the reason of a failure is printed on stdout (what
/// libmosquitto logs with `-d`).
pub(crate) async fn handshake<S>(
    opts: &TlsOptions,
    host: &str,
    check_name: bool,
    stream: S,
    debug: bool,
) -> Result<tokio_rustls::client::TlsStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = match client_config(opts, host, check_name && !opts.insecure) {
        Ok(c) => c,
        Err(e) => {
            if debug {
                if let Error::TlsSetup(detail) = &e {
                    debug_line(detail);
                }
            }
            return Err(e);
        }
    };
    // SNI and the name given to the verifier: the host itself when it is a
    // valid DNS name or an IP address. Anything else (a Unix socket path, a
    // name rustls refuses) gets an unspecified address: no SNI is sent, and
    // our verifier compares the certificate with the real host string.
    let name = ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::from(std::net::IpAddr::from([0u8, 0, 0, 0])));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match connector.connect(name, stream).await {
        Ok(s) => Ok(s),
        Err(e) => {
            let err = handshake_error(e);
            if debug {
                match &err {
                    Error::TlsVerify(d) | Error::TlsHandshake(d) => debug_line(d),
                    _ => {}
                }
            }
            Err(err)
        }
    }
}

fn debug_line(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// A failed handshake: rejected by us (certificate, name) or by the server
/// (an alert, or no TLS there and the connection closed). libmosquitto
/// reports the first as a failed connect and the second from its loop
/// (MOSQ_ERR_TLS); which one it hits is partly a race, this is what it
/// prints most of the time.
fn handshake_error(e: std::io::Error) -> Error {
    match rustls_error(&e) {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => Error::TlsVerify("Error: host name verification failed.".into()),
        // OpenSSL's words first, for whoever greps `-d` output for them.
        Some(r @ rustls::Error::InvalidCertificate(_)) => {
            Error::TlsVerify(format!("TLS Error: certificate verify failed ({r})."))
        }
        // Refused by the server (no common version, our certificate): by
        // then mosquitto's connect call has returned, its loop reports it.
        Some(r @ rustls::Error::AlertReceived(_)) => {
            Error::TlsHandshake(format!("TLS Error: {r}."))
        }
        Some(r) => Error::TlsVerify(format!("TLS Error: {r}.")),
        None => Error::TlsHandshake(format!("TLS Error: {}", crate::client::io_text(&e))),
    }
}

/// The rustls error an I/O error of a TLS stream carries, if any.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls configuration; a file that cannot be used is
/// `Error::TlsSetup` with libmosquitto's words for it.
pub fn client_config(
    opts: &TlsOptions,
    host: &str,
    check_name: bool,
) -> Result<ClientConfig, Error> {
    let mut roots = RootCertStore::empty();
    if let Some(f) = &opts.cafile {
        let certs = read_certs(f).map_err(|_| {
            Error::TlsSetup(format!(
                "Error: Unable to load CA certificates, check cafile \"{}\".",
                f.display()
            ))
        })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(Error::TlsSetup(format!(
                "Error: Unable to load CA certificates, check cafile \"{}\".",
                f.display()
            )));
        }
    }
    if let Some(dir) = &opts.capath {
        // Unreadable or empty: nothing trusted from it, as OpenSSL's lazy
        // lookup would find nothing; the handshake then fails.
        for path in hashed_certs(dir) {
            if let Ok(certs) = read_certs(&path) {
                roots.add_parsable_certificates(certs);
            }
        }
    }
    if opts.use_os_certs {
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
    }
    if roots.is_empty() {
        return Err(Error::TlsSetup(
            "TLS Error: no trusted CA certificate was loaded.".into(),
        ));
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| Error::TlsSetup(format!("TLS Error: {e}")))?;
    let verifier = Arc::new(MosquittoVerifier {
        inner,
        host: host.to_string(),
        check_name,
    });
    let versions: &[&'static rustls::SupportedProtocolVersion] = if opts.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| Error::TlsSetup(format!("TLS Error: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (&opts.certfile, &opts.keyfile) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    Error::TlsSetup(format!(
                        "Error: Unable to load client certificate \"{}\".",
                        cert.display()
                    ))
                })?;
            let key_der = read_key(key)?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                Error::TlsSetup(format!(
                    "Error: Client certificate/key are inconsistent ({e})."
                ))
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    if let Some(p) = &opts.alpn {
        config.alpn_protocols = vec![p.clone()];
    }
    Ok(config)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ()> {
    CertificateDer::pem_file_iter(path)
        .map_err(|_| ())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ())
}

/// The client key; an encrypted one (PKCS#8 `ENCRYPTED PRIVATE KEY` or a
/// traditional `Proc-Type: 4,ENCRYPTED` PEM) is `Error::TlsKeyPassword`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let unusable = || {
        Error::TlsSetup(format!(
            "Error: Unable to load client key file \"{}\".",
            path.display()
        ))
    };
    let data = std::fs::read(path).map_err(|_| unusable())?;
    let text = String::from_utf8_lossy(&data);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(Error::TlsKeyPassword(path.to_path_buf()));
    }
    PrivateKeyDer::from_pem_slice(&data).map_err(|_| unusable())
}

/// The files of a `capath` that OpenSSL's hashed-directory lookup can find:
/// `<8 hex digits>.<digits>` (certificates; `.r<digits>` are CRLs).
fn hashed_certs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            match name.split_once('.') {
                Some((hash, n)) => {
                    hash.len() == 8
                        && hash.bytes().all(|b| b.is_ascii_hexdigit())
                        && !n.is_empty()
                        && n.bytes().all(|b| b.is_ascii_digit())
                }
                None => false,
            }
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// rustls' WebPKI verifier, with libmosquitto's name rules on top: the
/// chain is always checked; a name mismatch is forgiven when the name check
/// is off (`--insecure`, Unix socket) or when the Common Name matches a
/// certificate without DNS subjectAltNames.
#[derive(Debug)]
struct MosquittoVerifier {
    inner: Arc<WebPkiServerVerifier>,
    host: String,
    check_name: bool,
}

impl ServerCertVerifier for MosquittoVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // WebPKI checks the chain first and the name last, so a name error
        // means the chain is good.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name || common_name_matches(end_entity, &self.host) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// libmosquitto's fallback: with no DNS subjectAltName, the subject's
/// Common Name is compared with the host (case-insensitively, `*.` matching
/// the first label).
fn common_name_matches(cert: &CertificateDer<'_>, host: &str) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        if san
            .value
            .general_names
            .iter()
            .any(|n| matches!(n, GeneralName::DNSName(_)))
        {
            return false;
        }
    }
    let cn = x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());
    cn.is_some_and(|cn| hostname_matches(cn, host))
}

/// mosquitto__cmp_hostname_wildcard, as a match.
fn hostname_matches(certname: &str, host: &str) -> bool {
    match certname.strip_prefix('*') {
        Some(rest) => match rest.strip_prefix('.') {
            Some(domain) => {
                let tail = match host.find('.') {
                    Some(i) if i + 1 < host.len() => &host[i + 1..],
                    _ => host,
                };
                domain.eq_ignore_ascii_case(tail)
            }
            None => false,
        },
        None => certname.eq_ignore_ascii_case(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label() {
        assert!(hostname_matches("broker.example", "BROKER.example"));
        assert!(hostname_matches("*.example", "a.example"));
        assert!(!hostname_matches("*.example", "a.b.example"));
        assert!(!hostname_matches("*example", "a.example"));
        assert!(!hostname_matches("other", "broker"));
    }

    #[test]
    fn only_hashed_names_in_capath() {
        let dir = std::env::temp_dir().join(format!("midge-capath-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for f in [
            "0123abcd.0",
            "0123abcd.1",
            "0123abcd.r0",
            "ca.pem",
            "xyz.0",
            "0123abc.0",
        ] {
            std::fs::write(dir.join(f), b"").expect("write");
        }
        let names: Vec<String> = hashed_certs(&dir)
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(names, ["0123abcd.0", "0123abcd.1"]);
    }
}
