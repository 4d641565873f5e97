//! Which ICE candidates of a publisher's offer the worker may contact.
//!
//! A WHIP publisher writes the candidates the worker's ICE agent will send
//! connectivity checks to: left alone, a stranger could make the worker probe its own
//! host (loopback), its cloud's metadata service (link-local), its cluster's services
//! (private ranges, `*.svc.cluster.local` names, which libnice resolves through
//! GResolver) or multicast groups. Only UDP candidates on public IP literals are kept
//! (private ones when the operator allows them), at most [`MAX_CANDIDATES`].
//!
//! The same rule runs twice: on the offer's text in the worker (a cheap first pass that
//! keeps hostile lines out of the child), and in the decode child on the candidates
//! GStreamer's own SDP parser yields, just before `webrtcbin` sees them: whatever the
//! text looked like, what is filtered there is what libnice would get.

use gstreamer_sdp as gst_sdp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Most ICE candidates kept from an offer (each one costs connectivity checks).
pub const MAX_CANDIDATES: usize = 16;

/// Why a candidate was dropped: a metric label, so a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dropped {
    /// Not `FOUNDATION COMPONENT TRANSPORT PRIORITY ADDRESS PORT typ TYPE ...`.
    Malformed,
    /// TCP (or anything but UDP): no outgoing connections to addresses a stranger chose.
    Transport,
    /// A name (mDNS `.local`, a cluster service, anything): libnice resolves names.
    Hostname,
    Loopback,
    Unspecified,
    LinkLocal,
    Multicast,
    Broadcast,
    /// IPv4 inside IPv6 (mapped or compatible): the v4 address is what gets contacted.
    Mapped,
    Documentation,
    /// Reserved or special-purpose ranges (240/4, 198.18/15, 192.0.0/24, 100::/64 ...).
    Reserved,
    /// RFC 1918, CGNAT (100.64/10), IPv6 unique-local, while private candidates are off.
    Private,
    /// Beyond the first [`MAX_CANDIDATES`] acceptable ones.
    OverLimit,
}

impl Dropped {
    pub const ALL: [Dropped; 13] = [
        Dropped::Malformed,
        Dropped::Transport,
        Dropped::Hostname,
        Dropped::Loopback,
        Dropped::Unspecified,
        Dropped::LinkLocal,
        Dropped::Multicast,
        Dropped::Broadcast,
        Dropped::Mapped,
        Dropped::Documentation,
        Dropped::Reserved,
        Dropped::Private,
        Dropped::OverLimit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Dropped::Malformed => "malformed",
            Dropped::Transport => "transport",
            Dropped::Hostname => "hostname",
            Dropped::Loopback => "loopback",
            Dropped::Unspecified => "unspecified",
            Dropped::LinkLocal => "link_local",
            Dropped::Multicast => "multicast",
            Dropped::Broadcast => "broadcast",
            Dropped::Mapped => "mapped",
            Dropped::Documentation => "documentation",
            Dropped::Reserved => "reserved",
            Dropped::Private => "private",
            Dropped::OverLimit => "over_limit",
        }
    }
}

/// Dropped candidates of one offer, by reason.
pub type DroppedCounts = BTreeMap<Dropped, u32>;

/// Whether the worker may contact the candidate whose attribute value (what follows
/// `a=candidate:`) is `value`.
///
/// libnice (`nice_agent_parse_remote_candidate_sdp`) splits on spaces only, skipping
/// empty fields; splitting on every ASCII whitespace here would read
/// `1 1 UDP 2\t1.2.3.4 127.0.0.1 ...` as address 1.2.3.4 while libnice reads
/// 127.0.0.1. So any whitespace or control character other than a space makes the
/// candidate malformed, and then both splits agree.
pub fn check(value: &str, private_allowed: bool) -> Result<(), Dropped> {
    if value.chars().any(|c| c != ' ' && (c.is_whitespace() || c.is_control())) {
        return Err(Dropped::Malformed);
    }
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [foundation, component, transport, priority, address, port, typ, kind, ..] = fields[..] else {
        return Err(Dropped::Malformed);
    };
    let number = |s: &str, range: std::ops::RangeInclusive<u64>| {
        (1..=10).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_digit())
            && s.parse::<u64>().is_ok_and(|n| range.contains(&n))
    };
    let well_formed = foundation.len() <= 32
        && number(component, 1..=256)
        && number(priority, 0..=u32::MAX.into())
        && number(port, 1..=u16::MAX.into())
        && typ == "typ"
        && matches!(kind, "host" | "srflx" | "prflx" | "relay");
    if !well_formed {
        return Err(Dropped::Malformed);
    }
    if !transport.eq_ignore_ascii_case("udp") {
        return Err(Dropped::Transport);
    }
    // Literals only, in the strict form Rust parses (no `127.1`, no `0x7f.0.0.1`, no
    // zone ids): glibc would read the lax forms as addresses, so they are names here.
    let ip: IpAddr = address.parse().map_err(|_| Dropped::Hostname)?;
    check_address(ip, private_allowed)
}

/// Whether `ip` is an address the worker may send connectivity checks to.
pub fn check_address(ip: IpAddr, private_allowed: bool) -> Result<(), Dropped> {
    match ip {
        IpAddr::V4(a) => check_v4(a, private_allowed),
        IpAddr::V6(a) => check_v6(a, private_allowed),
    }
}

fn check_v4(a: Ipv4Addr, private_allowed: bool) -> Result<(), Dropped> {
    let [o0, o1, o2, _] = a.octets();
    let reason = if a.is_loopback() {
        Dropped::Loopback
    } else if o0 == 0 {
        // 0.0.0.0/8, "this network": Linux sends 0.x to the local host.
        Dropped::Unspecified
    } else if a.is_link_local() {
        Dropped::LinkLocal
    } else if a.is_broadcast() {
        Dropped::Broadcast
    } else if a.is_multicast() {
        Dropped::Multicast
    } else if a.is_documentation() {
        Dropped::Documentation
    } else if o0 >= 240 || (o0 == 198 && o1 & 0xfe == 18) || (o0 == 192 && o1 == 0 && o2 == 0) {
        Dropped::Reserved
    } else if a.is_private() || (o0 == 100 && o1 & 0xc0 == 64) {
        if private_allowed {
            return Ok(());
        }
        Dropped::Private
    } else {
        return Ok(());
    };
    Err(reason)
}

fn check_v6(a: Ipv6Addr, private_allowed: bool) -> Result<(), Dropped> {
    let s = a.segments();
    let reason = if a.is_loopback() {
        Dropped::Loopback
    } else if a.is_unspecified() {
        Dropped::Unspecified
    } else if a.is_multicast() {
        Dropped::Multicast
    } else if a.is_unicast_link_local() || s[0] & 0xffc0 == 0xfec0 {
        // fe80::/10, and the deprecated site-local fec0::/10 that some stacks still route.
        Dropped::LinkLocal
    } else if a.to_ipv4().is_some() {
        // ::ffff:a.b.c.d and ::a.b.c.d (and ::1, handled above).
        Dropped::Mapped
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Dropped::Documentation
    } else if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        // NAT64 (64:ff9b::/96): the translator contacts the embedded IPv4 address.
        let [_, _, _, _, _, _, hi, lo] = s;
        return check_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)), private_allowed);
    } else if s[0] == 0x2002 {
        // 6to4 (2002::/16): the embedded IPv4 address is the tunnel's far end.
        return check_v4(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])), private_allowed);
    } else if s[0] == 0x2001 && s[1] < 0x0200 {
        // 2001::/23, IETF protocol assignments (Teredo among them).
        Dropped::Reserved
    } else if a.is_unique_local() {
        if private_allowed {
            return Ok(());
        }
        Dropped::Private
    } else if s[0] & 0xe000 != 0x2000 {
        // Outside 2000::/3, the only global unicast space (100::/64 discard among it).
        Dropped::Reserved
    } else {
        return Ok(());
    };
    Err(reason)
}

/// Keeps the first [`MAX_CANDIDATES`] acceptable candidates of one offer, counting
/// the rest by reason.
#[derive(Debug, Default)]
pub struct Filter {
    private_allowed: bool,
    kept: usize,
    pub dropped: DroppedCounts,
}

impl Filter {
    pub fn new(private_allowed: bool) -> Filter {
        Filter { private_allowed, kept: 0, dropped: DroppedCounts::new() }
    }

    /// Whether to keep this candidate (the attribute's value).
    pub fn admit(&mut self, value: &str) -> bool {
        let room = if self.kept < MAX_CANDIDATES { Ok(()) } else { Err(Dropped::OverLimit) };
        let verdict = check(value, self.private_allowed).and(room);
        match verdict {
            Ok(()) => {
                self.kept += 1;
                true
            }
            Err(reason) => {
                *self.dropped.entry(reason).or_default() += 1;
                false
            }
        }
    }

    pub fn kept(&self) -> usize {
        self.kept
    }
}

/// Whether an attribute key names a candidate. webrtcbin matches `candidate` exactly;
/// any spelling close to it is treated as one too, so that a key the filter skips can
/// never be one that a later GStreamer reads.
pub(crate) fn is_candidate_key(key: &str) -> bool {
    key.trim_matches(|c: char| c.is_ascii_whitespace()).eq_ignore_ascii_case("candidate")
}

/// Removes, from the parsed offer, every candidate attribute (session level and in
/// every media) that the filter refuses; returns the counts of what was dropped, or an
/// error if one could not be removed (the offer is then refused, never passed on).
///
/// The offer's lines must be shorter than 8 KiB (the child checks): GStreamer's parser
/// cuts longer attribute keys, possibly inside a UTF-8 character, and gstreamer-sdp's
/// `key()` would then panic.
pub fn filter_sdp(sdp: &mut gst_sdp::SDPMessage, private_allowed: bool) -> Result<DroppedCounts, String> {
    let mut filter = Filter::new(private_allowed);
    let mut i = 0;
    while let Some(attr) = sdp.attribute(i) {
        if is_candidate_key(attr.key()) && !filter.admit(attr.value().unwrap_or("")) {
            // The next attribute moves to index i.
            sdp.remove_attribute(i).map_err(|e| format!("removing a session candidate: {e}"))?;
        } else {
            i += 1;
        }
    }
    for m in 0..sdp.medias_len() {
        let media = sdp.media_mut(m).ok_or_else(|| format!("media {m} vanished"))?;
        let mut i = 0;
        while let Some(attr) = media.attribute(i) {
            if is_candidate_key(attr.key()) && !filter.admit(attr.value().unwrap_or("")) {
                media.remove_attribute(i).map_err(|e| format!("removing a candidate of media {m}: {e}"))?;
            } else {
                i += 1;
            }
        }
    }
    Ok(filter.dropped)
}

/// One line for a log: `loopback=2 hostname=1`.
pub fn describe(dropped: &DroppedCounts) -> String {
    let parts: Vec<String> = dropped.iter().map(|(r, n)| format!("{}={n}", r.label())).collect();
    parts.join(" ")
}

/// Which pass dropped candidates (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// The worker's pass over the offer's text.
    Offer,
    /// The child's pass over what GStreamer parsed: anything dropped here got past
    /// the first pass.
    Decoder,
}

impl Pass {
    pub fn label(self) -> &'static str {
        match self {
            Pass::Offer => "offer",
            Pass::Decoder => "decoder",
        }
    }
}

/// Counts and logs one offer's dropped candidates (one event: the log line and the
/// metric never disagree).
pub fn record(pass: Pass, stream: &str, dropped: &DroppedCounts) {
    if dropped.is_empty() {
        return;
    }
    for (reason, n) in dropped {
        crate::metrics::METRICS
            .whip_candidates_dropped
            .with_label_values(&[pass.label(), reason.label()])
            .inc_by(u64::from(*n));
    }
    match pass {
        Pass::Offer => tracing::info!(stream, "whip: offer candidates dropped: {}", describe(dropped)),
        Pass::Decoder => {
            tracing::warn!(
                stream,
                "whip: candidates dropped in the decoder (past the worker's pass): {}",
                describe(dropped)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer as gst;

    const HEAD: &str = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
    const PUBLIC: &str = "1 1 UDP 2122252543 1.2.3.4 5000 typ host";

    fn parsed(offer: &str) -> gst_sdp::SDPMessage {
        gst::init().unwrap();
        gst_sdp::SDPMessage::parse_buffer(offer.as_bytes()).unwrap()
    }

    /// The candidate values left, as webrtcbin would read them (key `candidate`, every
    /// media and the session).
    fn candidates_left(sdp: &gst_sdp::SDPMessage) -> Vec<String> {
        let values = |attrs: gst_sdp::sdp_message::AttributesIter<'_>| -> Vec<String> {
            attrs.filter(|a| a.key() == "candidate").map(|a| a.value().unwrap_or("").to_string()).collect()
        };
        let mut left = values(sdp.attributes());
        for m in sdp.medias() {
            left.extend(m.attributes().filter(|a| a.key() == "candidate").map(|a| a.value().unwrap_or("").to_string()));
        }
        left
    }

    fn offer_with(lines: &[&str]) -> String {
        let mut o = format!("{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n");
        for l in lines {
            o.push_str(l);
            o.push_str("\r\n");
        }
        o
    }

    /// What GStreamer's parser makes of the hostile variants: each is a `candidate`
    /// attribute that webrtcbin would pass on, and each is removed.
    #[test]
    fn hostile_candidates_parsed_by_gstreamer_are_removed() {
        let cases: [(&str, Dropped); 14] = [
            (" a=candidate:1 1 UDP 2122252543 127.0.0.1 5000 typ host", Dropped::Loopback),
            ("a= candidate:1 1 UDP 2122252543 127.0.0.1 5000 typ host", Dropped::Loopback),
            ("a=\tcandidate:1 1 udp 2122252543 169.254.169.254 5000 typ host", Dropped::LinkLocal),
            ("a=candidate:\t1 1 udp 2122252543 169.254.1.1 5000 typ host", Dropped::Malformed),
            ("a=candidate:1 1 UDP 2122252543  127.0.0.1  5000 typ host", Dropped::Loopback),
            ("a=candidate:1 1 UDP 2\t1.2.3.4 127.0.0.1 5000 typ host", Dropped::Malformed),
            ("a=candidate:1 1 UDP 2122252543 4a3f-0c1d.local 5000 typ host", Dropped::Hostname),
            ("a=candidate:1 1 UDP 2122252543 vigil.default.svc.cluster.local 5000 typ host", Dropped::Hostname),
            ("a=candidate:1 1 TCP 2122252543 1.2.3.5 9 typ host tcptype active", Dropped::Transport),
            ("a=candidate:1 1 UDP 2122252543 10.1.2.3 5000 typ host", Dropped::Private),
            ("a=candidate:1 1 UDP 2122252543 fe80::1 5000 typ host", Dropped::LinkLocal),
            ("a=candidate:1 1 UDP 2122252543 ::1 5000 typ host", Dropped::Loopback),
            ("a=candidate:1 1 UDP 2122252543 ::ffff:127.0.0.1 5000 typ host", Dropped::Mapped),
            ("a=candidate:1 1 UDP 2122252543 64:ff9b::a00:1 5000 typ host", Dropped::Private),
        ];
        let public = format!("a=candidate:{PUBLIC}");
        for (line, reason) in cases {
            let mut sdp = parsed(&offer_with(&[line, &public]));
            assert_eq!(candidates_left(&sdp).len(), 2, "GStreamer reads {line:?} as a candidate");
            let dropped = filter_sdp(&mut sdp, false).unwrap();
            assert_eq!(dropped, DroppedCounts::from([(reason, 1)]), "{line:?}");
            assert_eq!(candidates_left(&sdp), [PUBLIC], "{line:?}");
        }
    }

    #[test]
    fn session_level_candidates_and_every_media_are_filtered() {
        let offer = format!(
            "{HEAD}a=candidate:1 1 UDP 1 127.0.0.1 5000 typ host\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:{PUBLIC}\r\na=candidate:2 1 UDP 1 ::1 5000 typ host\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=candidate:3 1 UDP 1 fe80::2 5000 typ host\r\n"
        );
        let mut sdp = parsed(&offer);
        let dropped = filter_sdp(&mut sdp, false).unwrap();
        assert_eq!(dropped, DroppedCounts::from([(Dropped::Loopback, 2), (Dropped::LinkLocal, 1)]));
        assert_eq!(candidates_left(&sdp), [PUBLIC]);
        // The rest of the offer is untouched.
        assert_eq!(sdp.media(1).and_then(|m| m.attribute_val("rtpmap")), Some("96 VP8/90000"));
    }

    #[test]
    fn private_candidates_are_kept_only_when_allowed() {
        let lan = [
            "a=candidate:1 1 UDP 1 10.1.2.3 5000 typ host",
            "a=candidate:2 1 UDP 1 172.16.0.9 5000 typ host",
            "a=candidate:3 1 UDP 1 192.168.1.2 5000 typ host",
            "a=candidate:4 1 UDP 1 100.64.0.1 5000 typ host",
            "a=candidate:5 1 UDP 1 fd12::1 5000 typ host",
        ];
        let mut sdp = parsed(&offer_with(&lan));
        assert_eq!(filter_sdp(&mut sdp, false).unwrap(), DroppedCounts::from([(Dropped::Private, 5)]));
        assert!(candidates_left(&sdp).is_empty());
        let mut sdp = parsed(&offer_with(&lan));
        assert!(filter_sdp(&mut sdp, true).unwrap().is_empty());
        assert_eq!(candidates_left(&sdp).len(), 5);
        // Allowing private addresses allows nothing else.
        let mut sdp = parsed(&offer_with(&["a=candidate:1 1 UDP 1 127.0.0.1 5000 typ host"]));
        assert_eq!(filter_sdp(&mut sdp, true).unwrap(), DroppedCounts::from([(Dropped::Loopback, 1)]));
    }

    #[test]
    fn at_most_sixteen_candidates_are_kept() {
        let lines: Vec<String> = (0..40).map(|i| format!("a=candidate:{i} 1 UDP 1 1.2.3.{i} 5000 typ host")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut sdp = parsed(&offer_with(&lines));
        assert_eq!(filter_sdp(&mut sdp, false).unwrap(), DroppedCounts::from([(Dropped::OverLimit, 24)]));
        let left = candidates_left(&sdp);
        assert_eq!(left.len(), MAX_CANDIDATES);
        assert_eq!(left[0], "0 1 UDP 1 1.2.3.0 5000 typ host", "the first ones are kept");
    }

    #[test]
    fn addresses_are_judged_by_range() {
        let public = ["1.2.3.4", "8.8.8.8", "100.128.0.1", "172.32.0.1", "2a00:1450::1", "64:ff9b::102:304"];
        for a in public {
            assert_eq!(check_address(a.parse().unwrap(), false), Ok(()), "{a}");
        }
        let refused = [
            ("0.1.2.3", Dropped::Unspecified),
            ("::", Dropped::Unspecified),
            ("255.255.255.255", Dropped::Broadcast),
            ("239.1.2.3", Dropped::Multicast),
            ("ff02::1", Dropped::Multicast),
            ("192.0.2.1", Dropped::Documentation),
            ("198.51.100.1", Dropped::Documentation),
            ("203.0.113.1", Dropped::Documentation),
            ("2001:db8::1", Dropped::Documentation),
            ("240.0.0.1", Dropped::Reserved),
            ("198.18.0.1", Dropped::Reserved),
            ("2001::1", Dropped::Reserved),
            ("100::1", Dropped::Reserved),
            ("::127.0.0.1", Dropped::Mapped),
            ("fec0::1", Dropped::LinkLocal),
            ("2002:7f00:1::1", Dropped::Loopback),
            ("64:ff9b::a9fe:a9fe", Dropped::LinkLocal),
        ];
        for (a, reason) in refused {
            assert_eq!(check_address(a.parse().unwrap(), true), Err(reason), "{a}");
        }
    }

    #[test]
    fn candidate_fields_must_be_what_libnice_reads() {
        let ok = |v: &str| check(v, false);
        assert_eq!(ok(PUBLIC), Ok(()));
        assert_eq!(ok("1 1 udp 2122252543 1.2.3.4 5000 typ srflx raddr 10.0.0.1 rport 9"), Ok(()));
        for bad in [
            "",
            "1 1 UDP 2122252543 1.2.3.4",
            "1 1 UDP 2122252543 1.2.3.4 0 typ host",
            "1 1 UDP 2122252543 1.2.3.4 000 typ host",
            "1 0 UDP 2122252543 1.2.3.4 5000 typ host",
            "1 1 UDP 2122252543 1.2.3.4 70000 typ host",
            "1 1 UDP -5 1.2.3.4 5000 typ host",
            "1 x UDP 1 1.2.3.4 5000 typ host",
            "1 1 UDP 1 1.2.3.4 5000 type host",
            "1 1 UDP 1 1.2.3.4 5000 typ bogus",
            "1 1 UDP 1 1.2.3.4\u{b}5000 typ host",
            "1 1 UDP 1 1.2.3.4 5000\u{a0}typ host",
        ] {
            assert_eq!(ok(bad), Err(Dropped::Malformed), "{bad:?}");
        }
        for name in ["0x7f.0.0.1", "2130706433", "127.1", "[::1]", "fe80::1%eth0", "localhost"] {
            assert_eq!(ok(&format!("1 1 UDP 1 {name} 5000 typ host")), Err(Dropped::Hostname), "{name}");
        }
    }
}
