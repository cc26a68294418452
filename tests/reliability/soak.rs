//! Delivery soak: many subscriptions through their life, every event delivered one to three times,
//! concurrently and shuffled, while a tenth of the upstream calls fail (500, 429, or a hang past
//! the server's timeout). Whatever is not answered 2xx is delivered again, as Stripe does, until it
//! is. The end state is then checked against the simulators.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::DateTime;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sim::FaultKind;
use sim::stripe::{DEFAULT_PRICE_ID, SimEvent};
use stripe_licensespring::demo::Simulators;

use crate::support::*;

/// Deliveries in flight at once.
const CONCURRENCY: usize = 16;
const FAILURE_RATE: f64 = 0.10;
/// Share of the deleted subscriptions.
const DELETED_SHARE: f64 = 0.25;
/// A hang outlasts the server's 1 s upstream timeout; the simulator then applies the request
/// anyway, as a real upstream whose answer was lost would.
const HANG: Duration = Duration::from_millis(1500);
/// More rounds than this means redelivery does not converge.
const MAX_ROUNDS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_redelivered_until_accepted_leaves_one_right_license_per_subscription() {
    let total = count("SOAK_SUBSCRIPTIONS", 300);
    let seed = seed("SOAK_SEED");
    let context = format!("SOAK_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let upstreams = upstreams().await;
    let home = ServerHome::new();
    let server = home.spawn(&upstreams, &[("CACHE_CAPACITY", "100000"), ("UPSTREAM_TIMEOUT_SECS", "1")]);

    // The lives: every subscription created, then renewed twice, then a quarter of them deleted.
    let stripe = &upstreams.stripe;
    let subscriptions: Vec<String> =
        (0..total).map(|_| stripe.create_subscription(DEFAULT_PRICE_ID).expect("subscribed")).collect();
    for _ in 0..2 {
        for subscription in &subscriptions {
            stripe.renew(subscription).expect("renewed");
        }
    }
    let deleted: HashSet<String> =
        subscriptions.iter().filter(|_| rng.random_bool(DELETED_SHARE)).cloned().collect();
    for subscription in &deleted {
        stripe.cancel(subscription).expect("canceled");
    }
    let events = stripe.events();
    let mut pending: Vec<SimEvent> =
        events.iter().flat_map(|event| std::iter::repeat_n(event.clone(), rng.random_range(1..=3))).collect();
    let copies = pending.len();

    // Weighted: most failures are error answers, one in five is a hang.
    let stripe_error = FaultKind::json(500, r#"{"error":{"type":"api_error","message":"simulated"}}"#);
    let rate_limited = FaultKind::json(429, r#"{"error":{"type":"rate_limit_error","message":"simulated"}}"#);
    let kinds = |error: FaultKind, busy: FaultKind| {
        vec![error.clone(), error, busy.clone(), busy, FaultKind::Hang(HANG)]
    };
    stripe.set_random_failures(FAILURE_RATE, kinds(stripe_error, rate_limited), seed);
    upstreams.licensespring.set_random_failures(
        FAILURE_RATE,
        kinds(
            FaultKind::json(500, r#"{"detail":"simulated"}"#),
            FaultKind::json(429, r#"{"detail":"slow down"}"#),
        ),
        seed.wrapping_add(1),
    );

    let started = Instant::now();
    let http = http_client();
    let (mut attempts, mut rounds, mut refused) = (0, 0, HashMap::<String, usize>::new());
    while !pending.is_empty() {
        rounds += 1;
        assert!(
            rounds <= MAX_ROUNDS,
            "{context}: {} deliveries still refused after {MAX_ROUNDS} rounds",
            pending.len()
        );
        pending.shuffle(&mut rng);
        attempts += pending.len();
        let results = deliver_concurrently(&http, &server.url(""), pending).await;
        pending = Vec::new();
        for (event, outcome) in results {
            match outcome {
                Ok(status) if status.is_success() => {}
                Ok(status) => {
                    *refused.entry(status.as_u16().to_string()).or_default() += 1;
                    pending.push(event);
                }
                Err(_) => {
                    *refused.entry("no answer".to_owned()).or_default() += 1;
                    pending.push(event);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    stripe.clear_faults();
    upstreams.licensespring.clear_faults();

    check_end_state(&upstreams, &home, &subscriptions, &deleted, &context);
    eprintln!(
        "delivery soak: {total} subscriptions ({} deleted), {} events, {copies} copies, {attempts} deliveries in \
         {rounds} rounds, {:.1} s; not 2xx: {refused:?}; upstream requests: Stripe {}, LicenseSpring {} ({context})",
        deleted.len(),
        events.len(),
        elapsed.as_secs_f64(),
        stripe.request_count(),
        upstreams.licensespring.request_count(),
    );
}

/// Delivers every event once, `CONCURRENCY` at a time; each with its outcome.
async fn deliver_concurrently(
    http: &reqwest::Client,
    url: &str,
    events: Vec<SimEvent>,
) -> Vec<(SimEvent, Result<reqwest::StatusCode, reqwest::Error>)> {
    let queue = Arc::new(Mutex::new(events));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (queue, http, url) = (queue.clone(), http.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut done = Vec::new();
                loop {
                    let Some(event) = queue.lock().expect("queue").pop() else { break };
                    let outcome = deliver(&http, &url, &event).await;
                    done.push((event, outcome));
                }
                done
            })
        })
        .collect();
    let mut results = Vec::new();
    for worker in workers {
        results.extend(worker.await.expect("delivery worker"));
    }
    results
}

/// One license per subscription, in its own order, with the key Stripe holds; valid until the
/// last paid period's end and enabled, or disabled with one cycle's duration when deleted; the
/// cache holds exactly the live subscriptions; no license or order belongs to nobody.
fn check_end_state(
    upstreams: &Simulators,
    home: &ServerHome,
    subscriptions: &[String],
    deleted: &HashSet<String>,
    context: &str,
) {
    let by_order = licenses_by_order(upstreams);
    for subscription in subscriptions {
        let license = only_license(upstreams, &by_order, subscription, context);
        if deleted.contains(subscription) {
            assert!(!license.enabled, "{context}: {subscription} was deleted but its license is enabled");
            assert_eq!(license.valid_duration.as_deref(), Some("1m"), "{context}: {subscription}");
        } else {
            let simulated = upstreams.stripe.subscription(subscription).expect("known to Stripe");
            let paid_until =
                DateTime::from_timestamp(simulated.current_period_end, 0).expect("a date").date_naive();
            assert!(license.enabled, "{context}: {subscription} is live but its license is disabled");
            assert_eq!(license.validity_period, Some(paid_until), "{context}: {subscription}: validity");
        }
    }
    assert_no_orphans(upstreams, &by_order, subscriptions.len(), context);

    let cached: HashSet<String> =
        home.cache_entries().iter().map(|e| e["sub_id"].as_str().expect("sub_id").to_owned()).collect();
    let live: HashSet<String> =
        subscriptions.iter().filter(|s| !deleted.contains(*s)).map(|s| s.to_string()).collect();
    assert_eq!(cached, live, "{context}: the cache holds exactly the live subscriptions");
}
