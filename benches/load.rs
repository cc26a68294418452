//! The webhook path under load: the release server binary as a child process, the Stripe and
//! LicenseSpring simulators in this process, and pre-signed events sent by concurrent clients.
//! Reports throughput, latency percentiles, the server's own CPU time and peak memory (read from
//! `/proc`, so the simulators and this load generator are not counted) and upstream calls per event.
//!
//! ```text
//! cargo bench --bench load                  # the default set: each workload, 2,000 events, concurrency 16
//! cargo bench --bench load -- --workload renewals --events 2000 --concurrency 16 \
//!     [--upstream-latency-ms L] [--cache-entries M] [--runs R] [--server PATH]
//! ```
//!
//! `--server` measures another build of the binary (to compare two versions on a busy machine,
//! alternate between them run by run).
//!
//! Workloads (each preceded by an untimed warm-up that also opens the connections):
//! - `renewals`: `invoice.paid` renewals of cached subscriptions (GET + PATCH license, no write);
//! - `new`: first invoices of new subscriptions (GET subscription, generate key, POST metadata,
//!   create order, durable cache insert);
//! - `mixed`: new subscriptions alternating with the first renewal of one created earlier, and
//!   every tenth event a repeated delivery of one sent `2 × concurrency` events before (10%
//!   duplicates, as Stripe's at-least-once delivery makes them).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use sim::licensespring::LicenseSpringSimConfig;
use sim::stripe::StripeSimConfig;
use sim::{Fault, FaultKind};
use stripe_licensespring::cache::CacheEntry;
use stripe_licensespring::demo::Simulators;
use stripe_licensespring::model::{IntervalUnit, LicenseId, LicenseKey, SubscriptionId};

#[path = "../tests/common/server_process.rs"]
mod server_process;

use server_process::{ServerProcess, server_env};

const WEBHOOK_SECRET: &str = "whsec_load_benchmark_secret";
const USAGE: &str = "usage: cargo bench --bench load -- [--workload renewals|new|mixed] [--events N] \
[--concurrency C] [--upstream-latency-ms L] [--cache-entries M] [--runs R] [--server PATH]";

#[derive(Clone, Copy)]
enum Workload {
    Renewals,
    New,
    Mixed,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Renewals => "renewals",
            Workload::New => "new",
            Workload::Mixed => "mixed",
        }
    }
}

struct Options {
    workloads: Vec<Workload>,
    events: usize,
    concurrency: usize,
    upstream_latency: Duration,
    /// Cache entries when the timed phase starts (more if the workload needs more, see [`Plan`]).
    cache_entries: usize,
    runs: usize,
    /// The server binary to measure; by default the one Cargo built with this benchmark.
    server: PathBuf,
}

impl Options {
    /// `None` when a positional filter (`cargo bench <filter>`) does not select this benchmark.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let mut options = Options {
            workloads: vec![Workload::Renewals, Workload::New, Workload::Mixed],
            events: 2000,
            concurrency: 16,
            upstream_latency: Duration::ZERO,
            cache_entries: 100,
            runs: 1,
            server: PathBuf::from(env!("CARGO_BIN_EXE_stripe-licensespring")),
        };
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"));
            let number =
                |text: String| text.parse::<usize>().map_err(|_| format!("{arg}: not a number: {text}"));
            match arg.as_str() {
                // Cargo passes `--bench` to every benchmark binary.
                "--bench" => {}
                "--workload" => {
                    options.workloads = vec![match value()?.as_str() {
                        "renewals" => Workload::Renewals,
                        "new" => Workload::New,
                        "mixed" => Workload::Mixed,
                        other => return Err(format!("unknown workload {other}\n{USAGE}")),
                    }]
                }
                "--events" => options.events = number(value()?)?.max(1),
                "--concurrency" => options.concurrency = number(value()?)?.max(1),
                "--upstream-latency-ms" => {
                    options.upstream_latency = Duration::from_millis(number(value()?)? as u64)
                }
                "--cache-entries" => options.cache_entries = number(value()?)?.max(1),
                "--runs" => options.runs = number(value()?)?.max(1),
                "--server" => options.server = PathBuf::from(value()?),
                "-h" | "--help" => return Err(USAGE.to_owned()),
                filter if !filter.starts_with('-') => {
                    if !"load".contains(filter) {
                        return Ok(None);
                    }
                }
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        Ok(Some(options))
    }
}

/// One event ready to send: its exact body and a `Stripe-Signature` made before timing starts.
struct SignedEvent {
    body: Bytes,
    signature: String,
}

/// What one run sends, and the cache it starts from.
struct Plan {
    /// Sent first, untimed: creates the subscriptions the timed phase renews, opens connections.
    warmup: Vec<SignedEvent>,
    timed: Vec<SignedEvent>,
    /// `renewals`: the subscriptions to renew, `events` in all, rendered only once the warm-up
    /// has created their licenses: the server brings a new license in step with Stripe's current
    /// subscription, so a renewal rendered before would find its period already covered.
    renew_after_warmup: Option<(Vec<String>, usize)>,
    /// `CACHE_CAPACITY`: at least `--cache-entries`, and enough that no subscription the timed
    /// phase renews is evicted. Filler entries make the cache this full before the timed phase.
    capacity: usize,
}

/// What one run measured.
struct Measurement {
    events_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Server CPU seconds (user + system) per 1,000 events, timed phase only.
    cpu_per_1000: f64,
    /// The part of it spent by the cache's writer thread (serialising, writing, fsyncing the file).
    writer_cpu_per_1000: f64,
    peak_rss_mib: f64,
    non_2xx: usize,
    upstream_calls_per_event: f64,
}

fn main() {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => return,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let scratch = tempfile::tempdir().expect("temp dir");
    let binary = pinned_binary(&options.server, scratch.path());
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");

    println!(
        "events {}, concurrency {}, upstream latency {} ms, cache entries {}, {} run(s) each",
        options.events,
        options.concurrency,
        options.upstream_latency.as_millis(),
        options.cache_entries,
        options.runs
    );
    println!(
        "{:<15} {:>6} {:>9} {:>8} {:>8} {:>8} {:>11} {:>11} {:>9} {:>7} {:>11}",
        "workload",
        "cache",
        "events/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "CPU s/1000",
        "writer part",
        "peak MiB",
        "non-2xx",
        "calls/event"
    );
    for &workload in &options.workloads {
        let mut runs = Vec::new();
        let mut capacity = 0;
        for _ in 0..options.runs {
            let (measured, plan_capacity) = runtime.block_on(run_once(&binary, workload, &options));
            capacity = plan_capacity;
            print_row(workload.name(), capacity, &measured);
            runs.push(measured);
        }
        if options.runs > 1 {
            print_row(&format!("{} median", workload.name()), capacity, &median(&runs));
        }
    }
    println!(
        "targets: CPU s/1000 <= 0.1 renewals, <= 0.2 new; p99 at concurrency 16 without added latency \
         <= 5 ms renewals, <= 20 ms new; peak RSS <= 20 MiB at concurrency 64"
    );
}

/// A copy of the server binary for the whole session: the target directory may be shared, and a
/// build elsewhere must not swap the binary between runs.
fn pinned_binary(built: &Path, dir: &Path) -> PathBuf {
    let pinned = dir.join("stripe-licensespring");
    std::fs::copy(built, &pinned).unwrap_or_else(|e| panic!("cannot copy {}: {e}", built.display()));
    pinned
}

async fn run_once(binary: &Path, workload: Workload, options: &Options) -> (Measurement, usize) {
    let upstreams =
        Simulators::start(StripeSimConfig::default(), LicenseSpringSimConfig::default(), WEBHOOK_SECRET)
            .await
            .expect("simulators start");
    if !options.upstream_latency.is_zero() {
        // A rule matching every request, never used up: each answer is delayed by the same amount.
        let delay = Fault::new("", FaultKind::Hang(options.upstream_latency)).times(usize::MAX);
        upstreams.stripe.add_fault(delay.clone());
        upstreams.licensespring.add_fault(delay);
    }
    let plan = plan(&upstreams, workload, options);

    let dir = tempfile::tempdir().expect("temp dir");
    let cache_path = dir.path().join("cache.json");
    write_fillers(&cache_path, plan.capacity);
    let mut env = server_env(&upstreams, &cache_path);
    env.push(("CACHE_CAPACITY".to_owned(), plan.capacity.to_string()));
    let server = ServerProcess::spawn(binary, dir.path(), &env).expect("the server starts");

    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let url = server.url("/webhooks");
    let mut plan = plan;
    let warmup = std::mem::take(&mut plan.warmup);
    let (_, warmup_failures) = send_all(&client, &url, warmup, options.concurrency).await;
    if let Some((subscriptions, n)) = plan.renew_after_warmup.take() {
        let stripe = &upstreams.stripe;
        let bodies =
            subscriptions.iter().cycle().take(n).map(|sub| stripe.renew(sub).expect("renews").body).collect();
        plan.timed = sign_all(bodies);
    }
    assert_eq!(warmup_failures, 0, "the warm-up failed; server log:\n{}", server.log().join("\n"));

    let events = plan.timed.len();
    let calls_before = upstreams.stripe.request_count() + upstreams.licensespring.request_count();
    let cpu_before = server.cpu_time().expect("server CPU time");
    let writer_before = server.thread_cpu_time("cache-writer").expect("writer CPU time");
    let started = Instant::now();
    let (mut latencies, non_2xx) = send_all(&client, &url, plan.timed, options.concurrency).await;
    let elapsed = started.elapsed();
    let cpu = server.cpu_time().expect("server CPU time") - cpu_before;
    let writer_cpu =
        (server.thread_cpu_time("cache-writer").expect("writer CPU time") - writer_before).as_secs_f64();
    let calls = upstreams.stripe.request_count() + upstreams.licensespring.request_count() - calls_before;
    let peak_rss_kib = server.peak_rss_kib().expect("server peak RSS");
    server.kill();

    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    let measured = Measurement {
        events_per_second: events as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        max_ms: percentile(1.0),
        cpu_per_1000: cpu.as_secs_f64() * 1000.0 / events as f64,
        writer_cpu_per_1000: writer_cpu * 1000.0 / events as f64,
        peak_rss_mib: peak_rss_kib as f64 / 1024.0,
        non_2xx,
        upstream_calls_per_event: calls as f64 / events as f64,
    };
    (measured, plan.capacity)
}

/// Creates the simulated subscriptions and renders, signs and orders every event of the run.
fn plan(upstreams: &Simulators, workload: Workload, options: &Options) -> Plan {
    let stripe = &upstreams.stripe;
    let n = options.events;
    let c = options.concurrency;
    let subscribe = |count: usize| -> Vec<String> {
        (0..count)
            .map(|_| stripe.create_subscription(sim::stripe::DEFAULT_PRICE_ID).expect("subscribes"))
            .collect()
    };
    let renew = |sub: &String| stripe.renew(sub).expect("renews").body;
    // Renewals are ordered so that two renewals of one subscription are never in flight together:
    // `2 × concurrency` other events lie between them.
    let (warmup_subs, timed, capacity) = match workload {
        Workload::Renewals => {
            let subs = subscribe((2 * c).max(100));
            let capacity = subs.len();
            (subs.clone(), Timed::RenewLater(subs), capacity)
        }
        Workload::New => (subscribe(2 * c), Timed::FirstInvoices(subscribe(n)), 0),
        Workload::Mixed => {
            let warmup = subscribe(2 * c);
            let mut to_renew: VecDeque<String> = warmup.iter().cloned().collect();
            let originals = n - n / DUPLICATE_EVERY;
            let mut order = Vec::with_capacity(originals);
            for index in 0..originals {
                if index % 2 == 0 {
                    let sub = subscribe(1).remove(0);
                    to_renew.push_back(sub.clone());
                    order.push(Step::Create(sub));
                } else {
                    let sub = to_renew.pop_front().expect("a subscription to renew");
                    order.push(Step::Renewal(renew(&sub)));
                }
            }
            // A subscription stays cached from its create until its renewal: ~2 × concurrency
            // creates later.
            (warmup, Timed::Mixed(order), 4 * c)
        }
    };
    // One pass over the simulator's events: the first `invoice.paid` of each subscription.
    let mut first_invoices: HashMap<String, Vec<u8>> = HashMap::new();
    for event in stripe.events() {
        if let Some(sub) = event.subscription.filter(|_| event.event_type == "invoice.paid") {
            first_invoices.entry(sub).or_insert(event.body);
        }
    }
    let mut first_invoice = |sub: &String| first_invoices.remove(sub).expect("a first invoice");
    let warmup: Vec<Vec<u8>> = warmup_subs.iter().map(&mut first_invoice).collect();
    let renew_later = match &timed {
        Timed::RenewLater(subs) => Some((subs.clone(), n)),
        _ => None,
    };
    let timed: Vec<Vec<u8>> = match timed {
        Timed::RenewLater(_) => Vec::new(),
        Timed::FirstInvoices(subs) => subs.iter().map(&mut first_invoice).collect(),
        Timed::Mixed(order) => with_duplicates(
            order
                .into_iter()
                .map(|step| match step {
                    Step::Create(sub) => first_invoice(&sub),
                    Step::Renewal(body) => body,
                })
                .collect(),
            2 * c,
            n,
        ),
    };
    Plan {
        warmup: sign_all(warmup),
        timed: sign_all(timed),
        renew_after_warmup: renew_later,
        capacity: capacity.max(options.cache_entries),
    }
}

/// Signs every body now, as Stripe would deliver it.
fn sign_all(bodies: Vec<Vec<u8>>) -> Vec<SignedEvent> {
    let now = chrono::Utc::now().timestamp();
    bodies
        .into_iter()
        .map(|body| SignedEvent {
            signature: sim::sign_stripe_payload(&body, WEBHOOK_SECRET, now),
            body: Bytes::from(body),
        })
        .collect()
}

/// One event in this many of the `mixed` workload is a repeated delivery.
const DUPLICATE_EVERY: usize = 10;

/// `total` events: the originals with, after every `DUPLICATE_EVERY - 1` of them, a copy of the one
/// sent `distance` events earlier.
fn with_duplicates(originals: Vec<Vec<u8>>, distance: usize, total: usize) -> Vec<Vec<u8>> {
    let mut sent: Vec<Vec<u8>> = Vec::with_capacity(total);
    for body in originals {
        sent.push(body);
        if sent.len() % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 && sent.len() < total {
            let repeat = sent[sent.len().saturating_sub(distance)].clone();
            sent.push(repeat);
        }
    }
    sent
}

enum Timed {
    RenewLater(Vec<String>),
    FirstInvoices(Vec<String>),
    Mixed(Vec<Step>),
}

enum Step {
    Create(String),
    Renewal(Vec<u8>),
}

/// A full cache of entries no event touches; the warm-up's new subscriptions evict the oldest.
fn write_fillers(path: &Path, count: usize) {
    let fillers: Vec<CacheEntry> = (0..count)
        .map(|n| {
            CacheEntry::new(
                SubscriptionId(format!("sub_1Filler{n:019}")),
                LicenseKey(format!("FILL-{n:014}")),
                IntervalUnit::Month,
                LicenseId(1_700_000_000_000_000 + n as i64),
            )
        })
        .collect();
    std::fs::write(path, serde_json::to_vec(&fillers).expect("entries serialize")).expect("cache file");
}

/// Sends every event with `concurrency` clients, each taking the next unsent event; answers each
/// event's latency and how many were not answered 2xx.
async fn send_all(
    client: &reqwest::Client,
    url: &str,
    events: Vec<SignedEvent>,
    concurrency: usize,
) -> (Vec<Duration>, usize) {
    let events = Arc::new(events);
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, events, next) = (client.clone(), url.to_owned(), events.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0;
                while let Some(event) = events.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let started = Instant::now();
                    let answer = client
                        .post(&url)
                        .header("content-type", "application/json; charset=utf-8")
                        .header("stripe-signature", &event.signature)
                        .body(event.body.clone())
                        .send()
                        .await;
                    let ok = match answer {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            ok && response.bytes().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    latencies.push(started.elapsed());
                    failures += usize::from(!ok);
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(events.len());
    let mut failures = 0;
    for client in clients {
        let (some, failed) = client.await.expect("client task");
        latencies.extend(some);
        failures += failed;
    }
    (latencies, failures)
}

fn print_row(label: &str, cache: usize, m: &Measurement) {
    println!(
        "{label:<15} {cache:>6} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>11.3} {:>11.3} {:>9.1} {:>7} {:>11.2}",
        m.events_per_second,
        m.p50_ms,
        m.p99_ms,
        m.max_ms,
        m.cpu_per_1000,
        m.writer_cpu_per_1000,
        m.peak_rss_mib,
        m.non_2xx,
        m.upstream_calls_per_event
    );
}

/// Each figure's median over the runs.
fn median(runs: &[Measurement]) -> Measurement {
    let of = |figure: fn(&Measurement) -> f64| {
        let mut values: Vec<f64> = runs.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    Measurement {
        events_per_second: of(|m| m.events_per_second),
        p50_ms: of(|m| m.p50_ms),
        p99_ms: of(|m| m.p99_ms),
        max_ms: of(|m| m.max_ms),
        cpu_per_1000: of(|m| m.cpu_per_1000),
        writer_cpu_per_1000: of(|m| m.writer_cpu_per_1000),
        peak_rss_mib: of(|m| m.peak_rss_mib),
        non_2xx: of(|m| m.non_2xx as f64) as usize,
        upstream_calls_per_event: of(|m| m.upstream_calls_per_event),
    }
}
