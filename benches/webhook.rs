//! What one `/webhooks` delivery costs before any upstream call: the signature check and the event
//! parse, over the fixture events. Target: verify + parse of the basil `invoice.paid` (5 KB) under 20 µs.
//! Also how that cost grows with the payload: an invoice with more lines, up to the 1 MiB limit.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sim::sign_stripe_payload;
use stripe_licensespring::settings::Secret;
use stripe_licensespring::webhook::{parse_event, verify};

const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stripe/events");
const FIXTURES: [&str; 6] = [
    "basil/invoice.paid.subscription_create",
    "basil/invoice.paid.subscription_cycle",
    "basil/customer.subscription.deleted",
    "acacia/invoice.paid.subscription_create",
    "acacia/invoice.paid.subscription_cycle",
    "acacia/customer.subscription.deleted",
];

// The vectors from signatures.json for basil/invoice.paid.subscription_create.json.
const SECRET: &str = "whsec_test_secret_abc123";
const HEADER: &str = "t=1767000000,v1=39b420b79c3e876569cd799b1e63323000076db426a66312e4748a917243ae78";
const NOW: i64 = 1767000030;
const TOLERANCE: Duration = Duration::from_secs(300);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{EVENTS}/{name}.json")).expect("fixture file")
}

fn webhook(c: &mut Criterion) {
    let body = fixture(FIXTURES[0]);
    let secrets = [Secret::new(SECRET)];
    assert!(verify(Some(HEADER), &body, &secrets, TOLERANCE, NOW).is_ok(), "the vector verifies");

    c.bench_function("verify+parse basil/invoice.paid.subscription_create", |b| {
        b.iter(|| {
            verify(Some(black_box(HEADER)), black_box(&body), &secrets, TOLERANCE, NOW).expect("valid");
            parse_event(black_box(&body)).expect("an event")
        })
    });
    c.bench_function("verify basil/invoice.paid.subscription_create", |b| {
        b.iter(|| verify(Some(black_box(HEADER)), black_box(&body), &secrets, TOLERANCE, NOW))
    });
    // During a roll: two configured secrets, the match is the second's.
    let rolled = [Secret::new("whsec_rolled_secret_def456"), Secret::new(SECRET)];
    c.bench_function("verify with two secrets basil/invoice.paid.subscription_create", |b| {
        b.iter(|| verify(Some(black_box(HEADER)), black_box(&body), &rolled, TOLERANCE, NOW))
    });
    for name in FIXTURES {
        let body = fixture(name);
        c.bench_function(&format!("parse {name}"), |b| {
            b.iter(|| parse_event(black_box(&body)).expect("an event"))
        });
    }
}

/// The basil renewal invoice with its one line repeated `lines` times (about 1.5 KB each): invoices
/// grow with their lines (one per price, plus prorations); 600 lines are about 880 KB.
fn with_lines(lines: usize) -> Vec<u8> {
    let mut event: serde_json::Value =
        serde_json::from_slice(&fixture("basil/invoice.paid.subscription_cycle")).expect("JSON");
    let data = &mut event["data"]["object"]["lines"]["data"];
    *data = serde_json::Value::Array(vec![data[0].clone(); lines]);
    serde_json::to_vec_pretty(&event).expect("serializes")
}

fn by_payload_size(c: &mut Criterion) {
    let secrets = [Secret::new(SECRET)];
    let mut group = c.benchmark_group("verify+parse by invoice lines");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for lines in [1, 10, 100, 600] {
        let body = with_lines(lines);
        assert!(body.len() < 1024 * 1024, "within the body limit");
        let header = sign_stripe_payload(&body, SECRET, NOW - 30);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(lines), &body, |b, body| {
            b.iter(|| {
                verify(Some(black_box(&header)), black_box(body), &secrets, TOLERANCE, NOW).expect("valid");
                parse_event(black_box(body)).expect("an event")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, webhook, by_payload_size);
criterion_main!(benches);
