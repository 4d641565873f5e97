//! Ids that must never repeat: stream sessions (a publisher who reconnects starts a new
//! one) and WHIP session URLs. Incident, alert and command ids are built from the
//! session id, so two sessions of one stream name never share an id, while a message
//! replayed from the spool keeps the id it was first given.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// `bytes` random bytes from the kernel, as lower-case hex.
pub fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A stream session id: `UNIXMS-RANDOM64`. Sortable by start time, unique across
/// workers and restarts. Without `/dev/urandom` (never seen on Linux) the process id and
/// a counter stand in for the random part, which still cannot repeat on one host.
pub fn new_session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let tail = random_hex(8).unwrap_or_else(|_| format!("p{}c{}", std::process::id(), COUNTER.fetch_add(1, Relaxed)));
    format!("{ms}-{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_differ_and_carry_time_first() {
        let (a, b) = (new_session_id(), new_session_id());
        assert_ne!(a, b);
        let (ms, rand) = a.split_once('-').unwrap();
        assert!(ms.parse::<u64>().unwrap() > 1_700_000_000_000);
        assert_eq!(rand.len(), 16);
        assert_eq!(random_hex(16).unwrap().len(), 32);
    }
}
