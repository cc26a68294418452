//! `POST /webhooks`: signature checks, event parsing and the answers Stripe sees. Every test passes
//! one scripted upstream as both Stripe and LicenseSpring: refused and ignored deliveries must not
//! call it, verified handled events must reach the flows (which `flows.rs` tests end to end).

use serde_json::{Value, json};

use crate::helpers::*;

const FIRST_SECRET: &str = "whsec_a";
const SECOND_SECRET: &str = "whsec_b";

const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stripe/events");

/// The app during a secret roll (two secrets), with one upstream standing in for both APIs.
async fn app() -> (TestApp, ScriptedUpstream) {
    let upstream = ScriptedUpstream::start().await;
    let settings = TestSettings::new(&upstream.base_url, &upstream.base_url)
        .set("STRIPE_SECRET", &format!("{FIRST_SECRET},{SECOND_SECRET}"));
    (TestApp::spawn_with_scripted_stripe(settings, &upstream).await, upstream)
}

fn fixture(path: &str) -> Vec<u8> {
    std::fs::read(format!("{EVENTS}/{path}")).expect("fixture file")
}

fn event(event_type: &str, object: Value) -> Vec<u8> {
    json!({"id": "evt_1TestHttp", "object": "event", "api_version": "2025-03-31.basil",
           "created": now(), "type": event_type, "data": {"object": object}})
    .to_string()
    .into_bytes()
}

/// An event type the server does not handle.
fn trial_will_end() -> Vec<u8> {
    event(
        "customer.subscription.trial_will_end",
        json!({"id": "sub_1TestLicense0000000001", "object": "subscription"}),
    )
}

async fn assert_answers(response: reqwest::Response, status: u16, what: &str) -> Value {
    assert_eq!(response.status(), status, "{what}");
    assert!(
        response.headers()["content-type"].to_str().unwrap().starts_with("application/json"),
        "{what}: JSON answer"
    );
    response.json().await.expect("a JSON body")
}

async fn assert_refused(response: reqwest::Response, what: &str) -> String {
    let body = assert_answers(response, 400, what).await;
    let error = body["error"].as_str().unwrap_or_else(|| panic!("{what}: an error message in {body}"));
    assert!(!error.contains(FIRST_SECRET) && !error.contains(SECOND_SECRET), "{what}: {error}");
    error.to_owned()
}

#[tokio::test]
async fn handled_events_are_verified_then_handed_to_the_flows() {
    let (app, upstream) = app().await;
    // Both upstreams failing: the flow cannot finish, so Stripe is told to deliver again (5xx).
    upstream.always(Scripted::json(500, json!({"error": {"type": "api_error", "message": "down"}})));
    for generation in ["acacia", "basil"] {
        for name in [
            "invoice.paid.subscription_create",
            "invoice.paid.subscription_cycle",
            "customer.subscription.deleted",
        ] {
            let body = fixture(&format!("{generation}/{name}.json"));
            let response = app.post_webhook(body.clone(), Some(&sign(&body, FIRST_SECRET, now()))).await;
            let answer = assert_answers(response, 502, &format!("{generation}/{name}")).await;
            assert!(answer["error"].as_str().unwrap().contains("500"), "{answer}");
        }
    }
    assert!(!upstream.requests().is_empty(), "the flows called the upstreams");
}

#[tokio::test]
async fn other_event_types_succeed_untouched() {
    let (app, upstream) = app().await;
    let body = trial_will_end();
    let response = app.post_webhook(body.clone(), Some(&sign(&body, FIRST_SECRET, now()))).await;
    assert_eq!(assert_answers(response, 200, "trial will end").await, json!({"success": true}));
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn an_invoice_of_no_subscription_succeeds_untouched() {
    let (app, upstream) = app().await;
    let body = event(
        "invoice.paid",
        json!({"id": "in_1TestManual", "object": "invoice", "billing_reason": "manual", "parent": null,
               "lines": {"object": "list", "data": []}}),
    );
    let response = app.post_webhook(body.clone(), Some(&sign(&body, FIRST_SECRET, now()))).await;
    assert_eq!(assert_answers(response, 200, "manual invoice").await, json!({"success": true}));
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn the_second_secret_of_a_roll_is_accepted() {
    let (app, upstream) = app().await;
    let body = trial_will_end();
    let response = app.post_webhook(body.clone(), Some(&sign(&body, SECOND_SECRET, now()))).await;
    assert_eq!(assert_answers(response, 200, "second secret").await, json!({"success": true}));

    assert!(upstream.requests().is_empty());

    upstream.always(Scripted::json(500, json!({"error": {"type": "api_error", "message": "down"}})));
    let body = fixture("basil/invoice.paid.subscription_create.json");
    let response = app.post_webhook(body.clone(), Some(&sign(&body, SECOND_SECRET, now()))).await;
    assert_answers(response, 502, "second secret, handled type").await;
    assert!(!upstream.requests().is_empty(), "verified, so handed to the flows");
}

#[tokio::test]
async fn bad_signatures_are_refused_with_the_failed_check() {
    let (app, upstream) = app().await;
    let body = fixture("basil/invoice.paid.subscription_cycle.json");
    let mut tampered = body.clone();
    let at = tampered.windows(3).position(|w| w == b"500").expect("an amount to change");
    tampered[at] = b'9';
    let now = now();
    let cases: [(&str, Vec<u8>, Option<String>, &str); 6] = [
        ("no header", body.clone(), None, "no Stripe-Signature header"),
        ("malformed header", body.clone(), Some("garbage".to_owned()), "malformed"),
        ("wrong secret", body.clone(), Some(sign(&body, "whsec_c", now)), "no v1 signature"),
        ("stale", body.clone(), Some(sign(&body, FIRST_SECRET, now - 301)), "old"),
        ("far future", body.clone(), Some(sign(&body, FIRST_SECRET, now + 3600)), "future"),
        ("tampered body", tampered, Some(sign(&body, FIRST_SECRET, now)), "no v1 signature"),
    ];
    for (what, body, signature, expected) in cases {
        let error = assert_refused(app.post_webhook(body, signature.as_deref()).await, what).await;
        assert!(error.contains(expected), "{what}: {error}");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_verified_body_that_is_not_an_event_is_refused() {
    let (app, upstream) = app().await;
    for body in [&b"{}"[..], b"[1]", b"{\"id\": ", b""] {
        let what = String::from_utf8_lossy(body).into_owned();
        let response = app.post_webhook(body.to_vec(), Some(&sign(body, FIRST_SECRET, now()))).await;
        assert_refused(response, &what).await;
    }
    // A field a flow needs is missing: refused, naming it.
    let body =
        event("customer.subscription.deleted", json!({"object": "subscription", "items": {"data": []}}));
    let response = app.post_webhook(body.clone(), Some(&sign(&body, FIRST_SECRET, now()))).await;
    let error = assert_refused(response, "deletion without id").await;
    assert!(error.contains("data.object.id"), "{error}");
    // A field no flow reads is missing (the invoice's own id): a genuine delivery, not a 400; with
    // no subscription on it, there is nothing to do.
    let body = event("invoice.paid", json!({"object": "invoice"}));
    let response = app.post_webhook(body.clone(), Some(&sign(&body, FIRST_SECRET, now()))).await;
    assert_answers(response, 200, "invoice without id").await;
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_too_large() {
    let (app, upstream) = app().await;
    // Exactly 1 MiB passes: an ignored event padded with spaces.
    let mut body = trial_will_end();
    body.resize(1024 * 1024, b' ');
    let response = app.post_webhook(body.clone(), Some(&sign(&body, FIRST_SECRET, now()))).await;
    assert_answers(response, 200, "exactly 1 MiB").await;

    body.push(b' ');
    let response = app.post_webhook(body.clone(), Some(&sign(&body, FIRST_SECRET, now()))).await;
    let answer = assert_answers(response, 413, "1 MiB and a byte").await;
    assert!(answer["error"].is_string(), "{answer}");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn webhooks_accept_only_post() {
    let (app, upstream) = app().await;
    assert_eq!(app.get("/webhooks").await.status(), 405);
    assert!(upstream.requests().is_empty());
}
