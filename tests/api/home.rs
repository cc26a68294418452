//! The store page, payment links and health.

use serde_json::json;

use crate::helpers::*;

async fn app_with_stripe() -> (TestApp, ScriptedUpstream) {
    let stripe = ScriptedUpstream::start().await;
    let app = TestApp::spawn_with_scripted_stripe(
        TestSettings::new(&stripe.base_url, "http://127.0.0.1:9"),
        &stripe,
    )
    .await;
    (app, stripe)
}

fn payment_link(url: &str) -> Scripted {
    Scripted::json(
        200,
        json!({"id": "plink_1Test", "object": "payment_link", "active": true, "livemode": false, "url": url, "metadata": {}}),
    )
}

#[tokio::test]
async fn home_page_offers_a_form_that_posts_to_create_payment_link() {
    let (app, stripe) = app_with_stripe().await;
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = response.text().await.unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "HTML5 doctype");
    assert!(page.contains(r#"<form method="post" action="/create-payment-link">"#), "{page}");
    assert!(page.contains(&format!(r#"<input type="hidden" name="price" value="{PRICE_ID}">"#)), "{page}");
    assert!(
        page.contains(r#"<span class="amount">USD 5.00 / month</span>"#),
        "the price read at start: {page}"
    );
    assert!(stripe.requests().is_empty(), "rendering the page calls nobody");
}

#[tokio::test]
async fn get_create_payment_link_sends_the_price_to_stripe_and_answers_the_url() {
    let (app, stripe) = app_with_stripe().await;
    stripe.push(payment_link("https://buy.stripe.com/test_abc"));

    let response = app.get("/create-payment-link").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, json!({"url": "https://buy.stripe.com/test_abc"}));

    let requests = stripe.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/v1/payment_links");
    assert_eq!(sent.header("authorization"), Some(format!("Bearer {STRIPE_KEY}").as_str()));
    assert_eq!(sent.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert_eq!(
        sent.form(),
        vec![
            ("line_items[0][price]".to_owned(), PRICE_ID.to_owned()),
            ("line_items[0][quantity]".to_owned(), "1".to_owned()),
            ("after_completion[type]".to_owned(), "redirect".to_owned()),
            (
                "after_completion[redirect][url]".to_owned(),
                format!("http://{}/thank-you?session_id={{CHECKOUT_SESSION_ID}}", app.address),
            ),
        ]
    );
}

#[tokio::test]
async fn post_create_payment_link_redirects_to_the_link() {
    let (app, stripe) = app_with_stripe().await;
    stripe.push(payment_link("https://buy.stripe.com/test_xyz"));
    let response = app.post("/create-payment-link").await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "https://buy.stripe.com/test_xyz");
}

#[tokio::test]
async fn stripe_refusing_the_key_answers_502_with_stripes_message_and_no_key() {
    let (app, stripe) = app_with_stripe().await;
    stripe.always(Scripted::json(
        401,
        json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****0000"}}),
    ));

    let response = app.get("/create-payment-link").await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("Invalid API Key provided"), "{error}");
    assert!(!error.contains(STRIPE_KEY));

    let page = app.post("/create-payment-link").await;
    assert_eq!(page.status(), 502);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("The checkout could not be opened"), "{html}");
    assert!(html.contains("Please try again in a minute."), "says what to do: {html}");
    assert!(!html.contains("Invalid API Key provided"), "Stripe's own words are for the log, not the buyer");
    assert!(!html.contains(STRIPE_KEY));
}

#[tokio::test]
async fn stripe_failing_answers_502() {
    let (app, stripe) = app_with_stripe().await;
    stripe.always(Scripted::json(
        500,
        json!({"error": {"type": "api_error", "message": "An unknown error occurred"}}),
    ));
    let response = app.get("/create-payment-link").await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("An unknown error occurred"));
}

#[tokio::test]
async fn stripe_answering_html_still_gives_a_readable_502() {
    let (app, stripe) = app_with_stripe().await;
    stripe.always(Scripted::text(503, "<html><body>Service Unavailable</body></html>"));
    let response = app.get("/create-payment-link").await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("503"), "{body}");
}

#[tokio::test]
async fn stripe_not_answering_gives_502_after_the_upstream_timeout() {
    let (app, stripe) = app_with_stripe().await;
    stripe.always(Scripted::Hang(std::time::Duration::from_secs(10)));
    let started = std::time::Instant::now();
    let response = app.get("/create-payment-link").await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("did not answer in time"), "{body}");
    // UPSTREAM_TIMEOUT_SECS is 2 in the test settings: the page does not wait for the hang to end.
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
}

#[tokio::test]
async fn stripe_unreachable_gives_502() {
    // Port 9 (discard) on loopback: nothing listens, the connection is refused.
    let app = TestApp::spawn(TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9")).await;
    let response = app.get("/create-payment-link").await;
    assert_eq!(response.status(), 502);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("could not reach Stripe"), "{body}");
}

#[tokio::test]
async fn health_unknown_routes_and_wrong_methods() {
    let (app, _stripe) = app_with_stripe().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");
    assert_eq!(app.get("/no-such-page").await.status(), 404);
    assert_eq!(app.post("/healthz").await.status(), 405);
    assert_eq!(app.http.delete(app.url("/create-payment-link")).send().await.unwrap().status(), 405);
}

#[tokio::test]
async fn each_price_has_its_button_and_a_price_that_is_not_sold_is_refused() {
    const YEARLY_ID: &str = "price_1TestYearly00000001";
    let stripe = ScriptedUpstream::start().await;
    let settings = TestSettings::new(&stripe.base_url, "http://127.0.0.1:9")
        .set("STRIPE_PRODUCT", &format!("{PRICE_ID},{YEARLY_ID}"))
        .set("PUBLIC_URL", "https://shop.example.com/store/");
    let app = TestApp::spawn_with_scripted_stripe(settings, &stripe).await;
    let page = app.get("/").await.text().await.unwrap();
    for price in [PRICE_ID, YEARLY_ID] {
        assert!(page.contains(&format!(r#"name="price" value="{price}""#)), "a button for {price}: {page}");
    }

    stripe.push(payment_link("https://buy.stripe.com/test_yearly"));
    let response = app.post_form("/create-payment-link", &[("price", YEARLY_ID)]).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "https://buy.stripe.com/test_yearly");
    let form = stripe.requests()[0].form();
    assert!(form.contains(&("line_items[0][price]".to_owned(), YEARLY_ID.to_owned())), "{form:?}");
    assert!(
        form.contains(&(
            "after_completion[redirect][url]".to_owned(),
            "https://shop.example.com/store/thank-you?session_id={CHECKOUT_SESSION_ID}".to_owned()
        )),
        "back to PUBLIC_URL: {form:?}"
    );

    stripe.clear_requests();
    let refused = app.post_form("/create-payment-link", &[("price", "price_other")]).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("That plan is not sold here"));
    let refused = app.get("/create-payment-link?price=price_other").await;
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("price_other"), "{body}");
    assert!(stripe.requests().is_empty(), "a price that is not sold never reaches Stripe");
}

#[tokio::test]
async fn the_pages_have_a_favicon() {
    let (app, _stripe) = app_with_stripe().await;
    let icon = app.get("/favicon.svg").await;
    assert_eq!(icon.status(), 200);
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    assert!(icon.text().await.unwrap().starts_with("<svg"));
    assert!(app.get("/").await.text().await.unwrap().contains(r#"<link rel="icon" href="/favicon.svg""#));
}
