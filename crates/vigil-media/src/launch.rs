//! Runs a `gst-launch-1.0`-style pipeline description to its end, in process. Used to
//! make fixtures and benchmark inputs (encoding test clips), never on the data path.

use crate::MediaError;
use gstreamer as gst;
use gstreamer::prelude::*;
use std::time::Duration;

/// Runs `description` until end of stream, an error, or `timeout`.
pub fn run_pipeline(description: &str, timeout: Duration) -> Result<(), MediaError> {
    gst::init().map_err(|e| MediaError::Init(e.to_string()))?;
    let pipeline = gst::parse::launch(description).map_err(|e| MediaError::Pipeline(e.to_string()))?;
    let bus = pipeline.bus().ok_or_else(|| MediaError::Pipeline("pipeline without a bus".into()))?;
    let fail = |reason: String| MediaError::Pipeline(format!("{reason} (in: {description})"));
    pipeline.set_state(gst::State::Playing).map_err(|e| fail(e.to_string()))?;
    let result = match bus.timed_pop_filtered(
        gst::ClockTime::from_mseconds(timeout.as_millis() as u64),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    ) {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(e) => Err(fail(e.error().to_string())),
            _ => Ok(()),
        },
        None => Err(fail(format!("did not finish within {} s", timeout.as_secs()))),
    };
    let _ = pipeline.set_state(gst::State::Null);
    result
}
