//! Crash safety: the server process is SIGKILLed at random moments while new subscriptions stream
//! in. What was acknowledged (200) must be in the cache file, the file must always parse with
//! only complete entries, and after a restart and redelivery every subscription has exactly one
//! license.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sim::stripe::DEFAULT_PRICE_ID;
use stripe_licensespring::demo::Simulators;

use crate::support::*;

/// Subscriptions created per run; their first invoices are delivered all at once.
const BATCH: usize = 8;
/// The kill comes after a random delay below this: long enough for the batch to be partly done.
const MAX_KILL_DELAY_MS: u64 = 80;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let runs = count("CRASH_RUNS", 50);
    let seed = seed("CRASH_SEED");
    let mut rng = StdRng::seed_from_u64(seed);
    let context = format!("CRASH_SEED={seed}");

    let upstreams = upstreams().await;
    let home = ServerHome::new();
    // Large enough that nothing is evicted: every subscription must stay in the file.
    let settings = [("CACHE_CAPACITY", "100000")];
    let http = http_client();
    let started = Instant::now();
    let (mut acknowledged_total, mut mid_flow_kills) = (0, 0);
    let mut subscriptions = Vec::new();

    for run in 0..runs {
        let server = home.spawn(&upstreams, &settings);
        let url = server.url("");
        let events: Vec<_> = (0..BATCH)
            .map(|_| {
                let subscription =
                    upstreams.stripe.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
                let event = upstreams.stripe.events().pop().expect("its first invoice.paid");
                subscriptions.push(subscription);
                event
            })
            .collect();
        let deliveries: Vec<_> = events
            .iter()
            .map(|event| {
                let (http, url, event) = (http.clone(), url.clone(), event.clone());
                tokio::spawn(async move { deliver(&http, &url, &event).await })
            })
            .collect();

        tokio::time::sleep(Duration::from_millis(rng.random_range(0..MAX_KILL_DELAY_MS))).await;
        server.kill();

        // Whatever was answered 200 was answered before the kill: it must be durable.
        let mut unanswered = Vec::new();
        let mut acknowledged = HashSet::new();
        for (event, delivery) in events.iter().zip(deliveries) {
            match delivery.await.expect("delivery task") {
                Ok(status) if status.is_success() => {
                    acknowledged.insert(event.subscription.clone().expect("a subscription event"));
                }
                _ => unanswered.push(event.clone()),
            }
        }
        // The kills that matter most: some unacknowledged subscription was already part done.
        let part_done = unanswered.iter().any(|event| {
            let subscription = event.subscription.as_ref().and_then(|id| upstreams.stripe.subscription(id));
            subscription.is_some_and(|s| s.metadata.contains_key("license_key"))
        });
        mid_flow_kills += usize::from(part_done);
        acknowledged_total += acknowledged.len();
        let cached = check_cache_file(&home, &upstreams, &format!("{context}, run {run}, after the kill"));
        for subscription in &acknowledged {
            assert!(
                cached.contains(subscription.as_str()),
                "{context}, run {run}: {subscription} was acknowledged but is not in the cache file"
            );
        }

        // Restart on the same file; Stripe delivers what was not acknowledged again.
        let server = home.spawn(&upstreams, &settings);
        for event in &unanswered {
            deliver_until_ok(&http, &server.url(""), event, 20).await;
        }
        server.kill();
        let cached = check_cache_file(&home, &upstreams, &format!("{context}, run {run}, after redelivery"));
        check_one_license_each(&upstreams, &subscriptions, &cached, &format!("{context}, run {run}"));
    }
    eprintln!(
        "crash safety: {runs} SIGKILLs in {:.1} s, {} subscriptions, {acknowledged_total} acknowledged before \
         a kill, {mid_flow_kills} kills with a subscription part done ({context})",
        started.elapsed().as_secs_f64(),
        subscriptions.len(),
    );
}

/// The file parses, every entry is complete and names a license LicenseSpring really holds, no
/// subscription appears twice. Returns the cached subscription ids.
fn check_cache_file(home: &ServerHome, upstreams: &Simulators, context: &str) -> HashSet<String> {
    let mut cached = HashSet::new();
    for entry in home.cache_entries() {
        let field =
            |name: &str| entry.get(name).unwrap_or_else(|| panic!("{context}: incomplete entry {entry}"));
        let sub_id = field("sub_id").as_str().expect("sub_id is text");
        let key = field("license_key").as_str().expect("license_key is text");
        assert_eq!(field("interval"), "month", "{context}: {entry}");
        let license_id = field("license_id").as_i64().expect("license_id is a number");
        let license = upstreams.licensespring.license(license_id);
        assert!(
            license.is_some_and(|l| l.license_key.as_str() == key && l.order_store_id == order_id(sub_id)),
            "{context}: the entry {entry} does not match a license of its subscription"
        );
        assert!(cached.insert(sub_id.to_owned()), "{context}: {sub_id} is in the cache twice");
    }
    cached
}

/// Every subscription has exactly one license, in its own order, with the key Stripe holds, and
/// is cached; LicenseSpring holds nothing else.
fn check_one_license_each(
    upstreams: &Simulators,
    subscriptions: &[String],
    cached: &HashSet<String>,
    context: &str,
) {
    let by_order = licenses_by_order(upstreams);
    for subscription in subscriptions {
        only_license(upstreams, &by_order, subscription, context);
        assert!(cached.contains(subscription.as_str()), "{context}: {subscription} is not cached");
    }
    assert_no_orphans(upstreams, &by_order, subscriptions.len(), context);
}
