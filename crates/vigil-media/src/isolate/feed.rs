//! The pushed-FLV feed between an RTMP connection thread and the writer thread that
//! copies tags into the stream's decode child: bounded in tags *and in bytes*.
//!
//! A tag can be up to 8 MiB (the chunk guard's limit), so a count bound alone lets a
//! publisher park gigabytes in the worker whenever its decoder stops reading (a stalled
//! or hostile child, a decoder slower than the stream). The byte budget counts a tag
//! from the moment it is queued until the writer has finished with it — the tag being
//! written into a blocked pipe included — so the worker holds at most `max_bytes` (plus
//! the codec configuration the writer keeps for the next child) per pushed stream.
//!
//! The connection thread never waits: a tag that does not fit is refused and the caller
//! drops it (counted). The end of the stream always fits: one slot is kept for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use super::supervisor::FlvTag;

/// What goes to the writer.
pub(crate) enum Feed {
    Tag(Queued),
    End,
}

/// A queued tag; its bytes leave the budget when it is dropped (after writing).
pub(crate) struct Queued {
    pub tag: FlvTag,
    budget: Arc<Budget>,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.budget.bytes.fetch_sub(self.tag.bytes.len(), Relaxed);
        self.budget.tags.fetch_sub(1, Relaxed);
    }
}

struct Budget {
    bytes: AtomicUsize,
    tags: AtomicUsize,
    max_bytes: usize,
    max_tags: usize,
    ended: AtomicBool,
}

/// Why a tag was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Over the byte or tag budget: the decoder is behind.
    Full,
    /// The writer is gone (the stream is over).
    Closed,
}

/// The connection's end of the feed.
pub(crate) struct FeedTx {
    tx: SyncSender<Feed>,
    budget: Arc<Budget>,
}

/// A feed of at most `max_tags` tags and `max_bytes` bytes.
pub(crate) fn feed(max_tags: usize, max_bytes: usize) -> (FeedTx, Receiver<Feed>) {
    let max_tags = max_tags.max(1);
    // One slot more than tags may take: the end always has room.
    let (tx, rx) = sync_channel(max_tags + 1);
    let budget = Arc::new(Budget {
        bytes: AtomicUsize::new(0),
        tags: AtomicUsize::new(0),
        max_bytes,
        max_tags,
        ended: AtomicBool::new(false),
    });
    (FeedTx { tx, budget }, rx)
}

impl FeedTx {
    /// Queues a tag if it fits; never blocks.
    pub(crate) fn try_push(&self, tag: FlvTag) -> Result<(), Refused> {
        let b = &self.budget;
        let len = tag.bytes.len();
        // Reserve first, check after: concurrent pushers can never together exceed the
        // budget (the writer only ever gives room back).
        let before = b.bytes.fetch_add(len, Relaxed);
        let tags_before = b.tags.fetch_add(1, Relaxed);
        let queued = Queued { tag, budget: b.clone() };
        if before.saturating_add(len) > b.max_bytes || tags_before >= b.max_tags || b.ended.load(Relaxed) {
            return Err(Refused::Full); // dropping `queued` gives the reservation back
        }
        match self.tx.try_send(Feed::Tag(queued)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Refused::Full),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Closed),
        }
    }

    /// The publisher finished; never blocks (a slot is kept for this), and only the
    /// first call sends.
    pub(crate) fn end(&self) {
        if !self.budget.ended.swap(true, Relaxed) {
            let _ = self.tx.try_send(Feed::End);
        }
    }

    /// Bytes queued or being written now.
    #[cfg(test)]
    fn queued_bytes(&self) -> usize {
        self.budget.bytes.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(len: usize, keyframe: bool) -> FlvTag {
        FlvTag { keyframe, config: false, bytes: vec![0; len] }
    }

    #[test]
    fn bytes_bound_the_feed_before_the_tag_count_does() {
        let (tx, rx) = feed(512, 10 << 20);
        // Three 4 MiB tags: the third would go over 10 MiB.
        assert_eq!(tx.try_push(tag(4 << 20, true)), Ok(()));
        assert_eq!(tx.try_push(tag(4 << 20, false)), Ok(()));
        assert_eq!(tx.try_push(tag(4 << 20, false)), Err(Refused::Full));
        assert_eq!(tx.queued_bytes(), 8 << 20, "a refused tag gives its reservation back");
        // Small tags still fit in what is left.
        assert_eq!(tx.try_push(tag(1 << 20, false)), Ok(()));
        // The writer takes one: its bytes count until it has written it.
        let Ok(Feed::Tag(first)) = rx.try_recv() else { panic!("a tag") };
        assert_eq!(tx.queued_bytes(), 9 << 20);
        assert_eq!(tx.try_push(tag(4 << 20, true)), Err(Refused::Full));
        drop(first);
        assert_eq!(tx.queued_bytes(), 5 << 20);
        assert_eq!(tx.try_push(tag(4 << 20, true)), Ok(()));
    }

    #[test]
    fn the_tag_count_still_bounds_tiny_tags_and_the_end_always_fits() {
        let (tx, rx) = feed(3, 1 << 30);
        for _ in 0..3 {
            assert_eq!(tx.try_push(tag(10, false)), Ok(()));
        }
        assert_eq!(tx.try_push(tag(10, false)), Err(Refused::Full));
        tx.end();
        tx.end(); // a second end neither blocks nor queues
        let got: Vec<bool> = rx.try_iter().map(|f| matches!(f, Feed::End)).collect();
        assert_eq!(got, [false, false, false, true]);
        assert_eq!(tx.try_push(tag(10, true)), Err(Refused::Full), "nothing after the end");
        assert_eq!(tx.queued_bytes(), 0);
    }

    #[test]
    fn a_closed_feed_refuses_without_blocking() {
        let (tx, rx) = feed(4, 1 << 20);
        drop(rx);
        assert_eq!(tx.try_push(tag(10, true)), Err(Refused::Closed));
        tx.end();
    }
}
