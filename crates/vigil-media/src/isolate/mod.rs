//! Decoding untrusted media in child processes.
//!
//! GStreamer's demuxers and decoders are C code fed by strangers. Each stream decodes in
//! its own child process (`vigil media-child`), confined by rlimits, that hands sampled
//! frames (already at analysis size) to the worker over a pipe. A crash or hang costs
//! that stream a restart and a reported gap; the worker and the other streams go on.
//!
//! - [`protocol`]: the framed messages on the pipes, checked as hostile input.
//! - [`child`]: what runs in the child: confinement, the pipeline, sampling gates.
//! - [`supervisor`]: the worker's side: start, feed, watch, restart with backoff.
//! - [`jail`]: the child's default-deny seccomp policy, per source kind.
//! - `feed`: the pushed-FLV queue to a child, bounded in tags and bytes.
//! - `webrtc`: WHIP publishes answered by `webrtcbin` inside the child;
//!   `feedback`: what the answer gives the publisher (transport-cc, RTCP pace, PLI).
//! - [`candidates`]: which of a WHIP offer's ICE candidates the worker may contact.

pub mod candidates;
pub mod child;
mod feed;
mod feedback;
pub mod jail;
pub mod protocol;
pub mod supervisor;
mod webrtc;

pub use child::{ChildSource, ChildSpec};
pub use protocol::{ChildEvent, Command, WireFrame};
pub use supervisor::{AnswerReceiver, FlvTag, Launcher, NoAnswer, StreamHandle};
