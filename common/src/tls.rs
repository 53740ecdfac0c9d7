//! TLS for `rediss://`: the rustls crypto provider (ring) and the CA bundle from
//! `redis.ca_file`, checked up front so a bad file is a one-line configuration error
//! rather than a failed handshake.

use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::sync::Once;

/// Makes ring the process's rustls provider (once; a provider installed earlier stays).
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Reads a PEM CA bundle; refuses a file without a single parseable certificate.
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read redis.ca_file {}: {e}", path.display())))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        if let Err(e) = cert {
            return Err(Error::Config(format!(
                "redis.ca_file {}: bad PEM certificate: {e}",
                path.display()
            )));
        }
        count += 1;
    }
    if count == 0 {
        return Err(Error::Config(format!(
            "redis.ca_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(pem)
}

/// True when a connection failed because the server's certificate was not trusted
/// (unknown issuer, bad signature, wrong name, expired...).
pub fn is_untrusted_certificate(e: &redis::RedisError) -> bool {
    untrusted(e)
}

/// Looks through the error chain, including the `io::Error` and `Arc` wrappers redis
/// and tokio-rustls put around rustls' own error.
fn untrusted(err: &(dyn std::error::Error + 'static)) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    if let Some(e) = err.downcast_ref::<rustls::Error>() {
        return matches!(e, rustls::Error::InvalidCertificate(_));
    }
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return untrusted(inner);
    }
    if let Some(shared) = err.downcast_ref::<Shared>() {
        return untrusted(shared.as_ref());
    }
    err.source().is_some_and(untrusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("runq-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = read_ca_file(&path).unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = read_ca_file(Path::new("/nonexistent/ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read redis.ca_file /nonexistent/ca.pem"),
            "{err}"
        );
    }
}
