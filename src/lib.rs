//! stripe-licensespring: sells a software subscription through Stripe and keeps a LicenseSpring
//! subscription license in step with it.
//!
//! `main.rs` reads the settings and calls [`run`] (or, with `--demo`, [`sandbox::demo::run_demo`]);
//! everything else is built here from one [`settings::Settings`]. Modules, one concern each:
//! - [`settings`]: the settings and the `Secret` wrapper;
//! - [`web`]: routes, pages and the error-to-status mapping;
//! - [`webhook`]: `Stripe-Signature` verification and the typed event model;
//! - [`stripe`]: the Stripe API client;
//! - [`licensespring`]: the LicenseSpring Management API client;
//! - [`cache`]: the subscription cache file (`CACHE_PATH`);
//! - [`billing`]: the flows that keep licenses in step with subscriptions;
//! - [`model`]: the small types shared by all of them;
//! - [`sandbox`]: in-process Stripe and LicenseSpring simulators for the tests and `--demo`.

pub mod billing;
pub mod cache;
pub mod licensespring;
pub mod model;
pub mod sandbox;
pub mod settings;
pub mod stripe;
pub mod web;
pub mod webhook;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

use settings::Settings;

/// How long in-flight requests may run after a shutdown signal before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    /// The cache file is unreadable or not in the cache format (the message names it).
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error("{0}")]
    Other(String),
}

/// Builds the application's router from the settings (clients, cache, routes).
pub async fn build_app(settings: &Settings) -> Result<axum::Router, StartError> {
    // Opened first so a corrupt cache file stops the server before it listens.
    let cache = cache::SubscriptionCache::open(&settings.cache_path, settings.cache_capacity)?;
    Ok(web::router(web::AppState::new(settings, cache)))
}

/// Binds the listener first, so `PORT=0` works and the real port can be read back.
pub async fn bind(settings: &Settings) -> Result<TcpListener, StartError> {
    let address = format!("{}:{}", settings.host, settings.port);
    TcpListener::bind((settings.host.as_str(), settings.port))
        .await
        .map_err(|source| StartError::Bind { address, source })
}

/// How long a client may take to send a request's headers, counted from when the server starts
/// waiting for them (so it also bounds how long a kept-alive connection may sit idle). A client
/// that sends a byte a second is disconnected instead of holding a connection forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves until `shutdown` resolves, then lets in-flight requests finish for at most
/// [`SHUTDOWN_GRACE`].
///
/// HTTP/1.1 through hyper directly rather than `axum::serve`, which gives no way to set a header
/// read timeout (hyper's needs a timer, which `axum::serve` does not install).
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::Listener;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let mut listener = listener;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // axum's `Listener::accept` retries failed accepts (and waits out `EMFILE`).
        let (stream, _peer) = tokio::select! {
            accepted = Listener::accept(&mut listener) => accepted,
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: waiting up to {}s for requests in flight", SHUTDOWN_GRACE.as_secs());
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after the grace period; exiting anyway");
    }
    Ok(())
}

/// Builds the app, listens, logs where, and serves until SIGINT or SIGTERM.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    let app = build_app(&settings).await?;
    let listener = bind(&settings).await?;
    let address = listener.local_addr().map_err(|e| StartError::Other(e.to_string()))?;
    tracing::info!("listening on http://{address}");
    serve(listener, app, shutdown_signal()).await.map_err(|e| StartError::Other(e.to_string()))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Sets up logging with the given filter (`RUST_LOG`); one line per request comes from the web layer.
pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).try_init();
}

/// The one HTTP client setup every upstream client uses: bounded connect and total time, no
/// redirects (an upstream redirect is an error to see, not to follow with a changed method).
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .expect("the TLS backend is compiled in")
}

/// The start of an upstream's raw answer, for an error message: at most 200 characters.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None if text.is_empty() => "(empty answer)".to_owned(),
        None => text.to_owned(),
    }
}

/// An error with its causes, `a: b: c`.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
