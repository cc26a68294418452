//! What `GET /metrics` shows, in the Prometheus text format (version 0.0.4): webhooks by event type
//! and outcome, upstream calls by upstream, operation and status with their latency, store writes
//! with their latency, and webhook deliveries answered 5xx.
//!
//! One registry for the process, filled through the plain functions below, so that any module can
//! count without carrying a handle; it depends on nothing else in the crate. Label values are
//! `&'static str` written in the code (operation names, outcomes, the handled event types or
//! `other`) or HTTP status codes, so no id or amount ever becomes a label and the number of series
//! stays bounded.

use std::future::Future;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric's name starts with this.
pub const PREFIX: &str = "stripe_licensespring";

/// Upper bounds (seconds) of the upstream latency buckets: a few ms on a good day, up to the
/// 10 s default timeout on a bad one.
const UPSTREAM_BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Upper bounds (seconds) of the store write buckets: an fsynced file replace takes about a
/// millisecond; a database round trip a few.
const STORE_BUCKETS: [f64; 11] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    event_type: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    upstream: &'static str,
    operation: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    upstream: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreOperationLabels {
    store: &'static str,
    operation: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

struct Metrics {
    registry: Registry,
    webhooks: Family<WebhookLabels, Counter>,
    webhook_5xx: Counter,
    upstream_calls: Family<CallLabels, Counter>,
    upstream_duration: HistogramFamily<OperationLabels>,
    store_writes: Family<StoreLabels, Counter>,
    store_duration: HistogramFamily<StoreOperationLabels>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix(PREFIX);
        let webhooks = Family::default();
        registry.register(
            "webhooks",
            "Webhook deliveries by event type (the handled ones, else other) and outcome",
            webhooks.clone(),
        );
        let webhook_5xx = Counter::default();
        registry.register(
            "webhook_5xx",
            "Webhook deliveries answered with a 5xx status, so that Stripe delivers them again",
            webhook_5xx.clone(),
        );
        let upstream_calls = Family::default();
        registry.register(
            "upstream_calls",
            "Calls to Stripe and LicenseSpring by operation and status (an HTTP status, timeout or error)",
            upstream_calls.clone(),
        );
        let upstream_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(|| Histogram::new(UPSTREAM_BUCKETS));
        registry.register_with_unit(
            "upstream_call_duration",
            "Time from sending an upstream request to having its whole answer",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let store_writes = Family::default();
        registry.register(
            "store_writes",
            "Durable writes to the subscription store by operation and result (ok or error)",
            store_writes.clone(),
        );
        let store_duration: HistogramFamily<StoreOperationLabels> =
            Family::new_with_constructor(|| Histogram::new(STORE_BUCKETS));
        registry.register_with_unit(
            "store_write_duration",
            "Time until a store write is durable (or has failed)",
            Unit::Seconds,
            store_duration.clone(),
        );
        Metrics {
            registry: root,
            webhooks,
            webhook_5xx,
            upstream_calls,
            upstream_duration,
            store_writes,
            store_duration,
        }
    }
}

/// Counts one webhook delivery: `event_type` one of the handled types, or `other` (the caller
/// maps every other type, and a delivery refused before its type was known, to it), `outcome` one
/// of the fixed outcome labels (`created`, `extended`, `ignored`, `rejected`, `failed`, ...).
pub fn webhook(event_type: &'static str, outcome: &'static str) {
    METRICS.webhooks.get_or_create(&WebhookLabels { event_type, outcome }).inc();
}

/// Counts one webhook delivery answered 5xx (whatever produced the answer, a timeout included).
pub fn webhook_5xx() {
    METRICS.webhook_5xx.inc();
}

/// Counts one upstream call and its latency: `upstream` `stripe` or `licensespring`, `operation` a
/// fixed name such as `retrieve_subscription`, `status` the HTTP status (`200`), `timeout` or
/// `error` (no answer).
pub fn upstream_call(upstream: &'static str, operation: &'static str, status: &str, elapsed: Duration) {
    let labels = CallLabels { upstream, operation, status: status.to_owned() };
    METRICS.upstream_calls.get_or_create(&labels).inc();
    METRICS
        .upstream_duration
        .get_or_create(&OperationLabels { upstream, operation })
        .observe(seconds(elapsed));
}

/// Counts one store write (`store` e.g. `cache_file`, `operation` `insert` or `remove`) and how
/// long it took to be durable or to fail.
pub fn store_write(store: &'static str, operation: &'static str, ok: bool, elapsed: Duration) {
    let labels = StoreLabels { store, operation, result: if ok { "ok" } else { "error" } };
    METRICS.store_writes.get_or_create(&labels).inc();
    METRICS
        .store_duration
        .get_or_create(&StoreOperationLabels { store, operation })
        .observe(seconds(elapsed));
}

/// Runs a store write and counts it with [`store_write`]: the one-line hook a store's write
/// methods wrap their work in.
pub async fn timed_store_write<T, E>(
    store: &'static str,
    operation: &'static str,
    write: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = write.await;
    store_write(store, operation, result.is_ok(), started.elapsed());
    result
}

/// Every metric, in the Prometheus text format.
pub fn render() -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &METRICS.registry);
    text
}

fn seconds(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line that starts with `series` (name and labels, as rendered).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    // The registry is the process's: each test uses label values no other test uses, and reads
    // differences, so tests running at once do not disturb each other.
    #[test]
    fn webhooks_count_by_event_type_and_outcome() {
        let series = |event_type: &str, outcome: &str| {
            format!(
                "stripe_licensespring_webhooks_total{{event_type=\"{event_type}\",outcome=\"{outcome}\"}}"
            )
        };
        webhook("invoice.paid", "unit_test");
        webhook("invoice.paid", "unit_test");
        webhook("other", "unit_test_rejected");
        let text = render();
        assert_eq!(sample(&text, &series("invoice.paid", "unit_test")), Some(2.0), "{text}");
        assert_eq!(sample(&text, &series("other", "unit_test_rejected")), Some(1.0), "{text}");
        assert!(text.contains("# TYPE stripe_licensespring_webhooks_total counter"), "{text}");
    }

    #[test]
    fn upstream_calls_are_counted_with_a_latency_histogram_in_seconds() {
        upstream_call("unit_test", "op", "200", Duration::from_millis(30));
        upstream_call("unit_test", "op", "timeout", Duration::from_secs(10));
        let text = render();
        let calls = "stripe_licensespring_upstream_calls_total{upstream=\"unit_test\",operation=\"op\"";
        assert_eq!(sample(&text, &format!("{calls},status=\"200\"}}")), Some(1.0), "{text}");
        assert_eq!(sample(&text, &format!("{calls},status=\"timeout\"}}")), Some(1.0), "{text}");
        let duration = "stripe_licensespring_upstream_call_duration_seconds";
        let labels = "upstream=\"unit_test\",operation=\"op\"";
        assert_eq!(sample(&text, &format!("{duration}_count{{{labels}}}")), Some(2.0), "{text}");
        assert_eq!(sample(&text, &format!("{duration}_bucket{{{labels},le=\"0.05\"}}")), Some(1.0), "{text}");
        assert_eq!(sample(&text, &format!("{duration}_bucket{{{labels},le=\"10\"}}")), Some(2.0), "{text}");
        let sum = sample(&text, &format!("{duration}_sum{{{labels}}}")).expect("a sum");
        assert!((sum - 10.03).abs() < 1e-9, "{sum}");
    }

    #[tokio::test]
    async fn a_timed_store_write_counts_its_result() {
        let ok: Result<(), ()> = timed_store_write("unit_test", "insert", async { Ok(()) }).await;
        let failed: Result<(), &str> = timed_store_write("unit_test", "insert", async { Err("full") }).await;
        assert_eq!((ok, failed), (Ok(()), Err("full")), "the write's own result is answered");
        let text = render();
        let writes = "stripe_licensespring_store_writes_total{store=\"unit_test\",operation=\"insert\"";
        assert_eq!(sample(&text, &format!("{writes},result=\"ok\"}}")), Some(1.0), "{text}");
        assert_eq!(sample(&text, &format!("{writes},result=\"error\"}}")), Some(1.0), "{text}");
        let count = "stripe_licensespring_store_write_duration_seconds_count{store=\"unit_test\",operation=\"insert\"}";
        assert_eq!(sample(&text, count), Some(2.0), "{text}");
    }

    #[test]
    fn the_5xx_counter_exists_before_the_first_one() {
        let text = render();
        assert!(text.contains("# TYPE stripe_licensespring_webhook_5xx_total counter"), "{text}");
        assert!(sample(&text, "stripe_licensespring_webhook_5xx_total").is_some(), "{text}");
    }
}
