//! Delivery soak: many subscriptions through their whole life (trials, renewals, declined payments
//! and their retries, seats, pauses and resumes, cancellations), every event delivered one to three
//! times, concurrently and shuffled, while a tenth of the upstream calls fail (500, 429, or a hang
//! past the server's timeout). Whatever is not answered 2xx is delivered again, as Stripe does,
//! until it is. Every license is then checked against the state the tests' own reading of SPEC's
//! table (`tests/common/spec_table.rs`) gives for the simulator's final subscriptions.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sim::FaultKind;
use sim::stripe::{DEFAULT_PRICE_ID, SimEvent, StripeSim, SubscribeOptions, SubscriptionStatus};
use stripe_licensespring::demo::Simulators;

use crate::spec_table::{Policy, assert_license_follows};
use crate::support::*;

const POLICY: Policy = Policy { grace_days: 2, activations_per_seat: Some(3) };

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

/// The servers' settings besides those pointing them at the simulators.
pub const SOAK_SETTINGS: [(&str, &str); 4] = [
    ("CACHE_CAPACITY", "100000"),
    ("UPSTREAM_TIMEOUT_SECS", "1"),
    ("GRACE_DAYS", "2"),
    ("ACTIVATIONS_PER_SEAT", "3"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_redelivered_until_accepted_leaves_one_right_license_per_subscription() {
    // Whole lives make about nine events per subscription: 200 give some 1,800 events, 3,600
    // copies. `SOAK_SUBSCRIPTIONS=2000` for a longer storm.
    let total = count("SOAK_SUBSCRIPTIONS", 200);
    let seed = seed("SOAK_SEED");
    let upstreams = upstreams().await;
    let home = ServerHome::new();
    let server = home.spawn(&upstreams, &SOAK_SETTINGS);
    let soak = soak(&upstreams, &[server.url("")], total, seed).await;
    let cached: HashSet<String> =
        home.cache_entries().iter().map(|e| e["sub_id"].as_str().expect("sub_id").to_owned()).collect();
    check_end_state(&upstreams, &soak.subscriptions, &cached, &soak.context);
    eprintln!("delivery soak: {}", soak.summary);
}

/// What a soak did.
pub struct Soak {
    pub subscriptions: Vec<String>,
    /// The seed, for every failure message.
    pub context: String,
    pub summary: String,
}

/// Lives `total` subscriptions through on the simulators, then delivers their events to `servers`
/// (each delivery worker to one of them, in turn) until every copy is accepted.
pub async fn soak(upstreams: &Simulators, servers: &[String], total: usize, seed: u64) -> Soak {
    let context = format!("SOAK_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    // The lives: a fifth start with a trial; every one is renewed twice, then goes through one
    // more step of a subscription's life; then a quarter of them are deleted.
    let stripe = &upstreams.stripe;
    let subscriptions: Vec<String> = (0..total)
        .map(|_| {
            let trial_days = rng.random_bool(0.2).then_some(7);
            let quantity = rng.random_range(1..=3);
            let options = SubscribeOptions { quantity, trial_days };
            stripe.create_subscription_with(DEFAULT_PRICE_ID, options).expect("subscribed")
        })
        .collect();
    for _ in 0..2 {
        for subscription in &subscriptions {
            stripe.renew(subscription).expect("renewed");
        }
    }
    for subscription in &subscriptions {
        one_more_step(stripe, subscription, &mut rng);
    }
    let ended =
        |id: &String| stripe.subscription(id).is_some_and(|s| s.status == SubscriptionStatus::Canceled);
    let deleted: HashSet<String> =
        subscriptions.iter().filter(|id| !ended(id) && rng.random_bool(DELETED_SHARE)).cloned().collect();
    for subscription in &deleted {
        stripe.cancel(subscription).expect("canceled");
    }
    let mut statuses: HashMap<&'static str, usize> = HashMap::new();
    for subscription in stripe.subscriptions() {
        *statuses.entry(subscription.status.as_str()).or_default() += 1;
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
        let results = deliver_concurrently(&http, servers, pending).await;
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

    let summary = format!(
        "{total} subscriptions ({} deleted; final statuses {statuses:?}), {} events, {copies} copies, \
         {attempts} deliveries in {rounds} rounds, {:.1} s; not 2xx: {refused:?}; upstream requests: Stripe {}, \
         LicenseSpring {} ({context})",
        deleted.len(),
        events.len(),
        elapsed.as_secs_f64(),
        stripe.request_count(),
        upstreams.licensespring.request_count(),
    );
    Soak { subscriptions, context, summary }
}

/// One more step of a subscription's life, chosen at random: nothing, a declined renewal (then
/// paid, declined again, or left past_due), a seat change, a pause (and maybe a resume), or a
/// cancellation at the period's end.
fn one_more_step(stripe: &StripeSim, subscription: &str, rng: &mut StdRng) {
    match rng.random_range(0..6) {
        0 => {}
        1 => {
            stripe.renew_declined(subscription).expect("declined");
            match rng.random_range(0..3) {
                0 => drop(stripe.retry_payment(subscription, true).expect("paid")),
                1 => {
                    for _ in 0..3 {
                        stripe.retry_payment(subscription, false).expect("declined again");
                    }
                }
                _ => {}
            }
        }
        2 => drop(stripe.set_quantity(subscription, rng.random_range(1..=5)).expect("seats")),
        3 => {
            stripe.pause(subscription).expect("paused");
            if rng.random_bool(0.5) {
                stripe.resume(subscription).expect("resumed");
            }
        }
        4 => {
            stripe.set_cancel_at_period_end(subscription, true).expect("to end");
            stripe.renew(subscription).expect("ended at the period's end");
        }
        _ => drop(stripe.renew(subscription).expect("renewed")),
    }
}

/// Delivers every event once, `CONCURRENCY` at a time; each with its outcome.
async fn deliver_concurrently(
    http: &reqwest::Client,
    servers: &[String],
    events: Vec<SimEvent>,
) -> Vec<(SimEvent, Result<reqwest::StatusCode, reqwest::Error>)> {
    let queue = Arc::new(Mutex::new(events));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|worker| {
            let url = servers[worker % servers.len()].clone();
            let (queue, http) = (queue.clone(), http.clone());
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

/// One license per subscription, in its own order, with the key Stripe holds, in the state SPEC's
/// table gives for Stripe's final subscription; the store (`stored`) holds exactly the
/// subscriptions that have not ended; no license or order belongs to nobody.
pub fn check_end_state(
    upstreams: &Simulators,
    subscriptions: &[String],
    stored: &HashSet<String>,
    context: &str,
) {
    let by_order = licenses_by_order(upstreams);
    for subscription in subscriptions {
        let license = only_license(upstreams, &by_order, subscription, context);
        assert_license_follows(&upstreams.stripe, subscription, license, POLICY, context);
    }
    assert_no_orphans(upstreams, &by_order, subscriptions.len(), context);

    let live: HashSet<String> = upstreams
        .stripe
        .subscriptions()
        .into_iter()
        .filter(|s| s.status != SubscriptionStatus::Canceled)
        .map(|s| s.id)
        .collect();
    assert_eq!(stored, &live, "{context}: the store holds exactly the subscriptions that have not ended");
}
