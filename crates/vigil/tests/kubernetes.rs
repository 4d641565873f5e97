//! On Kubernetes the worker keeps its pod's `controller.kubernetes.io/pod-deletion-cost`
//! equal to the streams it holds, so a scale-down removes the emptiest worker first.
//! The API server is a loopback stand-in that records each PATCH and checks its
//! method, path, token and content type.

mod common;

use common::wait_until_or;
use common::worker::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// PATCHes received: (path, authorization, content type, body).
type Patches = Mutex<Vec<(String, String, String, Value)>>;

/// Serves PATCHes forever on `listener`, recording (path, authorization, content type, body).
fn api_server(listener: TcpListener, seen: Arc<Patches>) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let (mut auth, mut ctype, mut len) = (String::new(), String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap_or(("", ""));
                match k.to_ascii_lowercase().as_str() {
                    "authorization" => auth = v.trim().to_string(),
                    "content-type" => ctype = v.trim().to_string(),
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let mut parts = request_line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
            let ok = method == "PATCH";
            if ok {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.lock().unwrap().push((path, auth, ctype, body));
            }
            let status = if ok { "200 OK" } else { "405 Method Not Allowed" };
            let mut out = conn;
            let _ = out.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}").as_bytes(),
            );
        }
    });
}

fn costs(seen: &Patches) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(_, _, _, b)| {
            b["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect()
}

fn wait_cost(seen: &Patches, want: &str, w: &Worker) {
    wait_until_or(
        &format!("deletion cost {want}"),
        40,
        || costs(seen).last().map(String::as_str) == Some(want),
        || format!("{:?}\n{}", costs(seen), tail(&w.stderr(), 20)),
    );
}

#[test]
fn the_pods_deletion_cost_follows_the_streams_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "sa-token-abc\n").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    api_server(listener, seen.clone());
    let sa = dir.path().display().to_string();
    let w = Worker::start(
        "[media]\nsampling = \"keyframes\"\n\
         [ingest.rtmp]\nlisten = \"127.0.0.1:0\"\n[ingest.rtmp.stream_keys]\nalice = \"alice-key-123\"\n",
        &[],
        &[
            ("POD_NAME", "vigil-7f9c-abcde"),
            ("POD_NAMESPACE", "streams"),
            ("VIGIL_KUBE_API", &api),
            ("VIGIL_KUBE_SERVICE_ACCOUNT", &sa),
        ],
    );
    wait_cost(&seen, "0", &w);
    let url = format!("rtmp://{}/live/alice-key-123", w.rtmp.clone().unwrap());
    let mut publisher = common::nginx::publish(&url, 12, "ball");
    wait_cost(&seen, "1", &w);
    let _ = publisher.wait();
    wait_cost(&seen, "0", &w);
    let all = seen.lock().unwrap().clone();
    for (path, auth, ctype, _) in &all {
        assert_eq!(path, "/api/v1/namespaces/streams/pods/vigil-7f9c-abcde");
        assert_eq!(auth, "Bearer sa-token-abc");
        assert_eq!(ctype, "application/merge-patch+json");
    }
    assert_eq!(costs(&seen), ["0", "1", "0"], "written only when the count changes");
    assert!(w.metric("vigil_kube_deletion_cost_updates_total", "result=\"ok\"") >= 3.0);
}

#[test]
fn a_kubernetes_api_other_than_https_is_refused_at_start() {
    let out = common::vigil_env(
        &["run", "--exit-when-idle"],
        &[("POD_NAME", "p"), ("POD_NAMESPACE", "n"), ("VIGIL_KUBE_API", "http://kubernetes.default.svc")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("https only"), "{err}");
}
