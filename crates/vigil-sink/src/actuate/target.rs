//! What a stream id says about where the stream is published.
//!
//! The worker names its streams by how they arrived (`crates/vigil-worker/src/streams.rs`):
//! - `rtmp/APP/NAME`: pushed to the worker's RTMP server under application `APP`;
//! - `whip/NAME`: pushed to the worker's WHIP endpoint;
//! - anything else: a pulled stream, by its `[[ingest.pull]]` `name`.
//!
//! The nginx-rtmp adapter needs an application and a stream name. For `rtmp/APP/NAME`
//! they are `APP` and `NAME` (a worker that relays an nginx origin's publishers uses the
//! origin's application name). A pulled stream is found on nginx only when its name is
//! `APP/NAME` (one `/`, e.g. `name = "live/alice"` for `rtmp://origin/live/alice`); other
//! pulled names cannot be cut there. A WHIP stream never is on nginx.

use std::fmt;

/// Where a stream came from, as its id says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTarget<'a> {
    Rtmp { app: &'a str, name: &'a str },
    Whip { name: &'a str },
    Pulled { name: &'a str },
}

/// Why a stream id cannot be acted on. Permanent: the same id never parses later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("contains a control character")]
    ControlCharacter,
    #[error("is not rtmp/APP/NAME with non-empty APP and NAME (NAME without '/')")]
    BadRtmp,
    #[error("is not whip/NAME with a non-empty NAME without '/'")]
    BadWhip,
    #[error("is a pulled stream not named APP/NAME, so no nginx application can be derived from it")]
    NoNginxApp,
}

/// Longest id accepted; the worker's ids are far shorter, and the id goes into URLs.
const MAX_LEN: usize = 1024;

impl<'a> StreamTarget<'a> {
    pub fn parse(id: &'a str) -> Result<StreamTarget<'a>, StreamIdError> {
        if id.is_empty() {
            return Err(StreamIdError::Empty);
        }
        if id.len() > MAX_LEN {
            return Err(StreamIdError::TooLong);
        }
        if id.chars().any(char::is_control) {
            return Err(StreamIdError::ControlCharacter);
        }
        if let Some(rest) = id.strip_prefix("rtmp/") {
            return match rest.split_once('/') {
                Some((app, name)) if !app.is_empty() && !name.is_empty() && !name.contains('/') => {
                    Ok(StreamTarget::Rtmp { app, name })
                }
                _ => Err(StreamIdError::BadRtmp),
            };
        }
        if let Some(name) = id.strip_prefix("whip/") {
            return if name.is_empty() || name.contains('/') {
                Err(StreamIdError::BadWhip)
            } else {
                Ok(StreamTarget::Whip { name })
            };
        }
        Ok(StreamTarget::Pulled { name: id })
    }

    /// nginx-rtmp's application and stream name; `None` for a WHIP stream.
    pub fn nginx_app_name(&self) -> Option<Result<(&'a str, &'a str), StreamIdError>> {
        match *self {
            StreamTarget::Rtmp { app, name } => Some(Ok((app, name))),
            StreamTarget::Whip { .. } => None,
            StreamTarget::Pulled { name } => Some(match name.split_once('/') {
                Some((app, n)) if !app.is_empty() && !n.is_empty() && !n.contains('/') => Ok((app, n)),
                _ => Err(StreamIdError::NoNginxApp),
            }),
        }
    }
}

impl fmt::Display for StreamTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamTarget::Rtmp { app, name } => write!(f, "rtmp/{app}/{name}"),
            StreamTarget::Whip { name } => write!(f, "whip/{name}"),
            StreamTarget::Pulled { name } => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_ids_split_into_app_and_name() {
        let t = StreamTarget::parse("rtmp/live/alice").unwrap();
        assert_eq!(t, StreamTarget::Rtmp { app: "live", name: "alice" });
        assert_eq!(t.nginx_app_name(), Some(Ok(("live", "alice"))));
        assert_eq!(t.to_string(), "rtmp/live/alice");
    }

    #[test]
    fn pulled_names_map_to_nginx_only_as_app_slash_name() {
        let t = StreamTarget::parse("live/bob").unwrap();
        assert_eq!(t, StreamTarget::Pulled { name: "live/bob" });
        assert_eq!(t.nginx_app_name(), Some(Ok(("live", "bob"))));
        for name in ["camera-7", "a/b/c", "/x", "x/"] {
            let t = StreamTarget::parse(name).unwrap();
            assert_eq!(t.nginx_app_name(), Some(Err(StreamIdError::NoNginxApp)), "{name}");
        }
    }

    #[test]
    fn whip_streams_are_not_on_nginx() {
        let t = StreamTarget::parse("whip/carol").unwrap();
        assert_eq!(t, StreamTarget::Whip { name: "carol" });
        assert_eq!(t.nginx_app_name(), None);
    }

    #[test]
    fn hostile_ids_are_refused() {
        let cases = [
            ("", StreamIdError::Empty),
            ("rtmp/live/a\nb", StreamIdError::ControlCharacter),
            ("live/\u{0}x", StreamIdError::ControlCharacter),
            ("rtmp/live/a\u{7f}", StreamIdError::ControlCharacter),
            ("rtmp/", StreamIdError::BadRtmp),
            ("rtmp/live", StreamIdError::BadRtmp),
            ("rtmp//alice", StreamIdError::BadRtmp),
            ("rtmp/live/", StreamIdError::BadRtmp),
            ("rtmp/live/a/b", StreamIdError::BadRtmp),
            ("whip/", StreamIdError::BadWhip),
            ("whip/a/b", StreamIdError::BadWhip),
        ];
        for (id, want) in cases {
            assert_eq!(StreamTarget::parse(id), Err(want), "{id:?}");
        }
        assert_eq!(StreamTarget::parse(&"x".repeat(MAX_LEN + 1)), Err(StreamIdError::TooLong));
    }
}
