//! `vigil console` for tests: start it, talk plain HTTP to it, sign in.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A plain HTTP/1.1 request to the console: (status, headers and body).
pub fn http(addr: &str, req: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

/// The audit key every console in the tests runs with.
pub const AUDIT_KEY: &str = "the console tests' audit key, at least 32 bytes long";

pub fn vigil_console(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    c.arg("--config").arg(config).arg("console").args(args).env("VIGIL_LOG", "info");
    // The audit chain's key (`[console]`'s default `audit_key_env`); a test may override it.
    c.env("VIGIL_CONSOLE_AUDIT_KEY", AUDIT_KEY);
    super::trust::apply(&mut c);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

pub struct Console {
    child: Child,
    pub addr: String,
    log: std::path::PathBuf,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Console {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `vigil console serve` on `port`, ready (its store open, migrated, answering).
pub fn start_console(config: &std::path::Path, dir: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Console {
    let log = dir.join(format!("console-{port}.log"));
    let child = vigil_console(config, &["serve"], env)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let c = Console { child, addr: format!("127.0.0.1:{port}"), log };
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(&c.addr, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0 != 200 {
        assert!(Instant::now() < deadline, "the console did not become ready:\n{}", c.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    c
}

/// Signs `user` in with a password form; the session cookie (`name=value`).
pub fn sign_in(addr: &str, origin: &str, user: &str, password: &str) -> String {
    let body = format!("user={user}&password={}", password.replace(' ', "+"));
    let (status, head) = http(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 303, "sign-in of {user}: {head}");
    head.lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string()
}

/// A GET with a session cookie: (status, head and body).
pub fn get_as(addr: &str, cookie: &str, path: &str) -> (u16, String) {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"))
}
