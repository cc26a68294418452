//! The Stripe subscription calls against a scripted upstream: requests, both payload generations,
//! retries and errors.

use std::time::{Duration, Instant};

use serde_json::json;
use stripe_licensespring::model::{
    BillingInterval, IntervalUnit, LicenseKey, SubscriptionId, SubscriptionStatus,
};
use stripe_licensespring::settings::Secret;
use stripe_licensespring::stripe::{StripeClient, StripeError, Subscription};

use crate::helpers::*;

const SUB_ID: &str = "sub_1TestLicense0000000001";
const KEY: &str = "TEST-7KQM-4XRW-9BNC";

async fn client() -> (StripeClient, ScriptedUpstream) {
    let upstream = ScriptedUpstream::start().await;
    let base = url::Url::parse(&upstream.base_url).expect("base url");
    (StripeClient::new(base, Secret::new(STRIPE_KEY), Duration::from_secs(1)), upstream)
}

/// The subscription object of the fixture's `customer.subscription.deleted` event.
fn subscription_json(generation: &str) -> serde_json::Value {
    let path = format!(
        "{}/tests/fixtures/stripe/events/{generation}/customer.subscription.deleted.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let event: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("fixture")).expect("fixture JSON");
    event["data"]["object"].clone()
}

fn sub_id() -> SubscriptionId {
    SubscriptionId(SUB_ID.to_owned())
}

fn stripe_error(status: u16, code: &str) -> Scripted {
    Scripted::json(
        status,
        json!({"error": {"type": "api_error", "code": code, "message": format!("Stripe says {code}")}}),
    )
}

fn assert_no_key(error: &StripeError) {
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(STRIPE_KEY), "the API key leaked: {shown}");
}

fn assert_is_the_fixture_subscription(subscription: &Subscription) {
    assert_eq!(subscription.id, sub_id());
    assert_eq!(subscription.status, SubscriptionStatus::Canceled);
    assert_eq!(subscription.license_key, Some(LicenseKey(KEY.to_owned())));
    assert_eq!(subscription.metadata.get("license_key").map(String::as_str), Some(KEY));
    assert_eq!(subscription.interval, BillingInterval { unit: IntervalUnit::Month, count: 1 });
    assert_eq!(subscription.current_period_end.map(|t| t.timestamp()), Some(1769270400));
    assert_eq!(subscription.canceled_at.map(|t| t.timestamp()), Some(1767456000));
    assert_eq!(subscription.ended_at.map(|t| t.timestamp()), Some(1767456000));
}

#[tokio::test]
async fn retrieve_subscription_reads_both_payload_generations() {
    for generation in ["acacia", "basil"] {
        let (client, upstream) = client().await;
        upstream.push(Scripted::json(200, subscription_json(generation)));

        let subscription = client.retrieve_subscription(&sub_id()).await.expect(generation);
        assert_is_the_fixture_subscription(&subscription);

        let requests = upstream.requests();
        assert_eq!(requests.len(), 1);
        let sent = &requests[0];
        assert_eq!(sent.method, "GET");
        assert_eq!(sent.path, "/v1/subscriptions/sub_1TestLicense0000000001");
        assert_eq!(sent.query.as_deref(), Some("expand%5B%5D=latest_invoice"), "the latest invoice in place");
        assert_eq!(sent.header("authorization"), Some(format!("Bearer {STRIPE_KEY}").as_str()));
        assert!(sent.body.is_empty());
    }
}

#[tokio::test]
async fn set_license_key_posts_the_metadata_with_an_idempotency_key() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(200, subscription_json("basil")));
    upstream.push(Scripted::json(200, subscription_json("acacia")));

    let key = LicenseKey(KEY.to_owned());
    let subscription = client.set_subscription_license_key(&sub_id(), &key).await.expect("written");
    assert_is_the_fixture_subscription(&subscription);
    client.set_subscription_license_key(&sub_id(), &key).await.expect("written again");

    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    let sent = &requests[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/subscriptions/sub_1TestLicense0000000001");
    assert_eq!(sent.header("authorization"), Some(format!("Bearer {STRIPE_KEY}").as_str()));
    assert_eq!(sent.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(sent.form(), vec![("metadata[license_key]".to_owned(), KEY.to_owned())]);
    let first_key = sent.header("idempotency-key").expect("an Idempotency-Key");
    assert!(!first_key.is_empty() && first_key.len() <= 255);
    assert_ne!(requests[1].header("idempotency-key"), Some(first_key), "a fresh key per logical attempt");
}

#[tokio::test]
async fn retryable_failures_are_retried_with_the_same_idempotency_key() {
    let (client, upstream) = client().await;
    upstream.push(stripe_error(500, "api_error"));
    upstream.push(stripe_error(409, "lock_timeout"));
    upstream.push(Scripted::json(200, subscription_json("basil")));

    let key = LicenseKey(KEY.to_owned());
    client.set_subscription_license_key(&sub_id(), &key).await.expect("third time lucky");

    let requests = upstream.requests();
    assert_eq!(requests.len(), 3);
    let keys: Vec<_> = requests.iter().map(|r| r.header("idempotency-key")).collect();
    assert!(keys[0].is_some());
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert!(requests.iter().all(|r| r.body == requests[0].body));
}

#[tokio::test]
async fn stripe_should_retry_decides_over_the_status() {
    // `Stripe-Should-Retry: false` on a 503: the outcome is known, trying again would not help.
    let (client, upstream) = client().await;
    upstream.push(stripe_error(503, "unavailable").with_header("stripe-should-retry", "false"));
    let error = client.retrieve_subscription(&sub_id()).await.expect_err("not retried");
    assert_eq!(error.status(), Some(503));
    assert!(!error.is_retryable());
    assert_eq!(upstream.requests().len(), 1);

    // `Stripe-Should-Retry: true` on a 400 (e.g. a lock): retried.
    let (second_client, upstream) = self::client().await;
    upstream.push(stripe_error(400, "lock_timeout").with_header("stripe-should-retry", "true"));
    upstream.push(Scripted::json(200, subscription_json("basil")));
    second_client.retrieve_subscription(&sub_id()).await.expect("retried, then read");
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn retries_stop_after_two() {
    let (client, upstream) = client().await;
    upstream.always(stripe_error(503, "api_error"));
    let started = Instant::now();
    let error = client.retrieve_subscription(&sub_id()).await.expect_err("still failing");
    assert_eq!(upstream.requests().len(), 3);
    assert!(started.elapsed() < Duration::from_secs(3), "bounded: {:?}", started.elapsed());
    assert_eq!(error.status(), Some(503));
    assert!(error.is_retryable(), "the caller may try again later");
    assert_no_key(&error);
}

#[tokio::test]
async fn other_client_errors_are_not_retried() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(
        404,
        json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "id",
                         "message": "No such subscription: 'sub_1TestLicense0000000001'"}}),
    ));
    let error = client.retrieve_subscription(&sub_id()).await.expect_err("404");
    assert_eq!(upstream.requests().len(), 1);
    assert!(!error.is_retryable());
    match &error {
        StripeError::Api { status, code, message, .. } => {
            assert_eq!(*status, 404);
            assert_eq!(code.as_deref(), Some("resource_missing"));
            assert_eq!(message, "No such subscription: 'sub_1TestLicense0000000001'");
        }
        other => panic!("expected an API error, got {other:?}"),
    }
    assert_no_key(&error);
}

#[tokio::test]
async fn an_html_error_page_keeps_its_start_as_the_message() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::text(400, "<html><h1>Bad Request</h1></html>"));
    let error =
        client.set_subscription_license_key(&sub_id(), &LicenseKey(KEY.into())).await.expect_err("400");
    assert!(error.to_string().contains("<html><h1>Bad Request</h1></html>"), "{error}");
    assert_no_key(&error);
}

#[tokio::test]
async fn a_timeout_is_not_retried_in_process() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::Hang(Duration::from_secs(5)));
    let started = Instant::now();
    let error = client.retrieve_subscription(&sub_id()).await.expect_err("timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(matches!(error, StripeError::Timeout), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn a_200_that_is_not_a_subscription_is_unreadable() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::text(200, "<html>hello</html>"));
    upstream.push(Scripted::json(200, json!({"id": SUB_ID, "status": "active", "items": {"data": []}})));
    for _ in 0..2 {
        let error = client.retrieve_subscription(&sub_id()).await.expect_err("unreadable");
        assert!(matches!(error, StripeError::Unreadable(_)), "{error:?}");
        assert!(!error.is_retryable());
    }
    assert_eq!(upstream.requests().len(), 2, "not retried");
}

#[tokio::test]
async fn ids_that_could_change_the_path_are_refused_before_sending() {
    let (client, upstream) = client().await;
    for bad in ["sub_1/../../v1/customers", "sub_1?expand[]=customer", "sub_1%2Fx", ""] {
        let id = SubscriptionId(bad.to_owned());
        let error = client.retrieve_subscription(&id).await.expect_err(bad);
        assert!(matches!(error, StripeError::InvalidId(_)), "{error:?}");
        let error = client.set_subscription_license_key(&id, &LicenseKey(KEY.into())).await.expect_err(bad);
        assert!(matches!(error, StripeError::InvalidId(_)), "{error:?}");
    }
    assert!(upstream.requests().is_empty());
}
