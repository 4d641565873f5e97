//! What a WHIP publisher needs back from the receiver to send its full picture:
//! congestion feedback and timely receiver reports. Without them a browser's bandwidth
//! estimate never grows, and it sends a starved, downscaled picture for the whole
//! session (Chromium held 480x270 at a few hundred kbit/s), which is what would be
//! analysed.
//!
//! GStreamer 1.22's `webrtcbin` writes an answer's header extensions only from the
//! transceiver's `codec-preferences` (it never copies the offer's), so the offer's
//! transport-wide-cc extension is put there, with the offer's id, on the offered codec
//! the child will decode. With it negotiated, the RTP session sends transport-cc
//! feedback by itself; it goes out with the scheduled RTCP, so the RTCP interval is
//! lowered from the 5 s default to what a video receiver uses. Keyframe requests go as
//! PLI (docs/worker.md's promise, and what every sender honours): `ccm fir` is taken out of
//! the answer, since the RTP session prefers FIR whenever it was negotiated.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use gstreamer_webrtc as gst_webrtc;

/// The transport-wide congestion control header extension (draft-holmer-rmcat).
pub const TRANSPORT_CC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// Video codecs the child decodes, in no particular order (the offer's order decides).
const DECODED: [&str; 4] = ["H264", "VP8", "VP9", "H265"];
/// RTCP interval of the receiving session: receiver reports and transport-cc feedback
/// go out at about this pace (randomised by half either way, as RFC 3550 asks).
const RTCP_INTERVAL_NS: u64 = 100_000_000;
/// The bitrate a publisher is told to start at: the 2.5 Mbit/s of a 720p30 live
/// stream, so that a browser sends its camera's resolution from the first seconds.
pub const START_BITRATE_KBPS: u32 = 2500;

/// For each m-line of the offer: its index, whether it is video, and the codec
/// preference for its transceiver. Video: the offer's first decodable codec, with
/// transport-cc feedback; anything else: its first codec (its transceiver is made
/// inactive, so nothing of it is received).
pub fn video_preferences(offer: &gst_sdp::SDPMessageRef) -> Vec<(u32, bool, gst::Caps)> {
    let mut out = Vec::new();
    for (index, media) in offer.medias().enumerate() {
        let video = media.media() == Some("video");
        let chosen = media.formats().filter_map(|f| f.parse::<i32>().ok()).find_map(|pt| {
            let caps = media.caps_from_media(pt)?;
            let name = caps.structure(0)?.get::<String>("encoding-name").ok()?;
            (!video || DECODED.iter().any(|d| d.eq_ignore_ascii_case(&name))).then_some(caps)
        });
        let Some(mut caps) = chosen else { continue };
        // The parser names them application/x-unknown; webrtcbin intersects with the
        // offer's application/x-rtp, and a name that differs matches nothing.
        if let Some(s) = caps.make_mut().structure_mut(0) {
            s.set_name("application/x-rtp");
        }
        let twcc = media.attributes().filter(|a| a.key() == "extmap").find_map(|a| {
            let (id, rest) = a.value()?.split_once(' ')?;
            let id: u32 = id.split('/').next()?.parse().ok()?;
            (rest.split_whitespace().next()? == TRANSPORT_CC).then_some(id)
        });
        if let (true, Some(id), Some(s)) = (video, twcc, caps.make_mut().structure_mut(0)) {
            s.set(format!("extmap-{id}").as_str(), TRANSPORT_CC);
            s.set("rtcp-fb-transport-cc", true);
        }
        out.push((index as u32, video, caps));
    }
    out
}

/// Gives each m-line of the offer a transceiver with its codec preference (after the
/// remote offer is set): receive-only for video, inactive for the rest. GStreamer 1.22
/// makes no transceiver from an offer until the answer is created, and then one without
/// preferences that receives everything; one added here is matched to the m-line instead.
pub fn prefer(webrtc: &gst::Element, preferences: &[(u32, bool, gst::Caps)]) {
    use gst_webrtc::WebRTCRTPTransceiverDirection::{Inactive, Recvonly};
    let existing: Vec<gst_webrtc::WebRTCRTPTransceiver> = (0..)
        .map_while(|i: u32| {
            webrtc.emit_by_name::<Option<gst_webrtc::WebRTCRTPTransceiver>>("get-transceiver", &[&(i as i32)])
        })
        .collect();
    for (mline, video, caps) in preferences {
        let direction = if *video { Recvonly } else { Inactive };
        match existing.iter().find(|t| t.mlineindex() == *mline) {
            Some(t) => {
                t.set_property("codec-preferences", caps);
                t.set_direction(direction);
            }
            None => {
                let _ = webrtc.emit_by_name::<gst_webrtc::WebRTCRTPTransceiver>("add-transceiver", &[&direction, caps]);
            }
        }
    }
}

/// Receiver reports (and the transport-cc feedback that rides with them) at a video
/// receiver's pace instead of every 5 s.
pub fn report_often(webrtc: &gst::Element) {
    let session = webrtc
        .downcast_ref::<gst::Bin>()
        .and_then(|bin| bin.by_name("rtpbin"))
        .and_then(|rtpbin| rtpbin.emit_by_name::<Option<gst::glib::Object>>("get-internal-session", &[&0u32]));
    match session {
        Some(s) if s.find_property("rtcp-min-interval").is_some() => {
            s.set_property("rtcp-min-interval", RTCP_INTERVAL_NS)
        }
        _ => eprintln!("vigil-media-child: no RTP session to set the RTCP interval on"),
    }
}

/// The answer as the publisher should read it: keyframes asked for by PLI only (no
/// `ccm fir`), and each decoded video codec carrying the bitrate to start at.
pub fn shape_answer(answer: &gst_webrtc::WebRTCSessionDescription) -> gst_webrtc::WebRTCSessionDescription {
    let mut sdp = answer.sdp().to_owned();
    for m in 0..sdp.medias_len() {
        let Some(media) = sdp.media_mut(m) else { continue };
        let fir: Vec<u32> = (0..media.attributes_len())
            .filter(|&i| {
                media
                    .attribute(i)
                    .is_some_and(|a| a.key() == "rtcp-fb" && a.value().is_some_and(|v| v.ends_with(" ccm fir")))
            })
            .collect();
        for i in fir.into_iter().rev() {
            let _ = media.remove_attribute(i);
        }
        if media.media() == Some("video") {
            start_at_source_rate(media);
        }
    }
    gst_webrtc::WebRTCSessionDescription::new(answer.type_(), sdp)
}

/// Adds `x-google-start-bitrate` to the fmtp of each decoded codec. Chromium reads it
/// from the remote description and seeds its bandwidth estimate with it; without it
/// every session starts at 300 kbit/s and a quarter of the picture, and climbs a step
/// every few seconds (20 s to 720p in the browser test), all of which is analysed.
/// Congestion control still backs off at once if the path cannot carry it.
fn start_at_source_rate(media: &mut gst_sdp::SDPMediaRef) {
    let decoded: Vec<String> = media
        .attributes()
        .filter(|a| a.key() == "rtpmap")
        .filter_map(|a| {
            let (pt, codec) = a.value()?.split_once(' ')?;
            let name = codec.split('/').next()?;
            DECODED.iter().any(|d| d.eq_ignore_ascii_case(name)).then(|| pt.to_string())
        })
        .collect();
    let param = format!("x-google-start-bitrate={START_BITRATE_KBPS}");
    for pt in decoded {
        let existing = (0..media.attributes_len()).find(|&i| {
            media.attribute(i).is_some_and(|a| {
                a.key() == "fmtp" && a.value().and_then(|v| v.split_once(' ')).is_some_and(|(p, _)| p == pt)
            })
        });
        match existing {
            Some(i) => {
                let value = media.attribute(i).and_then(|a| a.value()).unwrap_or_default().to_string();
                let value = if value.contains("x-google-start-bitrate") { value } else { format!("{value};{param}") };
                let _ = media.replace_attribute(i, gst_sdp::SDPAttribute::new("fmtp", Some(&value)));
            }
            None => {
                media.add_attribute("fmtp", Some(&format!("{pt} {param}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const CHROME_LIKE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97 102\r\nc=IN IP4 0.0.0.0\r\n\
        a=extmap:1 urn:ietf:params:rtp-hdrext:toffset\r\n\
        a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=sendonly\r\na=mid:0\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\n\
        a=rtcp-fb:96 ccm fir\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
        a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
        a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n";

    #[test]
    fn the_offered_codec_gets_transport_cc_with_the_offers_id() {
        gst::init().unwrap();
        let sdp = gst_sdp::SDPMessage::parse_buffer(CHROME_LIKE.as_bytes()).unwrap();
        let prefs = video_preferences(&sdp);
        assert_eq!(prefs.len(), 1);
        let s = prefs[0].2.structure(0).unwrap();
        assert_eq!(s.name(), "application/x-rtp");
        assert_eq!(s.get::<i32>("payload").unwrap(), 96, "the offer's first decodable codec");
        assert_eq!(s.get::<String>("extmap-3").unwrap(), TRANSPORT_CC);
        assert!(s.get::<bool>("rtcp-fb-transport-cc").unwrap());
        assert!(!s.has_field("extmap-1"), "only the extensions the receiver acts on");
    }

    #[test]
    fn the_answer_asks_for_keyframes_by_pli_only_and_sets_a_start_bitrate() {
        gst::init().unwrap();
        let sdp = gst_sdp::SDPMessage::parse_buffer(CHROME_LIKE.as_bytes()).unwrap();
        let answer = gst_webrtc::WebRTCSessionDescription::new(gst_webrtc::WebRTCSDPType::Answer, sdp);
        let text = shape_answer(&answer).sdp().as_text().unwrap();
        assert!(!text.contains("ccm fir") && text.contains("nack pli") && text.contains("transport-cc"), "{text}");
        let start = format!("x-google-start-bitrate={START_BITRATE_KBPS}");
        // VP8 had no fmtp: one is added; H264's keeps its parameters; rtx gets none.
        assert!(text.contains(&format!("a=fmtp:96 {start}\r\n")), "{text}");
        assert!(
            text.contains(&format!("a=fmtp:102 packetization-mode=1;profile-level-id=42e01f;{start}\r\n")),
            "{text}"
        );
        assert!(text.contains("a=fmtp:97 apt=96\r\n"), "{text}");
    }
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    /// A browser-like offer (no candidates: nothing is contacted) answered by a real
    /// webrtcbin, as the child does.
    #[test]
    fn a_real_answer_carries_transport_cc_and_no_fir() {
        gst::init().unwrap();
        let offer = tests_offer();
        let pipeline = gst::Pipeline::new();
        let parse = gst::ElementFactory::make("parsebin").build().unwrap();
        pipeline.add(&parse).unwrap();
        let webrtc = super::super::webrtc::add_webrtcbin(&pipeline, &parse, None).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let (answer, _) = super::super::webrtc::answer(&webrtc, &offer, false).unwrap();
        let _ = pipeline.set_state(gst::State::Null);
        assert!(answer.contains(&format!("a=extmap:3 {TRANSPORT_CC}")), "{answer}");
        assert!(answer.contains("transport-cc") && !answer.contains("ccm fir"), "{answer}");
        assert!(answer.contains("x-google-start-bitrate"), "{answer}");
        // Audio is answered inactive: nothing of it is received or decoded.
        let audio = answer.split("m=audio").nth(1).expect("the audio m-line is answered");
        assert!(audio.contains("a=inactive"), "{answer}");
    }

    fn tests_offer() -> String {
        let creds = format!(
            "a=rtcp-mux\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
             a=fingerprint:sha-256 {}\r\n",
            ["AB"; 32].join(":")
        );
        let video = super::tests::CHROME_LIKE.replace("a=sendonly\r\n", &format!("a=sendonly\r\n{creds}"));
        let video = video.replace("t=0 0\r\n", "t=0 0\r\na=group:BUNDLE 0 1\r\n");
        format!(
            "{video}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=sendonly\r\na=mid:1\r\n{creds}\
             a=rtpmap:111 opus/48000/2\r\n"
        )
    }
}
