//! A throwaway PostgreSQL server for tests: its own cluster in a temporary folder,
//! listening only on 127.0.0.1 (a free port) and on a unix socket inside that folder,
//! `fsync=off`, a random password for TCP logins; stopped (`pg_ctl stop -m immediate`)
//! and deleted on drop. The server binaries come from Debian's `postgresql` package,
//! which `make setup` installs; without them the tests fail, they never skip.
//!
//! `initdb` and `pg_ctl` refuse to run as root: under root the cluster belongs to the
//! `postgres` system user and both run through `runuser -u postgres`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Where Debian puts each major version's server binaries.
const DEBIAN_PG_ROOT: &str = "/usr/lib/postgresql";
/// Overrides the search: a folder holding `initdb` and `pg_ctl`.
pub const BIN_ENV: &str = "VIGIL_PG_BIN";
const START_TRIES: usize = 3;

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    pub port: u16,
    password: String,
    next_db: AtomicU32,
}

/// The newest `initdb`/`pg_ctl` folder, or a failure that says how to get one.
pub fn server_bin() -> PathBuf {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        let dir = PathBuf::from(dir);
        assert!(has_tools(&dir), "{BIN_ENV}={} holds no initdb and pg_ctl", dir.display());
        return dir;
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_PG_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "the PostgreSQL server (initdb, pg_ctl) is not installed under {DEBIAN_PG_ROOT}/*/bin: \
             run `make setup`, which installs Debian's postgresql package (or set {BIN_ENV})"
        ),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn id_of(flag: &str, user: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().expect("run id");
    assert!(out.status.success(), "no `{user}` system user (the postgresql package creates it): run `make setup`");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("numeric id")
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("random bytes");
    hex::encode(buf)
}

impl PgServer {
    /// A new cluster, started. Panics with the server's log when it does not come up.
    pub fn start() -> PgServer {
        let bin = server_bin();
        let dir = tempfile::Builder::new().prefix("vigil-pg-").tempdir().expect("temp dir");
        // Files this process creates belong to its effective user: root shows as uid 0.
        let as_root = std::fs::metadata(dir.path()).expect("stat temp dir").uid() == 0;
        let owner = as_root.then(|| (id_of("-u", "postgres"), id_of("-g", "postgres")));
        let password = random_hex(16);
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).unwrap();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the temp dir to postgres");
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown the password file");
        }
        let mut server = PgServer { dir, bin, owner, port: 0, password, next_db: AtomicU32::new(0) };
        let data = server.data();
        let out = server.run_as_owner(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ],
        );
        assert!(out.status.success(), "initdb failed: {}{}", lossy(&out.stdout), lossy(&out.stderr));

        let mut last_failure = String::new();
        for _ in 0..START_TRIES {
            server.port = free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=300",
                server.port,
                server.dir.path().display()
            );
            let log = server.dir.path().join("server.log");
            let out = server.run_as_owner(
                "pg_ctl",
                &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "-o", &options, "start"],
            );
            if out.status.success() {
                return server;
            }
            // Most likely another process took the port between probe and bind: try anew.
            last_failure = format!(
                "{}{}\n{}",
                lossy(&out.stdout),
                lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("PostgreSQL did not start after {START_TRIES} tries: {last_failure}");
    }

    /// One server for every test of this process that runs while it is alive: it stops
    /// when the last holder drops it (the next caller starts a new one).
    pub fn shared() -> Arc<PgServer> {
        static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.upgrade() {
            return s;
        }
        let s = Arc::new(PgServer::start());
        *slot = Arc::downgrade(&s);
        s
    }

    /// Stops the server (a store outage), keeping its data.
    pub fn stop(&self) {
        let data = self.data();
        let out = self.run_as_owner("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", lossy(&out.stderr));
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&self) {
        let data = self.data();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let out = self.run_as_owner(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "-o", &options, "start"],
        );
        assert!(out.status.success(), "pg_ctl start: {}{}", lossy(&out.stdout), lossy(&out.stderr));
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn run_as_owner(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut cmd = if self.owner.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(self.dir.path()).output().unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
    }

    /// A new, empty database; returns its `postgres://` URL (TCP on 127.0.0.1, password).
    pub fn create_database(&self) -> String {
        let name = format!("vigil_test_{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", self.dir.path().to_str().unwrap(), "-p", &self.port.to_string(), "-U", "postgres", &name])
            .output()
            .expect("run createdb");
        assert!(out.status.success(), "createdb {name} failed: {}", lossy(&out.stderr));
        self.url(&name)
    }

    pub fn url(&self, database: &str) -> String {
        self.url_with_password(database, &self.password)
    }

    /// A URL for `database` logging in with `password` (a wrong one, for tests of refusal).
    pub fn url_with_password(&self, database: &str, password: &str) -> String {
        format!("postgres://postgres:{password}@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.run_as_owner("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
        // The temp dir (cluster, socket, log) goes with `self.dir`.
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
