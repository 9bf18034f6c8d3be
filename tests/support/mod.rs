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
    "PORTCULLIS_LISTEN",
    "PORTCULLIS_DEFAULT_HOST",
];

/// A `portcullis serve` child process with its own data directory, killed when dropped.
#[allow(dead_code)]
pub struct Server {
    child: std::process::Child,
    /// The admin listener's port.
    pub port: u16,
    /// The edge (TLS) listener's port.
    pub edge_port: u16,
    /// Scratch space of the test; the server's data directory is `data` inside it.
    pub dir: tempfile::TempDir,
}

#[allow(dead_code)]
impl Server {
    /// Starts a server on free localhost ports and waits (up to 60 s) until it says where it listens.
    pub fn start() -> Server {
        Server::start_with(scratch(), &[], &[])
    }

    /// Starts a server with its data in `dir/data`, `extra` arguments after `serve`, and `env` set.
    pub fn start_with(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Server {
        use std::io::BufRead as _;

        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("a server log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        command
            .args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--admin-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn,portcullis=info")
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log);
        for name in PORTCULLIS_ENV {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
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
        let mut edge_port = None;
        let port = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = line
                        .strip_prefix("edge listening on https://127.0.0.1:")
                        .and_then(|p| p.parse::<u16>().ok())
                    {
                        edge_port = Some(port);
                    }
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
        let edge_port = edge_port.unwrap_or_else(|| panic!("the server did not report its edge address: {seen:?}"));
        Server {
            child,
            port,
            edge_port,
            dir,
        }
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

/// A minimal HTTP/1.1 origin on 127.0.0.1: answers every request with `200` and the request head it received as the
/// body (so tests can see exactly which headers reached the origin). Runs until the test process ends.
#[allow(dead_code)]
pub fn echo_origin() -> u16 {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the echo origin");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&head).to_lowercase();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
            });
        }
    });
    port
}

/// Runs `curl -s -o BODY_FILE -w %{http_code} ARGS` in `dir`; returns (exit code, HTTP status, body).
#[allow(dead_code)]
pub fn curl(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body_path = dir.join(format!("curl-body-{call}"));
    let out = Command::new("curl")
        .current_dir(dir)
        .args(["-s", "--max-time", "20", "-o"])
        .arg(&body_path)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let body = std::fs::read_to_string(&body_path).unwrap_or_default();
    let _ = std::fs::remove_file(&body_path);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        body,
    )
}
