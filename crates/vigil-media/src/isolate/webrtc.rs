//! WHIP publishes inside the decode child: `webrtcbin` answers the publisher's offer,
//! and its video pad joins the same parse → gate → decode chain as every other source.
//!
//! The offer reaches the child over its stdin pipe (never its command line, which other
//! users can read: it carries the ICE password and the DTLS fingerprint), and the child
//! parses it: SDP is stranger-written text and GStreamer's parser is C.
//!
//! Non-trickle: the answer is sent once ICE gathering is complete, so it carries every
//! candidate (WHIP clients then need no PATCH). Audio is refused in the answer (its
//! m-line set inactive): Vigil never needs it, and unreceived media costs nothing.

use super::candidates::{self, DroppedCounts};
use super::child::{Failure, fail};
use super::feedback;
use crate::events::ChildFailure;
use crate::ingest::whip::MAX_LINE_BYTES;
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the offer/answer exchange and ICE gathering may take.
const NEGOTIATION: Duration = Duration::from_secs(10);
/// Media silence after which a publisher is taken to have left (a closed tab, a lost
/// network): ICE's own consent timeout is 30 s, which is a long time to hold a slot.
pub(super) const PUBLISHER_SILENCE: Duration = Duration::from_secs(8);
/// How long after the answer a publisher has to start sending media.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Adds a `webrtcbin` whose first video pad links to `parse` (the rest are discarded).
pub(super) fn add_webrtcbin(
    pipeline: &gst::Pipeline,
    parse: &gst::Element,
    stun_server: Option<&str>,
) -> Result<gst::Element, Failure> {
    let webrtc = gst::ElementFactory::make("webrtcbin")
        .property_from_str("bundle-policy", "max-bundle")
        .build()
        .map_err(|e| fail(ChildFailure::Pipeline)(format!("webrtcbin: {e} (is gstreamer1.0-nice installed?)")))?;
    if let Some(stun) = stun_server {
        webrtc.set_property("stun-server", stun);
    }
    if let Some(ice) = webrtc.property::<Option<gst::glib::Object>>("ice-agent") {
        // UDP only: no outgoing TCP connections to addresses a publisher chose.
        if ice.find_property("ice-tcp").is_some() {
            ice.set_property("ice-tcp", false);
        }
        // No UPnP: libnice would otherwise look for routers on the worker's networks
        // and ask them to open ports (a publisher must not make the worker probe its
        // own network). The property is libnice's, on the agent webrtcbin wraps.
        let agent = ice.find_property("agent").and_then(|_| ice.property::<Option<gst::glib::Object>>("agent"));
        match agent {
            Some(agent) if agent.find_property("upnp").is_some() => agent.set_property("upnp", false),
            _ => eprintln!("vigil-media-child: cannot turn UPnP off: no libnice agent found"),
        }
    }
    pipeline.add(&webrtc).map_err(|e| fail(ChildFailure::Pipeline)(e.to_string()))?;
    let parse_sink =
        parse.static_pad("sink").ok_or_else(|| fail(ChildFailure::Pipeline)("parsebin without sink".into()))?;
    let pipeline_weak = pipeline.downgrade();
    webrtc.connect_pad_added(move |_, pad| {
        if pad.direction() != gst::PadDirection::Src {
            return;
        }
        // Caps may not be set yet when the pad appears: ask the pad what it will carry.
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let is_video = caps.structure(0).and_then(|s| s.get::<String>("media").ok()).is_some_and(|m| m == "video");
        if is_video && !parse_sink.is_linked() {
            if let Err(e) = pad.link(&parse_sink) {
                eprintln!("vigil-media-child: cannot link webrtc video: {e:?}");
            }
        } else if let Some(p) = pipeline_weak.upgrade() {
            super::child::discard(&p, pad);
        }
    });
    Ok(webrtc)
}

/// Waits for a promise's reply (webrtcbin answers on its own thread).
fn await_promise(
    what: &str,
    deadline: Instant,
    emit: impl FnOnce(&gst::Promise),
) -> Result<Option<gst::Structure>, Failure> {
    let (tx, rx) = mpsc::sync_channel(1);
    let promise = gst::Promise::with_change_func(move |reply| {
        let _ = tx.send(reply.map(|r| r.map(|s| s.to_owned())).map_err(|e| format!("{e:?}")));
    });
    emit(&promise);
    let reply = rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .map_err(|_| fail(ChildFailure::Whip)(format!("{what}: no reply in {} s", NEGOTIATION.as_secs())))?
        .map_err(|e| fail(ChildFailure::Whip)(format!("{what}: {e}")))?;
    if let Some(err) = reply.as_ref().and_then(|s| s.get::<glib::Error>("error").ok()) {
        return Err(fail(ChildFailure::Whip)(format!("{what}: {err}")));
    }
    Ok(reply)
}

/// Takes the publisher's offer and returns the complete answer (all candidates), and
/// the offer's candidates dropped before `webrtcbin` saw them.
pub(super) fn answer(
    webrtc: &gst::Element,
    offer: &str,
    private_candidates: bool,
) -> Result<(String, DroppedCounts), Failure> {
    let deadline = Instant::now() + NEGOTIATION;
    let (sdp, dropped) = parse_offer(offer, private_candidates)?;
    let videos = sdp.medias().filter(|m| m.media() == Some("video")).count();
    if videos == 0 {
        return Err(fail(ChildFailure::Offer)("the offer has no video".into()));
    }
    let preferences = feedback::video_preferences(&sdp);
    let offer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Offer, sdp);
    // webrtcbin refusing the remote description is the offer's fault, not ours.
    await_promise("set-remote-description", deadline, |p| {
        webrtc.emit_by_name::<()>("set-remote-description", &[&offer, p]);
    })
    .map_err(|(kind, reason)| (if kind == ChildFailure::Whip { ChildFailure::Offer } else { kind }, reason))?;
    refuse_audio(webrtc);
    feedback::prefer(webrtc, &preferences);
    feedback::report_often(webrtc);
    let reply = await_promise("create-answer", deadline, |p| {
        webrtc.emit_by_name::<()>("create-answer", &[&None::<gst::Structure>, p]);
    })?;
    let answer = reply
        .and_then(|s| s.get::<gst_webrtc::WebRTCSessionDescription>("answer").ok())
        .ok_or_else(|| fail(ChildFailure::Whip)("webrtcbin made no answer".into()))?;
    let answer = feedback::shape_answer(&answer);
    await_promise("set-local-description", deadline, |p| {
        webrtc.emit_by_name::<()>("set-local-description", &[&answer, p]);
    })?;
    while webrtc.property::<gst_webrtc::WebRTCICEGatheringState>("ice-gathering-state")
        != gst_webrtc::WebRTCICEGatheringState::Complete
    {
        if Instant::now() >= deadline {
            return Err(fail(ChildFailure::Whip)(format!("ICE gathering took over {} s", NEGOTIATION.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let local = webrtc
        .property::<Option<gst_webrtc::WebRTCSessionDescription>>("local-description")
        .ok_or_else(|| fail(ChildFailure::Whip)("no local description".into()))?;
    let answer = local.sdp().as_text().map_err(|e| fail(ChildFailure::Whip)(e.to_string()))?;
    Ok((answer, dropped))
}

/// Parses the offer with GStreamer's own parser and removes the candidates the worker
/// will not contact from what it yields: whatever the text looked like (the worker
/// filtered it already), these are the candidates `webrtcbin` would hand to libnice.
pub(super) fn parse_offer(
    offer: &str,
    private_candidates: bool,
) -> Result<(gst_sdp::SDPMessage, DroppedCounts), Failure> {
    // Longer lines could be cut inside a UTF-8 character by the parser (see filter_sdp).
    if offer.split('\n').any(|l| l.len() > MAX_LINE_BYTES) {
        return Err(fail(ChildFailure::Offer)(format!("the offer has a line over {MAX_LINE_BYTES} bytes")));
    }
    let mut sdp = gst_sdp::SDPMessage::parse_buffer(offer.as_bytes())
        .map_err(|_| fail(ChildFailure::Offer)("the offer is not valid SDP".into()))?;
    let dropped = candidates::filter_sdp(&mut sdp, private_candidates).map_err(fail(ChildFailure::Whip))?;
    Ok((sdp, dropped))
}

/// Every non-video transceiver is answered inactive.
fn refuse_audio(webrtc: &gst::Element) {
    let transceivers = (0..).map_while(|i: u32| {
        webrtc.emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&(i as i32)])
    });
    for t in transceivers {
        if t.kind() != gst_webrtc::WebRTCKind::Video {
            t.set_direction(gst_webrtc::WebRTCRTPTransceiverDirection::Inactive);
        }
    }
}

/// Whether ICE or DTLS has given up on the publisher (it left without a DELETE).
pub(super) fn connection_lost(webrtc: &gst::Element) -> bool {
    matches!(
        webrtc.property::<gst_webrtc::WebRTCPeerConnectionState>("connection-state"),
        gst_webrtc::WebRTCPeerConnectionState::Failed | gst_webrtc::WebRTCPeerConnectionState::Closed
    )
}

/// Asks the publisher for a keyframe (RTCP PLI/FIR, sent by the RTP session): WebRTC
/// senders make keyframes only on request, and keyframe-only sampling needs them.
pub(super) fn request_keyframe(video_pad: &gst::Pad) {
    let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
    video_pad.send_event(event);
}
