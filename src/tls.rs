//! rustls client configuration on the `ring` provider, for the MQTT link and HTTPS
//! downloads: server verification against the configured CA file (or the system's roots)
//! and an optional client certificate; and the TLS step of the HTTP client (`open`).

use std::fs::File;
use std::io::BufReader;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use doorbell_base::http::{self, HttpError, Scheme, Stream, Url};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// A TLS set-up problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct TlsError {
    what: String,
    reason: String,
}

fn err(what: impl Into<String>, reason: impl ToString) -> TlsError {
    TlsError { what: what.into(), reason: reason.to_string() }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = File::open(path).map_err(|e| err(path.display().to_string(), e))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path.display().to_string(), format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(err(path.display().to_string(), "contains no PEM certificate"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let file = File::open(path).map_err(|e| err(path.display().to_string(), e))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| err(path.display().to_string(), format!("not a PEM private key: {e}")))?
        .ok_or_else(|| err(path.display().to_string(), "contains no PEM private key"))
}

/// A client configuration; `ca_setting` names the setting that gives a CA file, for the
/// error when the system has no roots.
pub fn client_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    ca_setting: &str,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certs(path)? {
                roots.add(cert).map_err(|e| err(path.display().to_string(), e))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(err("system CA certificates", format!("none found; set {ca_setting}")));
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| err("TLS", e))?
        .with_root_certificates(roots);
    let config = match (cert_file, key_file) {
        (Some(cert), Some(key_path)) => {
            builder.with_client_auth_cert(certs(cert)?, key(key_path)?).map_err(|e| err(cert.display().to_string(), e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Opens `url`: plain TCP for `http://`, TLS with `config` for `https://` (refused without).
pub fn open(url: &Url, timeout: Duration, config: Option<Arc<ClientConfig>>) -> Result<Box<dyn Stream>, HttpError> {
    match (url.scheme, config) {
        (Scheme::Https, Some(config)) => wrap(http::connect(url, timeout)?, url, config),
        _ => http::open_plain(url, timeout),
    }
}

/// Wraps `tcp` in TLS for `url`'s host and completes the handshake, so that a certificate
/// problem is reported as [`HttpError::Tls`], apart from a broken connection.
fn wrap(mut tcp: TcpStream, url: &Url, config: Arc<ClientConfig>) -> Result<Box<dyn Stream>, HttpError> {
    let tls_err = |reason: String| HttpError::Tls { host: url.host.clone(), reason };
    let name = rustls::pki_types::ServerName::try_from(url.host.clone()).map_err(|e| tls_err(e.to_string()))?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| tls_err(e.to_string()))?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            return Err(match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(rustls_error) => tls_err(rustls_error.to_string()),
                None => HttpError::Io { what: "TLS handshake", source: e },
            });
        }
    }
    Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
}
