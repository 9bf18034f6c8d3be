//! The dashboard end to end in a real browser: the real `portcullis serve`, Debian's headless Chromium driven by
//! `playwright-core` (the script is `e2e/dashboard.mjs`), and a request through the edge. Screenshots of every page
//! land in `target/dashboard-screenshots/`.

use std::path::Path;
use std::process::Command;

use crate::support::{Server, echo_origin, repo_root};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Installs the script's locked npm dependencies when they are missing.
fn npm_ci(e2e: &Path) {
    if e2e.join("node_modules/playwright-core/package.json").exists() {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(e2e)
        .output()
        .expect("npm runs (Debian's npm package)");
    assert!(
        out.status.success(),
        "npm ci in e2e/ failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dashboard_flow_in_headless_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "the dashboard browser test needs Chromium at {CHROMIUM}: apt-get install chromium (.ci/run installs it)"
    );
    let e2e = repo_root().join("e2e");
    npm_ci(&e2e);

    // An ACME directory that refuses connections: the dashboard shows the failure of an order.
    let server = Server::start_with(
        crate::support::scratch(),
        &["--acme-directory", "https://127.0.0.1:1/directory"],
        &[],
    );
    let origin = format!("http://127.0.0.1:{}", echo_origin());
    // No zone yet: the browser test creates it on the first page it sees, then adds the hostnames through the API.
    let token = std::fs::read_to_string(server.data_dir().join("admin-token")).expect("the admin token");
    let screenshots = repo_root().join("target").join("dashboard-screenshots");
    std::fs::create_dir_all(&screenshots).expect("a screenshot directory");

    let out = Command::new("node")
        .arg("dashboard.mjs")
        .current_dir(&e2e)
        .env("PORTCULLIS_ADMIN_URL", server.api())
        .env("PORTCULLIS_EDGE_PORT", server.edge_port.to_string())
        .env("PORTCULLIS_ORIGIN", &origin)
        .env("PORTCULLIS_TOKEN", token.trim())
        .env("PORTCULLIS_DATA_DIR", server.data_dir())
        .env("PORTCULLIS_SCREENSHOTS", &screenshots)
        .env("PORTCULLIS_CHROMIUM", CHROMIUM)
        .output()
        .expect("node runs (Debian's nodejs package)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default()
    );
    assert!(stdout.contains("dashboard e2e: all steps passed"), "{stdout}");
}
