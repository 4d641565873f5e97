//! The console under failure, on PostgreSQL (Debian's, started by the harness on
//! loopback): two replicas share one store; a store outage makes them not ready, and
//! alerts published meanwhile arrive once the store is back (intake catches up from its
//! committed offsets); a broker outage leaves the queue readable and marked stale.

mod common;

#[path = "../../vigil-console/tests/common/postgres.rs"]
mod postgres;

use common::console::*;
use common::wait_until;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::time::Duration;
use vigil_core::{Alert, AlertEvent, Explanation, StreamId, Verdict};
use vigil_sink::testing::Broker;

const PASSWORD: &str = "a long enough password";

fn alert(stream: &str) -> String {
    alert_with_frame(stream, None)
}

/// An opened review alert on `stream`, with one frame of PDQ hash `pdq` when given.
fn alert_with_frame(stream: &str, pdq: Option<&str>) -> String {
    let now = vigil_sink::actuate::publish::now_unix_ms();
    let frames = pdq
        .map(|h| vigil_core::EvidenceFrame { pts_ms: 0, pdq: Some(h.into()), conditions: vec!["nsfw".into()] })
        .into_iter()
        .collect();
    serde_json::to_string(&Alert {
        schema: vigil_core::alert::ALERT_SCHEMA.into(),
        schema_version: 1,
        alert_id: format!("{stream}@{now}-0#1"),
        event: AlertEvent::Opened,
        stream_id: StreamId(stream.into()),
        account_id: Some("acct-7".into()),
        session_id: Some(format!("{now}-0")),
        started_ms: 0,
        last_seen_ms: 1000,
        emitted_at_unix_ms: now,
        decision: Verdict::Review,
        rule: "nsfw_review".into(),
        explanation: Explanation {
            reasons: vec!["nsfw score 0.97".into()],
            frames,
            models: vec![],
            policy: "default".into(),
            policy_version: "1".into(),
        },
        worker_id: "worker-a".into(),
        reissue: None,
        origin: None,
    })
    .unwrap()
}

#[test]
fn replicas_share_a_postgres_store_and_ride_out_store_and_broker_outages() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&["vigil.alerts", "vigil.interrupts", "vigil.banks.updates"]);
    let pg = postgres::PgServer::start();
    let db = pg.create_database();
    let (p1, p2) = (common::nginx::free_port(), common::nginx::free_port());
    // The second replica sits behind an auth proxy (oauth2-proxy's headers, from loopback,
    // which is trusted only because this config names it; the role from its groups).
    let config = |port: u16, auth: &str| {
        let path = dir.path().join(format!("console-{port}.toml"));
        std::fs::write(
            &path,
            format!(
                "[sink.kafka]\nbrokers = \"{}\"\n\
                 [console]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
                 store_url_env = \"VIGIL_TEST_CONSOLE_DB\"\nstate_dir = \"{}\"\n{auth}",
                broker.addr,
                dir.path().join("unused").display()
            ),
        )
        .unwrap();
        path
    };
    let env = [("VIGIL_TEST_CONSOLE_DB", db.as_str())];
    let (c1_config, c2_config) = (
        config(p1, ""),
        config(
            p2,
            "[console.auth]\nproxy_user_header = \"X-Forwarded-Email\"\nproxy_groups_header = \"X-Forwarded-Groups\"\n\
             trusted_proxies = [\"127.0.0.1\"]\n[console.auth.group_roles]\noncall = \"reviewer\"\n",
        ),
    );
    for (user, role) in [("olga", "reviewer"), ("ada", "admin")] {
        let out =
            vigil_console(&c1_config, &["user", user, "--role", role], &[env[0], ("VIGIL_CONSOLE_PASSWORD", PASSWORD)])
                .output()
                .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let c1 = start_console(&c1_config, dir.path(), p1, &env);
    // A client that connects and never sends a request head (slowloris): dropped.
    let mut silent = std::net::TcpStream::connect(&c1.addr).unwrap();
    let silent_since = std::time::Instant::now();
    let c2 = start_console(&c2_config, dir.path(), p2, &env);
    let origin = |port: u16| format!("http://127.0.0.1:{port}");
    let s1 = sign_in(&c1.addr, &origin(p1), "olga", PASSWORD);
    let proxied =
        |headers: &str| http(&c2.addr, &format!("GET / HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"));
    let (status, head) = proxied("X-Forwarded-Email: pat@example.org\r\nX-Forwarded-Groups: staff,oncall\r\n");
    assert_eq!(status, 303, "a proxy user gets a session: {head}");
    let s2 = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    assert!(
        get_as(&c2.addr, &s2, "/").1.contains("pat@example.org</strong> (reviewer)"),
        "signed in through the proxy"
    );
    assert_eq!(proxied("").0, 303, "no proxy header, no session: sent to sign in");
    assert_eq!(proxied("X-Forwarded-Email: \r\n").0, 303, "an empty user is nobody");
    let queue = |c: &Console, cookie: &str| get_as(&c.addr, cookie, "/").1;
    let queue_at = |c: &Console, cookie: &str, path: &str| {
        let (status, page) = get_as(&c.addr, cookie, path);
        assert_eq!(status, 200, "{path}: {page}");
        page
    };
    let html_unescape =
        |s: &str| s.replace("&#x2F;", "/").replace("&#x23;", "#").replace("&amp;", "&").replace("&#x40;", "@");
    let post_full = |cookie: &str, path: &str, body: &str| {
        http(
            &c1.addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nOrigin: {}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                origin(p1),
                body.len()
            ),
        )
    };

    // An admin manages accounts in the console; a reviewer cannot.
    let admin = sign_in(&c1.addr, &origin(p1), "ada", PASSWORD);
    let (status, accounts) = get_as(&c1.addr, &admin, "/accounts");
    assert!(status == 200 && accounts.contains("olga"), "{accounts}");
    let csrf = accounts.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();
    let post = |cookie: &str, path: &str, body: &str| post_full(cookie, path, body).0;
    let rita = format!("csrf={csrf}&name=rita&role=reviewer&password={}", PASSWORD.replace(' ', "+"));
    assert_eq!(post(&admin, "/accounts", &rita), 303);
    sign_in(&c1.addr, &origin(p1), "rita", PASSWORD);
    assert_eq!(post(&admin, "/accounts", &format!("csrf={csrf}&name=rob&role=viewer&password=short")), 400);
    assert_eq!(post(&admin, "/accounts/disable", &format!("csrf={csrf}&name=rita&disabled=true")), 303);
    let body = format!("user=rita&password={}", PASSWORD.replace(' ', "+"));
    let refused = http(
        &c1.addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nOrigin: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            origin(p1),
            body.len()
        ),
    );
    assert_eq!(refused.0, 401, "a disabled account cannot sign in");
    let (status, refused_page) = get_as(&c1.addr, &s1, "/accounts");
    assert_eq!(status, 403, "a reviewer manages no accounts");
    assert!(refused_page.contains("<nav") && refused_page.contains("needs the admin role"), "{refused_page}");
    // The console keeps an admin: the last one can neither step down nor be disabled.
    let full = |path: &str, body: &str| post_full(&admin, path, body);
    let (status, page) = full("/accounts", &format!("csrf={csrf}&name=ada&role=reviewer"));
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("ada is the last admin") && page.contains("<nav"), "{page}");
    assert_eq!(full("/accounts/disable", &format!("csrf={csrf}&name=ada&disabled=true")).0, 409);
    // With a second admin, the first may step down (and is a reviewer after).
    let alan = format!("csrf={csrf}&name=alan&role=admin&password={}", PASSWORD.replace(' ', "+"));
    assert_eq!(post(&admin, "/accounts", &alan), 303);
    let (status, page) = full("/accounts/disable", &format!("csrf={csrf}&name=alan&disabled=true"));
    assert_eq!(status, 303, "{page}");
    let (status, page) = full("/accounts", &format!("csrf={csrf}&name=alan&role=viewer"));
    assert_eq!(status, 303, "a disabled admin is no admin to keep: {page}");

    let producer: BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &broker.addr).create().expect("a producer");
    let publish = |stream: &str| {
        let payload = alert(stream);
        let headers =
            common::trust::signed(vigil_trust::Role::Worker, "vigil.alerts", Some(stream), Some(payload.as_bytes()));
        producer.send(BaseRecord::to("vigil.alerts").key(stream).payload(&payload).headers(headers)).unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    };

    // Both replicas show what either took in: one store.
    publish("live/before");
    wait_until("the first alert on both replicas", 60, || {
        queue(&c1, &s1).contains("live/before") && queue(&c2, &s2).contains("live/before")
    });

    // Store outage: not ready; what is published meanwhile waits in Kafka.
    pg.stop();
    wait_until("not ready without the store", 30, || {
        let (status, body) = http(&c1.addr, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        status == 503 && body.contains("not ready")
    });
    // On the broker once `publish` returns (it flushes): it waits there, uncommitted,
    // until a replica's store takes it.
    publish("live/during-store-outage");
    pg.start_again();
    wait_until("ready again", 60, || {
        http(&c1.addr, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0 == 200
            && http(&c2.addr, "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").0 == 200
    });
    wait_until("the alert published during the outage", 60, || queue(&c1, &s1).contains("live/during-store-outage"));
    let page = queue(&c2, &s2);
    assert_eq!(page.matches(">live/during-store-outage</a>").count(), 1, "one incident, taken once: {page}");

    // Broker outage: the queue stays readable, marked stale; then fresh again.
    broker.signal("-STOP");
    wait_until("the stale mark", 60, || queue(&c1, &s1).contains("Stale: the Kafka cluster has not answered"));
    let page = queue(&c1, &s1);
    assert!(page.contains("live/before") && page.contains("live/during-store-outage"), "still readable: {page}");
    broker.signal("-CONT");
    wait_until("fresh again", 60, || !queue(&c1, &s1).contains("Stale:"));
    publish("live/after");
    wait_until("alerts flow again", 60, || queue(&c2, &s2).contains("live/after"));
    // A false positive, then its revocation by an admin: both reach the bank-updates
    // topic under the entry's key (a worker replaying the topic ends with it revoked).
    let fp = alert_with_frame("live/fp", Some(&"ab".repeat(32)));
    let fp_id = serde_json::from_str::<serde_json::Value>(&fp).unwrap()["alert_id"].as_str().unwrap().to_string();
    let headers =
        common::trust::signed(vigil_trust::Role::Worker, "vigil.alerts", Some("live/fp"), Some(fp.as_bytes()));
    producer.send(BaseRecord::to("vigil.alerts").key("live/fp").payload(&fp).headers(headers)).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let incident = format!("/incident?id={}", vigil_console::web::pages::url_arg(&fp_id));
    wait_until("the incident to review", 60, || get_as(&c1.addr, &s1, &incident).0 == 200);
    // Its interrupt command is out, and nothing has carried it out yet.
    let command_id = format!("{fp_id}/interrupt");
    let cmd = serde_json::json!({
        "schema": "vigil.interrupt", "schema_version": 1, "command_id": command_id, "alert_id": fp_id,
        "stream_id": "live/fp", "rule": "nsfw_review", "issued_at_unix_ms": 1, "worker_id": "worker-a"
    })
    .to_string();
    let headers =
        common::trust::signed(vigil_trust::Role::Worker, "vigil.interrupts", Some("live/fp"), Some(cmd.as_bytes()));
    producer.send(BaseRecord::to("vigil.interrupts").key("live/fp").payload(&cmd).headers(headers)).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    wait_until("the command on the incident", 60, || get_as(&c1.addr, &s1, &incident).1.contains("issued"));
    let page = get_as(&c1.addr, &s1, &incident).1;
    let olga_csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();
    let arg = vigil_console::web::pages::url_arg;
    let form = format!(
        "csrf={olga_csrf}&incident={}&scope={}&note=benign+test+pattern&expiry_days=7",
        arg(&fp_id),
        arg("rule:nsfw_review")
    );
    // Irreversible: the first POST only asks for confirmation (a page repeating the form).
    let (status, confirm) = post_full(&s1, "/actions/false-positive", &form);
    assert_eq!(status, 200, "{confirm}");
    assert!(confirm.contains("Mark this a false positive?") && confirm.contains("name=\"confirm\" value=\"yes\""));
    assert!(get_as(&c1.addr, &s1, &incident).1.contains("issued"), "nothing done before the confirmation");
    // A false positive is never a plain resolution (it would skip the allowlist and four eyes).
    let sneaky = format!("csrf={olga_csrf}&incident={}&outcome=false_positive&note=x&confirm=yes", arg(&fp_id));
    assert_eq!(post(&s1, "/actions/resolve", &sneaky), 409);
    assert_eq!(post(&s1, "/actions/false-positive", &format!("{form}&confirm=yes")), 303);
    let page = get_as(&c1.addr, &admin, &incident).1;
    // The pending command was withdrawn: a console-signed withdrawal follows it on the
    // interrupts topic (the actuator reads ahead for it), and the page says so.
    assert!(page.contains("withdrawn: judged a false positive before any cut"), "{page}");
    let interrupts = vigil_sink::testing::read_from_beginning(&broker.addr, "vigil.interrupts");
    let got = vigil_sink::testing::consume_until(&interrupts, Duration::from_secs(30), |got| got.len() >= 2);
    let withdrawal = got.iter().find_map(|m| {
        use rdkafka::Message;
        vigil_sink::actuate::read_withdrawal(m.payload()?).map(|w| (w, m.key().map(<[u8]>::to_vec), m))
    });
    let (w, key, m) = withdrawal.expect("a withdrawal on the interrupts topic");
    assert_eq!((w.command_id.as_str(), key.as_deref()), (command_id.as_str(), Some(&b"live/fp"[..])));
    assert_eq!(w.withdrawn_by, "console:olga");
    let verified = common::trust::verifier(vigil_trust::TopicKind::Interrupts).check(m).expect("signed");
    assert_eq!(verified.role, Some(vigil_trust::Role::Console));
    let schema: serde_json::Value = serde_json::from_str(vigil_core::alert::WITHDRAWAL_JSON_SCHEMA).unwrap();
    let body: serde_json::Value = serde_json::from_slice(rdkafka::Message::payload(m).unwrap()).unwrap();
    assert!(jsonschema::validator_for(&schema).unwrap().is_valid(&body), "{body}");
    let entry = page
        .split("name=\"entry\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a revoke form")
        .to_string();
    let revoke = format!("csrf={csrf}&incident={}&entry={}", arg(&fp_id), arg(&entry));
    assert_eq!(
        post(&s1, "/actions/revoke-allow", &format!("csrf={olga_csrf}&incident={}&entry={}", arg(&fp_id), arg(&entry))),
        403,
        "a reviewer cannot revoke"
    );
    assert_eq!(post(&admin, "/actions/revoke-allow", &revoke), 303);
    assert!(get_as(&c1.addr, &admin, &incident).1.contains("<strong>revoked</strong>"));
    // The allowlist page (admins): every entry, searched, with its state.
    let (status, list) = get_as(&c1.addr, &admin, "/allowlist?q=BENIGN+test");
    assert_eq!(status, 200, "{list}");
    assert!(list.contains("benign test pattern") && list.contains("<strong>revoked</strong>"), "{list}");
    assert!(get_as(&c1.addr, &admin, "/allowlist?q=no+such+entry").1.contains("No entries."));
    assert_eq!(get_as(&c1.addr, &s1, "/allowlist").0, 403, "reviewers do not manage the allowlist");
    let updates = vigil_sink::testing::read_from_beginning(&broker.addr, "vigil.banks.updates");
    let mut ops = Vec::new();
    let revoked = |got: &[rdkafka::message::OwnedMessage]| {
        got.iter()
            .any(|m| rdkafka::Message::payload(m).is_some_and(|p| String::from_utf8_lossy(p).contains("\"revoke\"")))
    };
    for m in vigil_sink::testing::consume_until(&updates, Duration::from_secs(30), revoked) {
        use rdkafka::Message;
        let u: vigil_core::BankUpdate = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(m.key(), Some(entry.as_bytes()));
        assert_eq!(u.check(Some(entry.as_bytes())), Ok(()));
        // At least once: the entry may go out twice (the action, and a replica's retry).
        if ops.last() != Some(&u.op) {
            ops.push(u.op);
        }
    }
    assert_eq!(ops, [vigil_core::BankUpdateOp::Allow, vigil_core::BankUpdateOp::Revoke]);

    // /reports: today's row, as CSV, counts the live incidents and not a file scan.
    let today = vigil_console::store::civil(vigil_sink::actuate::publish::now_unix_ms() as i64 / 86_400_000);
    let todays_incidents = |csv: &str| -> u64 {
        let row = csv.lines().find(|l| l.starts_with(&today)).unwrap_or_else(|| panic!("no row for {today}: {csv}"));
        row.split(',').nth(1).unwrap().parse().unwrap()
    };
    let (status, csv) = get_as(&c1.addr, &s1, &format!("/reports?from={today}&to={today}&format=csv"));
    assert_eq!(status, 200, "{csv}");
    assert!(csv.contains("content-type: text/csv"), "{csv}");
    assert!(csv.contains("day,incidents,acknowledged,median_to_acknowledge_ms,interrupted"), "{csv}");
    let live = todays_incidents(&csv);
    assert!(live >= 4, "{csv}");
    let mut scan: Alert = serde_json::from_str(&alert("scan/clip.mp4")).unwrap();
    scan.origin = Some(vigil_core::AlertOrigin::FileScan);
    let scan = serde_json::to_string(&scan).unwrap();
    let headers =
        common::trust::signed(vigil_trust::Role::Worker, "vigil.alerts", Some("scan/clip.mp4"), Some(scan.as_bytes()));
    producer.send(BaseRecord::to("vigil.alerts").key("scan/clip.mp4").payload(&scan).headers(headers)).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    wait_until("the file scan in the queue", 60, || queue(&c1, &s1).contains("scan/clip.mp4"));
    let (_, csv) = get_as(&c1.addr, &s1, &format!("/reports?from={today}&to={today}&format=csv"));
    assert_eq!(todays_incidents(&csv), live, "a file scan is not counted: {csv}");
    let (status, response) = get_as(&c2.addr, &s2, &format!("/reports?from={today}&to={today}&format=json"));
    let (head, json) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("content-type: application/json") && head.contains("attachment"), "{head}");
    let json: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!((status, json["days"][0]["incidents"].as_u64()), (200, Some(live)), "{json}");
    let (status, page) = get_as(&c1.addr, &s1, "/reports?from=2026-02-30&to=soon");
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("from: &quot;2026-02-30&quot;") || page.contains("2026-02-30"), "{page}");
    assert!(page.contains("<nav"), "a refused report is a page with navigation: {page}");

    // The queue searched, and two incidents acknowledged, then resolved, at once under
    // one note (the resolve asks for confirmation first).
    let found = queue_at(&c1, &s1, "/?q=LIVE/AFTER");
    assert!(found.contains("live/after") && !found.contains("live/before"), "{found}");
    assert_eq!(get_as(&c1.addr, &s1, "/?state=gone&from=soon").0, 400);
    let page = queue_at(&c1, &s1, "/?q=live%2F&group=stream");
    assert!(page.contains("class=\"group\""), "grouped by stream: {page}");
    let pick = |page: &str, stream: &str| -> String {
        let link = format!(">{stream}</a>");
        let row = page.split("<tr>").find(|r| r.contains(&link)).unwrap_or_else(|| panic!("{stream}: {page}"));
        row.split("name=\"incident\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string()
    };
    // Assigned, then handed over; never to a viewer or a stranger.
    let after_page = queue_at(&c1, &s1, "/?q=live%2Fafter");
    let after_id = html_unescape(&pick(&after_page, "live/after"));
    let assign = |to: &str| format!("csrf={olga_csrf}&incident={}&to={to}", arg(&after_id));
    assert_eq!(post(&s1, "/actions/assign", &assign("olga")), 303);
    assert!(queue_at(&c1, &s1, "/?q=live%2Fafter").contains("assigned to olga"));
    assert_eq!(post(&s1, "/actions/assign", &assign("ada")), 303);
    let incident_page = get_as(&c1.addr, &s1, &format!("/incident?id={}", arg(&after_id))).1;
    assert!(incident_page.contains("<dt>Assigned to</dt><dd>ada</dd>"), "{incident_page}");
    assert!(incident_page.contains("<td>assign</td>"), "the hand-over is audited: {incident_page}");
    assert_eq!(post(&s1, "/actions/assign", &assign("rita")), 409, "rita is disabled");
    assert_eq!(post(&s1, "/actions/assign", &assign("nobody-here")), 409);

    let two = [pick(&page, "live/before"), pick(&page, "live/after")];
    let chosen: String = two.iter().map(|id| format!("&incident={}", arg(&html_unescape(id)))).collect();
    let bulk = format!("csrf={olga_csrf}{chosen}&op=acknowledge&note=triaged+together");
    let (status, done) = post_full(&s1, "/actions/bulk", &bulk);
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("Acknowledged 2 of 2"), "{done}");
    let bulk = format!("csrf={olga_csrf}{chosen}&op=resolve%3Ano_action&note=stream+ended");
    let (status, confirm) = post_full(&s1, "/actions/bulk", &bulk);
    assert_eq!(status, 200);
    assert!(
        confirm.contains("Resolve these incidents?") && confirm.matches("name=\"incident\"").count() == 2,
        "{confirm}"
    );
    let (status, done) = post_full(&s1, "/actions/bulk", &format!("{bulk}&confirm=yes"));
    assert!(status == 200 && done.contains("Resolved 2 of 2"), "{done}");
    let history = queue_at(&c1, &s1, "/?state=resolved&q=live%2F");
    assert!(history.contains("live/before") && history.contains("live/after"), "{history}");
    assert!(!queue_at(&c1, &s1, "/").contains("live/before"), "resolved incidents leave the queue");

    for c in [&c1, &c2] {
        assert!(!c.log().contains("panicked"), "{}", c.log());
    }
    // Closed by the 10 s header-read deadline: the read ends when the console closes it
    // (a read still waiting at 14 s times out, and fails below).
    let left = Duration::from_secs(14).saturating_sub(silent_since.elapsed()).max(Duration::from_secs(1));
    silent.set_read_timeout(Some(left)).unwrap();
    let mut rest = Vec::new();
    let closed = std::io::Read::read_to_end(&mut silent, &mut rest);
    assert!(
        !matches!(&closed, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "a silent connection is still open after {:?}: {closed:?}",
        silent_since.elapsed()
    );
}
