//! The workspace's one integration-test binary. Each module tests one capability end to end,
//! through the real `portcullis` binary or the public crate APIs, with real peers (openssl, curl).

mod support;

mod acme;
mod cli;
mod dashboard;
mod edge;
mod fleet;
mod grpc;
mod pki;
mod reload;
mod rules_cli;
