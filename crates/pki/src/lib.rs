//! Certificates for Portcullis (work in progress).
