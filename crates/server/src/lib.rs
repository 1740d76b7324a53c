//! The Hearth control plane: `hearth serve`. An axum server over the REST
//! API of API.md, a SQLite store, and one lifecycle actor per sandbox
//! driving the VMM (QEMU) driver.
//!
//! Layout: [`routes`] translate HTTP, [`core`] holds every operation,
//! [`store`] persists, [`model`] names the domain objects.

pub mod cluster;
pub mod e2b;
pub mod error;
pub mod proxy;
pub mod ratelimit;
pub mod routes;
pub mod validate;

/// The operations, in their own crate: it depends on no HTTP crate.
pub use hearth_core as core;
pub use hearth_core::{config, metrics, model, store};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use config::ServerConfig;

use crate::core::clock::SystemClock;
use crate::core::templates::ImageTemplates;
use crate::core::Core;

/// What `serve` reports once it listens.
#[derive(Debug, Clone)]
pub struct Started {
    pub url: String,
    /// Set only on the very first start: the admin key, shown once.
    pub admin_key: Option<String>,
    pub admin_key_file: std::path::PathBuf,
}

/// Runs the server until SIGINT or SIGTERM. Sandboxes keep running across
/// a restart and are re-adopted.
pub async fn serve(config: ServerConfig, on_started: impl FnOnce(&Started)) -> anyhow::Result<()> {
    serve_until(config, on_started, shutdown_signal()).await
}

/// Runs the server until `shutdown` resolves, then stops gracefully (as on
/// a signal); `hearth up --exit-after-demo` stops it this way.
pub async fn serve_until(
    config: ServerConfig,
    on_started: impl FnOnce(&Started),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let mut config = config;
    crate::core::private_dir(&config.data_dir)
        .with_context(|| format!("create data dir {}", config.data_dir.display()))?;
    // Bound before the node registers, which names its addresses (a port
    // of 0 becomes the one bound); requests wait in the backlog meanwhile.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    config.listen = listener.local_addr()?;
    let previews = match config.preview.enabled {
        true => {
            let l = tokio::net::TcpListener::bind(config.preview.listen)
                .await
                .with_context(|| format!("preview proxy: listen on {}", config.preview.listen))?;
            config.preview.listen = l.local_addr()?;
            Some(l)
        }
        false => None,
    };
    let store = crate::store::open(&config).await?;
    let vmm = hearth_vmm::open(&config.vmm).context("open the VMM driver")?;
    let templates = Arc::new(ImageTemplates::new(&config.images_dir()));
    let core = Core::new(
        config.clone(),
        store.clone(),
        vmm,
        templates,
        Arc::new(SystemClock),
    )?;
    let key_file = core.data_dir().join("admin.key");
    let admin_key = core.bootstrap_admin_key(&key_file).await?;
    core.start().await?;
    cluster::replicas::spawn(core.clone());
    let addr = config.listen;
    tracing::info!(%addr, data_dir = %core.data_dir().display(), "hearth serving");
    on_started(&Started {
        url: format!("http://{addr}"),
        admin_key,
        admin_key_file: key_file,
    });
    spawn_housekeeping(core.clone());
    if let Some(previews) = previews {
        if let (Some(cert), Some(key)) = (&config.preview.tls_cert, &config.preview.tls_key) {
            proxy::listener::tls_config(cert, key, None).context("preview proxy TLS")?;
        }
        tracing::info!(addr = %previews.local_addr()?, domain = %config.preview.domain, "preview proxy serving");
        let (core, stop) = (core.clone(), core.shutdown_token());
        tokio::spawn(async move {
            if let Err(e) = proxy::serve(core, previews, stop).await {
                tracing::error!(error = %e, "preview proxy stopped");
            }
        });
    }
    if let Some(addr) = config.metrics.listen {
        let metrics = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics: listen on {addr}"))?;
        tracing::info!(addr = %metrics.local_addr()?, "metrics serving (no key)");
        let (app, stop) = (
            routes::system::metrics_router(core.clone()),
            core.shutdown_token(),
        );
        tokio::spawn(async move {
            let served = axum::serve(metrics, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        });
    }
    if let Some(addr) = config.e2b.listen {
        let e2b = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("E2B API: listen on {addr}"))?;
        tracing::info!(addr = %e2b.local_addr()?, "E2B API serving");
        let app = e2b::standalone(routes::router(core.clone()));
        let stop = core.shutdown_token();
        tokio::spawn(async move {
            use axum::ServiceExt;
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let served = axum::serve(e2b, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "E2B API listener stopped");
            }
        });
    }
    let app = routes::router(core.clone());
    let stop = core.shutdown_token();
    // Streamed answers (SSE, downloads) go out in several writes: no Nagle.
    // A client that vanished is given up soon after a heartbeat.
    use axum::serve::ListenerExt;
    let heartbeat = routes::sse::heartbeat_of(&core);
    let listener = listener.tap_io(move |tcp| {
        let _ = tcp.set_nodelay(true);
        routes::sse::abort_unacknowledged(tcp, heartbeat);
    });
    // The peer address reaches the audit log (`ip`).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down; sandboxes keep running");
            stop.cancel();
        })
        .await?;
    core.shutdown();
    core.leave_cluster().await;
    // Pooled VMs and template build VMs belong to no sandbox: they go
    // with the server.
    core.drain_pool().await;
    core.stop_build_vms().await;
    store.close().await;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Drops idempotent responses past their TTL, and events and audit
/// entries past their retention, hourly (and once at start).
fn spawn_housekeeping(core: Arc<Core>) {
    let stop = core.shutdown_token();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    core.prune_idempotency().await;
                    core.prune_events().await;
                    core.prune_audit().await;
                }
            }
        }
    });
}
