//! A network namespace of the test's own, for WebRTC: ICE never pairs loopback
//! addresses, so WHIP tests run the worker and the publisher inside a namespace with a
//! veth pair carrying private addresses (and `lo` for the HTTP calls). Nothing in it
//! can reach the machine's network; it is deleted when the test ends.

use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

pub struct Netns {
    pub name: String,
    /// The addresses on the two ends of the veth pair (ICE candidates come from these).
    pub addresses: [String; 2],
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (the WHIP tests create a network namespace and need root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Netns {
    pub fn create() -> Netns {
        let n = COUNTER.fetch_add(1, Relaxed);
        let name = format!("vigil-test-{}-{n}", std::process::id());
        // A /24 per namespace, from the process id, so parallel test runs do not share one.
        let subnet = format!("10.{}.{}", 200 + (std::process::id() % 50), n % 250);
        let addresses = [format!("{subnet}.1"), format!("{subnet}.2")];
        ip(&["netns", "add", &name]);
        let ns = Netns { name, addresses };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&["-n", &ns.name, "link", "add", "va", "type", "veth", "peer", "name", "vb"]);
        for (dev, addr) in [("va", &ns.addresses[0]), ("vb", &ns.addresses[1])] {
            ip(&["-n", &ns.name, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        ns
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in(&self.name, program)
    }
}

/// `program` run inside namespace `name`.
pub fn command_in(name: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", name]).arg(program);
    cmd
}

/// Runs `f` on a thread that has entered namespace `name` (only that thread moves).
pub fn within<R: Send + 'static>(name: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        rustix::thread::move_into_link_name_space(fd.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
    .join()
    .unwrap()
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its veth pair too.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
