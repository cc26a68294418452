//! `--demo`: the whole app against the two simulators, in one process, with nothing to set up.
//!
//! The order of the wiring matters: the app's listener is bound first, because the Stripe
//! simulator needs the app's URL (to deliver webhooks to `/webhooks` and to send the buyer back
//! after checkout); then both simulators start with freshly generated keys and webhook secret;
//! then the app is built with settings that point at them. The simulators listen on loopback
//! only, and no request leaves the machine.
//!
//! [`DemoPanel`] is what the home page shows in demo mode: the simulators' subscriptions and
//! licenses, read straight from their state (never through the billing code), and the renew and
//! cancel controls behind the demo-only routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

use super::licensespring_sim::{self, LicenseSpringSim, LicenseSpringSimConfig};
use super::stripe_sim::{
    self, StripeSim, StripeSimConfig, StripeSimError, SubscriptionStatus, WebhookTarget,
};
use crate::cache::SubscriptionCache;
use crate::model::SubscriptionId;
use crate::settings::{DEFAULT_CACHE_PATH, DEFAULT_HOST, DEFAULT_PORT, Secret, Settings};
use crate::{StartError, web};

/// How long a renew or cancel button waits for the app to have handled the simulator's webhook,
/// so that the page it returns to already shows the result. Bounded: a failing app must not hang
/// the button.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(5);

/// The simulator's webhook retry delays in the sandbox: short, so a failed delivery is retried
/// while the person is still looking at the page.
const RETRY_DELAYS: [u64; 3] = [1, 2, 4];

/// The order id prefix of the licenses the sandbox creates.
const ORDER_BASE_STRING: &str = "sandbox";

/// What the sandbox takes from the environment. Never from `.env`: that file holds the real keys,
/// and the sandbox must neither need nor touch them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    pub host: String,
    pub port: u16,
    /// `None`: a temporary file, removed when the sandbox stops.
    pub cache_path: Option<PathBuf>,
    pub log_filter: String,
}

/// Every unusable sandbox setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sandbox settings are not usable: {}", .problems.join("; "))]
pub struct DemoOptionsError {
    pub problems: Vec<String>,
}

impl DemoOptions {
    /// Reads `HOST`, `PORT`, `CACHE_PATH` and `RUST_LOG` from the process environment.
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
        if problems.is_empty() {
            Ok(DemoOptions { host, port, cache_path, log_filter })
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
    panel: Arc<DemoPanel>,
    cache_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    /// Held so that a temporary cache lives exactly as long as the sandbox.
    _temporary_cache: Option<tempfile::TempDir>,
}

/// Starts the sandbox on `options.host`:`options.port` (port 0: any free port; [`Demo::url`]
/// says which).
pub async fn start_demo(options: &DemoOptions) -> Result<Demo, StartError> {
    let address = format!("{}:{}", options.host, options.port);
    let listener = TcpListener::bind((options.host.as_str(), options.port))
        .await
        .map_err(|source| StartError::Bind { address, source })?;
    let local = listener.local_addr().map_err(|e| StartError::Other(e.to_string()))?;
    let url = browsable_url(local).map_err(|e| StartError::Other(format!("no URL for {local}: {e}")))?;

    let (temporary_cache, cache_path) = match &options.cache_path {
        Some(path) => (None, path.clone()),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("stripe-licensespring-sandbox-")
                .tempdir()
                .map_err(|e| StartError::Other(format!("cannot create a temporary cache directory: {e}")))?;
            let path = dir.path().join("cache.json");
            (Some(dir), path)
        }
    };

    let stripe_key = Secret::new(format!("sk_test_{}", random_text(48)));
    let webhook_secret = Secret::new(format!("whsec_{}", random_text(32)));
    // LicenseSpring's key shape: 8 characters, a dot, 32.
    let licensespring_key = Secret::new(format!("{}.{}", random_text(8), random_text(32)));

    let webhooks = url.join("webhooks").map_err(|e| StartError::Other(e.to_string()))?;
    let stripe = stripe_sim::start(StripeSimConfig {
        api_key: stripe_key.clone(),
        webhook: Some(WebhookTarget { url: webhooks, secrets: vec![webhook_secret.clone()] }),
        retry_delays: RETRY_DELAYS.map(Duration::from_secs).to_vec(),
        after_payment_url: Some(url.clone()),
        ..StripeSimConfig::default()
    })
    .await
    .map_err(|e| StartError::Other(format!("cannot start the Stripe simulator: {e}")))?;
    let licensespring = licensespring_sim::start(LicenseSpringSimConfig {
        api_key: licensespring_key.clone(),
        ..LicenseSpringSimConfig::default()
    })
    .await
    .map_err(|e| StartError::Other(format!("cannot start the LicenseSpring simulator: {e}")))?;

    // The same validation and defaults as a real start, from generated values only.
    let values: Vec<(&str, String)> = vec![
        ("API_MANAGAMENT_KEY", licensespring_key.expose().to_owned()),
        ("PRODUCT_SHORT_CODE", licensespring_sim::DEFAULT_PRODUCT.to_owned()),
        ("ORDER_BASE_STRING", ORDER_BASE_STRING.to_owned()),
        ("BASE_URL", licensespring.base_url().to_string()),
        ("STRIPE_PRIVATE_KEY", stripe_key.expose().to_owned()),
        ("STRIPE_PRODUCT", stripe_sim::DEFAULT_PRICE_ID.to_owned()),
        ("STRIPE_SECRET", webhook_secret.expose().to_owned()),
        ("STRIPE_API_BASE", stripe.base_url().to_string()),
        ("HOST", options.host.clone()),
        ("PORT", local.port().to_string()),
        ("CACHE_PATH", cache_path.to_string_lossy().into_owned()),
        ("RUST_LOG", options.log_filter.clone()),
    ];
    let settings =
        Settings::from_lookup(|name| values.iter().find(|(key, _)| *key == name).map(|(_, v)| v.clone()))
            .map_err(|e| StartError::Other(e.to_string()))?;

    let cache = SubscriptionCache::open(&settings.cache_path, settings.cache_capacity)?;
    let panel = Arc::new(DemoPanel { stripe, licensespring });
    let app = web::router(web::AppState::for_sandbox(&settings, cache, panel.clone()));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(crate::serve(listener, app, async {
        // A dropped sender stops the server too.
        let _ = stopped.await;
    }));
    Ok(Demo {
        url,
        panel,
        cache_path,
        stop: Some(stop),
        server: Some(server),
        _temporary_cache: temporary_cache,
    })
}

/// Runs the sandbox until SIGINT or SIGTERM, after saying where it is and what it is.
pub async fn run_demo(options: DemoOptions) -> Result<(), StartError> {
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
         Subscription cache: {cache}\n\
         Stop with Ctrl-C.\n",
        url = demo.url()
    );
    crate::shutdown_signal().await;
    demo.shutdown().await
}

impl Demo {
    /// The app's home page, e.g. `http://127.0.0.1:5000/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    pub fn panel(&self) -> &DemoPanel {
        &self.panel
    }

    pub fn cache_path(&self) -> &Path {
        &self.cache_path
    }

    /// Stops the app (letting requests in flight finish) and the simulators.
    pub async fn shutdown(mut self) -> Result<(), StartError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let served = match self.server.take() {
            Some(server) => server.await.map_err(|e| StartError::Other(e.to_string()))?,
            None => Ok(()),
        };
        self.panel.stripe.shutdown().await;
        self.panel.licensespring.shutdown().await;
        served.map_err(|e| StartError::Other(e.to_string()))
    }
}

/// The URL a browser on this machine reaches the app at: a wildcard listen address (`0.0.0.0`,
/// `::`) is not one to browse to, so it becomes loopback.
fn browsable_url(address: SocketAddr) -> Result<Url, url::ParseError> {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Url::parse(&format!("http://{}/", SocketAddr::new(ip, address.port())))
}

/// A random alphanumeric string.
fn random_text(length: usize) -> String {
    rand::rng().sample_iter(Alphanumeric).take(length).map(char::from).collect()
}

/// The simulators behind the sandbox's home page table and buttons.
pub struct DemoPanel {
    stripe: StripeSim,
    licensespring: LicenseSpringSim,
}

/// What the home page shows in demo mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxView {
    /// Newest subscription first.
    pub rows: Vec<SandboxRow>,
    /// Webhooks are still being delivered (or retried): the page should look again shortly.
    pub deliveries_pending: bool,
}

/// One subscription and its license, as text ready for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRow {
    pub subscription: String,
    /// Stripe's status: `active` or `canceled`.
    pub status: &'static str,
    /// One billing cycle: `month`, `3 months`.
    pub interval: String,
    /// The key in the subscription's metadata; `None` until the app has written it.
    pub license_key: Option<String>,
    /// The license's `validity_period` (`YYYY-MM-DD`); `None` while there is no license.
    pub valid_until: Option<String>,
    /// Whether the license is enabled; `None` while there is no license.
    pub enabled: Option<bool>,
    /// Whether the subscription can still be renewed or canceled.
    pub active: bool,
}

impl DemoPanel {
    pub fn stripe(&self) -> &StripeSim {
        &self.stripe
    }

    pub fn licensespring(&self) -> &LicenseSpringSim {
        &self.licensespring
    }

    /// The table: Stripe's subscriptions, each joined through its metadata `license_key` to the
    /// LicenseSpring license with that key.
    pub fn view(&self) -> SandboxView {
        let prices = self.stripe.prices();
        let rows = self
            .stripe
            .subscriptions()
            .into_iter()
            .rev()
            .map(|subscription| {
                let license_key = subscription.metadata.get("license_key").cloned();
                let license = license_key.as_deref().and_then(|key| self.licensespring.license_by_key(key));
                let interval = prices
                    .iter()
                    .find(|p| p.id == subscription.price_id)
                    .map_or_else(|| "unknown".to_owned(), |price| price.interval_text());
                SandboxRow {
                    subscription: subscription.id.to_string(),
                    status: subscription.status.as_str(),
                    interval,
                    license_key,
                    valid_until: license.as_ref().and_then(|l| l.validity_period).map(|d| d.to_string()),
                    enabled: license.as_ref().map(|l| l.enabled),
                    active: subscription.status == SubscriptionStatus::Active,
                }
            })
            .collect();
        SandboxView { rows, deliveries_pending: self.stripe.deliveries_pending() }
    }

    /// Bills the subscription's next period (the simulator emits the renewal `invoice.paid`) and
    /// waits, at most [`DELIVERY_WAIT`], for the app to have handled it.
    pub async fn renew(&self, subscription: &SubscriptionId) -> Result<(), StripeSimError> {
        self.stripe.renew(subscription)?;
        self.stripe.wait_for_deliveries_idle(DELIVERY_WAIT).await;
        Ok(())
    }

    /// Cancels the subscription (the simulator emits `customer.subscription.deleted`) and waits,
    /// at most [`DELIVERY_WAIT`], for the app to have handled it.
    pub async fn cancel(&self, subscription: &SubscriptionId) -> Result<(), StripeSimError> {
        self.stripe.cancel(subscription)?;
        self.stripe.wait_for_deliveries_idle(DELIVERY_WAIT).await;
        Ok(())
    }
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
                log_filter: "info".to_owned()
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
        let url = |text: &str| browsable_url(text.parse().expect("address")).expect("url").to_string();
        assert_eq!(url("0.0.0.0:5000"), "http://127.0.0.1:5000/");
        assert_eq!(url("[::]:8080"), "http://[::1]:8080/");
        assert_eq!(url("192.168.1.20:5000"), "http://192.168.1.20:5000/");
    }
}
