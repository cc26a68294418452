//! The LicenseSpring client against a scripted upstream: each request exactly, each answer read.

use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde_json::json;
use stripe_licensespring::licensespring::{
    Buyer, LicenseChange, LicenseSpringCall, LicenseSpringClient, LicenseSpringError, LicenseValidity,
    NewLicenseTerms,
};
use stripe_licensespring::model::{LicenseId, LicenseKey};
use stripe_licensespring::settings::Secret;

use crate::helpers::*;

const KEY: &str = "G8HA-SRRZ-A6WK-TJWB";
const LICENSE_ID: LicenseId = LicenseId(1764000000123456);
const ORDER_ID: &str = "stripe-license-sub_1TestLicense0000000001";

/// A paid (not trial) license valid until that day, with LicenseSpring's default seats.
fn terms(y: i32, m: u32, d: u32) -> NewLicenseTerms {
    NewLicenseTerms { valid_until: date(y, m, d), is_trial: false, max_activations: None }
}

/// A validity change of a paid license.
fn validity(validity: LicenseValidity) -> LicenseChange {
    LicenseChange { is_trial: Some(false), validity: Some(validity), ..LicenseChange::default() }
}

async fn client() -> (LicenseSpringClient, ScriptedUpstream) {
    let upstream = ScriptedUpstream::start().await;
    (client_for(&upstream.base_url), upstream)
}

fn client_for(base_url: &str) -> LicenseSpringClient {
    let base = url::Url::parse(base_url).expect("base url");
    LicenseSpringClient::new(base, Secret::new(LICENSESPRING_KEY), Duration::from_secs(1))
}

fn key() -> LicenseKey {
    LicenseKey(KEY.to_owned())
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("date")
}

fn license_json(validity_period: serde_json::Value) -> serde_json::Value {
    json!({"id": LICENSE_ID.0, "license_key": KEY, "license_type": "subscription", "enabled": true,
           "status": "Active", "is_trial": false, "valid_duration": null,
           "validity_period": validity_period, "order_store_id": ORDER_ID})
}

fn list_of(licenses: Vec<serde_json::Value>) -> Scripted {
    Scripted::json(200, json!({"count": licenses.len(), "next": null, "previous": null, "results": licenses}))
}

/// Method, path and the headers every call carries; a JSON body also carries its content type.
fn assert_sent(sent: &RecordedRequest, method: &str, path: &str, query: Option<&str>) {
    assert_eq!(sent.method, method);
    assert_eq!(sent.path, path);
    assert_eq!(sent.query.as_deref(), query);
    assert_eq!(sent.header("authorization"), Some(format!("Api-Key {LICENSESPRING_KEY}").as_str()));
    assert_eq!(sent.header("accept"), Some("application/json"));
    if sent.body.is_empty() {
        assert_eq!(sent.header("content-type"), None);
    } else {
        assert_eq!(sent.header("content-type"), Some("application/json"));
    }
}

fn assert_no_key(error: &LicenseSpringError) {
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(LICENSESPRING_KEY), "the API key leaked: {shown}");
}

#[tokio::test]
async fn generate_license_key_asks_for_one_key_of_the_product() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(200, json!([KEY])));

    assert_eq!(client.generate_license_key(PRODUCT_CODE).await.expect("a key"), key());
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    assert_sent(&requests[0], "GET", "/api/v1/orders/generate_license/", Some("product=ACME&quantity=1"));
    assert!(requests[0].body.is_empty());
}

#[tokio::test]
async fn generate_license_key_with_no_key_in_the_answer_is_unreadable() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(200, json!([])));
    let error = client.generate_license_key(PRODUCT_CODE).await.expect_err("no key");
    assert!(matches!(error, LicenseSpringError::Unreadable { call: LicenseSpringCall::GenerateKey, .. }));
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn create_order_sends_one_subscription_license_and_reads_its_id() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(
        200,
        json!({"id": 1764000000000001_i64, "order_items": [{"licenses": [
            {"id": LICENSE_ID.0, "license_key": KEY, "license_type": "subscription"}]}]}),
    ));

    let id = client
        .create_order(ORDER_ID, PRODUCT_CODE, &key(), &terms(2025, 12, 24), None)
        .await
        .expect("created");
    assert_eq!(id, LICENSE_ID);
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1, "the id was in the answer: no lookup");
    assert_sent(&requests[0], "POST", "/api/v1/orders/create_order/", None);
    assert_eq!(
        requests[0].body_json().expect("a JSON body"),
        json!({"id": ORDER_ID, "items": [{"product_code": PRODUCT_CODE, "licenses": [
            {"key": KEY, "license_type": "subscription", "is_trial": false, "validity_period": "2025-12-24"}]}]}),
        "exactly this: is_trial a boolean, no append"
    );
}

#[tokio::test]
async fn create_order_sends_the_buyer_a_trial_and_seats_when_asked() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(
        200,
        json!({"order_items": [{"licenses": [{"id": LICENSE_ID.0, "license_key": KEY}]}]}),
    ));
    let trial = NewLicenseTerms { valid_until: date(2026, 2, 7), is_trial: true, max_activations: Some(6) };
    let buyer = Buyer::new(Some("jane@example.com"), Some("Jane Doe"));
    client.create_order(ORDER_ID, PRODUCT_CODE, &key(), &trial, buyer.as_ref()).await.expect("created");
    assert_eq!(
        upstream.requests()[0].body_json().expect("a JSON body"),
        json!({"id": ORDER_ID, "customer": {"email": "jane@example.com", "first_name": "Jane", "last_name": "Doe"},
               "items": [{"product_code": PRODUCT_CODE, "licenses": [
            {"key": KEY, "license_type": "subscription", "is_trial": true, "validity_period": "2026-02-07",
             "max_activations": 6}]}]})
    );
}

#[tokio::test]
async fn create_order_without_a_license_id_in_the_answer_finds_the_license_by_key() {
    // The Go SDK's shape, an empty body, and plain text: all "created".
    for answer in [
        Scripted::json(200, json!({"order_id": 1764000000000001_i64, "new_passwords": []})),
        Scripted::text(201, ""),
        Scripted::text(200, "OK"),
    ] {
        let (client, upstream) = client().await;
        upstream.push(answer);
        upstream.push(list_of(vec![license_json(json!("2025-12-24"))]));

        let id = client
            .create_order(ORDER_ID, PRODUCT_CODE, &key(), &terms(2025, 12, 24), None)
            .await
            .expect("created");
        assert_eq!(id, LICENSE_ID);
        let requests = upstream.requests();
        assert_eq!(requests.len(), 2);
        assert_sent(&requests[1], "GET", "/api/v1/licenses/", Some("license_key=G8HA-SRRZ-A6WK-TJWB"));
    }
}

#[tokio::test]
async fn create_order_accepted_but_no_license_listed_is_a_retryable_error() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(200, json!({})));
    upstream.push(list_of(vec![]));
    let error = client
        .create_order(ORDER_ID, PRODUCT_CODE, &key(), &terms(2025, 12, 24), None)
        .await
        .expect_err("none");
    assert!(matches!(error, LicenseSpringError::LicenseNotListed { .. }), "{error}");
    assert!(error.is_retryable());
    assert!(!error.is_order_refusal());
}

#[tokio::test]
async fn a_refused_create_order_is_recognisable_and_not_followed_by_a_lookup() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(400, json!({"detail": "Order with this id already exists."})));
    let error = client
        .create_order(ORDER_ID, PRODUCT_CODE, &key(), &terms(2025, 12, 24), None)
        .await
        .expect_err("refused");
    assert!(error.is_order_refusal(), "{error:?}");
    assert!(!error.is_retryable());
    assert_eq!(error.status(), Some(400));
    assert_eq!(error.call(), LicenseSpringCall::CreateOrder);
    assert!(error.to_string().contains("Order with this id already exists."), "{error}");
    assert_eq!(upstream.requests().len(), 1, "the caller decides whether to look it up");
    assert_no_key(&error);
}

#[tokio::test]
async fn find_license_by_key_reads_a_match_and_zero_results_as_none() {
    let (client, upstream) = client().await;
    upstream.push(list_of(vec![license_json(json!("2025-12-24"))]));
    upstream.push(list_of(vec![]));
    upstream.push(list_of(vec![json!({"id": 1, "license_key": "OTHER-KEY"})]));

    let found = client.find_license_by_key(&key()).await.expect("found").expect("a license");
    assert_eq!(found.id, LICENSE_ID);
    assert_eq!(found.license_key, key());
    assert!(found.enabled);
    assert_eq!(found.order_store_id.as_deref(), Some(ORDER_ID));
    assert_eq!(client.find_license_by_key(&key()).await.expect("answered"), None);
    assert_eq!(client.find_license_by_key(&key()).await.expect("answered"), None, "only an exact key counts");

    let requests = upstream.requests();
    assert_sent(&requests[0], "GET", "/api/v1/licenses/", Some("license_key=G8HA-SRRZ-A6WK-TJWB"));
}

#[tokio::test]
async fn find_license_by_order_asks_for_the_order_id_and_takes_only_that_orders_license() {
    let (client, upstream) = client().await;
    upstream.push(list_of(vec![license_json(json!("2025-12-24"))]));
    upstream
        .push(list_of(vec![json!({"id": 1, "license_key": "OTHER-KEY", "order_store_id": "another-order"})]));

    let found = client.find_license_by_order(ORDER_ID).await.expect("found").expect("a license");
    assert_eq!((found.id, found.license_key), (LICENSE_ID, key()));
    assert_eq!(
        client.find_license_by_order(ORDER_ID).await.expect("answered"),
        None,
        "only that order counts"
    );

    let requests = upstream.requests();
    assert_sent(
        &requests[0],
        "GET",
        "/api/v1/licenses/",
        Some("order__store_id=stripe-license-sub_1TestLicense0000000001"),
    );
}

#[tokio::test]
async fn retrieve_license_reads_validity_period_as_a_date_datetime_or_null() {
    let (client, upstream) = client().await;
    for validity_period in
        [json!("2025-12-24"), json!("2025-12-24T00:00:00Z"), json!("2019-06-15T00:00:00.000Z"), json!(null)]
    {
        upstream.push(Scripted::json(200, license_json(validity_period)));
    }
    let mut read = Vec::new();
    for _ in 0..4 {
        read.push(client.retrieve_license(LICENSE_ID).await.expect("license").validity_period);
    }
    assert_eq!(read, [Some(date(2025, 12, 24)), Some(date(2025, 12, 24)), Some(date(2019, 6, 15)), None]);
    assert_sent(&upstream.requests()[0], "GET", "/api/v1/licenses/1764000000123456/", None);
}

#[tokio::test]
async fn retrieve_license_tolerates_missing_optional_fields() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(200, json!({"id": LICENSE_ID.0, "license_key": KEY, "enabled": false})));
    let license = client.retrieve_license(LICENSE_ID).await.expect("license");
    assert!(!license.enabled);
    assert_eq!((license.validity_period, license.valid_duration, license.order_store_id), (None, None, None));
}

#[tokio::test]
async fn update_license_sends_one_validity_field_with_is_trial() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(200, license_json(json!("2026-01-24"))));
    upstream.push(Scripted::text(200, "")); // any 2xx is success, whatever the body
    upstream.push(Scripted::json(200, license_json(json!("2026-01-24"))));

    client
        .update_license(LICENSE_ID, &validity(LicenseValidity::Until(date(2026, 1, 24))))
        .await
        .expect("extended");
    client
        .update_license(LICENSE_ID, &validity(LicenseValidity::Duration("1m".to_owned())))
        .await
        .expect("set");
    let seats = LicenseChange { max_activations: Some(4), ..LicenseChange::default() };
    client.update_license(LICENSE_ID, &seats).await.expect("seats");

    let requests = upstream.requests();
    assert_sent(&requests[0], "PATCH", "/api/v1/licenses/1764000000123456/", None);
    assert_eq!(
        requests[0].body_json().expect("a JSON body"),
        json!({"is_trial": false, "validity_period": "2026-01-24"})
    );
    assert_sent(&requests[1], "PATCH", "/api/v1/licenses/1764000000123456/", None);
    assert_eq!(
        requests[1].body_json().expect("a JSON body"),
        json!({"is_trial": false, "valid_duration": "1m"})
    );
    assert_eq!(requests[2].body_json().expect("a JSON body"), json!({"max_activations": 4}));
}

#[tokio::test]
async fn enable_license_posts_to_the_enable_route_without_a_body() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(200, json!({"message": "License enabled."})));
    client.enable_license(LICENSE_ID).await.expect("enabled");
    let requests = upstream.requests();
    assert_sent(&requests[0], "POST", "/api/v1/licenses/1764000000123456/enable/", None);
    assert!(requests[0].body.is_empty());
    upstream.push(Scripted::json(404, json!({"detail": "Not found."})));
    let error = client.enable_license(LICENSE_ID).await.expect_err("404");
    assert!(
        error.to_string().starts_with("LicenseSpring answered 404 when asked to enable a license"),
        "{error}"
    );
}

#[tokio::test]
async fn disable_license_posts_to_the_disable_route() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(200, json!({"message": "License disabled."})));
    client.disable_license(LICENSE_ID).await.expect("disabled");
    let requests = upstream.requests();
    assert_sent(&requests[0], "POST", "/api/v1/licenses/1764000000123456/disable/", None);
    assert_eq!(requests[0].body_json().expect("a JSON body"), json!({}));
}

#[tokio::test]
async fn error_answers_carry_the_status_and_licensesprings_message() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::json(403, json!({"detail": "Authentication credentials were not provided."})));
    upstream.push(Scripted::json(404, json!({"detail": "Not found."})));
    upstream.push(Scripted::json(500, json!({"message": "Internal error."})));
    upstream.push(Scripted::text(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"));

    let error = client.retrieve_license(LICENSE_ID).await.expect_err("403");
    assert_eq!(error.status(), Some(403));
    assert!(error.is_refusal() && !error.is_retryable() && !error.is_not_found());
    assert_eq!(
        error.to_string(),
        "LicenseSpring answered 403 when asked to retrieve a license: Authentication credentials were not provided."
    );
    assert_no_key(&error);

    let error = client.retrieve_license(LICENSE_ID).await.expect_err("404");
    assert!(error.is_not_found() && !error.is_retryable(), "{error:?}");
    assert!(error.to_string().ends_with(": Not found."), "{error}");
    assert_no_key(&error);

    let error = client
        .update_license(LICENSE_ID, &validity(LicenseValidity::Duration("1m".into())))
        .await
        .expect_err("500");
    assert_eq!(error.status(), Some(500));
    assert!(error.is_retryable() && !error.is_refusal());
    assert!(error.to_string().ends_with("update a license: Internal error."), "{error}");
    assert_no_key(&error);

    let error = client.disable_license(LICENSE_ID).await.expect_err("502");
    assert!(error.is_retryable());
    assert!(error.to_string().contains("<html><body><h1>502 Bad Gateway</h1>"), "raw text kept: {error}");
    assert_no_key(&error);
}

#[tokio::test]
async fn an_answer_echoing_the_key_is_redacted() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::text(401, &format!("bad header: Authorization: Api-Key {LICENSESPRING_KEY}")));
    let error = client.find_license_by_key(&key()).await.expect_err("401");
    assert!(error.to_string().contains("Api-Key [redacted]"), "{error}");
    assert_no_key(&error);
}

#[tokio::test]
async fn a_200_that_is_not_json_is_unreadable() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::text(200, "<html>maintenance</html>"));
    let error = client.retrieve_license(LICENSE_ID).await.expect_err("not JSON");
    assert!(matches!(error, LicenseSpringError::Unreadable { call: LicenseSpringCall::RetrieveLicense, .. }));
    assert!(error.to_string().contains("<html>maintenance</html>"), "{error}");
    assert!(!error.is_retryable());
    assert_no_key(&error);
}

#[tokio::test]
async fn a_hanging_upstream_times_out() {
    let (client, upstream) = client().await;
    upstream.push(Scripted::Hang(Duration::from_secs(5)));
    let started = Instant::now();
    let error = client.generate_license_key(PRODUCT_CODE).await.expect_err("timeout");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(
        matches!(error, LicenseSpringError::Timeout { call: LicenseSpringCall::GenerateKey }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert_no_key(&error);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_retryable_transport_error() {
    // Bind a port, then free it: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let client = client_for(&format!("http://{address}"));
    let error = client.disable_license(LICENSE_ID).await.expect_err("unreachable");
    assert!(matches!(error, LicenseSpringError::Transport { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert_no_key(&error);
}

#[tokio::test]
async fn the_client_debug_output_hides_the_key() {
    let shown = format!("{:?}", client_for("http://127.0.0.1:9"));
    assert!(shown.contains("127.0.0.1"), "{shown}");
    assert!(!shown.contains(LICENSESPRING_KEY), "{shown}");
}
