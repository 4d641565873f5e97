//! The worker's side of a stream: starts its decode child, feeds it (pushed FLV and
//! sampling commands), reads its frames into the stream's [`StreamQueue`], and watches
//! it. A child that crashes, hangs, stalls or uses too much CPU is killed and started
//! again with capped exponential backoff; the lost stretch is reported as a gap (never
//! as clean). A refusal (over a limit) ends the stream with its reason.

use super::child::{ChildSource, ChildSpec};
use super::feed::{Feed, FeedTx, Refused};
use super::protocol::{ChildEvent, Command, FromChild, ToChild};
use crate::SampleConfig;
use crate::events::{self, ChildFailure, Restart, StreamFailure};
use crate::metrics::METRICS;
use crate::queue::{StreamOutput, StreamQueue};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_core::{Frame, StreamId};

/// How to start a decode child: a program and the arguments before the spec (the worker
/// uses its own executable: `vigil media-child SPEC`).
#[derive(Debug, Clone)]
pub struct Launcher {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Launcher {
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(Self { program: std::env::current_exe()?, args: vec!["media-child".into()] })
    }
}

/// One FLV tag of a pushed stream (header of 11 bytes, body, previous-tag-size).
#[derive(Debug, Clone)]
pub struct FlvTag {
    pub keyframe: bool,
    /// Codec configuration (AVC sequence header): replayed to every new child.
    pub config: bool,
    pub bytes: Vec<u8>,
}

/// A running stream, as the worker holds it.
pub struct StreamHandle {
    pub id: StreamId,
    pub queue: Arc<StreamQueue>,
    feed: Mutex<Option<FeedTx>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Shared {
    stop: AtomicBool,
    dense: AtomicBool,
    /// Pushed streams: tags dropped because the child could not keep up; the writer then
    /// skips to the next keyframe so the decoder never sees a broken reference chain.
    skip_to_keyframe: AtomicBool,
    fed_bytes: AtomicU64,
    restarts: AtomicU64,
    /// CPU this stream's decode children have used so far, all of them (ms; the living
    /// one's as of the supervisor's last tick).
    decoder_cpu_ms: AtomicU64,
    child_stdin: Mutex<Option<ChildStdin>>,
    /// The pushed stream is over (the publisher left): no restart after this.
    push_ended: AtomicBool,
    /// Why the worker ended the stream (over a limit, protocol error), if it did.
    end_reason: Mutex<Option<String>>,
    /// WHIP: the publisher's offer, for the (only) child, and where its answer goes.
    offer: Mutex<Option<String>>,
    answer: Mutex<Option<SyncSender<Result<String, NoAnswer>>>>,
    /// The supervisor finished (the stream ended); cheap to read, unlike the join handle.
    ended: AtomicBool,
    /// Why it ended, once it has (for the publisher's connection to say).
    ended_because: Mutex<Option<String>>,
    /// The stream is on its way out: stopped, or its publisher finished. Its last samples
    /// may still be in analysis, but no more media will come.
    leaving: AtomicBool,
}

/// Why a WHIP offer got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoAnswer {
    /// The offer itself was refused (unparsable, no usable video, webrtcbin said no):
    /// the publisher's mistake, with the reason to show it.
    BadOffer(String),
    /// The worker failed (the child could not start, crashed, or timed out).
    Failed(String),
}

/// The answer to a WHIP offer: the SDP, or why there is none.
pub type AnswerReceiver = Receiver<Result<String, NoAnswer>>;

/// Tags a pushed stream may have queued for its decoder; bytes are bounded too, by
/// `[media.limits].max_feed_bytes` (see [`super::feed`]).
const FEED_TAGS: usize = 512;
const TICK: Duration = Duration::from_millis(250);
const STDERR_LINES_PER_CHILD: usize = 200;
const FILE_RETRIES: u32 = 2;

impl StreamHandle {
    /// Starts supervising a stream. Pulled sources name a URI; pushed ones are fed with
    /// [`StreamHandle::push`].
    pub fn start(id: StreamId, source: ChildSource, media: SampleConfig, launcher: Launcher) -> StreamHandle {
        Self::start_with(id, source, media, launcher, None)
    }

    /// Starts a WHIP publish: its child answers `offer`; the answer (or why there is
    /// none) arrives on the returned channel. A WebRTC session cannot be resumed, so
    /// this stream's child is never restarted: a crash ends the stream with its reason.
    pub fn start_whip(
        id: StreamId,
        stun_server: Option<String>,
        private_candidates: bool,
        offer: String,
        media: SampleConfig,
        launcher: Launcher,
    ) -> (StreamHandle, AnswerReceiver) {
        let (tx, rx) = sync_channel(1);
        let source = ChildSource::Whip { stun_server, private_candidates };
        (Self::start_with(id, source, media, launcher, Some((offer, tx))), rx)
    }

    fn start_with(
        id: StreamId,
        source: ChildSource,
        media: SampleConfig,
        launcher: Launcher,
        whip: Option<(String, SyncSender<Result<String, NoAnswer>>)>,
    ) -> StreamHandle {
        let (offer, answer) = whip.unzip();
        let queue = Arc::new(StreamQueue::new(media.queue_frames as usize));
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            dense: AtomicBool::new(false),
            skip_to_keyframe: AtomicBool::new(false),
            fed_bytes: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            decoder_cpu_ms: AtomicU64::new(0),
            child_stdin: Mutex::new(None),
            end_reason: Mutex::new(None),
            push_ended: AtomicBool::new(false),
            offer: Mutex::new(offer),
            answer: Mutex::new(answer),
            ended: AtomicBool::new(false),
            ended_because: Mutex::new(None),
            leaving: AtomicBool::new(false),
        });
        let feed = if source == ChildSource::PushedFlv {
            let (tx, rx) = super::feed::feed(FEED_TAGS, media.limits.max_feed_bytes as usize);
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("vigil-feed-{id}"))
                .spawn(move || feed_writer(rx, &shared))
                .ok()
                .map(|_| tx)
        } else {
            None
        };
        let mut sup = Supervisor {
            id: id.clone(),
            spec: ChildSpec { source, media },
            launcher,
            queue: queue.clone(),
            shared: shared.clone(),
            feed_ended: false,
            offer_refused: false,
            ended_children_cpu_ms: 0,
        };
        let thread = std::thread::Builder::new().name(format!("vigil-stream-{id}")).spawn(move || sup.run()).ok();
        METRICS.streams_active.inc();
        StreamHandle { id, queue, feed: Mutex::new(feed), shared, thread: Mutex::new(thread) }
    }

    /// Hands one FLV tag of a pushed stream to the decoder; never blocks. When the child
    /// is behind (the feed is over its tag or byte budget), the tag is dropped and
    /// counted, and so is everything up to the next keyframe.
    pub fn push(&self, tag: FlvTag) {
        let feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        let Some(feed) = feed.as_ref() else { return };
        let len = tag.bytes.len() as u64;
        self.shared.fed_bytes.fetch_add(len, Relaxed);
        match feed.try_push(tag) {
            Ok(()) => {}
            Err(Refused::Full) => {
                METRICS.tags_dropped.inc();
                METRICS.tag_bytes_dropped.inc_by(len);
                self.shared.skip_to_keyframe.store(true, Relaxed);
            }
            Err(Refused::Closed) => {}
        }
    }

    /// The publisher finished (`reason` when it was cut off): the child decodes what it
    /// has and ends the stream.
    pub fn end_of_push(&self, reason: Option<String>) {
        self.shared.leaving.store(true, Relaxed);
        if reason.is_some() {
            *self.shared.end_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
        }
        // Never blocks the connection thread, even when the feed is full.
        if let Some(feed) = self.feed.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            feed.end();
        }
    }

    pub fn is_dense(&self) -> bool {
        self.shared.dense.load(Relaxed)
    }

    /// Adaptive sampling: dense decoding on or off (sent to the current child and to
    /// every child started after it).
    pub fn set_dense(&self, on: bool) {
        if self.shared.dense.swap(on, Relaxed) != on {
            send_to_child(&self.shared, &ToChild::Command(Command::Dense { on }));
        }
    }

    /// Whether the stream is still supervised (false once it ended, for any reason).
    pub fn is_running(&self) -> bool {
        !self.shared.ended.load(Relaxed)
    }

    /// Whether the stream is over or on its way out (stopped, or its publisher finished):
    /// a publisher reconnecting with its key starts a new session rather than a second one.
    pub fn is_leaving(&self) -> bool {
        self.shared.leaving.load(Relaxed) || !self.is_running()
    }

    /// Why the stream ended, once it has.
    pub fn ended_because(&self) -> Option<String> {
        if self.is_running() {
            return None;
        }
        let why = self.shared.ended_because.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(why.unwrap_or_else(|| "the stream ended".into()))
    }

    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Relaxed)
    }

    /// CPU seconds this stream's decode children have used so far (restarts included).
    pub fn decoder_cpu_secs(&self) -> f64 {
        self.shared.decoder_cpu_ms.load(Relaxed) as f64 / 1000.0
    }

    /// Stops the stream for `reason` (e.g. the WHIP publisher's DELETE), which its
    /// `Ended` notice carries.
    pub fn stop_because(&self, reason: String) {
        self.shared.end_reason.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(reason);
        self.stop();
    }

    /// Stops the stream: the child is killed, the queue closed after an `Ended`.
    pub fn stop(&self) {
        self.shared.leaving.store(true, Relaxed);
        self.shared.stop.store(true, Relaxed);
        self.feed.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.stop();
        METRICS.streams_active.dec();
    }
}

/// What a decode child may inherit from the worker's environment: what GStreamer and
/// the C library need to find plugins, locales and time zones, and logging. Everything
/// else (secrets named by the config, Kafka credentials, the admin token) stays behind.
fn child_may_inherit(key: &str) -> bool {
    const EXACT: [&str; 19] = [
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "TMPDIR",
        "GST_DEBUG",
        "VIGIL_LOG",
        "RUST_LOG",
        "RUST_BACKTRACE",
        // GPU decoders: where their libraries are, and the devices this worker was given.
        "LD_LIBRARY_PATH",
        "CUDA_VISIBLE_DEVICES",
        // Pulled sources behind a proxy or signed by a private CA.
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    ];
    const PREFIXES: [&str; 6] = ["GST_PLUGIN", "GST_REGISTRY", "LC_", "XDG_", "NVIDIA_", "GIO_EXTRA_MODULES"];
    EXACT.contains(&key) || PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Writes a pushed stream's bytes, split into pipe-sized messages.
fn send_media(shared: &Shared, bytes: &[u8]) -> bool {
    let mut stdin = shared.child_stdin.lock().unwrap_or_else(|p| p.into_inner());
    let ok = stdin.as_mut().is_some_and(|s| super::protocol::write_media(s, bytes).and_then(|()| s.flush()).is_ok());
    if !ok {
        stdin.take();
    }
    ok
}

fn send_to_child(shared: &Shared, msg: &ToChild) -> bool {
    let mut stdin = shared.child_stdin.lock().unwrap_or_else(|p| p.into_inner());
    let ok = stdin.as_mut().is_some_and(|s| msg.write(s).and_then(|()| s.flush()).is_ok());
    if !ok {
        stdin.take();
    }
    ok
}

/// Pushed streams: writes tags to whichever child is current. A new child first gets
/// the FLV header and the codec configuration, then waits for a keyframe.
fn feed_writer(rx: Receiver<Feed>, shared: &Shared) {
    let mut config: Option<FlvTag> = None;
    let mut fed_child: Option<u64> = None;
    for feed in rx {
        // `queued` holds the tag's bytes in the feed's budget until this turn is over.
        let queued = match feed {
            Feed::Tag(t) => t,
            Feed::End => {
                shared.push_ended.store(true, Relaxed);
                send_to_child(shared, &ToChild::MediaEnd);
                continue;
            }
        };
        let tag = &queued.tag;
        if tag.config {
            config = Some(tag.clone());
        }
        let generation = shared.restarts.load(Relaxed);
        if fed_child != Some(generation) {
            let mut head = crate::flv::file_header().to_vec();
            if let Some(c) = config.as_ref().filter(|_| !tag.config) {
                head.extend_from_slice(&c.bytes);
            }
            if !send_media(shared, &head) {
                continue; // no child right now (restarting); try again with the next tag
            }
            fed_child = Some(generation);
            shared.skip_to_keyframe.store(!tag.keyframe, Relaxed);
        }
        if shared.skip_to_keyframe.load(Relaxed) {
            if !tag.keyframe && !tag.config {
                continue;
            }
            shared.skip_to_keyframe.store(false, Relaxed);
        }
        send_media(shared, &tag.bytes);
    }
}

struct Supervisor {
    id: StreamId,
    spec: ChildSpec,
    launcher: Launcher,
    queue: Arc<StreamQueue>,
    shared: Arc<Shared>,
    /// The child ended because the pushed stream did (not a failure).
    feed_ended: bool,
    /// WHIP: the child refused the publisher's offer.
    offer_refused: bool,
    /// CPU of this stream's children that have ended (ms).
    ended_children_cpu_ms: u64,
}

/// How one child's life ended.
enum Exit {
    /// The source ended normally.
    Ended,
    /// Over a limit or unusable: the stream ends, no retry.
    Refused(String),
    /// Crashed, hung, stalled or failed: retry.
    Failed {
        kind: StreamFailure,
        reason: String,
    },
    Stopped,
}

enum Msg {
    Event(ChildEvent),
    Frame,
    Closed(Option<String>),
}

impl Supervisor {
    fn is_file(&self) -> bool {
        matches!(&self.spec.source, ChildSource::Uri(u) if u.starts_with("file:"))
    }

    fn is_whip(&self) -> bool {
        matches!(self.spec.source, ChildSource::Whip { .. })
    }

    /// Why the stream stopped when the worker stopped it.
    fn stop_reason(&self) -> Option<String> {
        let given = self.shared.end_reason.lock().unwrap_or_else(|p| p.into_inner()).take();
        given.or_else(|| Some("the worker stopped the stream".into()))
    }

    fn run(&mut self) {
        let iso = self.spec.media.isolation.clone();
        let mut failures = 0u32;
        let mut last_good = Instant::now();
        let end_reason = loop {
            if self.shared.stop.load(Relaxed) {
                break self.stop_reason();
            }
            let (exit, delivered) = self.run_child();
            match exit {
                Exit::Stopped => break self.stop_reason(),
                Exit::Ended if self.is_file() || self.is_whip() || self.spec.source == ChildSource::PushedFlv => {
                    break self.shared.end_reason.lock().unwrap_or_else(|p| p.into_inner()).take();
                }
                Exit::Refused(reason) => {
                    events::stream_failed(StreamFailure::Refused);
                    break Some(reason);
                }
                Exit::Ended => {
                    // A live pulled source ended: it may come back (a publisher restarting).
                    self.queue.push(StreamOutput::Gap { reason: "the source ended; reconnecting".into() });
                    events::decoder_restarted(Restart::SourceEnded);
                }
                Exit::Failed { kind, reason } if self.is_whip() => {
                    // A WebRTC session cannot be resumed: the publisher must come again.
                    events::stream_failed(kind);
                    let kind = kind.as_str();
                    let answered = self.shared.answer.lock().unwrap_or_else(|p| p.into_inner()).is_none();
                    if answered {
                        tracing::warn!(stream = %self.id, kind, "decoder: {reason}; the session ends");
                        self.queue.push(StreamOutput::Gap { reason: format!("{kind}: {reason}") });
                    }
                    break Some(format!("{kind}: {reason}"));
                }
                Exit::Failed { kind, reason } => {
                    events::decoder_restarted(Restart::Failed(kind));
                    let kind = kind.as_str();
                    tracing::warn!(stream = %self.id, kind, "decoder: {reason}; restarting");
                    self.queue.push(StreamOutput::Gap { reason: format!("{kind}: {reason}") });
                }
            }
            if delivered {
                failures = 0;
                last_good = Instant::now();
            }
            if self.spec.source == ChildSource::PushedFlv && (self.feed_ended || self.shared.push_ended.load(Relaxed)) {
                break self.shared.end_reason.lock().unwrap_or_else(|p| p.into_inner()).take();
            }
            // A file fails the same way every time: a few tries, then the stream ends.
            if self.is_file() && failures >= FILE_RETRIES {
                break Some(format!("the decoder failed {} times in a row; giving up", failures + 1));
            }
            if last_good.elapsed() > Duration::from_secs(iso.give_up_after_secs) {
                break Some(format!("no frame for {} s; the source is gone", iso.give_up_after_secs));
            }
            failures += 1;
            self.shared.restarts.fetch_add(1, Relaxed);
            let backoff =
                iso.restart_backoff_ms.saturating_mul(1 << (failures - 1).min(16)).min(iso.restart_backoff_max_ms);
            let until = Instant::now() + Duration::from_millis(backoff);
            while Instant::now() < until && !self.shared.stop.load(Relaxed) {
                std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
            }
        };
        if let Some(tx) = self.shared.answer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let reason = end_reason.clone().unwrap_or_else(|| "the decoder ended".into());
            let _ =
                tx.send(Err(if self.offer_refused { NoAnswer::BadOffer(reason) } else { NoAnswer::Failed(reason) }));
        }
        *self.shared.ended_because.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(end_reason.clone().unwrap_or_else(|| "the source ended".into()));
        self.shared.ended.store(true, Relaxed);
        self.queue.push(StreamOutput::Ended { reason: end_reason });
        self.queue.close();
    }

    /// Starts a child with a cleared environment (the worker's holds the stream-key
    /// secret and the Kafka password) and hands it its spec as the first message on its
    /// stdin, never on its command line.
    fn spawn(&self) -> std::io::Result<Child> {
        let spec = serde_json::to_string(&self.spec).map_err(std::io::Error::other)?;
        let mut cmd = std::process::Command::new(&self.launcher.program);
        cmd.args(&self.launcher.args).env_clear();
        for (key, value) in std::env::vars_os() {
            if key.to_str().is_some_and(child_may_inherit) {
                cmd.env(key, value);
            }
        }
        let mut child = cmd
            // Few malloc arenas: each reserves 64 MiB of address space, and the child
            // runs under an address-space limit.
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let sent = child.stdin.as_mut().map(|stdin| ToChild::Spec(spec).write(stdin).and_then(|()| stdin.flush()));
        if let Some(Err(e)) = sent {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(child)
    }

    /// Runs one child to its end. Returns how it ended and whether it delivered frames.
    fn run_child(&mut self) -> (Exit, bool) {
        let mut child = match self.spawn() {
            Ok(c) => c,
            Err(e) => return (Exit::Failed { kind: StreamFailure::Spawn, reason: e.to_string() }, false),
        };
        let pid = child.id();
        let (tx, rx) = sync_channel::<Msg>(64);
        if let Some(stdout) = child.stdout.take() {
            let (queue, id, max_side, tx) = (self.queue.clone(), self.id.clone(), self.spec.media.analysis_max_px, tx);
            std::thread::spawn(move || read_child(stdout, &queue, &id, max_side, &tx));
        }
        if let Some(stderr) = child.stderr.take() {
            let id = self.id.clone();
            std::thread::spawn(move || log_child_stderr(stderr, &id));
        }
        *self.shared.child_stdin.lock().unwrap_or_else(|p| p.into_inner()) = child.stdin.take();
        if let Some(offer) = self.shared.offer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            send_to_child(&self.shared, &ToChild::Offer(offer));
        }
        if self.shared.dense.load(Relaxed) {
            send_to_child(&self.shared, &ToChild::Command(Command::Dense { on: true }));
        }

        let iso = &self.spec.media.isolation;
        let watchdog = Duration::from_secs(iso.watchdog_secs);
        let stall = Duration::from_secs(self.spec.media.stall_timeout_secs);
        let (mut last_beat, mut last_frame) = (Instant::now(), Instant::now());
        let mut fed_at_last_frame = self.shared.fed_bytes.load(Relaxed);
        let mut cpu = CpuWatch::new(pid);
        let mut delivered = false;
        let mut reported: Option<Exit> = None;
        let verdict = loop {
            if self.shared.stop.load(Relaxed) {
                break Exit::Stopped;
            }
            match rx.recv_timeout(TICK) {
                Ok(Msg::Frame) => {
                    (last_frame, delivered) = (Instant::now(), true);
                    fed_at_last_frame = self.shared.fed_bytes.load(Relaxed);
                }
                Ok(Msg::Event(ChildEvent::Heartbeat { .. })) => last_beat = Instant::now(),
                Ok(Msg::Event(ChildEvent::Started { width, height, fps, decoder })) => {
                    tracing::info!(stream = %self.id, width, height, ?fps, %decoder, "decoding");
                    self.queue.push(StreamOutput::Started { width, height, fps, decoder });
                }
                Ok(Msg::Event(ChildEvent::Ended)) => reported = Some(Exit::Ended),
                Ok(Msg::Event(ChildEvent::Answer { sdp, dropped_candidates })) => {
                    super::candidates::record(super::candidates::Pass::Decoder, &self.id.0, &dropped_candidates);
                    if let Some(tx) = self.shared.answer.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        let _ = tx.send(Ok(sdp));
                    }
                }
                Ok(Msg::Event(ChildEvent::Failed { kind, reason })) => {
                    self.offer_refused |= kind == ChildFailure::Offer;
                    // A child that could not read the worker's messages (`protocol`) or
                    // write its own (`pipe`): its input is broken, not over. A gap, and a
                    // new child.
                    reported = Some(match kind.restart() {
                        None => Exit::Refused(reason),
                        Some(kind) => Exit::Failed { kind, reason },
                    });
                }
                Ok(Msg::Closed(err)) => {
                    break match (reported.take(), err) {
                        (Some(exit), _) => exit,
                        (None, Some(e)) => Exit::Failed { kind: StreamFailure::Protocol, reason: e },
                        (None, None) => Exit::Failed { kind: StreamFailure::Crash, reason: describe_exit(&mut child) },
                    };
                }
                Err(RecvTimeoutError::Disconnected) => {
                    break Exit::Failed { kind: StreamFailure::Crash, reason: describe_exit(&mut child) };
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            // While a WHIP child negotiates (up to its own 10 s deadline) it sends no
            // heartbeat; the HTTP side bounds that wait and stops the stream after it.
            if self.shared.answer.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
                (last_beat, last_frame) = (Instant::now(), Instant::now());
                continue;
            }
            if last_beat.elapsed() > watchdog {
                break Exit::Failed {
                    kind: StreamFailure::Hung,
                    reason: format!("no heartbeat for {} s", watchdog.as_secs()),
                };
            }
            // Pulled sources must produce; pushed ones only while they are being fed.
            let starved =
                self.spec.source == ChildSource::PushedFlv && self.shared.fed_bytes.load(Relaxed) == fed_at_last_frame;
            if starved && self.shared.push_ended.load(Relaxed) && last_frame.elapsed() > Duration::from_secs(5) {
                // The publisher left and the decoder has had its chance to finish.
                break Exit::Ended;
            } else if starved && !self.shared.push_ended.load(Relaxed) {
                last_frame = Instant::now();
            } else if last_frame.elapsed() > stall {
                break Exit::Failed {
                    kind: StreamFailure::Stalled,
                    reason: format!("no frame for {} s", stall.as_secs()),
                };
            }
            let over = cpu.over_limit(iso.max_cpu_cores, watchdog);
            self.shared.decoder_cpu_ms.store(self.ended_children_cpu_ms + cpu.last_ms(), Relaxed);
            if let Some(cores) = over {
                break Exit::Failed {
                    kind: StreamFailure::Cpu,
                    reason: format!("used {cores:.2} cores, the limit is {}", iso.max_cpu_cores),
                };
            }
        };
        // Kill first: a child that stopped reading (hung, SIGSTOPped) leaves the feed
        // writer blocked in a write while it holds the stdin lock, and that write only
        // returns once the child is gone.
        let _ = child.kill();
        self.shared.child_stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
        let _ = child.wait();
        self.ended_children_cpu_ms += cpu.last_ms();
        if matches!(verdict, Exit::Ended) && self.spec.source == ChildSource::PushedFlv {
            self.feed_ended = true;
        }
        (verdict, delivered)
    }
}

fn describe_exit(child: &mut Child) -> String {
    use std::os::unix::process::ExitStatusExt;
    // The pipe closed; give the process a moment to be reaped.
    for _ in 0..20 {
        if let Ok(Some(status)) = child.try_wait() {
            return match (status.code(), status.signal()) {
                (_, Some(sig)) => format!("the decoder died with signal {sig}"),
                (Some(code), _) => format!("the decoder exited with code {code} without saying why"),
                _ => "the decoder exited".into(),
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    "the decoder closed its output".into()
}

fn read_child(
    stdout: std::process::ChildStdout,
    queue: &StreamQueue,
    id: &StreamId,
    max_side: u32,
    tx: &SyncSender<Msg>,
) {
    let mut r = BufReader::with_capacity(1 << 20, stdout);
    loop {
        match FromChild::read(&mut r, max_side) {
            Ok(Some(FromChild::Frame(f))) => {
                METRICS.frames_sampled.inc();
                queue.push(StreamOutput::Frame(Frame {
                    stream: id.clone(),
                    pts_ms: f.pts_ms,
                    keyframe: f.keyframe,
                    width: f.width,
                    height: f.height,
                    rgb: f.rgb,
                    arrived_unix_ms: f.arrived_unix_ms,
                }));
                // Only a notice; if the supervisor is busy it learns from the next one.
                let _ = tx.try_send(Msg::Frame);
            }
            Ok(Some(FromChild::Event(e))) => {
                if tx.send(Msg::Event(e)).is_err() {
                    return;
                }
            }
            Ok(None) => {
                let _ = tx.send(Msg::Closed(None));
                return;
            }
            Err(e) => {
                let _ = tx.send(Msg::Closed(Some(e.to_string())));
                return;
            }
        }
    }
}

/// GStreamer's warnings from the child, into the worker's log (bounded: a hostile
/// stream can make a decoder complain without end).
fn log_child_stderr(stderr: std::process::ChildStderr, id: &StreamId) {
    let mut r = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut logged = 0;
    loop {
        line.clear();
        match r.by_ref().take(4096).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if logged < STDERR_LINES_PER_CHILD => {
                let text = String::from_utf8_lossy(&line);
                let text: String = text.trim().chars().take(300).collect();
                if !text.is_empty() {
                    logged += 1;
                    tracing::warn!(stream = %id, "decoder: {text}");
                }
            }
            Ok(_) => {}
        }
    }
}

/// CPU time of a child from /proc, averaged over the watchdog window.
struct CpuWatch {
    stat: PathBuf,
    ticks_per_sec: f64,
    window_start: Instant,
    cpu_at_start: Option<f64>,
    /// The child's CPU seconds at the last reading.
    last: f64,
}

impl CpuWatch {
    fn new(pid: u32) -> Self {
        Self {
            stat: PathBuf::from(format!("/proc/{pid}/stat")),
            ticks_per_sec: rustix::param::clock_ticks_per_second() as f64,
            window_start: Instant::now(),
            cpu_at_start: None,
            last: 0.0,
        }
    }

    fn cpu_secs(&self) -> Option<f64> {
        let s = std::fs::read_to_string(&self.stat).ok()?;
        // Fields after the command name (which may contain spaces) start at ')'.
        let rest = s.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
        Some((utime + stime) / self.ticks_per_sec)
    }

    fn last_ms(&self) -> u64 {
        (self.last * 1000.0) as u64
    }

    /// Cores used over the last full window, when over `limit`.
    fn over_limit(&mut self, limit: f64, window: Duration) -> Option<f64> {
        let now = self.cpu_secs()?;
        self.last = now;
        let start = *self.cpu_at_start.get_or_insert(now);
        let elapsed = self.window_start.elapsed();
        if elapsed < window {
            return None;
        }
        self.window_start = Instant::now();
        self.cpu_at_start = Some(now);
        let cores = (now - start) / elapsed.as_secs_f64();
        (cores > limit).then_some(cores)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_in_the_environment_stay_with_the_worker() {
        for kept in ["PATH", "HOME", "GST_PLUGIN_PATH", "GST_REGISTRY_1_0", "LC_ALL", "XDG_CACHE_HOME", "VIGIL_LOG"] {
            assert!(super::child_may_inherit(kept), "{kept}");
        }
        for secret in [
            "VIGIL_STREAM_KEY_SECRET",
            "VIGIL_ADMIN_TOKEN",
            "KAFKA_PASSWORD",
            "VIGIL__SINK__KAFKA__SASL_PASSWORD",
            "AWS_SECRET_ACCESS_KEY",
            "LD_PRELOAD",
        ] {
            assert!(!super::child_may_inherit(secret), "{secret}");
        }
    }
}
