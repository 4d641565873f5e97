//! Scale-down that takes the emptiest worker first: the worker keeps its own pod's
//! `controller.kubernetes.io/pod-deletion-cost` annotation equal to the streams it
//! holds. A Deployment's ReplicaSet (which the HPA and KEDA scale) deletes the pod with
//! the lowest cost first; without it, it picks one regardless of what the pod carries,
//! and the live streams of a full worker go through a drain for nothing.
//!
//! On when `POD_NAME` and `POD_NAMESPACE` are set (the Helm chart sets them, with the
//! RBAC for this one patch, when `podDeletionCost.enabled`). It talks to the API server
//! with the pod's service-account token (read again on every call: projected tokens
//! rotate) and CA. `VIGIL_KUBE_API` overrides the server's URL (tests use a loopback
//! one). Failures are logged and counted, never fatal: the annotation is an
//! optimisation of scale-down, not part of analysis.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

const ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// How often the count is compared with what was last written.
const PERIOD: Duration = Duration::from_secs(5);

static UPDATES: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    let v = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "vigil_kube_deletion_cost_updates_total",
            "Writes of the pod's pod-deletion-cost annotation, by result",
        ),
        &["result"],
    )
    .expect("valid metric");
    for r in ["ok", "failed"] {
        let _ = v.with_label_values(&[r]);
    }
    v
});

pub fn register(registry: &prometheus::Registry) -> prometheus::Result<()> {
    registry.register(Box::new(UPDATES.clone()))
}

/// Where and as whom to patch the pod.
struct Target {
    url: String,
    token_file: PathBuf,
    agent: ureq::Agent,
}

impl Target {
    fn from_env() -> Result<Option<Target>, String> {
        let (Ok(name), Ok(namespace)) = (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE")) else {
            return Ok(None);
        };
        let valid = |s: &str| {
            !s.is_empty() && s.len() <= 253 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
        };
        if !valid(&name) || !valid(&namespace) {
            return Err(format!("POD_NAME {name:?} or POD_NAMESPACE {namespace:?} is not a Kubernetes name"));
        }
        let base = std::env::var("VIGIL_KUBE_API").unwrap_or_else(|_| "https://kubernetes.default.svc".into());
        let sa = PathBuf::from(std::env::var("VIGIL_KUBE_SERVICE_ACCOUNT").unwrap_or_else(|_| SERVICE_ACCOUNT.into()));
        let mut builder = ureq::AgentBuilder::new().timeout(Duration::from_secs(5));
        if base.starts_with("https://") {
            builder = builder.tls_config(Arc::new(tls_trusting(&sa.join("ca.crt"))?));
        } else if !base.starts_with("http://127.0.0.1:") {
            return Err(format!("VIGIL_KUBE_API {base:?}: https only (plain http on 127.0.0.1 for tests)"));
        }
        Ok(Some(Target {
            url: format!("{}/api/v1/namespaces/{namespace}/pods/{name}", base.trim_end_matches('/')),
            token_file: sa.join("token"),
            agent: builder.build(),
        }))
    }

    fn patch(&self, cost: usize) -> Result<(), String> {
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| format!("service-account token {}: {e}", self.token_file.display()))?;
        let body = serde_json::json!({"metadata": {"annotations": {ANNOTATION: cost.to_string()}}});
        self.agent
            .request("PATCH", &self.url)
            .set("Authorization", &format!("Bearer {}", token.trim()))
            .set("Content-Type", "application/merge-patch+json")
            .send_string(&body.to_string())
            .map(|_| ())
            .map_err(|e| match e {
                ureq::Error::Status(code, _) => format!("the API server answered {code}"),
                other => other.to_string(),
            })
    }
}

/// A client TLS config that trusts only the cluster's CA.
fn tls_trusting(ca: &std::path::Path) -> Result<rustls::ClientConfig, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("cluster CA {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls_pemfile::certs(&mut pem.as_slice()).map_err(|e| format!("cluster CA: {e}"))?;
    let (added, _) = roots.add_parsable_certificates(&certs);
    if added == 0 {
        return Err(format!("cluster CA {}: no certificate in it", ca.display()));
    }
    Ok(rustls::ClientConfig::builder().with_safe_defaults().with_root_certificates(roots).with_no_client_auth())
}

/// Keeps the annotation current until `stop`; `None` when not on Kubernetes.
pub fn start(held: impl Fn() -> usize + Send + 'static, stop: Arc<AtomicBool>) -> anyhow::Result<Option<()>> {
    let Some(target) = Target::from_env().map_err(anyhow::Error::msg)? else { return Ok(None) };
    tracing::info!(url = target.url, "keeping {ANNOTATION} current with the streams held");
    std::thread::Builder::new().name("vigil-kube".into()).spawn(move || {
        let mut written: Option<usize> = None;
        while !stop.load(Relaxed) {
            let now = held();
            if written != Some(now) {
                match target.patch(now) {
                    Ok(()) => {
                        written = Some(now);
                        UPDATES.with_label_values(&["ok"]).inc();
                    }
                    Err(e) => {
                        UPDATES.with_label_values(&["failed"]).inc();
                        tracing::warn!("cannot update {ANNOTATION}: {e}");
                    }
                }
            }
            std::thread::sleep(PERIOD);
        }
    })?;
    Ok(Some(()))
}
