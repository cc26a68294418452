//! `reconcile` over many subscriptions that are all in step: the release binary as a child
//! process against the simulators in this process. Reports the wall time and the upstream calls
//! per subscription (which must grow with pages, not with subscriptions).
//!
//! ```text
//! cargo bench --bench reconcile                    # 10,000 subscriptions
//! cargo bench --bench reconcile -- --subscriptions 2000 [--upstream-latency-ms 20]
//! ```

use std::time::{Duration, Instant};

use chrono::DateTime;
use sim::licensespring::LicenseSpringSimConfig;
use sim::stripe::StripeSimConfig;
use sim::{Fault, FaultKind};
use stripe_licensespring::demo::{ORDER_BASE_STRING, Simulators};
use stripe_licensespring::licensespring::{LicenseSpringClient, NewLicenseTerms};
use stripe_licensespring::model::LicenseKey;
use stripe_licensespring::settings::Secret;

const USAGE: &str = "usage: cargo bench --bench reconcile -- [--subscriptions N] [--upstream-latency-ms L]";

fn main() {
    let mut subscriptions = 10_000usize;
    let mut latency = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value =
            || args.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or_else(|| panic!("{USAGE}"));
        match arg.as_str() {
            "--bench" => {}
            "--subscriptions" => subscriptions = value() as usize,
            "--upstream-latency-ms" => latency = Duration::from_millis(value()),
            _ => panic!("{USAGE}"),
        }
    }
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(run(subscriptions, latency));
}

async fn run(count: usize, latency: Duration) {
    let simulators =
        Simulators::start(StripeSimConfig::default(), LicenseSpringSimConfig::default(), "whsec_unused")
            .await
            .expect("simulators start");
    let stripe = &simulators.stripe;
    let settings = simulators.settings();
    let setting = |name: &str| settings.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).expect(name);
    let licensespring = LicenseSpringClient::new(
        simulators.licensespring.base_url(),
        Secret::new(setting("API_MANAGAMENT_KEY")),
        Duration::from_secs(10),
    );

    // Every subscription with the license a webhook would have made: in step.
    let made = Instant::now();
    for n in 0..count {
        let id = stripe.create_subscription(sim::stripe::DEFAULT_PRICE_ID).expect("subscribed");
        let subscription = stripe.subscription(&id).expect("made");
        let until =
            DateTime::from_timestamp(subscription.current_period_end, 0).expect("a date").date_naive();
        let terms = NewLicenseTerms { valid_until: until, is_trial: false, max_activations: None };
        let key =
            LicenseKey(format!("BNCH-{:04}-{:04}-{:04}", n / 100_000_000, (n / 10_000) % 10_000, n % 10_000));
        licensespring
            .create_order(
                &format!("{ORDER_BASE_STRING}_{id}"),
                &setting("PRODUCT_SHORT_CODE"),
                &key,
                &terms,
                None,
            )
            .await
            .expect("an order");
    }
    eprintln!("made {count} subscriptions and licenses in {:.1} s", made.elapsed().as_secs_f64());
    if !latency.is_zero() {
        let delay = Fault::new("", FaultKind::Hang(latency)).times(usize::MAX);
        stripe.add_fault(delay.clone());
        simulators.licensespring.add_fault(delay);
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let calls_before = stripe.request_count() + simulators.licensespring.request_count();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_stripe-licensespring"));
    command.arg("reconcile").env_clear().current_dir(dir.path());
    for (name, value) in &settings {
        command.env(name, value);
    }
    command.env("CACHE_PATH", dir.path().join("cache.json"));
    let started = Instant::now();
    let output = command.output().await.expect("reconcile runs");
    let wall = started.elapsed();
    let stripe_calls = stripe.request_count();
    let calls = stripe_calls + simulators.licensespring.request_count() - calls_before;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "all in step:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    println!(
        "reconcile, {count} subscriptions in step, upstream latency {} ms: {:.2} s wall, {calls} upstream calls \
         ({:.3} per subscription: pages of 100 on both sides)\n{}",
        latency.as_millis(),
        wall.as_secs_f64(),
        calls as f64 / count as f64,
        stdout.trim()
    );
}
