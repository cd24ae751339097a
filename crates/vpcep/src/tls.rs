//! `vpcep admin tls self-signed`: a certificate and key for a first try of HTTPS.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// What `self_signed` wrote.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 of the certificate (DER), as `AB:CD:…`.
    pub fingerprint: String,
    /// The subject alternative names.
    pub names: Vec<String>,
}

impl SelfSigned {
    pub fn json(&self) -> Value {
        json!({
            "cert": self.cert.display().to_string(),
            "key": self.key.display().to_string(),
            "sha256_fingerprint": self.fingerprint,
            "names": self.names,
        })
    }
}

/// The names a certificate is made for: `names` (host names or addresses), then
/// 127.0.0.1 and localhost, each once.
pub fn san_list(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names
        .iter()
        .map(|n| n.trim().to_owned())
        .chain(["127.0.0.1".to_owned(), "localhost".to_owned()])
    {
        if !n.is_empty() && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// `AB:CD:…` of the SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Writes `cert.pem` and `key.pem` (mode 0600) into `out` (made if missing): a
/// self-signed certificate for `names` plus 127.0.0.1 and localhost, valid for a year.
/// Existing files are kept unless `force`.
pub fn self_signed(out: &Path, names: &[String], force: bool) -> Result<SelfSigned> {
    let names = san_list(names);
    let cert_path = out.join("cert.pem");
    let key_path = out.join("key.pem");
    if !force {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(crate::cli::UsageError(format!(
                    "{} exists; pass --force to replace it, or another --out",
                    p.display()
                ))
                .into());
            }
        }
    }
    let mut params = rcgen::CertificateParams::new(names.clone())
        .map_err(|e| crate::cli::UsageError(format!("--name {}: {e}", names.join(", "))))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0].clone());
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    let key = rcgen::KeyPair::generate().context("cannot generate a key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the certificate")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(SelfSigned {
        cert: cert_path,
        key: key_path,
        fingerprint: fingerprint(cert.der()),
        names,
    })
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode on open: set it.
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    #[cfg(not(unix))]
    let _ = mode;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_given_ones_then_loopback_each_once() {
        assert_eq!(san_list(&[]), ["127.0.0.1", "localhost"]);
        assert_eq!(
            san_list(&["api.example".into(), "localhost".into(), "10.0.0.5".into()]),
            ["api.example", "localhost", "10.0.0.5", "127.0.0.1"]
        );
    }

    #[test]
    fn fingerprints_are_colon_separated_upper_hex() {
        let f = fingerprint(b"");
        assert!(f.starts_with("E3:B0:C4:42:"), "{f}");
        assert_eq!(f.len(), 32 * 3 - 1);
    }

    #[test]
    fn the_key_is_private_and_the_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = self_signed(dir.path(), &["gw.example".into()], false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&s.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(std::fs::read_to_string(&s.cert)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(self_signed(dir.path(), &[], false).is_err());
        let again = self_signed(dir.path(), &[], true).unwrap();
        assert_ne!(again.fingerprint, s.fingerprint);
    }
}
