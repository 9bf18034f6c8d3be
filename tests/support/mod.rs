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

/// Environment variables that would steer the binary away from what a test gives it.
const PORTCULLIS_ENV: &[&str] = &[
    "PORTCULLIS_API",
    "PORTCULLIS_TOKEN",
    "PORTCULLIS_DATA_DIR",
    "PORTCULLIS_DATABASE_URL",
    "PORTCULLIS_ADMIN_LISTEN",
    "PORTCULLIS_MASTER_KEY",
    "PORTCULLIS_CRL_BASE_URL",
    "PORTCULLIS_P12_PASSWORD",
];

/// A `portcullis serve` child process with its own data directory, killed when dropped.
#[allow(dead_code)]
pub struct Server {
    child: std::process::Child,
    /// The admin listener's port.
    pub port: u16,
    /// Scratch space of the test; the server's data directory is `data` inside it.
    pub dir: tempfile::TempDir,
}

#[allow(dead_code)]
impl Server {
    /// Starts a server on a free localhost port and waits (up to 60 s) until it says where it listens.
    pub fn start() -> Server {
        use std::io::BufRead as _;

        let dir = scratch();
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("a server log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn,portcullis=info")
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log);
        for name in PORTCULLIS_ENV {
            command.env_remove(name);
        }
        let mut child = command.spawn().expect("portcullis serve starts");
        let stdout = child.stdout.take().expect("the server's stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps draining stdout after the port is known, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut seen = Vec::new();
        let port = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = line
                        .strip_prefix("admin API listening on http://127.0.0.1:")
                        .and_then(|rest| rest.strip_suffix("/client/v4"))
                        .and_then(|port| port.parse::<u16>().ok())
                    {
                        break port;
                    }
                    seen.push(line);
                }
                Err(err) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "portcullis serve did not report its admin address ({err}); stdout: {seen:?}; log:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
            }
        };
        Server { child, port, dir }
    }

    /// The server's data directory (it holds `admin-token`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `http://127.0.0.1:PORT`.
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs `portcullis ARGS --api <this server> --data-dir <its data dir>` in the scratch directory.
    pub fn cli(&self, args: &[&str]) -> Output {
        let data_dir = self.data_dir();
        let data_dir = data_dir.to_str().expect("a UTF-8 path");
        let mut all = args.to_vec();
        all.extend(["--data-dir", data_dir]);
        self.cli_without_token(&all)
    }

    /// Runs `portcullis ARGS --api <this server>` in the scratch directory, where no token is to be found (unless
    /// ARGS give one).
    pub fn cli_without_token(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(args)
            .arg("--api")
            .arg(self.api())
            .current_dir(self.dir.path());
        for name in PORTCULLIS_ENV {
            command.env_remove(name);
        }
        command.output().expect("the portcullis binary runs")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `openssl ARGS` in `dir`.
#[allow(dead_code)]
pub fn openssl(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (Debian's openssl package)")
}
