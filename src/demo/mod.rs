//! `--demo`: the whole app against the `sim` crate's simulators, in one process, with nothing to
//! set up.
//!
//! The order of the wiring matters: the app's listener is bound first, because the Stripe
//! simulator needs the app's URL (to deliver webhooks to `/webhooks` and to send the buyer back
//! after checkout); then both simulators start with freshly generated keys and webhook secret;
//! then the app is built on that listener with settings that point at them
//! ([`Simulators::settings`]). The simulators listen on loopback only, and no request leaves the
//! machine.
//!
//! This module depends on [`crate::web`], never the reverse: the sandbox's table and buttons
//! ([`DemoPanel`]) reach the store page as a [`StorePanel`](crate::web::StorePanel) and a router.

mod panel;
mod simulators;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use sim::licensespring::{self as licensespring_sim, LicenseSpringSimConfig};
use sim::stripe::{self as stripe_sim, Interval, SimPrice, StripeSimConfig, WebhookTarget};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

pub use panel::{DELIVERY_WAIT, DemoPanel, SandboxRow, SandboxView};
pub use simulators::{ORDER_BASE_STRING, Simulators};

use crate::settings::{DEFAULT_CACHE_PATH, DEFAULT_HOST, DEFAULT_PORT, LogFormat, Secret, Settings};
use crate::{App, StartError, web};

/// The simulator's webhook retry delays in the sandbox: short, so a failed delivery is retried
/// while the person is still looking at the page.
const RETRY_DELAYS: [u64; 3] = [1, 2, 4];

/// The sandbox's second price, beside the simulator's default monthly one.
pub const YEARLY_PRICE_ID: &str = "price_1SimYearly000000001";

/// Why the sandbox could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    App(#[from] StartError),
    #[error("cannot create a temporary cache directory: {0}")]
    TemporaryCache(std::io::Error),
    #[error("cannot start the simulators: {0}")]
    Simulators(std::io::Error),
    #[error("no URL to browse for {address}: {source}")]
    Url { address: SocketAddr, source: url::ParseError },
    /// The generated settings were refused: a bug, since they are all made here.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error("the app stopped unexpectedly: {0}")]
    Stopped(#[from] tokio::task::JoinError),
}

/// What the sandbox takes from the environment. Never from `.env`: that file holds the real keys,
/// and the sandbox must neither need nor touch them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    pub host: String,
    pub port: u16,
    /// `None`: a temporary file, removed when the sandbox stops.
    pub cache_path: Option<PathBuf>,
    pub log_filter: String,
    pub log_format: LogFormat,
}

/// Every unusable sandbox setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sandbox settings are not usable: {}", .problems.join("; "))]
pub struct DemoOptionsError {
    pub problems: Vec<String>,
}

impl DemoOptions {
    /// Reads `HOST`, `PORT`, `CACHE_PATH`, `RUST_LOG` and `LOG_FORMAT` from the process environment.
    pub fn from_env() -> Result<DemoOptions, DemoOptionsError> {
        DemoOptions::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<DemoOptions, DemoOptionsError> {
        let value = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        let host = value("HOST").unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let port = match value("PORT") {
            None => DEFAULT_PORT,
            Some(text) => text.parse().unwrap_or_else(|_| {
                problems.push(format!("PORT: expected a TCP port, 0 to 65535, got {text:?}"));
                DEFAULT_PORT
            }),
        };
        let cache_path = value("CACHE_PATH").map(PathBuf::from);
        if cache_path.as_deref().is_some_and(is_the_servers_cache) {
            problems.push(format!(
                "CACHE_PATH: the sandbox never writes the server's {DEFAULT_CACHE_PATH}; \
                 name another file, or leave CACHE_PATH unset for a temporary one"
            ));
        }
        let log_filter = value("RUST_LOG").unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            problems
                .push(format!("RUST_LOG: expected a log filter such as info or debug, got {log_filter:?}"));
        }
        let log_format = match value("LOG_FORMAT") {
            None => LogFormat::Text,
            Some(text) => LogFormat::parse(&text).unwrap_or_else(|| {
                problems.push(format!("LOG_FORMAT: expected text or json, got {text:?}"));
                LogFormat::Text
            }),
        };
        if problems.is_empty() {
            Ok(DemoOptions { host, port, cache_path, log_filter, log_format })
        } else {
            Err(DemoOptionsError { problems })
        }
    }
}

/// Whether `path` is the server's own cache file (`cache.json` in the working directory).
fn is_the_servers_cache(path: &Path) -> bool {
    match (std::path::absolute(path), std::path::absolute(DEFAULT_CACHE_PATH)) {
        (Ok(given), Ok(default)) => given == default,
        _ => path == Path::new(DEFAULT_CACHE_PATH),
    }
}

/// A running sandbox: the app and both simulators. Dropping it stops them (and removes a
/// temporary cache file); [`Demo::shutdown`] also waits for the app to finish.
pub struct Demo {
    url: Url,
    /// The generated `ADMIN_TOKEN`.
    admin_token: Secret,
    panel: Arc<DemoPanel>,
    cache_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), StartError>>>,
    /// Held so that a temporary cache lives exactly as long as the sandbox.
    _temporary_cache: Option<tempfile::TempDir>,
}

/// Starts the sandbox on `options.host`:`options.port` (port 0: any free port; [`Demo::url`]
/// says which).
pub async fn start_demo(options: &DemoOptions) -> Result<Demo, DemoError> {
    let address = format!("{}:{}", options.host, options.port);
    let listener = TcpListener::bind((options.host.as_str(), options.port))
        .await
        .map_err(|source| StartError::Bind { address, source })?;
    let local = listener.local_addr().map_err(StartError::LocalAddress)?;
    let url = crate::browsable_url(local);

    let (temporary_cache, cache_path) = match &options.cache_path {
        Some(path) => (None, path.clone()),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("stripe-licensespring-sandbox-")
                .tempdir()
                .map_err(DemoError::TemporaryCache)?;
            let path = dir.path().join("cache.json");
            (Some(dir), path)
        }
    };

    let webhook_secret = format!("whsec_{}", random_text(32));
    let webhooks = url.join("webhooks").map_err(|source| DemoError::Url { address: local, source })?;
    let stripe = StripeSimConfig {
        api_key: format!("sk_test_{}", random_text(48)),
        webhook: Some(WebhookTarget { url: webhooks, secrets: vec![webhook_secret.clone()] }),
        retry_delays: RETRY_DELAYS.map(Duration::from_secs).to_vec(),
        after_payment_url: Some(url.clone()),
        // Monthly and yearly, as a vendor sells them: the store offers both.
        prices: vec![
            SimPrice::new(stripe_sim::DEFAULT_PRICE_ID, Interval::Month, 1),
            SimPrice::new(YEARLY_PRICE_ID, Interval::Year, 1).with_amount(5_000),
        ],
        ..StripeSimConfig::default()
    };
    let licensespring = LicenseSpringSimConfig {
        // LicenseSpring's key shape: 8 characters, a dot, 32.
        api_key: format!("{}.{}", random_text(8), random_text(32)),
        products: vec![licensespring_sim::DEFAULT_PRODUCT.to_owned()],
        ..LicenseSpringSimConfig::default()
    };
    let simulators =
        Simulators::start(stripe, licensespring, &webhook_secret).await.map_err(DemoError::Simulators)?;

    // The same validation and defaults as a real start, from generated values only.
    let mut values = simulators.settings();
    values.extend([
        ("HOST".to_owned(), options.host.clone()),
        ("PORT".to_owned(), local.port().to_string()),
        ("CACHE_PATH".to_owned(), cache_path.to_string_lossy().into_owned()),
        ("RUST_LOG".to_owned(), options.log_filter.clone()),
        ("ADMIN_TOKEN".to_owned(), random_text(32)),
    ]);
    let settings =
        Settings::from_lookup(|name| values.iter().find(|(key, _)| key == name).map(|(_, v)| v.clone()))?;

    let reconciler = crate::commands::billing(&settings).await?;
    let admin_token = settings.admin_token.clone().expect("set above");
    let panel = Arc::new(DemoPanel::new(simulators, reconciler, admin_link(&url, &admin_token).to_string()));
    let extras = web::Extras { panel: Some(panel.clone()), routes: panel::routes(panel.clone()) };
    let app = App::build_on(listener, &settings, extras).await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(async {
        // A dropped sender stops the server too.
        let _ = stopped.await;
    }));
    Ok(Demo {
        url,
        admin_token,
        panel,
        cache_path,
        stop: Some(stop),
        server: Some(server),
        _temporary_cache: temporary_cache,
    })
}

/// The admin page under `home` with `token` in the URL, so a click opens it: a sandbox's
/// generated token guards nothing real.
fn admin_link(home: &Url, token: &Secret) -> Url {
    let mut url = home.join("admin").expect("a path joins");
    let _ = url.set_username("admin");
    let _ = url.set_password(Some(token.expose()));
    url
}

/// Runs the sandbox until SIGINT or SIGTERM, after saying where it is and what it is.
pub async fn run_demo(options: DemoOptions) -> Result<(), DemoError> {
    let demo = start_demo(&options).await?;
    tracing::info!("sandbox listening on {}", demo.url());
    let cache = match options.cache_path {
        Some(_) => format!("{}", demo.cache_path().display()),
        None => format!("{} (temporary, removed on exit)", demo.cache_path().display()),
    };
    println!(
        "\nSandbox: open {url} in a browser.\n\
         Stripe and LicenseSpring are simulated inside this process with generated keys:\n\
         nothing is charged, no account is needed, and nothing leaves this machine.\n\
         Admin page: {admin} (user name: anything; password: {token}, generated for this run)\n\
         Subscription cache: {cache}\n\
         Stop with Ctrl-C.\n",
        url = demo.url(),
        admin = demo.admin_url(),
        token = demo.admin_token.expose(),
    );
    crate::server::shutdown_signal().await;
    demo.shutdown().await
}

impl Demo {
    /// The app's home page, e.g. `http://127.0.0.1:5000/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The admin page with its generated token in the URL (`http://admin:TOKEN@127.0.0.1:5000/admin`).
    pub fn admin_url(&self) -> Url {
        admin_link(&self.url, &self.admin_token)
    }

    pub fn panel(&self) -> &DemoPanel {
        &self.panel
    }

    pub fn cache_path(&self) -> &Path {
        &self.cache_path
    }

    /// Stops the app (letting requests in flight finish) and the simulators.
    pub async fn shutdown(mut self) -> Result<(), DemoError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = match self.server.take() {
            Some(server) => server.await?,
            None => Ok(()),
        };
        self.panel.shutdown().await;
        Ok(served?)
    }
}

/// A random alphanumeric string.
fn random_text(length: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(length).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(values: &[(&str, &str)]) -> Result<DemoOptions, DemoOptionsError> {
        DemoOptions::from_lookup(|name| values.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn options_default_to_the_usual_address_and_a_temporary_cache() {
        let options = options(&[]).expect("defaults are valid");
        assert_eq!(
            options,
            DemoOptions {
                host: "127.0.0.1".to_owned(),
                port: 5000,
                cache_path: None,
                log_filter: "info".to_owned(),
                log_format: LogFormat::Text,
            }
        );
    }

    #[test]
    fn bad_options_are_all_named_and_the_servers_cache_is_refused() {
        let error = options(&[("PORT", "http"), ("RUST_LOG", "info,[[["), ("CACHE_PATH", "./cache.json")])
            .expect_err("refused");
        let text = error.to_string();
        for expected in
            ["PORT: expected a TCP port", "RUST_LOG: expected a log filter", "CACHE_PATH: the sandbox"]
        {
            assert!(text.contains(expected), "{expected:?} not in {text}");
        }
        let chosen = options(&[("CACHE_PATH", "sandbox-cache.json"), ("PORT", "0")]).expect("valid");
        assert_eq!(chosen.cache_path, Some(PathBuf::from("sandbox-cache.json")));
        assert_eq!(chosen.port, 0);
    }

    #[test]
    fn wildcard_addresses_are_browsed_on_loopback() {
        let url = |text: &str| crate::browsable_url(text.parse().expect("address")).to_string();
        assert_eq!(url("0.0.0.0:5000"), "http://127.0.0.1:5000/");
        assert_eq!(url("[::]:8080"), "http://[::1]:8080/");
        assert_eq!(url("192.168.1.20:5000"), "http://192.168.1.20:5000/");
    }
}
