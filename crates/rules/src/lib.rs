//! Cloudflare's Rules language (work in progress).
