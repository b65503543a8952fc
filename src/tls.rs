//! TLS to upstreams: which roots are trusted (a configured CA bundle, the system store)
//! and the one rustls client configuration that every upstream client shares.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use serde::{Deserialize, Serialize};

/// `[tls]`: how `https://` upstreams are verified. Plain `http://` upstreams ignore it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) that signed the upstreams' certificates (several
    /// blocks allowed); `""` = none. Read at start: a bad file stops the sidecar.
    pub ca_file: PathBuf,
    /// Also trust the system's roots (`SSL_CERT_FILE` / `SSL_CERT_DIR`, else the OS store).
    pub system_roots: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        // Public upstreams work out of the box; a private CA is added with ca_file.
        Self {
            ca_file: PathBuf::new(),
            system_roots: true,
        }
    }
}

/// Why the trusted roots could not be set up. Every variant names `tls.ca_file` or
/// `tls.system_roots` and says what would fix it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}; give the path of a readable PEM file holding the CA certificate(s) that signed the upstreams' certificates")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not PEM ({reason}); give a file of `-----BEGIN CERTIFICATE-----` blocks, e.g. the CA's ca.crt")]
    NotPem { path: PathBuf, reason: String },
    #[error("{path} holds no `-----BEGIN CERTIFICATE-----` block; give the PEM file of the CA certificate(s) that signed the upstreams' certificates")]
    NoCertificates { path: PathBuf },
    #[error("{path}: certificate #{index} cannot be a trust anchor ({reason}); give the CA certificate, not a key or a damaged file")]
    BadCertificate {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Read every certificate of a PEM bundle (several `CERTIFICATE` blocks allowed; other
/// block kinds, such as keys, are skipped). Fails when the file is unreadable, is not
/// PEM, or holds no certificate.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// The trusted roots: the certificates of `tls.ca_file` (all must parse as trust
/// anchors), plus the system store when `tls.system_roots` is on. System certificates
/// that cannot be parsed are skipped with a warning, as browsers do.
pub fn root_store(cfg: &TlsConfig) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if !cfg.ca_file.as_os_str().is_empty() {
        for (i, cert) in load_ca_file(&cfg.ca_file)?.into_iter().enumerate() {
            roots.add(cert).map_err(|e| TlsError::BadCertificate {
                path: cfg.ca_file.clone(),
                index: i + 1,
                reason: e.to_string(),
            })?;
        }
    }
    if cfg.system_roots {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "tls.system_roots: part of the system root store could not be read");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 {
            tracing::warn!(
                ignored,
                "tls.system_roots: system certificates skipped as unparsable"
            );
        }
        if added == 0 {
            tracing::warn!(
                "tls.system_roots: the system root store is empty; only tls.ca_file is trusted"
            );
        }
    }
    Ok(roots)
}

/// The client configuration for upstream calls. Roots are loaded only when an upstream
/// uses https (`https_in_use`): a plain-HTTP deployment reads no certificate files.
pub fn client_config(cfg: &TlsConfig, https_in_use: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = if https_in_use {
        root_store(cfg)?
    } else {
        RootCertStore::empty()
    };
    Ok(Arc::new(with_roots(roots)?))
}

/// A configuration that trusts no root: for clients that only ever speak plain HTTP
/// (tests, the demo's traffic); an https URL fails certificate verification.
pub fn no_roots_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            // ring offers TLS 1.2 and 1.3, the safe defaults: this cannot fail.
            let config = with_roots(RootCertStore::empty())
                .expect("ring supports the default protocol versions");
            Arc::new(config)
        })
        .clone()
}

fn with_roots(roots: RootCertStore) -> Result<ClientConfig, rustls::Error> {
    // The provider is named rather than taken from the process default, so that a
    // dependency enabling another provider cannot make the choice ambiguous.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bad_ca_files_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        assert!(matches!(load_ca_file(&missing), Err(TlsError::Read { .. })));
        let empty = write(&dir, "empty.pem", "");
        assert!(matches!(
            load_ca_file(&empty),
            Err(TlsError::NoCertificates { .. })
        ));
        let text = write(&dir, "text.pem", "hello, not a certificate\n");
        assert!(matches!(
            load_ca_file(&text),
            Err(TlsError::NoCertificates { .. })
        ));
        let cut = write(&dir, "cut.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
        assert!(matches!(load_ca_file(&cut), Err(TlsError::NotPem { .. })));
        let junk = write(
            &dir,
            "junk.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let cfg = TlsConfig {
            ca_file: junk,
            system_roots: false,
        };
        let err = root_store(&cfg).unwrap_err();
        assert!(
            matches!(err, TlsError::BadCertificate { index: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn plain_deployments_read_no_roots() {
        let cfg = TlsConfig {
            ca_file: PathBuf::from("/nonexistent/ca.pem"),
            system_roots: true,
        };
        // No https upstream: the file is not even opened.
        assert!(client_config(&cfg, false).is_ok());
        assert!(client_config(&cfg, true).is_err());
    }
}
