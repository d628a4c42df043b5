//! TLS for the clients of the collector (the agent's pushes, `report --collector`):
//! rustls through ureq, trusting the system's store (`/etc/ssl/certs`, or
//! `SSL_CERT_FILE`/`SSL_CERT_DIR` when set) plus an organisation's own CA
//! (`[push] ca_file`, `--collector-ca FILE`), and errors that say what to do.

use std::path::Path;
use std::sync::Arc;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

/// The TLS configuration trusting the system's store and the CA certificates of
/// `ca_file` (PEM). An unreadable or empty `ca_file` is an error naming it.
pub fn client_config(ca_file: Option<&Path>) -> Result<TlsConfig, String> {
    let mut roots: Vec<Certificate<'static>> = Vec::new();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system CA certificate could not be read");
    }
    roots.extend(
        native
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned()),
    );
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        let mut found = 0;
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(PemItem::Certificate(c)) => {
                    roots.push(c);
                    found += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "the CA file {} is not valid PEM: {e}",
                        path.display()
                    ));
                }
            }
        }
        if found == 0 {
            return Err(format!(
                "the CA file {} holds no PEM CERTIFICATE block",
                path.display()
            ));
        }
    }
    let roots = if roots.is_empty() {
        // No system store at all (a minimal container): Mozilla's roots.
        RootCerts::WebPki
    } else {
        RootCerts::Specific(Arc::new(roots))
    };
    Ok(TlsConfig::builder().root_certs(roots).build())
}

/// A request error as a sentence an operator can act on: a certificate problem names
/// the flag that gives the CA; a plain-HTTP server reached with `https://` says so.
/// `ca_hint` is how this program is given a CA (e.g. "[push] ca_file or --collector-ca FILE").
pub fn explain(e: &ureq::Error, ca_hint: &str) -> String {
    use rustls::Error as R;
    // ureq reports rustls errors directly or inside an I/O error.
    let tls = match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref().and_then(|inner| inner.downcast_ref::<R>()),
        _ => None,
    };
    match tls {
        Some(R::InvalidCertificate(cert)) => format!(
            "the collector's TLS certificate is not trusted ({cert:?}): give the CA that issued it with {ca_hint}"
        ),
        Some(R::InvalidMessage(_)) => format!(
            "the collector did not answer in TLS ({e}): it serves plain HTTP at this address (use http://), or set its [tls] cert_file and key_file"
        ),
        Some(R::AlertReceived(alert)) => format!(
            "the collector refused the TLS handshake ({alert:?}): it may require a client certificate"
        ),
        _ => e.to_string(),
    }
}
