//! PEM reading and writing. Reading is strict about structure (matching BEGIN/END labels,
//! valid base64, no encapsulated headers) and never panics on bad input; it does not interpret
//! the DER inside.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{PkiError, Result};

/// One `-----BEGIN LABEL-----` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
}

/// Every PEM block in `text`, in order. Text outside blocks is ignored (as OpenSSL does).
pub fn parse_blocks(text: &str) -> Result<Vec<PemBlock>> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for (index, raw_line) in text.lines().enumerate() {
        let line = raw_line.trim();
        if let Some((label, body)) = current.as_mut() {
            if let Some(end) = line.strip_prefix("-----END ").and_then(|l| l.strip_suffix("-----")) {
                if end != label {
                    return Err(PkiError::Pem(format!(
                        "line {}: END {end} does not match BEGIN {label}",
                        index + 1
                    )));
                }
                let der = STANDARD
                    .decode(body.as_bytes())
                    .map_err(|e| PkiError::Pem(format!("the {label} block is not valid base64 ({e})")))?;
                if der.is_empty() {
                    return Err(PkiError::Pem(format!("the {label} block is empty")));
                }
                blocks.push(PemBlock {
                    label: label.clone(),
                    der,
                });
                current = None;
            } else if line.contains(':') {
                return Err(PkiError::Pem(format!(
                    "line {}: encapsulated headers (encrypted PEM) are not supported",
                    index + 1
                )));
            } else {
                body.push_str(line);
            }
        } else if let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
            current = Some((label.to_owned(), String::new()));
        }
    }
    if let Some((label, _)) = current {
        return Err(PkiError::Pem(format!("the {label} block has no END line (truncated?)")));
    }
    Ok(blocks)
}

/// PEM text with 64-character lines and a trailing newline.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// Certificates from PEM text (all `CERTIFICATE` blocks) or, if `data` is not PEM, one DER certificate.
pub fn certificates_from_pem_or_der(data: &[u8]) -> Result<Vec<Vec<u8>>> {
    if looks_like_pem(data) {
        let text = std::str::from_utf8(data).map_err(|_| PkiError::Pem("not UTF-8 text".into()))?;
        let certs: Vec<Vec<u8>> = parse_blocks(text)?
            .into_iter()
            .filter(|b| b.label == "CERTIFICATE")
            .map(|b| b.der)
            .collect();
        if certs.is_empty() {
            return Err(PkiError::Pem("no CERTIFICATE block found".into()));
        }
        Ok(certs)
    } else if data.first() == Some(&0x30) {
        Ok(vec![data.to_vec()])
    } else {
        Err(PkiError::Pem(
            "neither PEM nor DER (no BEGIN line, no DER SEQUENCE)".into(),
        ))
    }
}

/// The DER of a single object with `label` from PEM text, or `data` itself if it is DER.
pub fn single_from_pem_or_der(data: &[u8], label: &str) -> Result<Vec<u8>> {
    if looks_like_pem(data) {
        let text = std::str::from_utf8(data).map_err(|_| PkiError::Pem("not UTF-8 text".into()))?;
        parse_blocks(text)?
            .into_iter()
            .find(|b| b.label == label)
            .map(|b| b.der)
            .ok_or_else(|| PkiError::Pem(format!("no {label} block found")))
    } else if data.first() == Some(&0x30) {
        Ok(data.to_vec())
    } else {
        Err(PkiError::Pem(format!("neither a PEM {label} nor DER")))
    }
}

/// Every `X509 CRL` block of PEM text, or `data` itself if it is one DER CRL.
pub fn crls_from_pem_or_der(data: &[u8]) -> Result<Vec<Vec<u8>>> {
    if looks_like_pem(data) {
        let text = std::str::from_utf8(data).map_err(|_| PkiError::Pem("not UTF-8 text".into()))?;
        let crls: Vec<Vec<u8>> = parse_blocks(text)?
            .into_iter()
            .filter(|b| b.label == "X509 CRL")
            .map(|b| b.der)
            .collect();
        if crls.is_empty() {
            return Err(PkiError::Pem("no X509 CRL block found".into()));
        }
        Ok(crls)
    } else if data.first() == Some(&0x30) {
        Ok(vec![data.to_vec()])
    } else {
        Err(PkiError::Pem("neither a PEM X509 CRL nor DER".into()))
    }
}

fn looks_like_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let text = encode("CERTIFICATE", &[0x30, 0x03, 1, 2, 3]);
        let blocks = parse_blocks(&text).unwrap();
        assert_eq!(
            blocks,
            vec![PemBlock {
                label: "CERTIFICATE".into(),
                der: vec![0x30, 3, 1, 2, 3]
            }]
        );
    }

    #[test]
    fn garbage_pem_is_an_error() {
        let err =
            parse_blocks("-----BEGIN CERTIFICATE-----\n!!!not base64***\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(err.to_string().contains("not valid base64"), "{err}");
        let err = parse_blocks("-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap_err();
        assert!(err.to_string().contains("no END line"), "{err}");
        let err = certificates_from_pem_or_der(b"hello world").unwrap_err();
        assert!(err.to_string().contains("neither PEM nor DER"), "{err}");
    }
}
