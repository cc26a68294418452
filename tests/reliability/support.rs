//! What every suite shares: the server binary as a child process against the library's simulators,
//! signed deliveries, run sizes and seeds from the environment, and the end-state checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::server_process::{ServerProcess, server_env};
use rand::Rng;
use sim::licensespring::{LicenseSpringSimConfig, SimLicense};
use sim::stripe::{SimEvent, StripeSimConfig};
use stripe_licensespring::demo::Simulators;

pub const WEBHOOK_SECRET: &str = "whsec_reliability_suite_secret";
/// The order ids the server creates are `{ORDER_BASE}_{subscription id}` (see `server_env`).
pub const ORDER_BASE: &str = stripe_licensespring::demo::ORDER_BASE_STRING;

/// A run size: the environment variable `name` when set (for longer runs on demand), else `default`.
pub fn count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a whole number")),
        Err(_) => default,
    }
}

/// A seed: `name` from the environment to replay a failure, else a fresh one. Every failure
/// message of a seeded suite names it.
pub fn seed(name: &str) -> u64 {
    match std::env::var(name) {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a u64")),
        Err(_) => rand::rng().random(),
    }
}

pub fn server_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_stripe-licensespring"))
}

/// Both simulators with their default keys; events are only stored, the tests deliver them.
pub async fn upstreams() -> Simulators {
    upstreams_with(StripeSimConfig::default(), LicenseSpringSimConfig::default(), WEBHOOK_SECRET).await
}

pub async fn upstreams_with(
    stripe: StripeSimConfig,
    licensespring: LicenseSpringSimConfig,
    webhook_secret: &str,
) -> Simulators {
    Simulators::start(stripe, licensespring, webhook_secret).await.expect("simulators start")
}

/// A server's working directory and cache file, kept across restarts.
pub struct ServerHome {
    pub dir: tempfile::TempDir,
}

impl ServerHome {
    pub fn new() -> ServerHome {
        ServerHome { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn cache_path(&self) -> PathBuf {
        self.dir.path().join("cache.json")
    }

    /// Starts the server binary on this home's cache, against `upstreams`, with `extra` settings
    /// added to (or replacing) the ones that point it at the simulators.
    pub fn spawn(&self, upstreams: &Simulators, extra: &[(&str, &str)]) -> ServerProcess {
        let mut env = server_env(upstreams, &self.cache_path());
        for (name, value) in extra {
            env.retain(|(k, _)| k != name);
            env.push(((*name).to_owned(), (*value).to_owned()));
        }
        ServerProcess::spawn(server_binary(), self.dir.path(), &env).expect("the server starts")
    }

    /// The cache file's entries (panics, with the text, if it does not parse as an array).
    pub fn cache_entries(&self) -> Vec<serde_json::Value> {
        let bytes = std::fs::read(self.cache_path()).expect("the cache file exists");
        serde_json::from_slice(&bytes).unwrap_or_else(|error| {
            panic!("the cache file does not parse ({error}):\n{}", String::from_utf8_lossy(&bytes))
        })
    }
}

/// A client as Stripe is one: no redirects followed, a 30 s limit per delivery.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POSTs `event` to the server's `/webhooks`, signed now, as Stripe does; the status, or the
/// transport error (a killed server, a closed connection).
pub async fn deliver(
    http: &reqwest::Client,
    server_url: &str,
    event: &SimEvent,
) -> Result<reqwest::StatusCode, reqwest::Error> {
    let signature = sim::sign_stripe_payload(&event.body, WEBHOOK_SECRET, chrono::Utc::now().timestamp());
    let response = http
        .post(format!("{server_url}/webhooks"))
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", signature)
        .body(event.body.clone())
        .send()
        .await?;
    let status = response.status();
    response.bytes().await?;
    Ok(status)
}

/// Delivers until the server answers 2xx, as Stripe retries (a short pause between attempts);
/// how many attempts it took. Panics after `max_attempts`.
pub async fn deliver_until_ok(
    http: &reqwest::Client,
    server_url: &str,
    event: &SimEvent,
    max_attempts: usize,
) -> usize {
    let mut last = String::new();
    for attempt in 1..=max_attempts {
        match deliver(http, server_url, event).await {
            Ok(status) if status.is_success() => return attempt,
            Ok(status) => last = status.to_string(),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} {} not accepted after {max_attempts} attempts; last: {last}", event.event_type, event.id);
}

/// The licenses of each order id, as LicenseSpring holds them.
pub fn licenses_by_order(upstreams: &Simulators) -> HashMap<String, Vec<SimLicense>> {
    let mut by_order: HashMap<String, Vec<SimLicense>> = HashMap::new();
    for license in upstreams.licensespring.licenses() {
        by_order.entry(license.order_store_id.clone()).or_default().push(license);
    }
    by_order
}

pub fn order_id(subscription: &str) -> String {
    format!("{ORDER_BASE}_{subscription}")
}

/// The one license in the subscription's own order, whose key is the one in Stripe's metadata
/// (panics, naming `context`, otherwise).
pub fn only_license<'a>(
    upstreams: &Simulators,
    by_order: &'a HashMap<String, Vec<SimLicense>>,
    subscription: &str,
    context: &str,
) -> &'a SimLicense {
    let licenses = by_order.get(&order_id(subscription)).map_or(&[][..], Vec::as_slice);
    assert_eq!(licenses.len(), 1, "{context}: {subscription} has {} licenses", licenses.len());
    let in_stripe =
        upstreams.stripe.subscription(subscription).and_then(|s| s.metadata.get("license_key").cloned());
    assert_eq!(
        in_stripe.as_deref(),
        Some(licenses[0].license_key.as_str()),
        "{context}: {subscription}: the key in Stripe is the license's"
    );
    &licenses[0]
}

/// LicenseSpring holds one order per subscription and no license in any other order.
pub fn assert_no_orphans(
    upstreams: &Simulators,
    by_order: &HashMap<String, Vec<SimLicense>>,
    subscriptions: usize,
    context: &str,
) {
    assert_eq!(by_order.len(), subscriptions, "{context}: licenses in orders of no subscription");
    assert_eq!(upstreams.licensespring.orders().len(), subscriptions, "{context}: orphan orders");
}
