//! The buyer gets the key: the thank-you page after checkout (before, after and at the same time
//! as the webhook), every page for a checkout that is not paid, the buyer on the LicenseSpring
//! order, and the customer portal.

use reqwest::Method;
use sim::stripe::{CheckoutPayment, SimEvent};
use sim::{Fault, FaultKind};

use crate::flows::{StoreKind, World, postgres_available};
use crate::helpers::*;

const EMAIL: &str = "jane@example.com";

async fn thank_you(world: &World, session: &str) -> (u16, String) {
    let response = world.app.get(&format!("/thank-you?session_id={session}")).await;
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The events of one subscription, in order.
fn events_of(world: &World, subscription: &str) -> Vec<SimEvent> {
    world.stripe.events_of(subscription)
}

fn orders_created(world: &World) -> usize {
    world.licensespring_calls(Method::POST, "/create_order/")
}

on_both_stores!(
    the_thank_you_page_before_the_webhook_makes_the_license_and_the_webhook_finds_it_done,
    |store| {
        let world = World::start_on(store).await;
        let (session, subscription) = world.stripe.buy(PRICE_ID, EMAIL, Some("Jane Doe")).unwrap();

        let (status, page) = thank_you(&world, &session).await;
        assert_eq!(status, 200, "{page}");
        let license = world.license_of(&subscription);
        assert!(
            page.contains(&format!(
                r#"<code id="license-key" class="license-key">{}</code>"#,
                license.license_key
            )),
            "{page}"
        );
        assert!(
            page.contains(&format!(r#"<dd class="valid-until">{}</dd>"#, world.period_end(&subscription))),
            "{page}"
        );
        assert!(page.contains(&format!(r#"<dd class="product">{PRODUCT_CODE}</dd>"#)), "{page}");
        assert!(page.contains("USD 5.00 / month"), "the plan: {page}");
        assert!(
            page.contains(r#"<button type="submit" class="manage-billing">Manage billing</button>"#),
            "{page}"
        );
        assert!(license.enabled);
        assert_eq!(world.key_in_stripe(&subscription).as_deref(), Some(license.license_key.as_str()));

        // The webhooks come after: the work is found done.
        for event in events_of(&world, &subscription) {
            world.deliver_ok(&event).await;
        }
        assert_eq!(orders_created(&world), 1, "one order");
        assert_eq!(world.license_of(&subscription).license_key, license.license_key, "the same license");
    }
);

on_both_stores!(the_thank_you_page_after_the_webhook_shows_the_same_key_and_makes_no_second_order, |store| {
    let world = World::start_on(store).await;
    let (session, subscription) = world.stripe.buy(PRICE_ID, EMAIL, None).unwrap();
    for event in events_of(&world, &subscription) {
        world.deliver_ok(&event).await;
    }
    let license = world.license_of(&subscription);
    for _reload in 0..2 {
        let (status, page) = thank_you(&world, &session).await;
        assert_eq!(status, 200);
        assert!(page.contains(license.license_key.as_str()), "{page}");
    }
    assert_eq!(orders_created(&world), 1);
});

on_both_stores!(two_browsers_and_the_webhook_at_the_same_moment_make_exactly_one_license, |store| {
    for _run in 0..3 {
        let world = World::start_on(store).await;
        let (session, subscription) = world.stripe.buy(PRICE_ID, EMAIL, None).unwrap();
        let first_invoice = world.last_event_of(&subscription, "invoice.paid");
        let (one, two, webhook) = tokio::join!(
            thank_you(&world, &session),
            thank_you(&world, &session),
            world.deliver(&first_invoice)
        );
        assert_eq!(webhook.status(), 200);
        let license = world.license_of(&subscription);
        for (status, page) in [one, two] {
            assert_eq!(status, 200, "{page}");
            assert!(page.contains(license.license_key.as_str()), "both browsers see the one key: {page}");
        }
        assert_eq!(world.licensespring.licenses().len(), 1, "exactly one license");
        assert_eq!(world.licensespring.orders().len(), 1, "exactly one order");
    }
});

on_both_stores!(a_checkout_that_is_not_paid_gets_a_clear_page_and_creates_nothing, |store| {
    let world = World::start_on(store).await;
    let link = world.app.get("/create-payment-link").await.json::<serde_json::Value>().await.unwrap();
    let link_id = world.stripe.payment_links().pop().expect("a link").id;
    assert!(link["url"].as_str().unwrap().contains(&link_id));

    let open = world.stripe.open_checkout(&link_id).unwrap();
    let (status, page) = thank_you(&world, &open).await;
    assert_eq!(status, 200);
    assert!(page.contains("Your payment is not finished yet"), "{page}");

    let processing = world.stripe.open_checkout(&link_id).unwrap();
    let payment = CheckoutPayment { processing: true, ..CheckoutPayment::new(EMAIL) };
    world.stripe.complete_checkout(&processing, payment).unwrap();
    let (status, page) = thank_you(&world, &processing).await;
    assert_eq!(status, 200);
    assert!(page.contains("Your payment is being processed"), "{page}");

    let expired = world.stripe.open_checkout(&link_id).unwrap();
    world.stripe.expire_checkout(&expired).unwrap();
    let (status, page) = thank_you(&world, &expired).await;
    assert_eq!(status, 200);
    assert!(page.contains("This checkout has expired") && page.contains("Nothing was charged"), "{page}");

    let unknown = format!("cs_test_{}", "Z".repeat(58));
    let (status, page) = thank_you(&world, &unknown).await;
    assert_eq!(status, 404);
    assert!(page.contains("We cannot find this order"), "{page}");

    assert!(
        world.licensespring.licenses().is_empty() && world.licensespring.orders().is_empty(),
        "nothing made"
    );

    // Not of Stripe's shape: refused without asking Stripe.
    let asked = world.stripe.request_count();
    for bad in ["sub_1TestLicense0000000001", "cs_test_a%2F..%2Fv1%2Fcustomers", "", "cs_"] {
        let (status, page) = thank_you(&world, bad).await;
        assert_eq!(status, 400, "{bad}: {page}");
        assert!(page.contains("This is not an order confirmation link"), "{page}");
    }
    assert_eq!(world.app.get("/thank-you").await.status(), 400, "no session_id at all");
    assert_eq!(world.stripe.request_count(), asked, "Stripe was not asked");
});

on_both_stores!(a_payment_that_settles_later_gets_its_key_on_the_next_reload, |store| {
    let world = World::start_on(store).await;
    world.app.get("/create-payment-link").await;
    let link_id = world.stripe.payment_links().pop().expect("a link").id;
    let session = world.stripe.open_checkout(&link_id).unwrap();
    let payment = CheckoutPayment { processing: true, ..CheckoutPayment::new(EMAIL) };
    world.stripe.complete_checkout(&session, payment).unwrap();
    assert!(thank_you(&world, &session).await.1.contains("being processed"));
    world.stripe.settle_checkout(&session).unwrap();
    let (status, page) = thank_you(&world, &session).await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"class="license-key""#), "{page}");
});

on_both_stores!(upstream_failures_get_a_readable_page_without_the_upstreams_words, |store| {
    let world = World::start_on(store).await;
    let (session, _subscription) = world.stripe.buy(PRICE_ID, EMAIL, None).unwrap();
    world.stripe.add_fault(
        Fault::new(
            "/v1/checkout/sessions/",
            FaultKind::json(500, r#"{"error":{"type":"api_error","message":"internal details"}}"#),
        )
        .times(5),
    );
    let (status, page) = thank_you(&world, &session).await;
    assert_eq!(status, 502);
    assert!(page.contains("We could not look up your order just now"), "{page}");
    assert!(page.contains("Please reload this page in a minute"), "{page}");
    assert!(!page.contains("internal details") && !page.contains(STRIPE_KEY), "{page}");
    world.stripe.clear_faults();

    world
        .licensespring
        .add_fault(Fault::new("/create_order/", FaultKind::json(500, r#"{"detail":"db down"}"#)));
    let (status, page) = thank_you(&world, &session).await;
    assert_eq!(status, 502, "{page}");
    assert!(!page.contains("db down") && !page.contains(LICENSESPRING_KEY), "{page}");
    let (status, page) = thank_you(&world, &session).await;
    assert_eq!(status, 200, "the reload completes it: {page}");
});

on_both_stores!(the_order_names_the_buyer_so_licensesprings_emails_reach_them, |store| {
    let world = World::start_on(store).await;
    let (_session, subscription) = world.stripe.buy(PRICE_ID, EMAIL, Some("Jane Q. Doe")).unwrap();
    world.deliver_ok(&world.last_event_of(&subscription, "invoice.paid")).await;
    let order = world.licensespring.orders().pop().expect("an order");
    let customer = order.customer.expect("a customer on the order");
    assert_eq!(customer.email.as_deref(), Some(EMAIL));
    assert_eq!(
        (customer.first_name.as_deref(), customer.last_name.as_deref()),
        (Some("Jane Q."), Some("Doe"))
    );
});

on_both_stores!(a_buyer_without_an_email_still_gets_a_license, |store| {
    let world = World::start_on(store).await;
    let (_subscription, first) = world.subscribe(PRICE_ID);
    let mut event = first.json();
    event["data"]["object"]["customer_email"] = serde_json::Value::Null;
    event["data"]["object"]["customer_name"] = serde_json::Value::Null;
    let mut without_email = first.clone();
    without_email.body = serde_json::to_vec(&event).unwrap();
    // The customer is gone from Stripe too (deleted).
    world.stripe.add_fault(Fault::new("/v1/customers/", FaultKind::json(404, r#"{"error":{"type":"invalid_request_error","code":"resource_missing","message":"No such customer"}}"#)));
    world.deliver_ok(&without_email).await;
    let order = world.licensespring.orders().pop().expect("an order");
    assert!(order.customer.is_none(), "no customer without an email");
    assert_eq!(world.licensespring.licenses().len(), 1, "a license all the same");
});

on_both_stores!(manage_billing_opens_the_customer_portal_of_that_checkouts_customer, |store| {
    let world = World::start_on(store).await;
    let (session, _subscription) = world.stripe.buy(PRICE_ID, EMAIL, None).unwrap();
    let customer = world.stripe.checkout_session(&session).unwrap().customer.expect("a customer");
    let response = world.app.post_form("/billing-portal", &[("session_id", session.as_str())]).await;
    assert_eq!(response.status(), 303);
    let portal = world.stripe.portal_sessions().pop().expect("a portal session");
    assert_eq!(response.headers()["location"], portal.url.as_str());
    assert_eq!(portal.customer, customer);
    assert_eq!(
        portal.return_url.as_deref(),
        Some(format!("http://{}/", world.app.address).as_str()),
        "back to the store"
    );

    let open = {
        world.app.get("/create-payment-link").await;
        world.stripe.open_checkout(&world.stripe.payment_links().pop().unwrap().id).unwrap()
    };
    let refused = world.app.post_form("/billing-portal", &[("session_id", open.as_str())]).await;
    assert_eq!(refused.status(), 409, "an unpaid checkout has no billing to manage");
    let refused = world.app.post_form("/billing-portal", &[("session_id", "nope")]).await;
    assert_eq!(refused.status(), 400);
    assert_eq!(world.stripe.portal_sessions().len(), 1, "no other portal session");
});
