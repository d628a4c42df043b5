//! HTTPS for the collector: rustls (ring provider, no OpenSSL), a certificate and key
//! from PEM files, optional client certificates, and a reload that swaps the
//! configuration for new connections without closing the listener (SIGHUP).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

/// What is wrong with the TLS files, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("the TLS {what} {path} holds no PEM {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("the TLS certificate {cert} and key {key} do not make a usable pair: {message}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
    #[error("the client CA file {path} cannot verify clients: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("TLS is not configured: set tls.cert_file and tls.key_file")]
    NotConfigured,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file.
pub fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |message: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "CERTIFICATE block",
        });
    }
    Ok(certs)
}

/// The rustls configuration `config` describes.
pub fn server_config(config: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) else {
        return Err(TlsError::NotConfigured);
    };
    let chain = read_certs("certificate", cert)?;
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "key",
            path: key.clone(),
            expected: "PRIVATE KEY block",
        },
        other => TlsError::File {
            what: "key",
            path: key.clone(),
            message: other.to_string(),
        },
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair {
            cert: cert.clone(),
            key: key.clone(),
            message: e.to_string(),
        })?;
    let builder = match &config.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs("client CA", ca)? {
                roots.add(c).map_err(|e| TlsError::ClientCa {
                    path: ca.clone(),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca.clone(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Pair {
            cert: cert.clone(),
            key: key.clone(),
            message: e.to_string(),
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// The TLS configuration new connections get; [`Reloadable::reload`] reads the files
/// again and keeps the old configuration when the new files are not usable.
pub struct Reloadable {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

impl Reloadable {
    pub fn open(files: &TlsConfig) -> Result<Reloadable, TlsError> {
        Ok(Reloadable {
            current: RwLock::new(server_config(files)?),
            files: files.clone(),
        })
    }

    /// The configuration for a connection accepted now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again; on error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Reloads on every SIGHUP, logging the outcome; runs until the process ends.
    pub async fn reload_on_sighup(self: Arc<Self>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: the TLS certificate will not be reloaded");
                return;
            }
        };
        while hup.recv().await.is_some() {
            match self.reload() {
                Ok(()) => tracing::info!(
                    cert = %self.files.cert_file.as_deref().unwrap_or(Path::new("")).display(),
                    "TLS certificate reloaded; new connections use it"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in use")
                }
            }
        }
    }
}
