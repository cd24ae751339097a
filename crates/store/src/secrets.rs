//! Secrets at rest: passwords are PBKDF2 hashes; secret keys, which HMAC verification
//! needs in the clear, are sealed with ChaCha20-Poly1305 under a master key that lives in
//! its own 0600 file beside (never inside) the database.

use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

use crate::{Result, StoreError};

const PBKDF2_ROUNDS: u32 = 60_000;

/// The key that seals secret keys in the database.
#[derive(Clone)]
pub struct MasterKey(Key);

impl MasterKey {
    /// Loads `master.key` from the data directory, creating it (mode 0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let path = dir.join("master.key");
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => Ok(MasterKey(*Key::from_slice(&bytes))),
            Ok(_) => Err(StoreError::Corrupt(format!(
                "{} must hold exactly 32 bytes",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = random_bytes::<32>();
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                match opts.open(&path) {
                    Ok(mut f) => {
                        f.write_all(&bytes)?;
                        f.sync_all()?;
                        Ok(MasterKey(*Key::from_slice(&bytes)))
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(dir)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A value that tells keys apart without giving this one away (the first 8 bytes of
    /// a hash of it), kept in a shared database so that replicas with different keys
    /// are refused.
    pub fn check_value(&self) -> i64 {
        let digest = Sha256::new()
            .chain_update(b"vpcep master key check")
            .chain_update(self.0.as_slice())
            .finalize();
        i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    pub fn seal(&self, plain: &str) -> String {
        let nonce = random_bytes::<12>();
        let ct = ChaCha20Poly1305::new(&self.0)
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .expect("encryption of a short secret cannot fail");
        format!("{}{}", hex::encode(nonce), hex::encode(ct))
    }

    pub fn open(&self, sealed: &str) -> Result<String> {
        let corrupt = || StoreError::Corrupt("sealed secret does not open".into());
        let raw = hex::decode(sealed).map_err(|_| corrupt())?;
        if raw.len() < 12 {
            return Err(corrupt());
        }
        let (nonce, ct) = raw.split_at(12);
        let plain = ChaCha20Poly1305::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| corrupt())?;
        String::from_utf8(plain).map_err(|_| corrupt())
    }
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source is available");
    b
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS random source is available");
    hex::encode(b)
}

/// Random text from an alphabet without look-alike characters.
pub(crate) fn random_text(len: usize, alphabet: &[u8]) -> String {
    let mut b = vec![0u8; len];
    getrandom::fill(&mut b).expect("the OS random source is available");
    b.iter()
        .map(|x| alphabet[*x as usize % alphabet.len()] as char)
        .collect()
}

pub(crate) fn hash_password(password: &str) -> String {
    let salt = random_bytes::<16>();
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, PBKDF2_ROUNDS, &mut out);
    format!(
        "pbkdf2-sha256${PBKDF2_ROUNDS}${}${}",
        hex::encode(salt),
        hex::encode(out)
    )
}

pub(crate) fn verify_password(password: &str, stored: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let [_, rounds, salt, hash] = parts[..] else {
        return false;
    };
    let (Ok(rounds), Ok(salt), Ok(hash)) = (rounds.parse(), hex::decode(salt), hex::decode(hash))
    else {
        return false;
    };
    let mut out = vec![0u8; hash.len()];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, rounds, &mut out);
    sign_key_matches(&out, &hash)
}

/// Constant-time comparison of two byte strings.
pub fn sign_key_matches(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let k = MasterKey::load_or_create(dir.path()).unwrap();
        let sealed = k.seal("secret");
        assert!(!sealed.contains("secret"));
        assert_eq!(k.open(&sealed).unwrap(), "secret");
        let again = MasterKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "secret");
        assert!(k.open("00").is_err());
    }

    #[test]
    fn passwords() {
        let h = hash_password("pw");
        assert!(verify_password("pw", &h));
        assert!(!verify_password("pw2", &h));
        assert!(!verify_password("pw", "garbage"));
    }
}
