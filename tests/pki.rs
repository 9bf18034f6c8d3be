//! The PKI crate cross-checked with the real `openssl` binary (filled in with the PKI crate).
