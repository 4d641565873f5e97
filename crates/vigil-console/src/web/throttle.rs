//! Password sign-in under attack: failed attempts are limited per account and per
//! address, and the argon2 work behind sign-in has a bounded queue.
//!
//! - [`Throttle`]: after [`MAX_FAILURES`] failures within [`WINDOW_MS`] of the first, an
//!   account name or an address (an IPv6 /64) is refused until the window ends, before
//!   any password is checked. Each table holds at most [`TABLE_CAPACITY`] keys; once full
//!   (expired windows purged first), every new key shares one overflow bucket, so a flood
//!   of names or addresses is throttled together instead of escaping the limit.
//! - [`Argon2Gate`]: [`ARGON2_SLOTS`] verifications at a time on blocking threads, at most
//!   [`MAX_WAITING`] waiting for a slot; beyond that a sign-in is refused at once (503)
//!   rather than queued without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// Failures allowed per account and per address within one window.
pub const MAX_FAILURES: u32 = 5;
/// The window, from its first failure.
pub const WINDOW_MS: i64 = 60_000;
/// Keys per table before new ones share the overflow bucket.
pub const TABLE_CAPACITY: usize = 10_000;
/// Password verifications running at once (argon2 costs tens of milliseconds of CPU,
/// which must never hold up the runtime's paging loops).
pub const ARGON2_SLOTS: usize = 2;
/// Sign-ins allowed to wait for a verification slot.
pub const MAX_WAITING: usize = 16;

/// A poisoned lock still holds a usable table: a panic elsewhere never opens the gate.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Failures in the current window.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    start_ms: i64,
    failures: u32,
}

impl Bucket {
    fn live(&self, now_ms: i64) -> bool {
        self.failures > 0 && now_ms < self.start_ms + WINDOW_MS
    }

    /// Seconds until the window ends, when this bucket refuses.
    fn refuses(&self, now_ms: i64) -> Option<u64> {
        (self.live(now_ms) && self.failures >= MAX_FAILURES)
            .then(|| ((self.start_ms + WINDOW_MS - now_ms).max(1) as u64).div_ceil(1000))
    }

    fn fail(&mut self, now_ms: i64) {
        if !self.live(now_ms) {
            *self = Bucket { start_ms: now_ms, failures: 0 };
        }
        self.failures = self.failures.saturating_add(1);
    }
}

#[derive(Debug)]
struct Table<K> {
    keys: HashMap<K, Bucket>,
    overflow: Bucket,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table { keys: HashMap::new(), overflow: Bucket::default() }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Table<K> {
    fn refuses(&self, key: &K, now_ms: i64) -> Option<u64> {
        match self.keys.get(key) {
            Some(b) => b.refuses(now_ms),
            // A key the full table could not take had its failures counted in overflow.
            None if self.keys.len() >= TABLE_CAPACITY => self.overflow.refuses(now_ms),
            None => None,
        }
    }

    fn fail(&mut self, key: &K, now_ms: i64) {
        if !self.keys.contains_key(key) && self.keys.len() >= TABLE_CAPACITY {
            self.keys.retain(|_, b| b.live(now_ms));
        }
        if let Some(b) = self.keys.get_mut(key) {
            b.fail(now_ms);
        } else if self.keys.len() < TABLE_CAPACITY {
            self.keys.entry(key.clone()).or_default().fail(now_ms);
        } else {
            self.overflow.fail(now_ms);
        }
    }

    fn forget(&mut self, key: &K) {
        self.keys.remove(key);
    }
}

/// The address a limit applies to: IPv4 as is, IPv6 by its /64 (one host's share),
/// IPv4-mapped IPv6 as the IPv4 address.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
        v4 => v4,
    }
}

/// The account a limit applies to: the name as typed, cut at 200 characters (no longer
/// name can exist).
fn account_key(user: &str) -> String {
    user.chars().take(200).collect()
}

/// Failed sign-ins per account name and per address.
#[derive(Debug, Default)]
pub struct Throttle {
    accounts: Mutex<Table<String>>,
    addresses: Mutex<Table<IpAddr>>,
}

impl Throttle {
    /// `Err(seconds)` when the account or the address has used up its failures: refuse
    /// without checking the password, and say when to try again.
    pub fn check(&self, user: &str, addr: IpAddr, now_ms: i64) -> Result<(), u64> {
        let account = locked(&self.accounts).refuses(&account_key(user), now_ms);
        let address = locked(&self.addresses).refuses(&address_key(addr), now_ms);
        match account.max(address) {
            Some(secs) => Err(secs),
            None => Ok(()),
        }
    }

    /// A wrong user name or password.
    pub fn failed(&self, user: &str, addr: IpAddr, now_ms: i64) {
        locked(&self.accounts).fail(&account_key(user), now_ms);
        locked(&self.addresses).fail(&address_key(addr), now_ms);
    }

    /// A sign-in that worked clears its account's failures (not its address's: one
    /// known password must not reset the guessing of others from there).
    pub fn succeeded(&self, user: &str) {
        locked(&self.accounts).forget(&account_key(user));
    }
}

/// Too many sign-ins are waiting for a password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// The bounded queue in front of argon2.
#[derive(Debug)]
pub struct Argon2Gate {
    slots: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Verifications started (for tests: a refused sign-in runs none).
    runs: AtomicU64,
}

impl Default for Argon2Gate {
    fn default() -> Self {
        Argon2Gate::new(ARGON2_SLOTS, MAX_WAITING)
    }
}

/// Counts a waiter out however its wait ends (a dropped request included).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Argon2Gate {
    pub fn new(slots: usize, max_waiting: usize) -> Argon2Gate {
        Argon2Gate {
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            max_waiting,
            runs: AtomicU64::new(0),
        }
    }

    /// Verifies `password` against the PHC string `hash` on a blocking thread once a slot
    /// is free; [`Busy`] at once when `max_waiting` sign-ins wait already. The slot stays
    /// taken until argon2 is done, even if the request is dropped meanwhile.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, Busy> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Relaxed) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Relaxed);
                    return Err(Busy);
                }
                let _waiting = Waiting(&self.waiting);
                self.slots.clone().acquire_owned().await.map_err(|_| Busy)?
            }
        };
        self.runs.fetch_add(1, Relaxed);
        Ok(tokio::task::spawn_blocking(move || {
            let _permit = permit;
            super::auth::verify_password(&password, &hash)
        })
        .await
        .unwrap_or(false))
    }

    /// Verifications started so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Relaxed)
    }

    /// Sign-ins waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Relaxed)
    }
}

/// What password sign-in shares across requests.
#[derive(Debug, Default)]
pub struct SignIn {
    pub throttle: Throttle,
    pub gate: Argon2Gate,
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn five_failures_per_account_then_refused_until_the_window_ends() {
        let t = Throttle::default();
        for i in 0..MAX_FAILURES {
            assert_eq!(t.check("alice", A, 1_000 + i as i64), Ok(()));
            t.failed("alice", A, 1_000 + i as i64);
        }
        assert_eq!(t.check("alice", A, 1_500), Err(60), "a minute from the first failure, rounded up");
        assert_eq!(t.check("alice", B, 2_000), Err(59), "the account is limited from any address");
        assert_eq!(t.check("bob", A, 2_000), Err(59), "the address is limited for any account");
        assert_eq!(t.check("bob", B, 2_000), Ok(()));
        assert_eq!(t.check("alice", B, 1_000 + WINDOW_MS), Ok(()), "the window ends");
    }

    #[test]
    fn many_names_from_many_addresses_still_share_a_limit() {
        let t = Throttle::default();
        // One address trying many names: its address bucket refuses.
        for i in 0..MAX_FAILURES {
            t.failed(&format!("user{i}"), A, 0);
        }
        assert!(t.check("someone-else", A, 1).is_err());
        // Names and addresses enough to fill both tables: the rest share the overflow.
        let t = Throttle::default();
        for i in 0..TABLE_CAPACITY as u32 {
            let ip = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            t.failed(&format!("fill{i}"), ip, 10);
        }
        let fresh = |i: u32| IpAddr::from((0x0b00_0000u32 + i).to_be_bytes());
        for i in 0..MAX_FAILURES {
            assert_eq!(t.check(&format!("new{i}"), fresh(i), 20), Ok(()));
            t.failed(&format!("new{i}"), fresh(i), 20);
        }
        assert!(t.check("never-seen", fresh(999), 21).is_err(), "new keys share the overflow bucket");
        // Once the windows end, the full table is purged and keys have their own again.
        let later = 20 + WINDOW_MS;
        assert_eq!(t.check("never-seen", fresh(999), later), Ok(()));
        t.failed("again", fresh(1000), later);
        assert!(locked(&t.accounts).keys.contains_key("again"), "expired keys were purged to make room");
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let t = Throttle::default();
        for i in 0..MAX_FAILURES as u16 {
            t.failed("x", IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, i]), 0);
        }
        assert!(t.check("y", IpAddr::from([0x2001, 0xdb8, 1, 2, 9, 9, 9, 9]), 1).is_err());
        assert_eq!(t.check("y", IpAddr::from([0x2001, 0xdb8, 1, 3, 0, 0, 0, 1]), 1), Ok(()));
    }

    #[test]
    fn success_clears_the_account_but_not_the_address() {
        let t = Throttle::default();
        for _ in 0..MAX_FAILURES - 1 {
            t.failed("alice", A, 0);
        }
        t.succeeded("alice");
        t.failed("alice", A, 1);
        assert_eq!(t.check("alice", B, 2), Ok(()));
        assert!(t.check("mallory", A, 2).is_err(), "the address keeps its failures");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_in_front_of_argon2_is_bounded() {
        let hash = super::super::auth::hash_password("correct horse battery").unwrap();
        let gate = Arc::new(Argon2Gate::new(1, 2));
        let held = gate.slots.clone().try_acquire_owned().unwrap();
        let mut waiters = Vec::new();
        for _ in 0..2 {
            let (g, h) = (gate.clone(), hash.clone());
            waiters.push(tokio::spawn(async move { g.verify("correct horse battery".into(), h).await }));
        }
        while gate.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.verify("x".into(), hash.clone()).await, Err(Busy), "a third waiter is refused at once");
        assert_eq!(gate.runs(), 0);
        drop(held);
        for w in waiters {
            assert_eq!(w.await.unwrap(), Ok(true));
        }
        assert_eq!((gate.runs(), gate.waiting()), (2, 0));
        assert_eq!(gate.verify("wrong".into(), hash).await, Ok(false));
    }
}
