//! The console's pages: plain HTML forms, no script, no imagery. Keyboard alone works
//! (every action is a link or a button in document order, focus is always visible) and
//! text contrast is at least 7:1 (WCAG AAA).

use crate::model::UnixMs;
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};

/// The console's only script: the queue and incident pages refresh themselves every 5 s
/// (not while a form is being filled in), and keys act on the incident page (the
/// buttons carry `aria-keyshortcuts`) and move through the queue (j, k). Served from
/// `/console.js` under `script-src 'self'`: no inline script, and every page works
/// without it.
pub const SCRIPT: &str = r#"'use strict';
(function () {
  var path = location.pathname;
  var url = new URL(location.href);
  if (url.searchParams.has('done')) {
    // The action's message shows once; a refresh does not repeat it.
    url.searchParams.delete('done');
    history.replaceState(null, '', url.pathname + url.search);
  }
  // Times are written "YYYY-MM-DD HH:MM:SS UTC"; an account that chose local time sees
  // them in the browser's zone.
  function localTimes() {
    if (document.body.getAttribute('data-times') !== 'local') { return; }
    var re = /(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) UTC/g;
    var walker = document.createTreeWalker(document.getElementById('main') || document.body, NodeFilter.SHOW_TEXT);
    var nodes = [];
    while (walker.nextNode()) { if (re.test(walker.currentNode.nodeValue)) { nodes.push(walker.currentNode); } re.lastIndex = 0; }
    nodes.forEach(function (n) {
      n.nodeValue = n.nodeValue.replace(re, function (_, y, mo, d, h, mi, s) {
        var t = new Date(Date.UTC(+y, +mo - 1, +d, +h, +mi, +s));
        return t.toLocaleString(undefined, { year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false }) + ' local';
      });
    });
  }
  localTimes();
  var editing = false;
  document.addEventListener('input', function () { editing = true; });
  function busy() {
    var a = document.activeElement;
    return editing || (a && /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(a.tagName)) || document.visibilityState !== 'visible';
  }
  if (path === '/' || path === '/incident') {
    var inFlight = false;
    setInterval(function () {
      if (busy() || inFlight) { return; }
      inFlight = true;
      fetch(location.href, { credentials: 'same-origin', cache: 'no-store' }).then(function (r) {
        if (!r.ok || !r.headers.get('content-type') || r.headers.get('content-type').indexOf('text/html') !== 0) { return null; }
        return r.text();
      }).then(function (text) {
        if (!text || busy()) { return; }
        var fresh = new DOMParser().parseFromString(text, 'text/html').getElementById('main');
        var main = document.getElementById('main');
        var version = function (m) { var v = m && m.querySelector('[data-version]'); return v && v.getAttribute('data-version'); };
        // Replaced only when what it shows changed (not for a clock ticking on).
        if (fresh && main && version(fresh) !== version(main)) {
          var focused = document.activeElement && document.activeElement.getAttribute('href');
          main.innerHTML = fresh.innerHTML;
          localTimes();
          document.body.setAttribute('data-refreshed', String(Date.now()));
          if (focused) {
            var again = Array.prototype.find.call(main.querySelectorAll('a[href]'), function (a) { return a.getAttribute('href') === focused; });
            if (again) { again.focus(); }
          }
        }
      }).catch(function () {}).then(function () { inFlight = false; });
    }, 5000);
  }
  document.addEventListener('keydown', function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey || busy()) { return; }
    var key = e.key;
    if (key === 'j' || key === 'k') {
      var links = Array.prototype.slice.call(document.querySelectorAll('main a[href^="/incident?id="]'));
      if (!links.length) { return; }
      var i = links.indexOf(document.activeElement);
      var next = key === 'j' ? Math.min(i + 1, links.length - 1) : Math.max(i - 1, 0);
      links[i < 0 ? 0 : next].focus();
      e.preventDefault();
      return;
    }
    var button = document.querySelector('main button[aria-keyshortcuts="' + key + '"]');
    if (!button) { return; }
    e.preventDefault();
    var field = button.form && button.form.querySelector('textarea[required]');
    if (field) { field.focus(); } else { button.click(); }
  });
})();
"#;

pub const CSS: &str = r#"
:root { color: #111; background: #fff; font: 16px/1.5 system-ui, sans-serif; }
body { margin: 0 auto; max-width: 78rem; padding: 0 1rem 3rem; }
a { color: #0b3d91; }
a:focus, button:focus, input:focus, select:focus, textarea:focus, summary:focus { outline: 3px solid #b35900; outline-offset: 2px; }
.skip { position: absolute; left: -999px; } .skip:focus { left: 1rem; top: 1rem; background: #fff; padding: .5rem; }
header { display: flex; gap: 1rem; align-items: baseline; border-bottom: 2px solid #111; flex-wrap: wrap; }
header nav { display: flex; gap: 1rem; flex: 1; }
header form.times button { background: #555; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { border: 1px solid #555; padding: .35rem .5rem; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
thead th { overflow-wrap: normal; }
form[aria-label="Confirm"] a { margin-left: 1rem; }
code { overflow-wrap: anywhere; }
th { background: #e8e8e8; }
caption { text-align: left; font-weight: bold; padding: .25rem 0; }
button { background: #0b3d91; color: #fff; border: 0; padding: .45rem .9rem; font: inherit; cursor: pointer; border-radius: 3px; }
button.danger { background: #8b0000; }
.actions { display: grid; grid-template-columns: repeat(auto-fit, minmax(17rem, 1fr)); gap: 1rem; }
.actions form { border: 1px solid #555; padding: .75rem; }
label { display: block; margin: .25rem 0; }
textarea, input, select { font: inherit; width: 100%; box-sizing: border-box; border: 1px solid #333; padding: .3rem; }
.banner { border: 2px solid #8b0000; background: #fff0f0; padding: .5rem 1rem; margin: 1rem 0; }
.ok { border: 2px solid #1b5e20; background: #f0fff0; padding: .5rem 1rem; margin: 1rem 0; }
code { font-size: .85em; word-break: break-all; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; } dt { font-weight: bold; }
button.primary { background: #1b5e20; font-weight: bold; }
.notice { border: 2px solid #0b3d91; background: #eef3ff; padding: .5rem 1rem; margin: 1rem 0; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
.filters { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; }
.filters label { width: auto; flex: 1 1 10rem; }
tr.group th { background: #d6e0f5; }
td input[type=checkbox] { width: auto; }
kbd { border: 1px solid #555; border-radius: 3px; padding: 0 .25rem; font-size: .9em; }
fieldset { border: 1px solid #555; margin: 1rem 0; }
"#;

pub fn esc(s: &str) -> String {
    text(s).into_owned()
}

pub fn esc_attr(s: &str) -> String {
    attr(s).into_owned()
}

pub fn url_arg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// UTC, to the second.
pub fn time(ms: UnixMs) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The day of a time, `YYYY-MM-DD` (UTC).
pub fn day(ms: UnixMs) -> String {
    time(ms)[..10].to_string()
}

/// Howard Hinnant's days-to-civil.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// A hidden marker of what a page shows, for its self-refresh: the script replaces the
/// page's content only when the marker changed.
pub fn version_marker(state: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in state.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("<span hidden data-version=\"{h:016x}\"></span>")
}

/// The keys the console's script takes, listed where they work.
pub const SHORTCUTS: &str = "<p class=\"shortcuts\">Keys: <kbd>a</kbd> acknowledge · <kbd>c</kbd> cut now · \
    <kbd>e</kbd> escalate · <kbd>f</kbd> false positive (on an incident) · <kbd>j</kbd>/<kbd>k</kbd> next/previous incident \
    (in the queue). The pages refresh themselves every 5 s while no form is being filled in.</p>";

/// The frame of every page.
pub fn layout(title: &str, user: Option<&super::auth::Caller>, banner: Option<&str>, body: &str) -> String {
    let nav = match user {
        Some(c) => format!(
            "<nav aria-label=\"Main\"><a href=\"/\">Queue</a><a href=\"/reports\">Response times</a>{}</nav>\
             <p>Signed in as <strong>{}</strong> ({})</p>\
             <form method=\"post\" action=\"/account/times\" class=\"times\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"local\" value=\"{}\"><button type=\"submit\">{}</button></form>\
             <form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form>",
            if c.role.as_str() == "admin" {
                "<a href=\"/allowlist\">Allowlist</a><a href=\"/accounts\">Accounts</a>"
            } else {
                ""
            },
            esc(&c.user),
            esc(c.role.as_str()),
            esc_attr(&c.csrf),
            if c.local_time { "0" } else { "1" },
            if c.local_time { "Show times in UTC" } else { "Show times in local time" },
            esc_attr(&c.csrf)
        ),
        None => String::new(),
    };
    // Times are written in UTC; an account that chose local time has the script show
    // them in the browser's zone.
    let times = if user.is_some_and(|c| c.local_time) { " data-times=\"local\"" } else { "" };
    let banner = banner.map(|b| format!("<div class=\"banner\" role=\"alert\">{b}</div>")).unwrap_or_default();
    // Signed-in pages refresh themselves and take shortcuts; everything works without.
    let script = if user.is_some() { "<script src=\"/console.js\" defer></script>" } else { "" };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · Vigil on-call</title><link rel=\"stylesheet\" href=\"/console.css\">{script}</head><body{times}>\
         <a class=\"skip\" href=\"#main\">Skip to content</a><header><strong>Vigil on-call</strong>{nav}</header>\
         <main id=\"main\" tabindex=\"-1\"><h1>{}</h1>{banner}{body}</main></body></html>",
        esc(title),
        esc(title)
    )
}

pub fn login(error: Option<&str>) -> String {
    let error = error.map(|e| format!("<div class=\"banner\" role=\"alert\">{}</div>", esc(e))).unwrap_or_default();
    layout(
        "Sign in",
        None,
        None,
        &format!(
            "{error}<form method=\"post\" action=\"/login\" style=\"max-width:24rem\">\
             <label for=\"user\">User name</label><input id=\"user\" name=\"user\" autocomplete=\"username\" required autofocus>\
             <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <p><button type=\"submit\">Sign in</button></p></form>"
        ),
    )
}

/// A hidden CSRF field and a hidden incident id: the start of every action form.
pub fn form_start(action: &str, csrf: &str, incident: &str, label: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/actions/{action}\" aria-label=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"incident\" value=\"{}\">",
        esc_attr(label),
        esc_attr(csrf),
        esc_attr(incident)
    )
}
