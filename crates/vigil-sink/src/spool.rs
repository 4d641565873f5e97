//! The on-disk spool: every alert is written here, and fsync'd, before it is offered to
//! a broker, and stays until the broker confirms it. After a crash or a restart the
//! pending records are replayed in the order they were accepted.
//!
//! Format: an append-only log of frames `[len: u32 LE][crc32: u32 LE][kind: u8][body]`;
//! kind 1 is a record (`body` = key length u16 LE, key, payload), kind 2 acknowledges the
//! record with that key. A torn frame at the end (a crash mid-write) is cut off on open;
//! a frame whose checksum fails is reported and everything after it is kept aside in
//! `<file>.corrupt-<n>` rather than silently dropped. When every record is acknowledged
//! (or the log grows past twice its live size) it is compacted: pending records are
//! rewritten to a new file that atomically replaces the old one.

use std::collections::{HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const KIND_RECORD: u8 = 1;
const KIND_ACK: u8 = 2;
const HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("spool {path} is full ({used} of {max} bytes): alerts cannot be accepted until the broker drains it")]
    Full { path: PathBuf, used: u64, max: u64 },
    #[error("spool record too large: {0} bytes")]
    TooLarge(usize),
}

/// One accepted record: a key (the alert's message id) and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub payload: Vec<u8>,
}

pub struct Spool {
    path: PathBuf,
    file: File,
    max_bytes: u64,
    pending: VecDeque<Record>,
    /// Bytes of the log file, and of its frames that are still needed.
    file_bytes: u64,
    live_bytes: u64,
}

fn crc32(data: &[u8]) -> u32 {
    // CRC-32 (IEEE), bitwise: records are small and rare (alerts), speed is not the point.
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(1 + body.len());
    content.push(kind);
    content.extend_from_slice(body);
    let mut out = Vec::with_capacity(HEADER + content.len());
    out.extend_from_slice(&(content.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&content).to_le_bytes());
    out.extend_from_slice(&content);
    out
}

fn record_body(r: &Record) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + r.key.len() + r.payload.len());
    body.extend_from_slice(&(r.key.len() as u16).to_le_bytes());
    body.extend_from_slice(r.key.as_bytes());
    body.extend_from_slice(&r.payload);
    body
}

impl Spool {
    /// Opens (or creates) the spool at `path`, recovering what it held.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64) -> Result<Spool, SpoolError> {
        let path = path.into();
        let io = |source| SpoolError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path).map_err(io)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        let (records, good_len, corrupt_at) = parse(&data);
        if let Some(at) = corrupt_at {
            let aside = corrupt_path(&path);
            std::fs::write(&aside, &data[at..]).map_err(io)?;
            tracing::error!(spool = %path.display(), aside = %aside.display(), "spool frame at byte {at} fails its checksum; kept the rest aside");
        }
        if good_len < data.len() as u64 {
            if corrupt_at.is_none() {
                tracing::warn!(spool = %path.display(), "cut a torn frame at the end of the spool (interrupted write)");
            }
            file.set_len(good_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let live_bytes = records.iter().map(|r| (HEADER + 1 + 2 + r.key.len() + r.payload.len()) as u64).sum();
        let mut spool = Spool { path, file, max_bytes, pending: records.into(), file_bytes: good_len, live_bytes };
        spool.maybe_compact()?;
        Ok(spool)
    }

    /// Records accepted and not yet acknowledged, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Record> {
        self.pending.iter()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Share of `max_bytes` in use by pending records (alarm well before 1.0).
    pub fn fill_ratio(&self) -> f64 {
        self.live_bytes as f64 / self.max_bytes as f64
    }

    /// Writes a record and fsyncs it. Only after this returns is the record accepted.
    pub fn append(&mut self, record: Record) -> Result<(), SpoolError> {
        if record.key.len() > u16::MAX as usize || record.payload.len() > 16 << 20 {
            return Err(SpoolError::TooLarge(record.key.len() + record.payload.len()));
        }
        let bytes = frame(KIND_RECORD, &record_body(&record));
        if self.live_bytes + bytes.len() as u64 > self.max_bytes {
            return Err(SpoolError::Full { path: self.path.clone(), used: self.live_bytes, max: self.max_bytes });
        }
        self.write_synced(&bytes)?;
        self.live_bytes += bytes.len() as u64;
        self.pending.push_back(record);
        Ok(())
    }

    /// Marks the record with `key` delivered. Unknown keys are ignored (already acked).
    pub fn ack(&mut self, key: &str) -> Result<(), SpoolError> {
        let Some(pos) = self.pending.iter().position(|r| r.key == key) else { return Ok(()) };
        self.write_synced(&frame(KIND_ACK, key.as_bytes()))?;
        let Some(r) = self.pending.remove(pos) else { return Ok(()) };
        self.live_bytes -= (HEADER + 1 + 2 + r.key.len() + r.payload.len()) as u64;
        self.maybe_compact()
    }

    fn write_synced(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let io = |source| SpoolError::Io { path: self.path.clone(), source };
        self.file.write_all(bytes).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.file_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Rewrites the log with only the pending records when it is mostly dead weight.
    fn maybe_compact(&mut self) -> Result<(), SpoolError> {
        let worth_it = (self.pending.is_empty() && self.file_bytes > 0)
            || (self.file_bytes > 64 * 1024 && self.file_bytes > 2 * self.live_bytes);
        if !worth_it {
            return Ok(());
        }
        let io = |source| SpoolError::Io { path: self.path.clone(), source };
        let tmp = self.path.with_extension("compacting");
        let mut out = Vec::with_capacity(self.live_bytes as usize);
        for r in &self.pending {
            out.extend_from_slice(&frame(KIND_RECORD, &record_body(r)));
        }
        {
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(&out).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable.
            File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        self.file = OpenOptions::new().read(true).append(true).open(&self.path).map_err(io)?;
        self.file_bytes = out.len() as u64;
        Ok(())
    }
}

fn corrupt_path(path: &Path) -> PathBuf {
    let mut n = 0;
    loop {
        let p = PathBuf::from(format!("{}.corrupt-{n}", path.display()));
        if !p.exists() {
            return p;
        }
        n += 1;
    }
}

/// Pending records in order, the length of the good prefix, and where a checksum
/// failure (not a torn tail) was found.
fn parse(data: &[u8]) -> (Vec<Record>, u64, Option<usize>) {
    let mut records: Vec<Record> = Vec::new();
    let mut acked: HashSet<String> = HashSet::new();
    let mut at = 0usize;
    let mut corrupt = None;
    while at + HEADER <= data.len() {
        let u32_at = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        let (len, crc) = (u32_at(at) as usize, u32_at(at + 4));
        let Some(content) = data.get(at + HEADER..at + HEADER + len) else { break }; // torn tail
        if len == 0 || crc32(content) != crc {
            corrupt = Some(at);
            break;
        }
        let (kind, body) = (content[0], &content[1..]);
        match kind {
            KIND_RECORD if body.len() >= 2 => {
                let klen = u16::from_le_bytes([body[0], body[1]]) as usize;
                if body.len() < 2 + klen {
                    corrupt = Some(at);
                    break;
                }
                let key = String::from_utf8_lossy(&body[2..2 + klen]).into_owned();
                records.push(Record { key, payload: body[2 + klen..].to_vec() });
            }
            KIND_ACK => {
                acked.insert(String::from_utf8_lossy(body).into_owned());
            }
            _ => {
                corrupt = Some(at);
                break;
            }
        }
        at += HEADER + len;
    }
    records.retain(|r| !acked.contains(&r.key));
    (records, at as u64, corrupt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str) -> Record {
        Record { key: k.into(), payload: format!("{{\"alert\":\"{k}\"}}").into_bytes() }
    }

    #[test]
    fn pending_records_survive_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spool/alerts.log");
        let mut s = Spool::open(&p, 1 << 20).unwrap();
        for k in ["a", "b", "c", "d"] {
            s.append(rec(k)).unwrap();
        }
        s.ack("b").unwrap();
        drop(s);
        let s = Spool::open(&p, 1 << 20).unwrap();
        let keys: Vec<&str> = s.pending().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, vec!["a", "c", "d"]);
        assert_eq!(s.pending().next().unwrap(), &rec("a"));
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("alerts.log");
        let mut s = Spool::open(&p, 1 << 20).unwrap();
        s.append(rec("a")).unwrap();
        s.append(rec("b")).unwrap();
        drop(s);
        let len = std::fs::metadata(&p).unwrap().len();
        OpenOptions::new().write(true).open(&p).unwrap().set_len(len - 3).unwrap();
        let mut s = Spool::open(&p, 1 << 20).unwrap();
        assert_eq!(s.pending().map(|r| r.key.clone()).collect::<Vec<_>>(), vec!["a"]);
        s.append(rec("c")).unwrap();
        drop(s);
        let s = Spool::open(&p, 1 << 20).unwrap();
        assert_eq!(s.pending().map(|r| r.key.clone()).collect::<Vec<_>>(), vec!["a", "c"]);
    }

    #[test]
    fn corruption_is_kept_aside_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("alerts.log");
        let mut s = Spool::open(&p, 1 << 20).unwrap();
        s.append(rec("a")).unwrap();
        s.append(rec("b")).unwrap();
        drop(s);
        let mut data = std::fs::read(&p).unwrap();
        let last = data.len() - 2;
        data[last] ^= 0xff;
        std::fs::write(&p, &data).unwrap();
        let s = Spool::open(&p, 1 << 20).unwrap();
        assert_eq!(s.len(), 1);
        assert!(dir.path().join("alerts.log.corrupt-0").exists());
    }

    #[test]
    fn full_spool_refuses_and_acks_make_room() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path().join("a.log"), 60).unwrap(); // 25 bytes a record
        s.append(rec("a")).unwrap();
        s.append(rec("b")).unwrap();
        assert!(matches!(s.append(rec("c")), Err(SpoolError::Full { .. })));
        assert!(s.fill_ratio() > 0.5);
        s.ack("a").unwrap();
        s.append(rec("c")).unwrap();
    }

    #[test]
    fn fully_acked_spool_compacts_to_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let mut s = Spool::open(&p, 1 << 20).unwrap();
        s.append(rec("a")).unwrap();
        s.ack("a").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        assert!(s.is_empty());
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }
}
