//! stripe-licensespring: sells a software subscription through Stripe and keeps a LicenseSpring
//! subscription license in step with it.
//!
//! `main.rs` reads the settings and runs an [`App`] (or, with `--demo`, the sandbox of [`demo`]);
//! everything else is built here from one [`settings::Settings`]. Modules, one concern each, each
//! depending only on those listed after it:
//! - [`demo`] (feature `demo`): the sandbox, the app against the `sim` crate's simulators;
//! - [`commands`]: `reconcile`, `replay` and `check`, over the same billing code;
//! - [`web`]: routes, pages and the error-to-status mapping;
//! - [`server`]: HTTP/1.1 serving, slow-client limits, graceful shutdown;
//! - [`billing`]: the one entry point for an event, and the flows that keep licenses in step;
//! - [`webhook`]: `Stripe-Signature` verification and the typed event model;
//! - [`stripe`], [`licensespring`]: the two upstream clients, sharing [`upstream`];
//! - [`store`]: where state lives, one interface over [`cache`] (the cache file, `CACHE_PATH`)
//!   and [`store::postgres`] (`DATABASE_URL`), and the record of webhook deliveries;
//! - [`cache`]: the cache file, durable, in the tutorial's format;
//! - [`settings`]: the settings and the `Secret` wrapper;
//! - [`model`]: the small types shared by all of them;
//! - [`metrics`]: the counters and histograms `GET /metrics` shows, which any module may count in.

pub mod billing;
pub mod cache;
pub mod commands;
#[cfg(feature = "demo")]
pub mod demo;
pub mod licensespring;
pub mod metrics;
pub mod model;
pub mod server;
pub mod settings;
pub mod store;
pub mod stripe;
mod upstream;
pub mod web;
pub mod webhook;

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use settings::Settings;

/// Why the server could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address} (HOST, PORT): {source}{}", bind_hint(.source))]
    Bind { address: String, source: std::io::Error },
    /// The cache file is unreadable or not in the cache format, or the database cannot be
    /// reached or migrated (the message names the file or the database host).
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot read the address the server listens on: {0}")]
    LocalAddress(std::io::Error),
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
    /// A configured price cannot be sold.
    #[error("STRIPE_PRODUCT: {reason}")]
    Price { id: String, reason: String },
}

/// What a person can do about a failed bind, after the OS's reason.
fn bind_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            ". Another program (or another copy of this server) listens there: stop it, or set PORT to a free port"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            ". HOST is not an address of this machine: 127.0.0.1 serves this machine only, 0.0.0.0 every interface"
        }
        std::io::ErrorKind::PermissionDenied => {
            ". Ports below 1024 need privileges: set PORT to 1024 or above"
        }
        _ => "",
    }
}

/// The application, built and listening, not yet serving: the one way the server starts, in
/// `main`, the tests and the sandbox.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    address: SocketAddr,
    /// What start-up tells a person, besides the address.
    facts: StartFacts,
}

/// What [`App::serve`] says at start, so that a person knows what is running where.
struct StartFacts {
    webhook_url: String,
    store: String,
    env_file: Option<std::path::PathBuf>,
}

impl App {
    /// Opens the store, binds `HOST`:`PORT` (port 0: any free port, see [`App::address`]) and
    /// builds the routes.
    pub async fn build(settings: &Settings) -> Result<App, StartError> {
        App::build_with(settings, web::Extras::default()).await
    }

    /// As [`App::build`], with what a deployment adds (the sandbox's panel and routes).
    pub async fn build_with(settings: &Settings, extras: web::Extras) -> Result<App, StartError> {
        // Opened first, so a corrupt cache file or an unreachable database stops the server
        // before it listens.
        let store = store::Store::open(settings).await?;
        let address = format!("{}:{}", settings.host, settings.port);
        let listener = TcpListener::bind((settings.host.as_str(), settings.port))
            .await
            .map_err(|source| StartError::Bind { address, source })?;
        App::assemble(listener, store, settings, extras).await
    }

    /// As [`App::build_with`], on a listener bound beforehand: for the sandbox, whose simulators
    /// must know the app's address before the app's settings (which point at them) exist.
    pub async fn build_on(
        listener: TcpListener,
        settings: &Settings,
        extras: web::Extras,
    ) -> Result<App, StartError> {
        let store = store::Store::open(settings).await?;
        App::assemble(listener, store, settings, extras).await
    }

    async fn assemble(
        listener: TcpListener,
        store: store::Store,
        settings: &Settings,
        extras: web::Extras,
    ) -> Result<App, StartError> {
        let address = listener.local_addr().map_err(StartError::LocalAddress)?;
        let public_url = match &settings.public_url {
            Some(url) => url.clone(),
            None => browsable_url(address),
        };
        let facts = StartFacts {
            webhook_url: format!("{}/webhooks", public_url.as_str().trim_end_matches('/')),
            store: store.describe(),
            env_file: settings.env_file.clone(),
        };
        let state = web::AppState::new(settings, store, extras.panel, public_url);
        state.prices.load(state.billing.stripe()).await?;
        Ok(App { listener, router: web::router(state, extras.routes), address, facts })
    }

    /// Where the app listens (the real port when `PORT=0`).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Says where it listens, where Stripe must send webhooks, which store it uses and whether a
    /// `.env` was read; then serves until `shutdown` resolves (and requests in flight end).
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
        tracing::info!("listening on http://{}", self.address);
        let StartFacts { webhook_url, store, env_file } = &self.facts;
        let events = webhook::HANDLED_EVENT_TYPES.join(",");
        tracing::info!("Stripe webhook endpoint: {webhook_url} (events: {events})");
        tracing::info!("store: {store}");
        match env_file {
            Some(path) => tracing::info!("settings: the environment, then {}", absolute(path).display()),
            None => tracing::info!("settings: the environment only (no .env file read)"),
        }
        server::serve(self.listener, self.router, shutdown).await.map_err(StartError::Serve)
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run(self) -> Result<(), StartError> {
        self.serve(server::shutdown_signal()).await
    }
}

/// The URL a browser on this machine reaches `address` at: a wildcard listen address (`0.0.0.0`,
/// `::`) is not one to browse to, so it becomes loopback. What `PUBLIC_URL` defaults to.
pub fn browsable_url(address: SocketAddr) -> url::Url {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    url::Url::parse(&format!("http://{}/", SocketAddr::new(ip, address.port())))
        .expect("an IP and a port make a URL")
}

/// `path` made absolute against the working directory (as given, if that cannot be known).
fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Sets up logging on standard output with the given filter (`RUST_LOG`) and format (`LOG_FORMAT`);
/// one line per request comes from the web layer. In JSON, each line is one object: `timestamp`,
/// `level`, `message` and the event's fields at the top level, and the request's fields (method,
/// uri, event id and type, subscription, outcome, ...) under `span`.
pub fn init_tracing(filter: &str, format: settings::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = match format {
        settings::LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            builder.with_ansi(ansi).try_init()
        }
        settings::LogFormat::Json => {
            builder.json().flatten_event(true).with_current_span(true).with_span_list(false).try_init()
        }
    };
}
