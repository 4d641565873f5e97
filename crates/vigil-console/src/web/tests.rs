//! The console's router driven in-process over a real loopback listener: sign-in, the
//! proxy's headers, sessions, the audit trail of the incident page.

use crate::config::ConsoleConfig;
use crate::model::{Role, now_ms};
use crate::state::Shared;
use crate::store::{AuditKey, Store};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "a long enough password";

struct Console {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// `name=value` of the session cookie set, if any.
    fn cookie(&self) -> Option<String> {
        self.header("set-cookie").and_then(|c| c.split(';').next()).map(str::to_string).filter(|c| !c.ends_with('='))
    }
}

fn config(auth: impl FnOnce(&mut crate::config::AuthConfig)) -> ConsoleConfig {
    let mut cfg =
        ConsoleConfig { public_url: "http://127.0.0.1:8090".into(), cookie_secure: false, ..Default::default() };
    auth(&mut cfg.auth);
    cfg
}

async fn start(cfg: ConsoleConfig) -> Console {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/console.db", dir.path().display());
    let store = Store::open(&url, AuditKey::new(&[7; 32]).unwrap()).await.unwrap();
    let paging = cfg.paging.resolve_secrets().unwrap();
    let shared = Arc::new(Shared::new(cfg, store, None, paging, prometheus::Registry::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = super::router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Console { addr, shared, _dir: dir }
}

impl Console {
    async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if method == "POST" {
            req.push_str(&format!(
                "Origin: http://127.0.0.1:8090\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Reply { status, head: head.to_string(), body: body.to_string() }
    }

    async fn get(&self, path: &str, cookie: &str) -> Reply {
        self.request("GET", path, &[("Cookie", cookie)], "").await
    }

    async fn sign_in(&self, user: &str, password: &str) -> Reply {
        let body = format!("user={}&password={}", crate::web::pages::url_arg(user), password.replace(' ', "+"));
        self.request("POST", "/login", &[], &body).await
    }

    async fn user(&self, name: &str, role: Role) {
        let hash = super::auth::hash_password(PASSWORD).unwrap();
        self.shared.store.upsert_user(name, Some(&hash), role).await.unwrap();
    }

    async fn signed_in(&self, name: &str) -> String {
        let r = self.sign_in(name, PASSWORD).await;
        assert_eq!(r.status, 303, "sign-in of {name}: {}", r.head);
        r.cookie().expect("a session cookie")
    }
}

fn opened(id: &str) -> vigil_core::Alert {
    serde_json::from_value(serde_json::json!({
        "schema": "vigil.alert", "schema_version": 1, "alert_id": id, "event": "opened",
        "stream_id": format!("stream-{id}"), "account_id": null, "session_id": null,
        "started_ms": 0, "last_seen_ms": 1_000, "emitted_at_unix_ms": now_ms(),
        "decision": "review", "rule": "bank_match",
        "explanation": { "reasons": [], "frames": [], "models": [], "policy": "default", "policy_version": "1" },
        "worker_id": "worker-a",
    }))
    .expect("an opened alert")
}

fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_loopback_are_not_believed_by_default() {
    let cfg = config(|a| a.proxy_user_header = Some("X-Forwarded-Email".into()));
    assert!(cfg.auth.trusted_proxies.is_empty(), "no proxy is trusted by default");
    let errors = cfg.validate("console");
    assert!(
        errors.iter().any(|e| e.contains("proxy_user_header") && e.contains("trusted_proxies")),
        "a proxy user header without a trusted proxy is a config error: {errors:?}"
    );
    // Even past validation, loopback is no proxy: no session, whatever the headers say.
    let c = start(cfg).await;
    let r = c
        .request(
            "GET",
            "/",
            &[("X-Forwarded-Email", "m@x"), ("X-Vigil-Role", "admin"), ("X-Forwarded-Groups", "admins")],
            "",
        )
        .await;
    assert_eq!((r.status, r.header("location")), (303, Some("/login")), "{}", r.head);
    assert_eq!(r.cookie(), None, "no session for forged proxy headers");
    assert_eq!(c.shared.store.user("m@x").await.unwrap(), None, "and no account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_users_role_comes_from_mapped_groups_never_from_a_role_header() {
    // The old free role header is gone from the config: naming it is an error.
    let old = "[auth]\nproxy_user_header = \"X-Forwarded-Email\"\nproxy_role_header = \"X-Vigil-Role\"\n";
    let err = toml::from_str::<ConsoleConfig>(old).unwrap_err().to_string();
    assert!(err.contains("proxy_role_header"), "{err}");

    let cfg = config(|a| {
        a.proxy_user_header = Some("X-Forwarded-Email".into());
        a.proxy_groups_header = Some("X-Forwarded-Groups".into());
        a.group_roles = BTreeMap::from([("oncall".into(), "reviewer".into()), ("oncall-leads".into(), "admin".into())]);
        a.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    });
    assert_eq!(cfg.validate("console"), Vec::<String>::new());
    let c = start(cfg).await;
    // (user, the headers besides the user's, the role they get)
    type Case = (&'static str, &'static [(&'static str, &'static str)], Role);
    let cases: [Case; 4] = [
        ("forger@x", &[("X-Vigil-Role", "admin")], Role::Viewer),
        ("staff@x", &[("X-Forwarded-Groups", "staff, everyone")], Role::Viewer),
        ("rev@x", &[("X-Forwarded-Groups", "staff,oncall")], Role::Reviewer),
        ("lead@x", &[("X-Forwarded-Groups", "oncall, oncall-leads"), ("X-Vigil-Role", "viewer")], Role::Admin),
    ];
    for (user, extra, role) in cases {
        let mut headers = vec![("X-Forwarded-Email", user)];
        headers.extend_from_slice(extra);
        let r = c.request("GET", "/", &headers, "").await;
        assert_eq!(r.status, 303, "{}", r.head);
        let cookie = r.cookie().expect("a trusted proxy's user gets a session");
        let page = c.get("/", &cookie).await;
        assert!(page.body.contains(&format!("{user}</strong> ({})", role.as_str())), "{user}: {}", page.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_that_users_sessions() {
    let c = start(config(|_| {})).await;
    c.user("ada", Role::Admin).await;
    c.user("bob", Role::Reviewer).await;
    let (admin, bob) = (c.signed_in("ada").await, c.signed_in("bob").await);
    let bob_again = c.signed_in("bob").await;
    assert_eq!(c.get("/", &bob).await.status, 200);
    let accounts = c.get("/accounts", &admin).await;
    let body = format!("csrf={}&name=bob&role=reviewer&password=another+long+password", csrf_of(&accounts.body));
    let r = c.request("POST", "/accounts", &[("Cookie", &admin)], &body).await;
    assert_eq!(r.status, 303, "{}{}", r.head, r.body);
    for cookie in [&bob, &bob_again] {
        let r = c.get("/", cookie).await;
        assert_eq!((r.status, r.header("location")), (303, Some("/login")), "bob's old sessions are over");
    }
    assert_eq!(c.get("/", &admin).await.status, 200, "the admin's own session goes on");
    assert_eq!(c.sign_in("bob", "another long password").await.status, 303, "the new password works");
    // A role change alone keeps the sessions (the role is read at each request).
    let bob = c.signed_in_with("bob", "another long password").await;
    let body = format!("csrf={}&name=bob&role=viewer&password=", csrf_of(&accounts.body));
    assert_eq!(c.request("POST", "/accounts", &[("Cookie", &admin)], &body).await.status, 303);
    assert!(c.get("/", &bob).await.body.contains("bob</strong> (viewer)"));
}

impl Console {
    async fn signed_in_with(&self, name: &str, password: &str) -> String {
        let r = self.sign_in(name, password).await;
        assert_eq!(r.status, 303, "{}", r.head);
        r.cookie().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_throttled_without_argon2_and_audited() {
    let c = start(config(|_| {})).await;
    c.user("alice", Role::Reviewer).await;
    let gate = &c.shared.sign_in.gate;
    let runs = gate.runs();
    let typed = "alice\"\nx";
    for i in 0..super::throttle::MAX_FAILURES {
        let r = c.sign_in(if i == 0 { typed } else { "alice" }, "wrong password 123").await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    assert_eq!(gate.runs() - runs, u64::from(super::throttle::MAX_FAILURES));
    // The next attempt is refused before argon2, even with the right password.
    let r = c.sign_in("alice", PASSWORD).await;
    assert_eq!(r.status, 429, "{}", r.head);
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(gate.runs() - runs, u64::from(super::throttle::MAX_FAILURES), "no argon2 for a refused attempt");
    // The address is limited too: another account from here is refused.
    c.user("carol", Role::Viewer).await;
    assert_eq!(c.sign_in("carol", PASSWORD).await.status, 429);

    let failed: Vec<_> = c
        .shared
        .store
        .audit_entries(None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "login.failed")
        .collect();
    assert_eq!(failed.len(), super::throttle::MAX_FAILURES as usize, "every failure is audited, refusals are not");
    let first = failed.last().unwrap();
    assert_eq!(first.detail["user"], "alice\\\"\\nx", "the typed name, escaped");
    assert_eq!(first.detail["address"], "127.0.0.1");
    assert_eq!(first.detail["why"], "unknown user");
    assert_eq!(failed[0].detail["why"], "wrong password");
    assert_eq!(first.actor, "anonymous");
    for e in &failed {
        assert!(!e.detail.to_string().contains("wrong password 123"), "no password in the log: {e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_views_are_one_audit_entry_and_the_trail_is_paged() {
    let c = start(config(|_| {})).await;
    c.user("vera", Role::Viewer).await;
    let vera = c.signed_in("vera").await;
    c.shared.store.record_alert(&opened("inc-1"), now_ms()).await.unwrap();
    for _ in 0..10 {
        assert_eq!(c.get("/incident?id=inc-1", &vera).await.status, 200);
    }
    let views = c.shared.store.audit_entries(Some("inc-1"), 100).await.unwrap();
    assert_eq!(views.iter().filter(|e| e.action == "view").count(), 1, "ten views within the hour: {views:?}");

    // An incident with a long trail shows 50 entries a page, newest first, with links.
    for i in 0..120 {
        c.shared.store.audit("rita", "note", "inc-1", &serde_json::json!({ "i": i }), now_ms()).await.unwrap();
    }
    let rows = |page: &str| page.matches("<td>rita</td>").count() + page.matches("<td>vera</td>").count();
    let newest = c.get("/incident?id=inc-1", &vera).await.body;
    assert_eq!(rows(&newest), 50, "{newest}");
    assert!(newest.contains("1–50 of 121"), "{newest}");
    assert!(newest.contains("audit_page=1#audit\">Older entries"), "{newest}");
    let second = c.get("/incident?id=inc-1&audit_page=1", &vera).await.body;
    assert_eq!(rows(&second), 50);
    assert!(second.contains("51–100 of 121") && second.contains("Newer entries"), "{second}");
    let last = c.get("/incident?id=inc-1&audit_page=2", &vera).await.body;
    assert_eq!(rows(&last), 21);
    assert!(!last.contains("Older entries"));
    assert_eq!(c.get("/incident?id=inc-1&audit_page=nonsense", &vera).await.status, 200, "a bad page is the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_throttle_counts_the_client_it_names() {
    let c = start(config(|a| a.trusted_proxies = vec!["127.0.0.1".parse().unwrap()])).await;
    let from = |xff: &'static str| [("X-Forwarded-For", xff)];
    let body = "user=nobody&password=wrong+password+123";
    for _ in 0..super::throttle::MAX_FAILURES {
        // A client's own X-Forwarded-For entry (6.6.6.6) is not believed past the proxy's.
        let r = c.request("POST", "/login", &from("6.6.6.6, 192.0.2.7"), body).await;
        assert_eq!(r.status, 401);
    }
    let r = c.request("POST", "/login", &from("192.0.2.7"), "user=someone&password=x").await;
    assert_eq!(r.status, 429, "the client the proxy named is limited");
    let r = c.request("POST", "/login", &from("192.0.2.8"), "user=someone&password=x").await;
    assert_eq!(r.status, 401, "another client behind the same proxy is not");
    let failed = c.shared.store.audit_entries(None, 1).await.unwrap();
    assert_eq!(failed[0].detail["address"], "192.0.2.8");
}
