//! Which hosts a fleet worker may pull from. A lifecycle or offer record names a URL the
//! worker will connect to from inside the cluster: without a limit, whoever can write one
//! makes the worker fetch `http://169.254.169.254/…?.m3u8` (the cloud's metadata service)
//! or probe internal services. `[fleet] pull_hosts` lists the origins' host patterns;
//! link-local addresses and the clouds' metadata names are refused even when a pattern
//! matches, unless `allow_link_local` is on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Names that reach a cloud's instance metadata service.
const METADATA_NAMES: [&str; 4] = ["metadata", "metadata.google.internal", "metadata.goog", "instance-data"];

/// Why a URL's host is refused (counted as a [`super::events::FleetRefusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRefusal {
    /// No host could be read, or it is spelled in a way a resolver may read otherwise
    /// (a bare number, octal or hex parts).
    BadHost,
    LinkLocal,
    NotAllowed,
}

/// The host of `scheme://[user@]host[:port]/…`, lowercased; an IPv6 literal without
/// its brackets.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.0,
        None => host_port.split(':').next()?,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

fn link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4 == Ipv4Addr::new(100, 100, 100, 200),
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || v6.to_ipv4_mapped().is_some_and(|v4| link_local(IpAddr::V4(v4)))
        }
    }
}

/// `pattern` matches `host`: exactly, or `*.example.org` for its subdomains, or `*`.
fn matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
        None => pattern == "*" || pattern == host,
    }
}

/// Checks a pull URL's host against the configured patterns.
pub fn check(url: &str, patterns: &[String], allow_link_local: bool) -> Result<(), HostRefusal> {
    let host = host_of(url).ok_or(HostRefusal::BadHost)?;
    let ip = host.parse::<IpAddr>().ok();
    // A name whose last label starts with a digit must be a plain dotted quad: resolvers
    // read `2852039166`, `0xa9fea9fe` and `0251.0376.0251.0376` as 169.254.169.254.
    let last_label = host.rsplit('.').next().unwrap_or("");
    if ip.is_none() && last_label.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(HostRefusal::BadHost);
    }
    if ip.is_none() && !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)) {
        return Err(HostRefusal::BadHost);
    }
    if !allow_link_local && (ip.is_some_and(link_local) || METADATA_NAMES.contains(&host.as_str())) {
        return Err(HostRefusal::LinkLocal);
    }
    if patterns.iter().any(|p| matches(p, &host)) { Ok(()) } else { Err(HostRefusal::NotAllowed) }
}

/// Config check of one pattern: a host name, an address, `*.suffix`, or `*`.
pub fn valid_pattern(p: &str) -> bool {
    let body = p.strip_prefix("*.").unwrap_or(p);
    p == "*"
        || body.parse::<IpAddr>().is_ok()
        || (!body.is_empty()
            && body.len() <= 253
            && body.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_configured_hosts_are_pulled_and_metadata_addresses_never_by_default() {
        let p = pats(&["origin.example.org", "*.edge.example.org", "127.0.0.1"]);
        for ok in [
            "rtmp://origin.example.org/live/a",
            "rtmp://user:pw@origin.example.org:1935/live/a",
            "https://a.edge.example.org/x.m3u8",
            "rtmp://127.0.0.1:1935/live/a",
            "rtmp://ORIGIN.example.org./live",
        ] {
            assert_eq!(check(ok, &p, false), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("rtmp://evil.example.org/live/a", HostRefusal::NotAllowed),
            ("https://edge.example.org/x.m3u8", HostRefusal::NotAllowed),
            ("http://169.254.169.254/latest/meta-data/?.m3u8", HostRefusal::LinkLocal),
            ("http://[fe80::1]/x.m3u8", HostRefusal::LinkLocal),
            ("http://[::ffff:169.254.169.254]/x.m3u8", HostRefusal::LinkLocal),
            ("http://[fd00:ec2::254]/x.m3u8", HostRefusal::LinkLocal),
            ("http://metadata.google.internal/x.m3u8", HostRefusal::LinkLocal),
            ("http://2852039166/x.m3u8", HostRefusal::BadHost),
            ("http://0xa9fea9fe/x.m3u8", HostRefusal::BadHost),
            ("http://0251.0376.0251.0376/x.m3u8", HostRefusal::BadHost),
            ("http://a_b.example.org/x.m3u8", HostRefusal::BadHost),
            ("rtmp:///live", HostRefusal::BadHost),
        ] {
            assert_eq!(check(bad, &p, false), Err(why), "{bad}");
        }
        // Even `*` never reaches the metadata service unless link-local is allowed.
        let any = pats(&["*"]);
        assert_eq!(check("http://169.254.169.254/?.m3u8", &any, false), Err(HostRefusal::LinkLocal));
        assert_eq!(check("http://169.254.169.254/?.m3u8", &any, true), Ok(()));
        assert!(valid_pattern("*.edge.example.org") && valid_pattern("10.0.0.1") && !valid_pattern("a b"));
    }
}
