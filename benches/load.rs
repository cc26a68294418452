//! The webhook path under load: the release server binary as a child process, the Stripe and
//! LicenseSpring simulators in this process, and pre-signed events sent by concurrent clients.
//! Reports throughput, latency percentiles, the server's own CPU time and peak memory (read from
//! `/proc`, so the simulators and this load generator are not counted) and upstream calls per event.
//!
//! ```text
//! cargo bench --bench load                  # the default set: each workload, 2,000 events, concurrency 16
//! cargo bench --bench load -- --workload renewals --events 2000 --concurrency 16 \
//!     [--upstream-latency-ms L] [--cache-entries M[,M...]] [--runs R] [--server PATH] \
//!     [--store file|postgres] [--replicas N]
//! cargo bench --bench load -- --workload new --cache-entries 100,10000,100000 --store postgres
//! ```
//!
//! `--server` measures another build of the binary (to compare two versions on a busy machine,
//! alternate between them run by run).
//!
//! `--cache-entries`: the subscriptions stored when the timed phase starts (filler entries no event
//! touches); several sizes are measured one after the other, e.g. how a new subscription's cost
//! grows with the store.
//!
//! `--store postgres`: each run gets a fresh database (`TEST_DATABASE_URL`, as for the tests) and
//! the server(s) `DATABASE_URL`; the fillers are rows of `subscriptions`, as many as the cache file
//! would hold. Reported besides the server's CPU: PostgreSQL's, the user + system time of the
//! backends serving that database (`/proc/<pid>/stat`, so PostgreSQL must run on this machine).
//! They are listed from `pg_stat_activity` before, every [`BACKEND_SAMPLE_EVERY`] during and after
//! the timed phase: one started during it is counted whole; one that exits during it loses what it
//! used since the last sample, and the output says how many did. PostgreSQL's shared background
//! processes (WAL writer, checkpointer) are not counted. `--replicas N` starts N servers on the
//! database and spreads the events over them round-robin; their CPU is summed (and each shown).
//!
//! Workloads (each preceded by an untimed warm-up that also opens the connections):
//! - `renewals`: `invoice.paid` renewals of cached subscriptions (GET + PATCH license, no write);
//! - `new`: first invoices of new subscriptions (GET subscription, generate key, POST metadata,
//!   create order, durable cache insert);
//! - `mixed`: new subscriptions alternating with the first renewal of one created earlier, and
//!   every tenth event a repeated delivery of one sent `2 × concurrency` events before (10%
//!   duplicates, as Stripe's at-least-once delivery makes them).

use std::collections::{HashMap, HashSet, VecDeque};
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

#[path = "../tests/common/postgres.rs"]
mod postgres;
#[path = "../tests/common/server_process.rs"]
mod server_process;

use postgres::TestDatabase;
use server_process::{ServerProcess, process_cpu_time, server_env};

const WEBHOOK_SECRET: &str = "whsec_load_benchmark_secret";
const USAGE: &str = "usage: cargo bench --bench load -- [--workload renewals|new|mixed] [--events N] \
[--concurrency C] [--upstream-latency-ms L] [--cache-entries M[,M...]] [--runs R] [--server PATH] \
[--store file|postgres] [--replicas N]";

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    File,
    Postgres,
}

struct Options {
    workloads: Vec<Workload>,
    events: usize,
    concurrency: usize,
    upstream_latency: Duration,
    /// Cache entries when the timed phase starts (more if the workload needs more, see [`Plan`]);
    /// each size is measured in turn.
    cache_entries: Vec<usize>,
    runs: usize,
    /// The server binary to measure; by default the one Cargo built with this benchmark.
    server: PathBuf,
    store: StoreKind,
    /// Server processes sharing the database (only with PostgreSQL).
    replicas: usize,
}

impl Options {
    /// `None` when a positional filter (`cargo bench <filter>`) does not select this benchmark.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
        let mut options = Options {
            workloads: vec![Workload::Renewals, Workload::New, Workload::Mixed],
            events: 2000,
            concurrency: 16,
            upstream_latency: Duration::ZERO,
            cache_entries: vec![100],
            runs: 1,
            server: PathBuf::from(env!("CARGO_BIN_EXE_stripe-licensespring")),
            store: StoreKind::File,
            replicas: 1,
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
                "--cache-entries" => {
                    options.cache_entries = value()?
                        .split(',')
                        .map(|size| number(size.to_owned()).map(|n| n.max(1)))
                        .collect::<Result<_, _>>()?
                }
                "--runs" => options.runs = number(value()?)?.max(1),
                "--server" => options.server = PathBuf::from(value()?),
                "--store" => {
                    options.store = match value()?.as_str() {
                        "file" => StoreKind::File,
                        "postgres" => StoreKind::Postgres,
                        other => return Err(format!("unknown store {other}\n{USAGE}")),
                    }
                }
                "--replicas" => options.replicas = number(value()?)?.max(1),
                "-h" | "--help" => return Err(USAGE.to_owned()),
                filter if !filter.starts_with('-') => {
                    if !"load".contains(filter) {
                        return Ok(None);
                    }
                }
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        if options.replicas > 1 && options.store != StoreKind::Postgres {
            return Err(format!("--replicas {} needs --store postgres\n{USAGE}", options.replicas));
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
    /// Server CPU seconds (user + system) per 1,000 events, timed phase only; summed over replicas.
    cpu_per_1000: f64,
    /// Each replica's part of it (with one server, just that).
    replica_cpu_per_1000: Vec<f64>,
    /// The part of it spent by the cache's writer thread (serialising, writing, fsyncing the file).
    writer_cpu_per_1000: f64,
    /// With PostgreSQL: the CPU seconds per 1,000 events of the backends serving the database.
    postgres_cpu_per_1000: Option<f64>,
    /// Backends that exited during the timed phase: what they used after their last sample is
    /// missing from `postgres_cpu_per_1000`.
    backends_exited: usize,
    /// The highest peak RSS of a server process.
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

    let sizes: Vec<String> = options.cache_entries.iter().map(usize::to_string).collect();
    let store = match options.store {
        StoreKind::File => String::new(),
        StoreKind::Postgres => format!(", store PostgreSQL, {} replica(s)", options.replicas),
    };
    println!(
        "events {}, concurrency {}, upstream latency {} ms, cache entries {}, {} run(s) each{store}",
        options.events,
        options.concurrency,
        options.upstream_latency.as_millis(),
        sizes.join(", "),
        options.runs
    );
    let postgres_column = match options.store {
        StoreKind::File => "",
        StoreKind::Postgres => " PostgreSQL CPU s/1000",
    };
    println!(
        "{:<15} {:>6} {:>9} {:>8} {:>8} {:>8} {:>11} {:>11} {:>9} {:>7} {:>11}{postgres_column}",
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
        for &cache_entries in &options.cache_entries {
            let mut runs = Vec::new();
            let mut capacity = 0;
            for _ in 0..options.runs {
                let (measured, plan_capacity) =
                    runtime.block_on(run_once(&binary, workload, cache_entries, &options));
                capacity = plan_capacity;
                print_row(workload.name(), capacity, &measured);
                runs.push(measured);
            }
            if options.runs > 1 {
                print_row(&format!("{} median", workload.name()), capacity, &median(&runs));
            }
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

async fn run_once(
    binary: &Path,
    workload: Workload,
    cache_entries: usize,
    options: &Options,
) -> (Measurement, usize) {
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
    let plan = plan(&upstreams, workload, cache_entries, options);

    let dir = tempfile::tempdir().expect("temp dir");
    let cache_path = dir.path().join("cache.json");
    let mut env = server_env(&upstreams, &cache_path);
    env.push(("CACHE_CAPACITY".to_owned(), plan.capacity.to_string()));
    let database = match options.store {
        StoreKind::File => {
            write_fillers(&cache_path, plan.capacity);
            None
        }
        StoreKind::Postgres => {
            let database = TestDatabase::create().await.expect("--store postgres: a PostgreSQL server");
            env.push(("DATABASE_URL".to_owned(), database.url.clone()));
            Some(database)
        }
    };
    // One after the other: each migrates the schema (the first creates it) before it listens.
    let servers: Vec<ServerProcess> = (0..options.replicas)
        .map(|_| ServerProcess::spawn(binary, dir.path(), &env).expect("the server starts"))
        .collect();
    let server_logs = || servers.iter().map(|server| server.log().join("\n")).collect::<Vec<_>>().join("\n");
    let mut backends = None;
    if let Some(database) = &database {
        let client = database.client().await;
        // As many rows once the warm-up has added its subscriptions as the full cache file holds.
        insert_fillers(&client, plan.capacity.saturating_sub(plan.warmup.len())).await;
        backends = Some(BackendCpu::new(client, database.name.clone()));
    }

    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
    let urls: Vec<String> = servers.iter().map(|server| server.url("/webhooks")).collect();
    let mut plan = plan;
    let warmup = std::mem::take(&mut plan.warmup);
    let (_, warmup_failures) = send_all(&client, &urls, warmup, options.concurrency).await;
    if let Some((subscriptions, n)) = plan.renew_after_warmup.take() {
        let stripe = &upstreams.stripe;
        let bodies =
            subscriptions.iter().cycle().take(n).map(|sub| stripe.renew(sub).expect("renews").body).collect();
        plan.timed = sign_all(bodies);
    }
    assert_eq!(warmup_failures, 0, "the warm-up failed; server log:\n{}", server_logs());

    let events = plan.timed.len();
    let calls_before = upstreams.stripe.request_count() + upstreams.licensespring.request_count();
    let cpu = |server: &ServerProcess| server.cpu_time().expect("server CPU time");
    let writer_cpu =
        |server: &ServerProcess| server.thread_cpu_time("cache-writer").expect("writer CPU time");
    let cpu_before: Vec<Duration> = servers.iter().map(cpu).collect();
    let writer_before: Duration = servers.iter().map(writer_cpu).sum();
    let sampling = match backends {
        Some(mut backends) => {
            backends.sample(true).await;
            let (stop, stopped) = tokio::sync::oneshot::channel();
            Some((stop, tokio::spawn(backends.follow(stopped))))
        }
        None => None,
    };
    let started = Instant::now();
    let (mut latencies, non_2xx) = send_all(&client, &urls, plan.timed, options.concurrency).await;
    let elapsed = started.elapsed();
    let replica_cpu: Vec<Duration> =
        servers.iter().zip(&cpu_before).map(|(s, before)| cpu(s) - *before).collect();
    let writer_cpu = (servers.iter().map(writer_cpu).sum::<Duration>() - writer_before).as_secs_f64();
    let backends = match sampling {
        Some((stop, follower)) => {
            let _ = stop.send(());
            Some(follower.await.expect("the backend sampler"))
        }
        None => None,
    };
    let calls = upstreams.stripe.request_count() + upstreams.licensespring.request_count() - calls_before;
    let peak_rss_kib =
        servers.iter().map(|server| server.peak_rss_kib().expect("server peak RSS")).max().unwrap_or(0);
    servers.into_iter().for_each(ServerProcess::kill);

    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    let per_1000 = |cpu: Duration| cpu.as_secs_f64() * 1000.0 / events as f64;
    let measured = Measurement {
        events_per_second: events as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        max_ms: percentile(1.0),
        cpu_per_1000: per_1000(replica_cpu.iter().sum()),
        replica_cpu_per_1000: replica_cpu.into_iter().map(per_1000).collect(),
        writer_cpu_per_1000: writer_cpu * 1000.0 / events as f64,
        postgres_cpu_per_1000: backends.as_ref().map(|b| per_1000(b.used())),
        backends_exited: backends.as_ref().map_or(0, |b| b.exited.len()),
        peak_rss_mib: peak_rss_kib as f64 / 1024.0,
        non_2xx,
        upstream_calls_per_event: calls as f64 / events as f64,
    };
    (measured, plan.capacity)
}

/// How often the PostgreSQL backends are listed and their CPU read during the timed phase.
const BACKEND_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The CPU time of the PostgreSQL backends serving one database (but not the backend of this
/// benchmark's own connection, which lists them).
struct BackendCpu {
    client: tokio_postgres::Client,
    database: String,
    /// Each backend seen: its CPU time when first seen (zero if it started after the first sample),
    /// and at its latest sample.
    backends: HashMap<u32, (Duration, Duration)>,
    /// Backends seen that exited since.
    exited: HashSet<u32>,
}

impl BackendCpu {
    fn new(client: tokio_postgres::Client, database: String) -> BackendCpu {
        BackendCpu { client, database, backends: HashMap::new(), exited: HashSet::new() }
    }

    /// Lists the database's backends and reads the CPU time of each one seen so far. At the
    /// `first` sample, what each has used before is the baseline.
    async fn sample(&mut self, first: bool) {
        let rows = self
            .client
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.database],
            )
            .await
            .expect("pg_stat_activity");
        for row in rows {
            let pid = row.get::<_, i32>(0) as u32;
            let baseline = if first { process_cpu_time(pid).unwrap_or_default() } else { Duration::ZERO };
            self.backends.entry(pid).or_insert((baseline, baseline));
        }
        let mut gone = Vec::new();
        for (&pid, (_, latest)) in &mut self.backends {
            if self.exited.contains(&pid) {
                continue;
            }
            match process_cpu_time(pid) {
                Some(cpu) => *latest = cpu,
                None => gone.push(pid),
            }
        }
        self.exited.extend(gone);
    }

    /// Samples every [`BACKEND_SAMPLE_EVERY`] until `stop`, then once more.
    async fn follow(mut self, mut stop: tokio::sync::oneshot::Receiver<()>) -> BackendCpu {
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(BACKEND_SAMPLE_EVERY) => self.sample(false).await,
            }
        }
        self.sample(false).await;
        self
    }

    /// The CPU time used since the first sample, as far as it was seen.
    fn used(&self) -> Duration {
        self.backends.values().map(|(baseline, latest)| latest.saturating_sub(*baseline)).sum()
    }
}

/// Creates the simulated subscriptions and renders, signs and orders every event of the run.
fn plan(upstreams: &Simulators, workload: Workload, cache_entries: usize, options: &Options) -> Plan {
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
        capacity: capacity.max(cache_entries),
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

/// `count` entries no event touches.
fn fillers(count: usize) -> Vec<CacheEntry> {
    (0..count)
        .map(|n| {
            CacheEntry::new(
                SubscriptionId(format!("sub_1Filler{n:019}")),
                LicenseKey(format!("FILL-{n:014}")),
                IntervalUnit::Month,
                LicenseId(1_700_000_000_000_000 + n as i64),
            )
        })
        .collect()
}

/// A full cache of fillers; the warm-up's new subscriptions evict the oldest.
fn write_fillers(path: &Path, count: usize) {
    std::fs::write(path, serde_json::to_vec(&fillers(count)).expect("entries serialize"))
        .expect("cache file");
}

/// The fillers as rows of the migrated `subscriptions` table, in one statement; then vacuumed and
/// analysed, as a database in service would be, so the timed phase does not pay for that.
async fn insert_fillers(client: &tokio_postgres::Client, count: usize) {
    let entries = fillers(count);
    let column = |field: fn(&CacheEntry) -> &str| entries.iter().map(field).collect::<Vec<&str>>();
    let license_ids: Vec<i64> = entries.iter().map(|entry| entry.license_id.0).collect();
    client
        .execute(
            "INSERT INTO subscriptions (sub_id, license_key, interval, license_id)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])",
            &[
                &column(|entry| &entry.sub_id.0),
                &column(|entry| &entry.license_key.0),
                &column(|entry| &entry.interval),
                &license_ids,
            ],
        )
        .await
        .expect("fillers inserted");
    client.batch_execute("VACUUM ANALYZE subscriptions").await.expect("VACUUM ANALYZE");
}

/// Sends every event with `concurrency` clients, each taking the next unsent event, event `i` to
/// `urls[i % urls.len()]`; answers each event's latency and how many were not answered 2xx.
async fn send_all(
    client: &reqwest::Client,
    urls: &[String],
    events: Vec<SignedEvent>,
    concurrency: usize,
) -> (Vec<Duration>, usize) {
    let events = Arc::new(events);
    let urls = Arc::new(urls.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, urls, events, next) = (client.clone(), urls.clone(), events.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0;
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(event) = events.get(index) else { break };
                    let started = Instant::now();
                    let answer = client
                        .post(&urls[index % urls.len()])
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

/// One run's (or the median's) row; with PostgreSQL, its CPU in a last column, and lines below for
/// each replica's CPU (with several) and backends that exited.
fn print_row(label: &str, cache: usize, m: &Measurement) {
    let postgres = m.postgres_cpu_per_1000.map_or(String::new(), |cpu| format!(" {cpu:>21.3}"));
    println!(
        "{label:<15} {cache:>6} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>11.3} {:>11.3} {:>9.1} {:>7} {:>11.2}{postgres}",
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
    if m.replica_cpu_per_1000.len() > 1 {
        let each: Vec<String> = m.replica_cpu_per_1000.iter().map(|cpu| format!("{cpu:.3}")).collect();
        println!("{:<15} CPU s/1000 per replica: {}", "", each.join(", "));
    }
    if m.backends_exited > 0 {
        println!(
            "{:<15} {} PostgreSQL backend(s) exited during the run: their CPU after the last sample is not counted",
            "", m.backends_exited
        );
    }
}

/// The middle value (the upper of the two middle ones).
fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Each figure's median over the runs.
fn median(runs: &[Measurement]) -> Measurement {
    let of = |figure: fn(&Measurement) -> f64| median_of(runs.iter().map(figure).collect());
    let replicas = runs[0].replica_cpu_per_1000.len();
    Measurement {
        events_per_second: of(|m| m.events_per_second),
        p50_ms: of(|m| m.p50_ms),
        p99_ms: of(|m| m.p99_ms),
        max_ms: of(|m| m.max_ms),
        cpu_per_1000: of(|m| m.cpu_per_1000),
        replica_cpu_per_1000: (0..replicas)
            .map(|n| median_of(runs.iter().map(|m| m.replica_cpu_per_1000[n]).collect()))
            .collect(),
        writer_cpu_per_1000: of(|m| m.writer_cpu_per_1000),
        postgres_cpu_per_1000: runs[0]
            .postgres_cpu_per_1000
            .map(|_| of(|m| m.postgres_cpu_per_1000.unwrap_or_default())),
        backends_exited: runs.iter().map(|m| m.backends_exited).max().unwrap_or(0),
        peak_rss_mib: of(|m| m.peak_rss_mib),
        non_2xx: of(|m| m.non_2xx as f64) as usize,
        upstream_calls_per_event: of(|m| m.upstream_calls_per_event),
    }
}
