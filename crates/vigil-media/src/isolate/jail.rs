//! The decode child's seccomp policy: default-deny. Every system call is refused
//! (EPERM) unless it is on the allowlist of the child's source kind, and a few allowed
//! ones are allowed only on the child itself (signals, limits, scheduling) or only for
//! the socket families its source needs.
//!
//! The lists were built from what GStreamer 1.22 actually calls once initialised
//! (`strace -f` over the test suite's pushed, WHIP and pulled children, then widened
//! by the harmless variants of the same calls: `ppoll` beside `poll`, `pread64` beside
//! `read`). A call missing here shows up as a decode failure with EPERM in the child's
//! stderr, never as a silent hole.
//!
//! [`probe`] is the test-only mode: it confines itself exactly as a child of the given
//! kind, then tries each call an attacker who took the decoder over would want, and
//! reports which were refused.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};
use std::collections::BTreeMap;

/// What a child may reach, by source kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Pushed streams: the bytes come from the worker over stdin; no sockets but
    /// local socket pairs, no connect, no bind.
    None,
    /// WHIP: ICE over UDP (and the interface list over netlink), no stream sockets.
    Udp,
    /// Pulled sources: TCP and UDP clients and listeners, as their URL needs.
    Any,
}

impl Network {
    pub fn name(self) -> &'static str {
        match self {
            Network::None => "pushed",
            Network::Udp => "whip",
            Network::Any => "pulled",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Network::None, Network::Udp, Network::Any].into_iter().find(|n| n.name() == name)
    }
}

/// Allowed for every kind, whatever the arguments: memory, threads, time, files that
/// the process may open anyway (seccomp cannot see paths), polling, own-process queries.
const ALWAYS: &[i64] = &[
    // Reading and writing descriptors it holds.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_lseek,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_fstatfs,
    libc::SYS_statfs,
    libc::SYS_ftruncate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fadvise64,
    // Files: plugins, the registry, ORC's executable scratch file in $HOME, /proc/self.
    libc::SYS_openat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlinkat,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_umask,
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_mlock,
    libc::SYS_munlock,
    libc::SYS_get_mempolicy,
    libc::SYS_set_mempolicy,
    libc::SYS_mbind,
    libc::SYS_memfd_create,
    libc::SYS_membarrier,
    // Threads (a new process could do nothing: exec is refused); clone and clone3 are
    // below, without namespaces.
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_set_tid_address,
    libc::SYS_rseq,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_getpriority,
    libc::SYS_prctl,
    // Who am I, what time is it.
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_getrusage,
    libc::SYS_getrlimit,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    // Signals at itself (others are below, checked by target).
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigsuspend,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    // Waiting.
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_pipe2,
    // Sockets it already holds (socket pairs for GstPoll; any socket its kind may open).
    libc::SYS_socketpair,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_recvmmsg,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_shutdown,
];

/// The x86-64 names of calls that newer architectures only have in their `*at` form.
#[cfg(target_arch = "x86_64")]
const ALWAYS_LEGACY: &[i64] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_mkdir,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_create,
    libc::SYS_epoll_wait,
    libc::SYS_eventfd,
    libc::SYS_pipe,
    libc::SYS_dup2,
    libc::SYS_time,
    libc::SYS_arch_prctl,
];
#[cfg(not(target_arch = "x86_64"))]
const ALWAYS_LEGACY: &[i64] = &[];

/// Sending and opening connections: WHIP and pulled children only (a pushed child may
/// only `send` on sockets it holds, with no address).
const NETWORK: &[i64] =
    &[libc::SYS_connect, libc::SYS_bind, libc::SYS_setsockopt, libc::SYS_sendto, libc::SYS_sendmsg, libc::SYS_sendmmsg];

/// A pulled source may also listen (SRT and RTSP can serve as well as call).
const LISTEN: &[i64] = &[libc::SYS_listen, libc::SYS_accept, libc::SYS_accept4];

/// Signal calls whose first argument is a process: allowed only at the child itself.
const SIGNAL_SYSCALLS: &[i64] =
    &[libc::SYS_kill, libc::SYS_tgkill, libc::SYS_rt_sigqueueinfo, libc::SYS_rt_tgsigqueueinfo];

/// Calls that would change another process of the same uid given its pid: allowed with
/// pid 0 (the caller) or the child's own.
const OWN_PID_SYSCALLS: &[i64] = &[
    libc::SYS_prlimit64,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_setparam,
    libc::SYS_sched_setattr,
];

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// clone's namespace flags (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
/// NEWNET): a thread never needs them, and `unshare` is refused already.
const CLONE_NEW_NAMESPACES: u64 = 0x7E02_0000;

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())
}

fn rule(conds: Vec<Result<SeccompCondition, String>>) -> Result<SeccompRule, String> {
    SeccompRule::new(conds.into_iter().collect::<Result<Vec<_>, _>>()?).map_err(|e| e.to_string())
}

/// The rules of the policy for `network`: each listed call maps to the conditions under
/// which it is allowed (none: always).
fn rules(network: Network) -> Result<Rules, String> {
    use SeccompCmpOp::{Eq, MaskedEq};
    let mut rules: Rules = ALWAYS.iter().chain(ALWAYS_LEGACY).map(|&n| (n, Vec::new())).collect();
    let own_pid = u64::from(std::process::id());
    for &call in SIGNAL_SYSCALLS {
        rules.insert(call, vec![rule(vec![cond(0, Eq, own_pid)])?]);
    }
    // New threads, never in new namespaces. clone3 passes its flags in memory, where
    // seccomp cannot look: the filter of `install` answers it ENOSYS, and the C library
    // then creates the thread with clone, whose flags are checked here.
    rules.insert(libc::SYS_clone, vec![rule(vec![cond(0, MaskedEq(CLONE_NEW_NAMESPACES), 0)])?]);
    rules.insert(libc::SYS_clone3, Vec::new());
    for &call in OWN_PID_SYSCALLS {
        rules.insert(call, vec![rule(vec![cond(0, Eq, 0)])?, rule(vec![cond(0, Eq, own_pid)])?]);
    }
    // setpriority(which, who, ..) and ioprio_set(which, who, ..): only this process
    // (PRIO_PROCESS / IOPRIO_WHO_PROCESS with who 0); a group or user includes the worker.
    const IOPRIO_WHO_PROCESS: u64 = 1;
    let own_process = |which: u64| rule(vec![cond(0, Eq, which), cond(1, Eq, 0)]);
    rules.insert(libc::SYS_setpriority, vec![own_process(libc::PRIO_PROCESS as u64)?]);
    rules.insert(libc::SYS_ioprio_set, vec![own_process(IOPRIO_WHO_PROCESS)?]);

    // socket(family, type, protocol): the low four bits of the type are the kind
    // (SOCK_NONBLOCK and SOCK_CLOEXEC sit above them).
    let family = |f: i32| cond(0, Eq, f as u64);
    let kind = |k: i32| cond(1, MaskedEq(0xf), k as u64);
    let mut sockets = vec![rule(vec![family(libc::AF_UNIX)])?];
    match network {
        Network::None => {
            // `send` on a socket pair is sendto with no address; nothing else sends.
            rules.insert(libc::SYS_sendto, vec![rule(vec![cond(4, Eq, 0)])?]);
        }
        Network::Udp | Network::Any => {
            // The interface list (getifaddrs) reads NETLINK_ROUTE.
            sockets.push(rule(vec![family(libc::AF_NETLINK), cond(2, Eq, libc::NETLINK_ROUTE as u64)])?);
            let kinds: &[i32] =
                if network == Network::Udp { &[libc::SOCK_DGRAM] } else { &[libc::SOCK_DGRAM, libc::SOCK_STREAM] };
            for &f in &[libc::AF_INET, libc::AF_INET6] {
                for &k in kinds {
                    sockets.push(rule(vec![family(f), kind(k)])?);
                }
            }
            rules.extend(NETWORK.iter().map(|&n| (n, Vec::new())));
            if network == Network::Any {
                rules.extend(LISTEN.iter().map(|&n| (n, Vec::new())));
            }
        }
    }
    rules.insert(libc::SYS_socket, sockets);
    Ok(rules)
}

/// Installs the policy for `network` on every thread of the calling process.
pub fn install(network: Network) -> Result<(), String> {
    let arch = std::env::consts::ARCH.try_into().map_err(|e: seccompiler::BackendError| e.to_string())?;
    let build = |rules: Rules, mismatch, matched| -> Result<BpfProgram, String> {
        let filter = SeccompFilter::new(rules, mismatch, matched, arch).map_err(|e| e.to_string())?;
        filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())
    };
    // Two filters; the kernel applies the strictest answer of the two. The first only
    // answers clone3 "not implemented" (so threads are made with clone, whose flags
    // the second checks); the second is the allowlist.
    let no_clone3 = build(
        [(libc::SYS_clone3, Vec::new())].into(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
    )?;
    let allowlist = build(rules(network)?, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow)?;
    seccompiler::apply_filter_all_threads(&no_clone3).map_err(|e| e.to_string())?;
    seccompiler::apply_filter_all_threads(&allowlist).map_err(|e| e.to_string())
}

/// Started as root: moves into a new user namespace, where this process keeps its
/// uid for file ownership but holds no capability over anything outside it.
pub fn leave_root() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    // Deprecated because unsharing the descriptor table under running code is unsound;
    // a user namespace is what is made here, before any thread exists.
    #[allow(deprecated)]
    rustix::thread::unshare(rustix::thread::UnshareFlags::NEWUSER).map_err(|e| {
        format!(
            "running as root, and no user namespace could be made ({e}); run the worker as a \
             non-root user or set media.isolation.user_namespace = false"
        )
    })
}

/// One call the probe tried, and what came of it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ProbeResult {
    pub call: String,
    /// Whether the policy must allow it (the probe checks both ways: a policy that
    /// refused everything would break decoding, not protect it).
    pub must_allow: bool,
    pub allowed: bool,
    /// The error number when refused (EPERM: by this policy).
    pub errno: i32,
}

/// `vigil media-child --probe KIND` (tests only): confines this process exactly as a
/// decode child of `kind` (the same limits and policy), tries what an attacker who took
/// the decoder over would try against the worker (its parent) and the host, and prints
/// one JSON line per attempt. Exit 0 when every forbidden call was refused and every
/// needed one allowed, 1 otherwise.
pub fn probe(kind: Network, target: Option<u32>) -> i32 {
    let isolation = crate::config::IsolationConfig::default();
    if let Err(e) = super::child::confine(&isolation).and_then(|()| install(kind)) {
        eprintln!("confine: {e}");
        return 2;
    }
    let parent = || rustix::process::getppid().unwrap_or(rustix::process::Pid::INIT);
    let worker = target.and_then(|t| rustix::process::Pid::from_raw(t as i32)).unwrap_or_else(parent);
    let results = attempts(worker, kind);
    for r in &results {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    }
    if results.iter().all(|r| r.allowed == r.must_allow) { 0 } else { 1 }
}

fn outcome<T, E: Into<std::io::Error>>(call: &str, must_allow: bool, result: Result<T, E>) -> ProbeResult {
    let result = result.map_err(Into::into);
    let errno = result.as_ref().err().and_then(std::io::Error::raw_os_error).unwrap_or(0);
    ProbeResult { call: call.to_string(), must_allow, allowed: result.is_ok(), errno }
}

/// The attempts, through safe wrappers of the raw calls (so the C library's fallbacks
/// cannot hide a refusal). Each one that the policy wrongly allowed is harmless to the
/// host: it re-sets a value to what it already was, or acts on this throwaway process.
fn attempts(worker: rustix::process::Pid, kind: Network) -> Vec<ProbeResult> {
    use rustix::net::{AddressFamily, Protocol, SocketAddrUnix, SocketFlags, SocketType, ipproto};
    use rustix::process::{self as p, Resource, Rlimit};
    let sock = |family, kind, protocol| rustix::net::socket(family, kind, protocol).map(drop);
    // Deprecated for unsharing descriptor tables under a running program; a user
    // namespace is what is tried here, and the call must fail anyway.
    #[allow(deprecated)]
    let unshare_user = rustix::thread::unshare(rustix::thread::UnshareFlags::NEWUSER);
    let mut out = vec![
        outcome("execve", false, std::process::Command::new("/bin/true").status()),
        outcome("open /proc/WORKER/mem", false, std::fs::File::open(format!("/proc/{}/mem", worker.as_raw_nonzero()))),
        outcome("kill(worker, 0)", false, p::test_kill_process(worker)),
        outcome("kill(process group, 0)", false, p::test_kill_current_process_group()),
        outcome("kill(self, 0)", true, p::test_kill_process(p::getpid())),
        outcome("pidfd_open(worker)", false, p::pidfd_open(worker, p::PidfdFlags::empty())),
        // The worker's own core limit (it already set 0): unchanged if wrongly allowed.
        outcome(
            "prlimit(worker)",
            false,
            p::prlimit(Some(worker), Resource::Core, Rlimit { current: Some(0), maximum: Some(0) }),
        ),
        outcome("prlimit(self)", true, p::prlimit(None, Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })),
        // Its process group holds the worker; re-setting the default nice is harmless.
        outcome("setpriority(process group)", false, p::setpriority_pgrp(None, 0)),
        outcome("chroot", false, p::chroot("/")),
        outcome("setuid", false, rustix::thread::set_thread_uid(p::getuid())),
        outcome("unshare(user namespace)", false, unshare_user),
        outcome("socket(packet)", false, sock(AddressFamily::PACKET, SocketType::RAW, None)),
        outcome("socket(raw icmp)", false, sock(AddressFamily::INET, SocketType::RAW, Some(ipproto::ICMP))),
        outcome(
            "socket(netlink audit)",
            false,
            sock(AddressFamily::NETLINK, SocketType::RAW, Protocol::from_raw(9.try_into().expect("nonzero")).into()),
        ),
        // clone3 is answered ENOSYS; the C library must fall back to clone for threads.
        outcome("thread (clone3, then clone)", true, std::thread::Builder::new().spawn(|| ()).map(|h| h.join())),
        outcome(
            "socketpair(unix)",
            true,
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None),
        ),
    ];
    if let Ok(set) = rustix::thread::sched_getaffinity(Some(worker)) {
        out.push(outcome("sched_setaffinity(worker)", false, rustix::thread::sched_setaffinity(Some(worker), &set)));
    }
    let tcp_allowed = kind == Network::Any;
    out.push(outcome("socket(tcp)", tcp_allowed, sock(AddressFamily::INET, SocketType::STREAM, None)));
    out.push(outcome("socket(tcp6)", tcp_allowed, sock(AddressFamily::INET6, SocketType::STREAM, None)));
    out.push(outcome("socket(udp)", kind != Network::None, sock(AddressFamily::INET, SocketType::DGRAM, None)));
    if kind == Network::None
        && let Ok((a, _b)) = rustix::net::socketpair(AddressFamily::UNIX, SocketType::DGRAM, SocketFlags::CLOEXEC, None)
    {
        // A local daemon's socket (nscd, D-Bus): reachable only by address.
        if let Ok(addr) = SocketAddrUnix::new_abstract_name(b"vigil-probe") {
            out.push(outcome("connect(unix)", false, rustix::net::connect(&a, &addr)));
            out.push(outcome("bind(unix)", false, rustix::net::bind(&a, &addr)));
            out.push(outcome(
                "sendto(address)",
                false,
                rustix::net::sendto(&a, b"x", rustix::net::SendFlags::empty(), &addr),
            ));
        }
        out.push(outcome("send(socket pair)", true, rustix::net::send(&a, b"x", rustix::net::SendFlags::empty())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_builds_a_filter() {
        for kind in [Network::None, Network::Udp, Network::Any] {
            let arch = std::env::consts::ARCH.try_into().unwrap();
            let filter =
                SeccompFilter::new(rules(kind).unwrap(), SeccompAction::Errno(1), SeccompAction::Allow, arch).unwrap();
            let _: BpfProgram = filter.try_into().unwrap();
            assert_eq!(Network::from_name(kind.name()), Some(kind));
        }
    }

    #[test]
    fn the_dangerous_calls_are_on_no_list() {
        for kind in [Network::None, Network::Udp, Network::Any] {
            let rules = rules(kind).unwrap();
            for call in [
                libc::SYS_execve,
                libc::SYS_execveat,
                libc::SYS_ptrace,
                libc::SYS_process_vm_readv,
                libc::SYS_process_vm_writev,
                libc::SYS_io_uring_setup,
                libc::SYS_pidfd_open,
                libc::SYS_pidfd_getfd,
                libc::SYS_tkill,
                libc::SYS_unshare,
                libc::SYS_setns,
                libc::SYS_mount,
                libc::SYS_bpf,
                libc::SYS_setuid,
            ] {
                assert!(!rules.contains_key(&call), "{kind:?} allows {call}");
            }
            assert_eq!(rules[&libc::SYS_clone].len(), 1, "clone only without namespace flags");
        }
    }
}
