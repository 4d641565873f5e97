//! The on-disk spool: every alert is written here, and fsync'd, before it is offered to
//! a broker, and stays until the broker confirms it. After a crash or a restart the
//! pending records are replayed in the order they were accepted.
//!
//! Format: an append-only log of frames `[len: u32 LE][crc32: u32 LE][kind: u8][body]`;
//! kind 1 is a record (`body` = key length u16 LE, key, payload), kind 2 acknowledges the
//! record with that key.
//!
//! Accepted records are never deleted by recovery:
//! - A write that fails part-way is rolled back at once: the file is cut back to the
//!   last good offset and fsync'd, so a later append never lands after a partial frame.
//!   If even that fails, the spool is marked failed and refuses records until a retried
//!   roll-back succeeds.
//! - On open, bytes that hold no valid frame are copied to `<file>.corrupt-<n>` (0600,
//!   fsync'd, never deleted) and reading resumes at the next frame whose length and
//!   checksum verify. Only a frame that runs past the end of the file with nothing valid
//!   after it is a torn tail (a crash mid-write, never accepted) and is cut.
//! - When every record is acknowledged (or the log grows past twice its live size, or
//!   recovery set bytes aside) it is compacted: pending records are rewritten to a new
//!   file that atomically replaces the old one.
//!
//! The spool holds alerts and interrupt commands of live streams: its file is created
//! 0600 and its folder 0700.

use std::collections::{HashMap, VecDeque};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const KIND_RECORD: u8 = 1;
const KIND_ACK: u8 = 2;
const HEADER: usize = 8;
const MAX_KEY: usize = u16::MAX as usize;
const MAX_PAYLOAD: usize = 16 << 20;
/// The longest frame content a valid spool can hold; anything longer is not a frame.
const MAX_CONTENT: usize = 1 + 2 + MAX_KEY + MAX_PAYLOAD;
/// Share of `max_bytes` that only [`Spool::append_reserved`] may use: when alerts fill
/// the spool, an interrupt command (the message that stops abuse) still gets in.
pub const RESERVE_RATIO: f64 = 0.1;
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("spool {path} is full ({used} of {limit} bytes usable): not accepted until the broker drains it")]
    Full { path: PathBuf, used: u64, limit: u64 },
    #[error("spool record too large: {0} bytes")]
    TooLarge(usize),
    #[error("spool {path} failed ({reason}): a partial write could not be rolled back")]
    Failed { path: PathBuf, reason: String },
}

impl SpoolError {
    /// A short, bounded name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SpoolError::Io { .. } => "io",
            SpoolError::Full { .. } => "full",
            SpoolError::TooLarge(_) => "too_large",
            SpoolError::Failed { .. } => "failed",
        }
    }
}

/// One accepted record: a key (the alert's message id) and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub payload: Vec<u8>,
}

impl Record {
    fn frame_len(&self) -> u64 {
        (HEADER + 1 + 2 + self.key.len() + self.payload.len()) as u64
    }
}

pub struct Spool {
    path: PathBuf,
    file: File,
    max_bytes: u64,
    pending: VecDeque<Record>,
    /// Bytes of the log file, and of its frames that are still needed.
    file_bytes: u64,
    live_bytes: u64,
    /// Set when a failed write could not be rolled back; appends retry the roll-back.
    failed: Option<String>,
    /// `<spool>.reserve`: disk space allocated ahead for interrupt commands (the spool's
    /// reserve share of `max_bytes`). When the disk refuses an interrupt's write, it is
    /// given back to the disk and the write tried again; it is allocated again once the
    /// spool is empty. `None` when it could not be allocated (a full disk at start).
    ballast: Option<PathBuf>,
    /// Test hook: the next write stops after this many bytes and fails.
    #[cfg(test)]
    fail_next_write_after: Option<usize>,
}

/// CRC-32 (IEEE) table, built at compile time: recovery checksums candidate frames at
/// every offset of an unreadable stretch, so this is worth being fast.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC_TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
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

/// Creates `dir` (and missing parents) 0700. An existing folder is left as it is: it
/// may be shared (a spool path directly under `/var/lib`), and its owner chose its mode.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

impl Spool {
    /// Opens (or creates) the spool at `path`, recovering what it held.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64) -> Result<Spool, SpoolError> {
        let path = path.into();
        let io = |source| SpoolError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(io)?;
        }
        let mut file =
            OpenOptions::new().create(true).read(true).append(true).mode(FILE_MODE).open(&path).map_err(io)?;
        // A spool created by an older version (or by hand) is made private too.
        if file.metadata().map_err(io)?.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE)).map_err(io)?;
        }
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        let found = parse(&data);
        for range in &found.unreadable {
            let aside = set_aside(&path, &data[range.clone()]).map_err(io)?;
            crate::metrics::METRICS.spool_set_aside.inc();
            tracing::error!(
                spool = %path.display(),
                aside = %aside.display(),
                "spool bytes {}..{} hold no valid frame: set aside, reading resumed at the next valid frame",
                range.start,
                range.end
            );
        }
        if found.end < data.len() && found.unreadable.last().is_none_or(|r| r.end < data.len()) {
            // What looks like a torn write may be a complete, accepted record whose length
            // field was damaged: it is copied aside before the live file is cut.
            let tail = &data[found.end..];
            let aside = set_aside(&path, tail).map_err(io)?;
            crate::metrics::METRICS.spool_set_aside.inc();
            tracing::warn!(
                spool = %path.display(),
                aside = %aside.display(),
                message_id = tail_message_id(tail).as_deref().unwrap_or("unreadable"),
                "spool bytes {}..{} ({} bytes) at the end hold no complete frame (an interrupted write, or damage): copied aside, then cut",
                found.end,
                data.len(),
                tail.len()
            );
        }
        let live_bytes = found.records.iter().map(Record::frame_len).sum();
        let mut spool = Spool {
            path,
            file,
            max_bytes,
            pending: found.records.into(),
            file_bytes: data.len() as u64,
            live_bytes,
            failed: None,
            ballast: None,
            #[cfg(test)]
            fail_next_write_after: None,
        };
        spool.allocate_ballast();
        if !found.unreadable.is_empty() {
            // The unreadable bytes are safe aside; the live file keeps only valid frames.
            spool.compact()?;
        } else if found.end < data.len() {
            let io = |source| SpoolError::Io { path: spool.path.clone(), source };
            spool.file.set_len(found.end as u64).map_err(io)?;
            spool.file.sync_all().map_err(io)?;
            spool.file_bytes = found.end as u64;
        }
        spool.file.seek(SeekFrom::End(0)).map_err(|source| SpoolError::Io { path: spool.path.clone(), source })?;
        spool.maybe_compact()?;
        Ok(spool)
    }

    /// Records accepted and not yet acknowledged, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Record> {
        self.pending.iter()
    }

    /// The pending record with `key`, if any.
    pub fn get(&self, key: &str) -> Option<&Record> {
        self.pending.iter().find(|r| r.key == key)
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

    /// Why the spool refuses records (a write that could not be rolled back), if it does.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Writes a record and fsyncs it. Only after this returns is the record accepted.
    /// Refused once the spool is full up to its reserve ([`RESERVE_RATIO`]).
    pub fn append(&mut self, record: Record) -> Result<(), SpoolError> {
        let reserve = (self.max_bytes as f64 * RESERVE_RATIO) as u64;
        self.append_within(record, self.max_bytes.saturating_sub(reserve))
    }

    /// Like [`Spool::append`], and may use the reserve: for interrupt commands. When
    /// the disk refuses the write (full), the disk space reserved ahead for interrupts
    /// is given back and the write tried once more.
    pub fn append_reserved(&mut self, record: Record) -> Result<(), SpoolError> {
        match self.append_within(record.clone(), self.max_bytes) {
            Err(SpoolError::Io { .. }) if self.release_ballast() => self.append_within(record, self.max_bytes),
            other => other,
        }
    }

    fn ballast_path(&self) -> PathBuf {
        PathBuf::from(format!("{}.reserve", self.path.display()))
    }

    /// Allocates the interrupts' disk reserve (best effort: a full disk at start leaves
    /// the spool working without it, logged).
    fn allocate_ballast(&mut self) {
        if self.ballast.is_some() {
            return;
        }
        let path = self.ballast_path();
        let len = (self.max_bytes as f64 * RESERVE_RATIO) as u64;
        let made =
            OpenOptions::new().create(true).write(true).truncate(false).mode(FILE_MODE).open(&path).and_then(|f| {
                rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, len)?;
                f.sync_all()
            });
        match made {
            Ok(()) => self.ballast = Some(path),
            Err(e) => {
                tracing::warn!(spool = %self.path.display(), "cannot reserve {len} bytes of disk for interrupt commands: {e}");
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Gives the interrupts' disk reserve back; true when there was one.
    fn release_ballast(&mut self) -> bool {
        let Some(path) = self.ballast.take() else { return false };
        let _ = std::fs::remove_file(&path);
        crate::metrics::METRICS.spool_reserve_released.inc();
        tracing::error!(spool = %self.path.display(), "the disk refused an interrupt command: its reserved space is given back for it");
        true
    }

    fn append_within(&mut self, record: Record, limit: u64) -> Result<(), SpoolError> {
        if record.key.len() > MAX_KEY || record.payload.len() > MAX_PAYLOAD {
            return Err(SpoolError::TooLarge(record.key.len() + record.payload.len()));
        }
        if self.live_bytes + record.frame_len() > limit {
            return Err(SpoolError::Full { path: self.path.clone(), used: self.live_bytes, limit });
        }
        self.write_synced(&frame(KIND_RECORD, &record_body(&record)))?;
        self.live_bytes += record.frame_len();
        self.pending.push_back(record);
        Ok(())
    }

    /// Marks the record with `key` delivered. Unknown keys are ignored (already acked).
    /// The record leaves memory even when writing the acknowledgement fails: it was
    /// delivered, and the worst a lost ack costs is one duplicate after a restart
    /// (consumers deduplicate by id).
    pub fn ack(&mut self, key: &str) -> Result<(), SpoolError> {
        let Some(pos) = self.pending.iter().position(|r| r.key == key) else { return Ok(()) };
        let written = self.write_synced(&frame(KIND_ACK, key.as_bytes()));
        if let Some(r) = self.pending.remove(pos) {
            self.live_bytes -= r.frame_len();
        }
        if written.is_err() && self.pending.is_empty() {
            // A full disk refuses the ack, yet nothing is pending: emptying the file in
            // place needs no space and gives the disk back (compaction would need room
            // for a new file). Without this the delivered records kept the disk full and
            // every new message was refused after the broker came back.
            self.truncate_empty()?;
            self.allocate_ballast();
            return Ok(());
        }
        written?;
        self.maybe_compact()?;
        if self.pending.is_empty() {
            self.allocate_ballast();
        }
        Ok(())
    }

    /// Empties the file in place (nothing is pending), fsync'd.
    fn truncate_empty(&mut self) -> Result<(), SpoolError> {
        let io = |source| SpoolError::Io { path: self.path.clone(), source };
        self.file.set_len(0).and_then(|()| self.file.sync_all()).map_err(io)?;
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.file_bytes = 0;
        self.failed = None;
        Ok(())
    }

    /// Appends `bytes` and fsyncs. On failure the file is cut back to where it ended
    /// before, so no partial frame is ever followed by accepted ones.
    fn write_synced(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        if self.failed.is_some() {
            self.roll_back()?;
        }
        match self.write_and_sync(bytes) {
            Ok(()) => {
                self.file_bytes += bytes.len() as u64;
                Ok(())
            }
            Err(source) => {
                self.roll_back()?;
                Err(SpoolError::Io { path: self.path.clone(), source })
            }
        }
    }

    fn write_and_sync(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.fail_next_write_after.take() {
            self.file.write_all(&bytes[..n.min(bytes.len())])?;
            return Err(std::io::Error::other("injected failure part-way through a write"));
        }
        self.file.write_all(bytes)?;
        self.file.sync_data()
    }

    /// Cuts the file back to the end of its last good frame and makes that durable.
    fn roll_back(&mut self) -> Result<(), SpoolError> {
        match self.file.set_len(self.file_bytes).and_then(|()| self.file.sync_all()) {
            Ok(()) => {
                if self.failed.take().is_some() {
                    tracing::warn!(spool = %self.path.display(), "spool recovered: the partial write is rolled back");
                }
                Ok(())
            }
            Err(e) => {
                let reason = format!("cannot cut back to byte {}: {e}", self.file_bytes);
                if self.failed.is_none() {
                    tracing::error!(spool = %self.path.display(), "spool failed, refusing records: {reason}");
                }
                self.failed = Some(reason.clone());
                Err(SpoolError::Failed { path: self.path.clone(), reason })
            }
        }
    }

    /// Rewrites the log with only the pending records when it is mostly dead weight.
    fn maybe_compact(&mut self) -> Result<(), SpoolError> {
        let worth_it = (self.pending.is_empty() && self.file_bytes > 0)
            || (self.file_bytes > 64 * 1024 && self.file_bytes > 2 * self.live_bytes);
        if worth_it { self.compact() } else { Ok(()) }
    }

    fn compact(&mut self) -> Result<(), SpoolError> {
        let io = |source| SpoolError::Io { path: self.path.clone(), source };
        let tmp = self.path.with_extension("compacting");
        let mut out = Vec::with_capacity(self.live_bytes as usize);
        for r in &self.pending {
            out.extend_from_slice(&frame(KIND_RECORD, &record_body(r)));
        }
        // A leftover from a crash mid-compaction may carry another mode: start afresh.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        {
            let mut f = OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&tmp).map_err(io)?;
            f.write_all(&out).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        // From here on the new file is the spool, whatever else fails.
        self.file = OpenOptions::new().read(true).append(true).open(&self.path).map_err(io)?;
        self.file_bytes = out.len() as u64;
        self.failed = None;
        // Make the rename itself durable.
        sync_dir(&self.path).map_err(io)
    }
}

/// Copies `bytes` to a new `<path>.corrupt-<n>` (0600, fsync'd, never overwritten).
fn set_aside(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    for n in 0u32.. {
        let aside = PathBuf::from(format!("{}.corrupt-{n}", path.display()));
        match OpenOptions::new().write(true).create_new(true).mode(FILE_MODE).open(&aside) {
            Ok(mut f) => {
                f.write_all(bytes)?;
                f.sync_all()?;
                sync_dir(&aside)?;
                return Ok(aside);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free .corrupt-<n> name"))
}

/// One frame that verifies: its kind and body.
enum Frame<'a> {
    Record(Record),
    Ack(&'a [u8]),
}

/// The frame starting at `at`, if its length fits, its checksum verifies and its
/// content parses; and where the next frame starts.
fn frame_at(data: &[u8], at: usize) -> Option<(Frame<'_>, usize)> {
    let header = data.get(at..at + HEADER)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_CONTENT {
        return None;
    }
    let content = data.get(at + HEADER..at + HEADER + len)?;
    // The kind byte first: it rules out most offsets of a resync scan before the CRC.
    if !matches!(content[0], KIND_RECORD | KIND_ACK) || crc32(content) != crc {
        return None;
    }
    let (kind, body) = (content[0], &content[1..]);
    let parsed = match kind {
        KIND_RECORD => {
            let klen = u16::from_le_bytes([*body.first()?, *body.get(1)?]) as usize;
            let key = std::str::from_utf8(body.get(2..2 + klen)?).ok()?.to_string();
            Frame::Record(Record { key, payload: body[2 + klen..].to_vec() })
        }
        _ => Frame::Ack(body),
    };
    Some((parsed, at + HEADER + len))
}

/// What a spool file held.
struct Found {
    /// Pending records, oldest first.
    records: Vec<Record>,
    /// Stretches with no valid frame that are not a torn tail: to be set aside.
    unreadable: Vec<Range<usize>>,
    /// Where the last valid frame ends.
    end: usize,
}

fn parse(data: &[u8]) -> Found {
    let mut records: Vec<Option<Record>> = Vec::new();
    // Pending records per key, oldest first: an ack removes the oldest with its key.
    let mut by_key: HashMap<String, VecDeque<usize>> = HashMap::new();
    let mut unreadable = Vec::new();
    let (mut at, mut end) = (0usize, 0usize);
    while at < data.len() {
        if let Some((frame, next)) = frame_at(data, at) {
            match frame {
                Frame::Record(r) => {
                    by_key.entry(r.key.clone()).or_default().push_back(records.len());
                    records.push(Some(r));
                }
                Frame::Ack(key) => {
                    let key = String::from_utf8_lossy(key);
                    if let Some(i) = by_key.get_mut(key.as_ref()).and_then(VecDeque::pop_front) {
                        records[i] = None;
                    }
                }
            }
            (at, end) = (next, next);
            continue;
        }
        // No valid frame here: resync at the next offset where one verifies.
        match (at + 1..data.len()).find(|&p| frame_at(data, p).is_some()) {
            Some(next) => {
                unreadable.push(at..next);
                at = next;
            }
            None => {
                if !torn_tail(data, at) {
                    unreadable.push(at..data.len());
                }
                break;
            }
        }
    }
    Found { records: records.into_iter().flatten().collect(), unreadable, end }
}

/// The message id (record key) a frame at the start of `tail` names, when its header
/// and key can still be read (the length field itself may be what is damaged).
fn tail_message_id(tail: &[u8]) -> Option<String> {
    if tail.len() < HEADER + 3 || tail[HEADER] != KIND_RECORD {
        return None;
    }
    let klen = u16::from_le_bytes([tail[HEADER + 1], tail[HEADER + 2]]) as usize;
    let key = tail.get(HEADER + 3..HEADER + 3 + klen)?;
    std::str::from_utf8(key).ok().filter(|k| !k.chars().any(char::is_control)).map(str::to_string)
}

/// A frame cut short by the end of the file: its header is incomplete, or its length is
/// plausible and runs past the end. Nothing valid follows it (checked by the caller).
fn torn_tail(data: &[u8], at: usize) -> bool {
    let rest = &data[at..];
    if rest.len() < HEADER {
        return true;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    len > 0 && len <= MAX_CONTENT && HEADER + len > rest.len()
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

    fn frame_of(r: &Record) -> Vec<u8> {
        frame(KIND_RECORD, &record_body(r))
    }

    fn keys(s: &Spool) -> Vec<String> {
        s.pending().map(|r| r.key.clone()).collect()
    }

    #[test]
    fn a_partial_frame_running_past_the_end_does_not_cut_the_accepted_records_after_it() {
        // A big record whose write failed part-way, then accepted records appended after
        // it: the partial frame's length points past the end of the file.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let big = frame_of(&Record { key: "big".into(), payload: vec![b'x'; 4000] });
        let mut data = frame_of(&rec("a"));
        data.extend_from_slice(&big[..100]);
        data.extend_from_slice(&frame_of(&rec("c")));
        data.extend_from_slice(&frame(KIND_ACK, b"a"));
        data.extend_from_slice(&frame_of(&rec("d")));
        std::fs::write(&p, &data).unwrap();
        let s = Spool::open(&p, 1 << 20).unwrap();
        assert_eq!(keys(&s), ["c", "d"]);
        assert_eq!(
            std::fs::read(dir.path().join("a.log.corrupt-0")).unwrap(),
            &big[..100],
            "the partial bytes set aside"
        );
        drop(s);
        let s = Spool::open(&p, 1 << 20).unwrap();
        assert_eq!(keys(&s), ["c", "d"], "the recovered spool reopens cleanly");
        assert!(!dir.path().join("a.log.corrupt-1").exists(), "nothing more set aside on the second open");
    }

    #[test]
    fn a_partial_frame_whose_length_fits_is_set_aside_and_what_follows_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let b = frame_of(&rec("b"));
        let mut data = frame_of(&rec("a"));
        data.extend_from_slice(&b[..12]);
        data.extend_from_slice(&frame_of(&rec("c")));
        std::fs::write(&p, &data).unwrap();
        let s = Spool::open(&p, 1 << 20).unwrap();
        assert_eq!(keys(&s), ["a", "c"]);
        assert_eq!(std::fs::read(dir.path().join("a.log.corrupt-0")).unwrap(), &b[..12]);
    }

    #[test]
    fn a_bad_checksum_in_the_middle_is_set_aside_and_later_records_survive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let mut b = frame_of(&rec("b"));
        let last = b.len() - 2;
        b[last] ^= 0x5a;
        let mut data = frame_of(&rec("a"));
        data.extend_from_slice(&b);
        data.extend_from_slice(&frame_of(&rec("c")));
        data.extend_from_slice(&frame_of(&rec("d")));
        std::fs::write(&p, &data).unwrap();
        let s = Spool::open(&p, 1 << 20).unwrap();
        assert_eq!(keys(&s), ["a", "c", "d"]);
        assert_eq!(std::fs::read(dir.path().join("a.log.corrupt-0")).unwrap(), b, "exactly the bad frame, set aside");
    }

    #[test]
    fn a_torn_header_at_the_end_is_cut_and_nothing_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let a = frame_of(&rec("a"));
        let mut data = a.clone();
        data.extend_from_slice(&frame_of(&rec("b"))[..5]);
        std::fs::write(&p, &data).unwrap();
        let s = Spool::open(&p, 1 << 20).unwrap();
        assert_eq!(keys(&s), ["a"]);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), a.len() as u64);
        // Cut from the live file, but kept aside: a torn write and damage look alike.
        assert_eq!(std::fs::read(dir.path().join("a.log.corrupt-0")).unwrap(), &frame_of(&rec("b"))[..5]);
    }

    #[test]
    fn disk_space_reserved_ahead_takes_an_interrupt_the_full_disk_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let reserve = dir.path().join("a.log.reserve");
        let mut s = Spool::open(&p, 1 << 20).unwrap();
        assert_eq!(std::fs::metadata(&reserve).unwrap().len(), (1 << 20) / 10, "allocated at open");
        // The disk refuses the next write: an alert is refused, an interrupt gets in.
        s.fail_next_write_after = Some(0);
        assert!(matches!(s.append(rec("alert")), Err(SpoolError::Io { .. })));
        s.fail_next_write_after = Some(0);
        s.append_reserved(rec("interrupt")).unwrap();
        assert!(!reserve.exists(), "the reserve was given back for it");
        assert_eq!(keys(&s), ["interrupt"]);
        // Allocated again once everything pending is delivered.
        s.ack("interrupt").unwrap();
        assert!(reserve.exists());
    }

    #[test]
    fn when_the_last_ack_cannot_be_written_an_empty_spool_is_truncated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let mut s = Spool::open(&p, 1 << 20).unwrap();
        s.append(rec("a")).unwrap();
        s.append(rec("b")).unwrap();
        s.ack("a").unwrap();
        s.fail_next_write_after = Some(0); // the disk is full: the ack of "b" fails
        assert!(s.ack("b").is_ok(), "delivered, and the disk given back");
        assert!(s.is_empty());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0, "nothing delivered keeps the disk");
        s.append(rec("c")).unwrap();
        drop(s);
        assert_eq!(keys(&Spool::open(&p, 1 << 20).unwrap()), ["c"]);
    }

    #[test]
    fn a_complete_last_record_with_a_damaged_length_is_set_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let (a, mut b) = (frame_of(&rec("a")), frame_of(&rec("msg-b")));
        b[2] ^= 0x01; // one flipped bit in the length: it now runs past the end
        let mut data = a.clone();
        data.extend_from_slice(&b);
        std::fs::write(&p, &data).unwrap();
        let before = crate::metrics::METRICS.spool_set_aside.get();
        let s = Spool::open(&p, 1 << 20).unwrap();
        assert_eq!(keys(&s), ["a"]);
        assert_eq!(std::fs::read(dir.path().join("a.log.corrupt-0")).unwrap(), b, "the whole record, kept");
        assert!(crate::metrics::METRICS.spool_set_aside.get() > before, "counted");
        assert_eq!(tail_message_id(&b).as_deref(), Some("msg-b"), "the log names it");
    }

    #[test]
    fn spool_files_are_private_to_the_worker() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new/spool/a.log");
        let mut s = Spool::open(&p, 1 << 20).unwrap();
        s.append(rec("a")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&dir.path().join("new/spool")), 0o700);
        assert_eq!(mode(&dir.path().join("new")), 0o700);
        s.ack("a").unwrap(); // compaction rewrites the file
        assert_eq!(mode(&p), 0o600);
        drop(s);
        // A bad frame set aside is private too.
        let mut data = frame_of(&rec("x"));
        data.push(0xee);
        data.extend_from_slice(&frame_of(&rec("y")));
        std::fs::write(&p, &data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = Spool::open(&p, 1 << 20).unwrap();
        assert_eq!(keys(&s), ["x", "y"]);
        assert_eq!(mode(&p), 0o600, "an existing spool is made private on open");
        assert_eq!(mode(&dir.path().join("new/spool/a.log.corrupt-0")), 0o600);
    }

    #[test]
    fn a_write_that_fails_part_way_is_rolled_back_and_later_records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let mut s = Spool::open(&p, 1 << 20).unwrap();
        s.append(rec("a")).unwrap();
        s.fail_next_write_after = Some(11);
        assert!(matches!(s.append(rec("b")), Err(SpoolError::Io { .. })), "the failed record is not accepted");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), frame_of(&rec("a")).len() as u64, "partial bytes cut");
        s.append(rec("c")).unwrap();
        s.fail_next_write_after = Some(3); // an ack that fails part-way
        assert!(s.ack("a").is_err());
        s.append(rec("d")).unwrap();
        assert_eq!(keys(&s), ["c", "d"], "a delivered record leaves memory even when its ack write fails");
        drop(s);
        let s = Spool::open(&p, 1 << 20).unwrap();
        // The lost ack costs one duplicate ("a"), never a record.
        assert_eq!(keys(&s), ["a", "c", "d"]);
        assert!(!dir.path().join("a.log.corrupt-0").exists(), "nothing unreadable was left behind");
    }

    #[test]
    fn the_reserve_takes_interrupts_when_alerts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // 25-byte records; 250 bytes, 25 of them reserved.
        let mut s = Spool::open(dir.path().join("a.log"), 250).unwrap();
        for k in ["a", "b", "c", "d", "e", "f", "g", "h", "i"] {
            s.append(rec(k)).unwrap();
        }
        assert!(matches!(s.append(rec("j")), Err(SpoolError::Full { limit: 225, .. })));
        s.append_reserved(rec("k")).unwrap();
        assert!(matches!(s.append_reserved(rec("l")), Err(SpoolError::Full { limit: 250, .. })));
        assert_eq!(s.len(), 10);
        assert!(s.fill_ratio() >= 1.0 - f64::EPSILON);
    }

    #[test]
    fn garbage_spool_sets_everything_aside_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let junk: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(&p, &junk).unwrap();
        let mut s = Spool::open(&p, 1 << 20).unwrap();
        assert!(s.is_empty());
        assert_eq!(std::fs::read(dir.path().join("a.log.corrupt-0")).unwrap(), junk);
        s.append(rec("a")).unwrap();
        drop(s);
        assert_eq!(keys(&Spool::open(&p, 1 << 20).unwrap()), ["a"]);
    }
}
