//! Real services started on loopback for the FSD channels and the AWS adapters: a Redis broker
//! (`redis-server`, from Debian) and moto's AWS API emulator (`moto_server`, from PyPI), each on a free port
//! and killed when its handle is dropped. `hyscale fsd --live` and the tests start them the same way.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A service process on loopback, killed when dropped.
pub struct LocalService {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl LocalService {
    /// Its address as `http://127.0.0.1:PORT`.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on now.
pub fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Starts `bin` with `args` (where `{port}` stands for the chosen port) and waits up to 60 s for it to listen.
fn start(bin: &Path, args: &[&str], what: &str, install: &str) -> Result<LocalService, String> {
    let port = free_port()?;
    let args: Vec<String> = args.iter().map(|a| a.replace("{port}", &port.to_string())).collect();
    let child = Command::new(bin)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}; {install}", bin.display()))?;
    let service = LocalService { child, port };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!("{what} did not listen on 127.0.0.1:{port} within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(service)
}

/// A Redis broker (no persistence) from `bin` (`redis-server` on the PATH, usually).
pub fn start_redis(bin: &Path) -> Result<LocalService, String> {
    start(
        bin,
        &["--port", "{port}", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        "redis-server",
        "install Redis (Debian: apt-get install redis-server; the test command does)",
    )
}

/// moto's AWS API emulator from `bin` (`.venv/bin/moto_server` after the test command).
pub fn start_moto(bin: &Path) -> Result<LocalService, String> {
    start(
        bin,
        &["-H", "127.0.0.1", "-p", "{port}"],
        "moto_server",
        "install moto[server] from PyPI (the test command does, into .venv)",
    )
}

/// Creates bucket `name` on an S3 API that takes unsigned requests (moto): `PUT /NAME`.
pub fn create_bucket(service: &LocalService, name: &str) -> Result<(), String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", service.port)).map_err(|e| e.to_string())?;
    write!(
        s,
        "PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        service.port
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    if answer.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("CreateBucket {name}: {}", answer.lines().next().unwrap_or_default()))
    }
}
