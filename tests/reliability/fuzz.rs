//! Property-based fuzzing of the two parsers that read what the network sends before anything is
//! trusted: the `Stripe-Signature` header ([`verify`]) and the event body ([`parse_event`]). The
//! inputs are structured (real fixture events mutated where the parser reads them, headers built
//! from plausible and broken items), so the cases reach deep into both parsers. Neither may panic.
//!
//! `PROPTEST_CASES` sets the budget per property (CI uses the default); `FUZZ_SEED` replays a run.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use sim::sign_stripe_payload;
use stripe_licensespring::settings::Secret;
use stripe_licensespring::webhook::{parse_event, verify};

use crate::support::{count, seed};

const SECRET: &str = "whsec_fuzzing_secret";
const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stripe/events");
const FIXTURES: [&str; 6] = [
    "acacia/invoice.paid.subscription_create.json",
    "acacia/invoice.paid.subscription_cycle.json",
    "acacia/customer.subscription.deleted.json",
    "basil/invoice.paid.subscription_create.json",
    "basil/invoice.paid.subscription_cycle.json",
    "basil/customer.subscription.deleted.json",
];

/// The places the event parser reads (JSON pointers), in both payload generations.
const READ_PATHS: &[&str] = &[
    "",
    "/id",
    "/type",
    "/created",
    "/api_version",
    "/data",
    "/data/object",
    "/data/object/id",
    "/data/object/status",
    "/data/object/billing_reason",
    "/data/object/subscription",
    "/data/object/subscription_details",
    "/data/object/subscription_details/metadata",
    "/data/object/subscription_details/metadata/license_key",
    "/data/object/parent",
    "/data/object/parent/subscription_details",
    "/data/object/parent/subscription_details/subscription",
    "/data/object/parent/subscription_details/metadata/license_key",
    "/data/object/lines",
    "/data/object/lines/data",
    "/data/object/lines/data/0",
    "/data/object/lines/data/0/type",
    "/data/object/lines/data/0/proration",
    "/data/object/lines/data/0/parent",
    "/data/object/lines/data/0/parent/type",
    "/data/object/lines/data/0/parent/subscription_item_details",
    "/data/object/lines/data/0/period",
    "/data/object/lines/data/0/period/end",
    "/data/object/lines/data/0/price/recurring",
    "/data/object/lines/data/0/price/recurring/interval",
    "/data/object/lines/data/0/price/recurring/interval_count",
    "/data/object/lines/data/0/plan",
    "/data/object/metadata",
    "/data/object/metadata/license_key",
    "/data/object/current_period_end",
    "/data/object/ended_at",
    "/data/object/canceled_at",
    "/data/object/items",
    "/data/object/items/data",
    "/data/object/items/data/0/price/recurring/interval",
    "/data/object/items/data/0/price/recurring/interval_count",
    "/data/object/items/data/0/plan",
    "/data/object/items/data/0/current_period_end",
];

/// Stands for raw JSON text a `serde_json::Value` cannot hold (huge numbers, deep nesting).
const RAW_MARKER: &str = "__raw_json_text__";

fn config(cases_default: u32) -> Config {
    let seed = seed("FUZZ_SEED");
    // Printed first, so a failing run's captured output says how to replay it.
    eprintln!("fuzzing with FUZZ_SEED={seed}");
    Config {
        cases: count("PROPTEST_CASES", cases_default as usize) as u32,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    }
}

fn fixtures() -> Vec<Vec<u8>> {
    FIXTURES.iter().map(|name| std::fs::read(format!("{EVENTS}/{name}")).expect("fixture")).collect()
}

/// Values of the wrong type, at the edges of numbers, or nested past any sane depth.
fn hostile_value() -> impl Strategy<Value = (serde_json::Value, Option<String>)> {
    use serde_json::{Value, json};
    fn raw(text: String) -> (Value, Option<String>) {
        (Value::String(RAW_MARKER.to_owned()), Some(text))
    }
    prop_oneof![
        Just((Value::Null, None)),
        any::<bool>().prop_map(|b| (json!(b), None)),
        prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(0), Just(-1), Just(253_402_300_800), any::<i64>()]
            .prop_map(|n| (json!(n), None)),
        prop_oneof![Just(u64::MAX), Just(1u64 << 53), Just(4_294_967_296)].prop_map(|n| (json!(n), None)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| (json!(f), None)),
        prop_oneof![
            Just("1e999"),
            Just("-1e999"),
            Just("123456789012345678901234567890"),
            Just("-0"),
            Just("1.0e-400")
        ]
        .prop_map(|text| raw(text.to_owned())),
        "\\PC{0,40}".prop_map(|s| (json!(s), None)),
        Just((json!(""), None)),
        Just((json!("x".repeat(100_000)), None)),
        prop::collection::vec(any::<i32>(), 0..4).prop_map(|v| (json!(v), None)),
        Just((json!({"id": 7, "object": ["x"]}), None)),
        (1usize..2_000).prop_map(|depth| raw(format!("{}{}", "[".repeat(depth), "]".repeat(depth)))),
        (1usize..2_000).prop_map(|depth| raw(format!("{}0{}", "{\"a\":".repeat(depth), "}".repeat(depth)))),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace (or add) the value at a path the parser reads.
    Replace { path: &'static str, value: serde_json::Value, raw: Option<String> },
    /// Delete the value at a path the parser reads.
    Remove { path: &'static str },
    /// Cut the bytes at a fraction of their length.
    Truncate { at_per_mille: u16 },
    /// XOR one byte (at a fraction of the length) with a mask.
    FlipByte { at_per_mille: u16, mask: u8 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let path = prop::sample::select(READ_PATHS);
    prop_oneof![
        4 => (path.clone(), hostile_value())
            .prop_map(|(path, (value, raw))| Mutation::Replace { path, value, raw }),
        2 => path.prop_map(|path| Mutation::Remove { path }),
        1 => (0u16..1000).prop_map(|at_per_mille| Mutation::Truncate { at_per_mille }),
        2 => (0u16..1000, 1u8..=255)
            .prop_map(|(at_per_mille, mask)| Mutation::FlipByte { at_per_mille, mask }),
    ]
}

/// Applies the mutations in order to a fixture's bytes.
fn mutate(fixture: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = fixture.to_vec();
    for mutation in mutations {
        let at = |per_mille: u16, len: usize| len * usize::from(per_mille) / 1000;
        match mutation {
            Mutation::Truncate { at_per_mille } => bytes.truncate(at(*at_per_mille, bytes.len())),
            Mutation::FlipByte { at_per_mille, mask } => {
                if !bytes.is_empty() {
                    let index = at(*at_per_mille, bytes.len()).min(bytes.len() - 1);
                    bytes[index] ^= mask;
                }
            }
            Mutation::Replace { path, value, raw } => {
                if let Some(text) = edit_json(&bytes, path, Some(value.clone())) {
                    bytes = match raw {
                        Some(raw) => text.replace(&format!("\"{RAW_MARKER}\""), raw),
                        None => text,
                    }
                    .into_bytes();
                }
            }
            Mutation::Remove { path } => {
                if let Some(text) = edit_json(&bytes, path, None) {
                    bytes = text.into_bytes();
                }
            }
        }
    }
    bytes
}

/// The JSON with the value at `path` replaced (or removed); `None` when the bytes are no longer
/// JSON or the path's parent is missing or not a container.
fn edit_json(bytes: &[u8], path: &str, value: Option<serde_json::Value>) -> Option<String> {
    use serde_json::Value;
    let mut json: Value = serde_json::from_slice(bytes).ok()?;
    if path.is_empty() {
        json = value.unwrap_or(Value::Null);
    } else {
        let (parent, key) = path.rsplit_once('/')?;
        match (json.pointer_mut(parent)?, value) {
            (Value::Object(map), Some(value)) => drop(map.insert(key.to_owned(), value)),
            (Value::Object(map), None) => drop(map.remove(key)),
            (Value::Array(items), value) => {
                let index: usize = key.parse().ok()?;
                match value {
                    Some(value) if index < items.len() => items[index] = value,
                    None if index < items.len() => drop(items.remove(index)),
                    _ => return None,
                }
            }
            _ => return None,
        }
    }
    serde_json::to_string(&json).ok()
}

#[test]
fn the_event_parser_never_panics_on_mutated_events() {
    let fixtures = fixtures();
    for fixture in &fixtures {
        parse_event(fixture).expect("the unmutated fixtures parse");
    }
    let strategy = (0..fixtures.len(), prop::collection::vec(mutation(), 1..4));
    let config = config(3000);
    let cases = config.cases;
    // How many mutants still parse: a check that the mutations are not all rejected at the first byte.
    let parsed = std::sync::atomic::AtomicUsize::new(0);
    TestRunner::new(config)
        .run(&strategy, |(which, mutations)| {
            let body = mutate(&fixtures[which], &mutations);
            if parse_event(&body).is_ok() {
                parsed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    eprintln!("event parser: {cases} mutated events, {} of them still parsed", parsed.into_inner());
}

#[test]
fn the_event_parser_never_panics_on_arbitrary_bytes() {
    let mut runner = TestRunner::new(config(3000));
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..2048), |bytes| {
            let _ = parse_event(&bytes);
            Ok(())
        })
        .unwrap();
}

/// One item of a `Stripe-Signature` header: real-looking, broken, or junk.
fn header_item() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|t| format!("t={t}")),
        "[0-9]{0,40}".prop_map(|t| format!("t={t}")),
        "[0-9a-fA-F]{0,70}".prop_map(|v| format!("v1={v}")),
        prop::collection::vec(any::<u8>(), 32).prop_map(|bytes| format!("v1={}", hex::encode(bytes))),
        "[0-9a-f]{64}".prop_map(|v| format!("v0={v}")),
        "[ \t]{0,3}(t|v1|v0|x)[ \t]{0,3}=[ \t]{0,3}[^,]{0,20}",
        "\\PC{0,30}",
        Just(String::new()),
        Just("=".to_owned()),
        Just("t=".to_owned()),
    ]
}

fn header() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        6 => prop::collection::vec(header_item(), 0..8).prop_map(|items| Some(items.join(","))),
        1 => "\\PC{0,200}".prop_map(Some),
    ]
}

#[test]
fn the_signature_header_parser_never_panics_and_never_accepts_a_forgery() {
    let secrets = [Secret::new(SECRET)];
    let strategy = (header(), prop::collection::vec(any::<u8>(), 0..256), any::<i64>(), any::<u64>());
    let mut runner = TestRunner::new(config(5000));
    runner
        .run(&strategy, |(header, body, now, tolerance)| {
            // Random items never carry a valid MAC of this body under this secret.
            let verdict = verify(header.as_deref(), &body, &secrets, Duration::from_secs(tolerance), now);
            prop_assert!(verdict.is_err(), "accepted {header:?}");
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_genuine_signature_is_found_among_junk_items_and_a_forged_one_is_not() {
    let secrets = [Secret::new(SECRET)];
    let strategy = (
        prop::collection::vec(
            header_item().prop_filter("no t", |item| !item.trim_start().starts_with('t')),
            0..5,
        ),
        prop::collection::vec(any::<u8>(), 0..512),
        0i64..4_000_000_000,
        0u64..1000,
        any::<bool>(),
    );
    let mut runner = TestRunner::new(config(3000));
    runner
        .run(&strategy, |(junk, body, t, age, forged)| {
            let secret = if forged { "whsec_forger" } else { SECRET };
            let mut items = junk;
            items.push(sign_stripe_payload(&body, secret, t));
            let header = items.join(",");
            let verdict = verify(Some(&header), &body, &secrets, Duration::from_secs(300), t + age as i64);
            prop_assert_eq!(verdict.is_ok(), !forged && age <= 300, "{} -> {:?}", header, verdict);
            Ok(())
        })
        .unwrap();
}
