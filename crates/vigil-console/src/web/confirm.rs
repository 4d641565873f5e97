//! The second step of an irreversible action, and the message after any action.
//!
//! Cut now, a false positive (proposing or approving one) and resolving cannot be taken
//! back: the first POST answers with a page that says what will happen, whose form
//! carries the same fields again with `confirm=yes`. It works without script, and a
//! keyboard user confirms with Enter.

use super::pages::{esc, esc_attr, url_arg};

/// The question asked before an irreversible action; `None` for the others.
pub fn question(action: &str) -> Option<&'static str> {
    Some(match action {
        "cut" => {
            "Cut this stream now? An interrupt command goes to the workers and the actuator: the publisher is disconnected."
        }
        "false-positive" => {
            "Mark this a false positive? Its frames are allow-listed in this scope, and a cut still pending is withdrawn."
        }
        "approve-false-positive" => {
            "Approve this false positive? It takes effect as proposed: the frames are allow-listed, a pending cut withdrawn."
        }
        "resolve" => "Resolve this incident? It leaves the queue for the history.",
        _ => return None,
    })
}

/// The confirmation page: the question, the first form's fields again (in their order,
/// repeated ones included), Confirm and Cancel.
pub fn page(action: &str, question: &str, form: &[(String, String)]) -> String {
    let fields: Vec<(&String, &String)> =
        form.iter().filter(|(k, _)| k.as_str() != "confirm").map(|(k, v)| (k, v)).collect();
    let hidden: String = fields
        .iter()
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", esc_attr(k), esc_attr(v)))
        .collect();
    let incident = form.iter().find(|(k, _)| k == "incident").map_or("", |(_, v)| v.as_str());
    let summary: String = fields
        .iter()
        .filter(|(k, _)| k.as_str() != "csrf")
        .map(|(k, v)| format!("<dt>{}</dt><dd>{}</dd>", esc(&k.replace('_', " ")), esc(v)))
        .collect();
    format!(
        "<form method=\"post\" action=\"/actions/{}\" aria-label=\"Confirm\"><p role=\"alert\"><strong>{}</strong></p>\
         <dl>{summary}</dl>{hidden}<input type=\"hidden\" name=\"confirm\" value=\"yes\">\
         <button type=\"submit\" class=\"danger\" autofocus>Confirm</button> \
         <a href=\"{}\">Cancel</a></form>",
        esc_attr(action),
        esc(question),
        if incident.is_empty() || action == "bulk" {
            "/".to_string()
        } else {
            format!("/incident?id={}", url_arg(incident))
        }
    )
}

/// What the incident page says after an action (`done=` in its URL); only known actions
/// have a message, so nothing from the URL is shown as it came.
pub fn done_message(done: &str, paged: bool) -> Option<&'static str> {
    Some(match done {
        "hold" => "You hold this incident.",
        "release" => "Released: someone else may take it.",
        "assign" => "Assigned: the incident page and the queue show whose it is.",
        "acknowledge" => "Acknowledged, and the page with it.",
        "cut" => "Cut command sent: the incident shows when a worker or the actuator answers.",
        "escalate" if paged => "Escalated: its target was paged.",
        "escalate" | "escalate-unpaged" => "Escalated. Nobody was paged: no paging channel is configured.",
        "resolve" => "Resolved.",
        "false-positive" => "Marked a false positive: the allowlist entry goes to every worker.",
        "proposed" => "False positive proposed: a second reviewer approves or rejects it.",
        "approve-false-positive" => "False positive approved: the allowlist entry goes to every worker.",
        "reject-false-positive" => "The proposed false positive was rejected.",
        "revoke-allow" => "Allowlist entry revoked.",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_confirmation_repeats_the_fields_escaped_and_adds_confirm() {
        let form: Vec<(String, String)> = [
            ("csrf", "t0k"),
            ("incident", "rtmp/live/a@1#1"),
            ("note", "<script>alert(1)</script> \"quoted\""),
            ("confirm", "no"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let html = page("false-positive", question("false-positive").unwrap(), &form);
        assert!(html.contains("action=\"/actions/false-positive\""));
        assert!(html.contains("name=\"confirm\" value=\"yes\""));
        assert_eq!(html.matches("name=\"confirm\"").count(), 1, "the first form's confirm is not repeated");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("name=\"csrf\" value=\"t0k\""));
        assert!(question("hold").is_none() && question("acknowledge").is_none());
        assert_eq!(done_message("<img src=x>", true), None);
        assert!(done_message("escalate", false).unwrap().contains("Nobody was paged"));
        assert!(done_message("escalate-unpaged", true).unwrap().contains("Nobody was paged"));
    }
}
