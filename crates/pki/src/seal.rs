//! Sealing CA private keys at rest with AES-256-GCM under a 32-byte master key.
//!
//! Format (version 1): `0x01 || nonce (12 random bytes) || ciphertext || tag (16 bytes)`, with the
//! associated data `portcullis/ca-key/v1/<ca id>` so a sealed key cannot be swapped onto another CA
//! record. Opening with the wrong key, the wrong CA id or altered bytes fails with
//! [`PkiError::UnsealFailed`]; it never yields garbage. This module does not read the key from the
//! environment or a file: the binary does that and passes the text to [`MasterKey::from_text`].

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::der;
use crate::error::{PkiError, Result};

const VERSION: u8 = 1;

/// The 32-byte key that seals CA private keys. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl Drop for MasterKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(bytes)
    }

    /// A fresh random key (for `portcullis` to print when setting up).
    pub fn generate() -> Self {
        MasterKey(der::random_bytes::<32>())
    }

    /// Parses 64 hex characters or base64 (standard or URL-safe, padding optional) of 32 bytes.
    /// Surrounding whitespace (a trailing newline in a key file) is ignored.
    pub fn from_text(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PkiError::InvalidMasterKey(
                "it is empty; expected 64 hex characters or base64 of 32 bytes".into(),
            ));
        }
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            der::unhex(text)
        } else {
            use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
        };
        match bytes.map(Zeroizing::new) {
            Some(bytes) if bytes.len() == 32 => {
                let mut key = MasterKey([0; 32]);
                key.0.copy_from_slice(&bytes);
                Ok(key)
            }
            Some(bytes) => Err(PkiError::InvalidMasterKey(format!(
                "it decodes to {} bytes; it must be exactly 32",
                bytes.len()
            ))),
            None => Err(PkiError::InvalidMasterKey(format!(
                "it is neither 64 hex characters nor base64 ({} characters given)",
                text.chars().count()
            ))),
        }
    }

    /// The key as 64 lower-case hex characters.
    pub fn to_hex(&self) -> String {
        der::hex(&self.0, false)
    }

    /// A 32-byte key for another purpose, named by `label` (HKDF-SHA256 of the master key): the binary gives
    /// the edge such a key for its TLS session tickets, so that every node of a fleet that shares the master key
    /// resumes every other node's sessions, and the edge never holds the master key itself.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
        let prk = Salt::new(HKDF_SHA256, b"portcullis/derive/v1").extract(&self.0);
        let mut out = [0u8; 32];
        // 32 bytes from HKDF-SHA256 is within its limit of 255 blocks, so neither step can fail.
        prk.expand(&[label.as_bytes()], HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out))
            .expect("32 bytes of HKDF-SHA256 output");
        out
    }

    fn aead(&self) -> LessSafeKey {
        // AES-256 takes exactly 32 bytes, which the type guarantees.
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("a 32-byte AES-256 key"))
    }
}

fn aad(ca_id: &str) -> Vec<u8> {
    format!("portcullis/ca-key/v1/{ca_id}").into_bytes()
}

/// Encrypts `plaintext` (a PKCS#8 private key) for the CA `ca_id`.
pub fn seal(master: &MasterKey, ca_id: &str, plaintext: &[u8]) -> Vec<u8> {
    let nonce_bytes = der::random_bytes::<NONCE_LEN>();
    // Encrypted in place, so this buffer only ever holds ciphertext once sealing returns.
    let mut in_out = plaintext.to_vec();
    master
        .aead()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(aad(ca_id)),
            &mut in_out,
        )
        // Only fails for inputs over AES-GCM's 64 GiB limit; a private key is a few KiB.
        .expect("a private key fits AES-GCM limits");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce_bytes);
    out.extend_from_slice(&in_out);
    out
}

/// Decrypts what [`seal`] produced for the same CA id. The result is wiped from memory on drop.
pub fn unseal(master: &MasterKey, ca_id: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let (&version, rest) = sealed
        .split_first()
        .ok_or_else(|| PkiError::SealedKeyMalformed("it is empty".into()))?;
    if version != VERSION {
        return Err(PkiError::SealedKeyMalformed(format!(
            "unknown format version {version} (this build reads version {VERSION})"
        )));
    }
    if rest.len() < NONCE_LEN + 16 {
        return Err(PkiError::SealedKeyMalformed(format!(
            "it is too short ({} bytes)",
            sealed.len()
        )));
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce =
        Nonce::try_assume_unique_for_key(nonce).map_err(|_| PkiError::SealedKeyMalformed("bad nonce".into()))?;
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    let plain = master
        .aead()
        .open_in_place(nonce, Aad::from(aad(ca_id)), &mut in_out)
        .map_err(|_| PkiError::UnsealFailed)?;
    Ok(Zeroizing::new(plain.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_wrong_key() {
        let key = MasterKey::generate();
        let sealed = seal(&key, "ca1", b"secret pkcs8");
        assert_eq!(unseal(&key, "ca1", &sealed).unwrap().as_slice(), b"secret pkcs8");
        let err = unseal(&MasterKey::generate(), "ca1", &sealed).unwrap_err();
        assert!(err.to_string().contains("wrong master key"), "{err}");
        let err = unseal(&key, "ca2", &sealed).unwrap_err();
        assert!(matches!(err, PkiError::UnsealFailed));
        let err = unseal(&key, "ca1", &sealed[..10]).unwrap_err();
        assert!(err.to_string().contains("too short"), "{err}");
        let err = unseal(&key, "ca1", &[9, 1, 2]).unwrap_err();
        assert!(err.to_string().contains("unknown format version 9"), "{err}");
    }

    #[test]
    fn derived_keys_depend_on_key_and_label_only() {
        let key = MasterKey::from_bytes([7; 32]);
        let same = MasterKey::from_text(&key.to_hex()).unwrap();
        assert_eq!(
            key.derive("a"),
            same.derive("a"),
            "every node with the master key derives the same"
        );
        assert_ne!(key.derive("a"), key.derive("b"));
        assert_ne!(key.derive("a"), MasterKey::from_bytes([8; 32]).derive("a"));
        assert_ne!(key.derive("a"), [7; 32], "not the master key itself");
    }

    #[test]
    fn master_key_text_forms() {
        let key = MasterKey::generate();
        let hex = key.to_hex();
        assert_eq!(MasterKey::from_text(&format!("{hex}\n")).unwrap().0, key.0);
        let b64 = base64::engine::general_purpose::STANDARD.encode(key.0);
        assert_eq!(MasterKey::from_text(&b64).unwrap().0, key.0);
        let err = MasterKey::from_text("abcd").unwrap_err();
        assert!(
            err.to_string().contains("decodes to 3 bytes; it must be exactly 32"),
            "{err}"
        );
        let err = MasterKey::from_text("not a key!!").unwrap_err();
        assert!(
            err.to_string().contains("neither 64 hex characters nor base64"),
            "{err}"
        );
        let err = MasterKey::from_text("  ").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
    }
}
