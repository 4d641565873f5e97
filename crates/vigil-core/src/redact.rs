//! What must never be shown: the credentials in a URI's userinfo
//! (`rtsp://user:pass@camera/stream`). Every place that shows a source (`/streams`,
//! logs, alerts, stream ids made from a `--pull` URL) shows it through [`uri`].

/// Query parameters whose values are secrets (SRT's `passphrase`, signed-URL tokens).
const SECRET_PARAMS: [&str; 6] = ["pass", "token", "secret", "key", "sig", "auth"];

/// `uri` with any userinfo replaced by `***` (`rtsp://***@camera/stream`), and the
/// values of secret-looking query parameters too (`srt://h:9000?passphrase=***`).
/// Text that is not a URI comes back unchanged.
pub fn uri(uri: &str) -> String {
    let Some(scheme_end) = uri.find("://") else { return uri.to_string() };
    let rest = &uri[scheme_end + 3..];
    // The authority ends at the first '/', '?' or '#'; userinfo is what precedes its last
    // '@'. A hand-typed password may hold an unescaped '/': an '@' before any query, with
    // a ':' before it, is taken to end userinfo too (hiding too much is the safe mistake).
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let before_query = rest.find(['?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end]
        .rfind('@')
        .or_else(|| rest[..before_query].rfind('@').filter(|&at| rest[..at].contains(':')));
    let rest = match at {
        Some(at) => format!("***@{}", &rest[at + 1..]),
        None => rest.to_string(),
    };
    format!("{}://{}", &uri[..scheme_end], redact_query(&rest))
}

fn redact_query(rest: &str) -> String {
    let Some((path, query)) = rest.split_once('?') else { return rest.to_string() };
    let (query, fragment) = query.split_once('#').map_or((query, None), |(q, f)| (q, Some(f)));
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.iter().any(|s| k.to_ascii_lowercase().contains(s)) => format!("{k}=***"),
            _ => p.to_string(),
        })
        .collect();
    let mut out = format!("{path}?{}", params.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn userinfo_is_hidden_and_nothing_else_changes() {
        assert_eq!(super::uri("rtsp://user:pa%40ss@cam.example:554/s?x=1"), "rtsp://***@cam.example:554/s?x=1");
        assert_eq!(super::uri("rtmp://a:b@c@host/live/x"), "rtmp://***@host/live/x");
        assert_eq!(
            super::uri("srt://host:9000?mode=caller&passphrase=x"),
            "srt://host:9000?mode=caller&passphrase=***"
        );
        assert_eq!(super::uri("https://cdn/x.m3u8?Token=abc#t"), "https://cdn/x.m3u8?Token=***#t");
        assert_eq!(super::uri("https://host/path/user@example"), "https://host/path/user@example");
        assert_eq!(super::uri("file:///tmp/a@b.mp4"), "file:///tmp/a@b.mp4");
        assert_eq!(super::uri("rtsp://admin:pa/ss@cam/s"), "rtsp://***@cam/s", "an unescaped / in a password");
        assert_eq!(super::uri("clip.mp4"), "clip.mp4");
    }
}
