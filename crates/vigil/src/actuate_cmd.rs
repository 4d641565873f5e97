//! `vigil actuate`: consume interrupt commands and cut the streams (see
//! `vigil_sink::actuate`). Reads `[sink.kafka]` for the cluster and topic and
//! `[actuate]` for the platform adapter, dead-letter and action topics and retries.

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use prometheus::Encoder;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;
use vigil_worker::config::VigilConfig;

#[derive(clap::Args)]
pub struct ActuateArgs {
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    max_runtime_secs: Option<u64>,
    /// Stop after this many messages were finished with (cut, duplicate or dead-lettered).
    #[arg(long)]
    exit_after_messages: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101), among them
    /// the alarm `vigil_actuate_dead_letters_total{reason}`.
    #[arg(long)]
    metrics_listen: Option<String>,
}

pub fn run(config: Option<&Path>, args: ActuateArgs) -> anyhow::Result<ExitCode> {
    let cfg = VigilConfig::load(config)?;
    let kafka = cfg.sink.kafka.as_ref().context("vigil actuate needs [sink.kafka] (brokers, interrupts_topic)")?;
    let actuate = cfg.actuate.as_ref().context("vigil actuate needs [actuate] with an adapter")?;
    if let Some(listen) = &args.metrics_listen {
        let addr = serve_metrics(listen).with_context(|| format!("--metrics-listen {listen}"))?;
        tracing::info!("metrics on http://{addr}/metrics");
    }
    // It signs its outcomes and dead letters, and acts only on signed commands.
    let trust = cfg.open_trust(vigil_trust::Role::Actuator, true, true).context("[trust]")?;
    let limit = args.exit_after_messages;
    let stats = vigil_sink::actuate::run(
        kafka,
        actuate,
        args.max_runtime_secs.map(Duration::from_secs),
        &|s| limit.is_some_and(|n| s.handled() >= n),
        &trust,
    )?;
    println!("{}", serde_json::to_string(&stats)?);
    Ok(ExitCode::SUCCESS)
}

/// `/metrics` on its own thread and runtime, so it answers while the actuator waits on
/// a platform.
fn serve_metrics(listen: &str) -> anyhow::Result<std::net::SocketAddr> {
    let registry = prometheus::Registry::new();
    vigil_sink::actuate::events::register(&registry)?;
    vigil_trust::metrics::register(&registry, &[vigil_trust::TopicKind::Interrupts])?;
    let std_listener = std::net::TcpListener::bind(listen)?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("vigil-actuate-metrics".into()).spawn(move || {
        runtime.block_on(async move {
            let app = Router::new().route(
                "/metrics",
                get(move || {
                    let registry = registry.clone();
                    async move {
                        let mut buf = Vec::new();
                        let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf);
                        ([("content-type", "text/plain; version=0.0.4")], buf)
                    }
                }),
            );
            match tokio::net::TcpListener::from_std(std_listener) {
                Ok(l) => {
                    let limits = vigil_http::HttpLimits::default();
                    vigil_http::serve(l, app, limits, std::future::pending()).await
                }
                Err(e) => tracing::error!("metrics server: {e}"),
            }
        })
    })?;
    Ok(addr)
}
