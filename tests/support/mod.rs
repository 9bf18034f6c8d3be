//! Shared helpers for the integration tests.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the `portcullis` binary built for this test run with `args`.
pub fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .expect("the portcullis binary runs")
}

/// Path of the test's scratch directory root.
#[allow(dead_code)]
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

#[allow(dead_code)]
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
