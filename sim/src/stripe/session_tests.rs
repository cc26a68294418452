//! Checkout Sessions, customers and the customer portal, through HTTP.

use serde_json::{Value, json};

use super::test_support::{at, get_json, http, post_form, started};
use super::{
    CheckoutPayment, CheckoutPaymentStatus, CheckoutStatus, DEFAULT_PRICE_ID, Interval, SimPrice, StripeSim,
    StripeSimConfig, StripeSimError,
};

const YEARLY: &str = "price_1SimYearly000000001";

fn config() -> StripeSimConfig {
    let mut config = StripeSimConfig::default();
    config.prices.push(SimPrice::new(YEARLY, Interval::Year, 1).with_amount(5000));
    config
}

/// A payment link of one seat with these extra parameters; its JSON.
async fn new_link(sim: &StripeSim, extra: &str) -> Value {
    let body = format!("line_items[0][price]={DEFAULT_PRICE_ID}&line_items[0][quantity]=1{extra}");
    let (status, _, link) = post_form(sim, "v1/payment_links", &body, None).await;
    assert_eq!(status, 200, "{link}");
    link
}

fn types(events: &[super::SimEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

/// Opens the link's page; returns the session id the page's form pays.
async fn open_page(link: &Value) -> String {
    let page = http().get(link["url"].as_str().expect("url")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains(r#"name="email" required"#) && html.contains(r#"name="name""#), "{html}");
    let start = html.find(r#"name="session" value=""#).expect("a session field") + 22;
    html[start..start + 66].to_owned()
}

async fn pay(link: &Value, body: &str) -> reqwest::Response {
    http()
        .post(link["url"].as_str().expect("url"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .expect("answer")
}

#[tokio::test]
async fn the_page_opens_a_session_and_paying_completes_it_and_redirects() {
    let sim = started(config()).await;
    let extra = "&after_completion[type]=redirect\
                 &after_completion[redirect][url]=http://127.0.0.1:9/thank-you?session_id={CHECKOUT_SESSION_ID}";
    let link = new_link(&sim, extra).await;
    assert_eq!(link["after_completion"]["type"], "redirect");
    assert_eq!(
        link["after_completion"]["redirect"]["url"],
        "http://127.0.0.1:9/thank-you?session_id={CHECKOUT_SESSION_ID}"
    );
    let id = open_page(&link).await;
    assert!(
        id.starts_with("cs_test_") && id.len() == 66 && id[8..].chars().all(|c| c.is_ascii_alphanumeric())
    );
    let (status, open) = get_json(&sim, &format!("v1/checkout/sessions/{id}")).await;
    assert_eq!(status, 200, "{open}");
    assert_eq!(open["object"], "checkout.session");
    assert_eq!((&open["status"], &open["payment_status"]), (&json!("open"), &json!("unpaid")));
    assert_eq!(open["mode"], "subscription");
    assert_eq!(open["payment_link"], link["id"]);
    assert_eq!(
        at(&open, "/expires_at").as_i64(),
        Some(at(&open, "/created").as_i64().expect("created") + 86_400)
    );
    assert!(open["url"].as_str().is_some_and(|url| url.ends_with(&format!("/checkout/sessions/{id}"))));
    assert_eq!(
        (&open["subscription"], &open["customer"], &open["customer_details"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    assert!(open.get("line_items").is_none());
    let again = http().get(open["url"].as_str().expect("url")).send().await.expect("page");
    assert_eq!(again.status(), 200, "the session's url shows its page");

    let paid = pay(&link, &format!("session={id}&email=ada%40example.com&name=Ada+Lovelace")).await;
    assert_eq!(paid.status(), 303);
    assert_eq!(paid.headers()["location"], format!("http://127.0.0.1:9/thank-you?session_id={id}").as_str());
    let (_, done) = get_json(&sim, &format!("v1/checkout/sessions/{id}")).await;
    assert_eq!((&done["status"], &done["payment_status"]), (&json!("complete"), &json!("paid")));
    assert_eq!(done["customer_details"]["email"], "ada@example.com");
    assert_eq!(done["customer_details"]["name"], "Ada Lovelace");
    assert_eq!((&done["customer_email"], &done["url"]), (&Value::Null, &Value::Null));
    let subscription = sim.subscriptions().pop().expect("a subscription");
    assert_eq!(done["subscription"], subscription.id.as_str());
    assert_eq!(done["customer"], subscription.customer.as_str());
    assert_eq!(done["invoice"], subscription.latest_invoice.as_str());
    assert_eq!(
        (subscription.customer_email.as_str(), subscription.customer_name.as_deref()),
        ("ada@example.com", Some("Ada Lovelace"))
    );
    let invoice = sim.invoices().pop().expect("an invoice");
    assert_eq!(
        (invoice.customer_email.as_str(), invoice.customer_name.as_deref()),
        ("ada@example.com", Some("Ada Lovelace"))
    );

    let events = sim.events();
    assert_eq!(
        types(&events),
        ["customer.subscription.created", "invoice.paid", "checkout.session.completed"]
    );
    let completed = events[2].object();
    assert_eq!((&completed["id"], &completed["status"]), (&json!(id), &json!("complete")));
    assert_eq!(events[2].subscription.as_ref(), Some(&subscription.id));

    let twice = pay(&link, &format!("session={id}&email=ada%40example.com")).await;
    assert_eq!(twice.status(), 400, "a complete session cannot be paid again");
    assert_eq!(sim.subscriptions().len(), 1);
}

#[tokio::test]
async fn the_placeholder_is_filled_when_its_braces_arrive_encoded() {
    let sim = started(config()).await;
    // The url's own text holds `%7B...%7D` (form-encoded once more here).
    let extra = "&after_completion[type]=redirect\
                 &after_completion[redirect][url]=http://127.0.0.1:9/t?session_id%3D%257BCHECKOUT_SESSION_ID%257D";
    let link = new_link(&sim, extra).await;
    assert_eq!(
        link["after_completion"]["redirect"]["url"],
        "http://127.0.0.1:9/t?session_id=%7BCHECKOUT_SESSION_ID%7D"
    );
    let paid = pay(&link, "email=b%40example.com").await;
    assert_eq!(paid.status(), 303);
    let session = sim.checkout_sessions().pop().expect("a session, opened by the bare POST");
    assert_eq!(
        paid.headers()["location"],
        format!("http://127.0.0.1:9/t?session_id={}", session.id).as_str()
    );

    let hosted = new_link(&sim, "&after_completion[type]=hosted_confirmation").await;
    assert_eq!(hosted["after_completion"]["type"], "hosted_confirmation");
    let thanked = pay(&hosted, "email=c%40example.com").await;
    assert_eq!(thanked.status(), 200);
    assert!(thanked.text().await.expect("html").contains("Thank you"));

    let bad = [
        ("&after_completion[type]=banner", "parameter_invalid", "after_completion[type]"),
        ("&after_completion[type]=redirect", "parameter_missing", "after_completion[redirect][url]"),
        ("&after_completion[redirect][url]=http://x/", "parameter_missing", "after_completion[type]"),
        (
            "&after_completion[type]=redirect&after_completion[redirect][url]=nope",
            "url_invalid",
            "after_completion[redirect][url]",
        ),
    ];
    for (extra, code, param) in bad {
        let body = format!("line_items[0][price]={DEFAULT_PRICE_ID}&line_items[0][quantity]=1{extra}");
        let (status, _, error) = post_form(&sim, "v1/payment_links", &body, None).await;
        assert_eq!(
            (status, &error["error"]["code"], &error["error"]["param"]),
            (400, &json!(code), &json!(param)),
            "{extra}"
        );
    }
}

#[tokio::test]
async fn processing_payments_settle_and_open_sessions_expire() {
    let sim = started(config()).await;
    let link_id = new_link(&sim, "").await["id"].as_str().expect("id").to_owned();
    let id = sim.open_checkout(&link_id).expect("opened");
    let payment = CheckoutPayment {
        name: Some("Bo".to_owned()),
        processing: true,
        ..CheckoutPayment::new("bo@example.com")
    };
    let events = sim.complete_checkout(&id, payment).expect("completed");
    assert_eq!(types(&events), ["checkout.session.completed"]);
    let session = sim.checkout_session(&id).expect("session");
    assert_eq!(
        (session.status, session.payment_status),
        (CheckoutStatus::Complete, CheckoutPaymentStatus::Unpaid)
    );
    assert!(session.subscription.is_none() && session.customer.is_some());
    assert!(sim.subscriptions().is_empty());
    let events = sim.settle_checkout(&id).expect("settled");
    assert_eq!(
        types(&events),
        ["customer.subscription.created", "invoice.paid", "checkout.session.async_payment_succeeded"]
    );
    let session = sim.checkout_session(&id).expect("session");
    assert_eq!(session.payment_status, CheckoutPaymentStatus::Paid);
    let subscription = sim.subscription(session.subscription.as_deref().expect("subscribed")).expect("sub");
    assert_eq!(
        (subscription.customer, subscription.customer_email),
        (session.customer.clone().expect("customer"), "bo@example.com".to_owned())
    );
    assert!(matches!(sim.settle_checkout(&id), Err(StripeSimError::NotAllowed(_))));

    let other = sim.open_checkout(&link_id).expect("opened");
    let expired = sim.expire_checkout(&other).expect("expired");
    assert_eq!(expired.event_type, "checkout.session.expired");
    assert_eq!((&expired.object()["status"], &expired.object()["url"]), (&json!("expired"), &Value::Null));
    assert!(sim.complete_checkout(&other, CheckoutPayment::new("x@example.com")).is_err());
    let url = sim.checkout_session(&other).expect("session").url;
    assert_eq!(http().get(url).send().await.expect("page").status(), 410);
    assert!(
        sim.complete_checkout(&sim.open_checkout(&link_id).expect("opened"), CheckoutPayment::new(" "))
            .is_err(),
        "an email is required"
    );
    assert_eq!(
        sim.open_checkout("plink_nope"),
        Err(StripeSimError::UnknownPaymentLink("plink_nope".to_owned()))
    );

    let trial = new_link(&sim, "&subscription_data[trial_period_days]=14").await;
    let trial_session = sim.open_checkout(trial["id"].as_str().expect("id")).expect("opened");
    sim.complete_checkout(&trial_session, CheckoutPayment::new("t@example.com")).expect("completed");
    let trial_session = sim.checkout_session(&trial_session).expect("session");
    assert_eq!(
        (trial_session.payment_status, trial_session.amount_total),
        (CheckoutPaymentStatus::NoPaymentRequired, 0)
    );
}

#[tokio::test]
async fn sessions_expand_list_by_subscription_and_answer_404() {
    let sim = started(config()).await;
    let (id, subscription) = sim.buy(DEFAULT_PRICE_ID, "e@example.com", Some("Eve")).expect("bought");
    let path =
        format!("v1/checkout/sessions/{id}?expand[]=subscription&expand%5B%5D=customer&expand[]=line_items");
    let (status, session) = get_json(&sim, &path).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(
        (&session["subscription"]["object"], &session["subscription"]["id"]),
        (&json!("subscription"), &json!(subscription))
    );
    assert_eq!(
        (&session["customer"]["object"], &session["customer"]["email"], &session["customer"]["name"]),
        (&json!("customer"), &json!("e@example.com"), &json!("Eve"))
    );
    assert_eq!(session["line_items"]["object"], "list");
    assert_eq!(session["line_items"]["data"][0]["price"]["id"], DEFAULT_PRICE_ID);
    assert_eq!(session["line_items"]["data"][0]["quantity"], 1);
    let (status, bad) = get_json(&sim, &format!("v1/checkout/sessions/{id}?expand[]=nope")).await;
    assert_eq!((status, &bad["error"]["param"]), (400, &json!("expand")));

    let (status, missing) = get_json(&sim, "v1/checkout/sessions/cs_test_nope").await;
    assert_eq!(status, 404);
    assert_eq!(
        (&missing["error"]["code"], &missing["error"]["param"]),
        (&json!("resource_missing"), &json!("id"))
    );

    // Two more sessions of the same subscription cannot happen; list them by link instead.
    let link_id = sim.checkout_session(&id).expect("session").payment_link;
    let newer = sim.open_checkout(&link_id).expect("opened");
    let (_, list) = get_json(&sim, &format!("v1/checkout/sessions?subscription={subscription}")).await;
    assert_eq!((&list["object"], &list["has_more"]), (&json!("list"), &json!(false)));
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["data"][0]["id"], id.as_str());
    let (_, page) = get_json(&sim, &format!("v1/checkout/sessions?payment_link={link_id}&limit=1")).await;
    assert_eq!((&page["data"][0]["id"], &page["has_more"]), (&json!(newer), &json!(true)), "newest first");
    let (_, rest) = get_json(
        &sim,
        &format!("v1/checkout/sessions?payment_link={link_id}&limit=1&starting_after={newer}"),
    )
    .await;
    assert_eq!((&rest["data"][0]["id"], &rest["has_more"]), (&json!(id), &json!(false)));
    let (_, empty) = get_json(&sim, "v1/checkout/sessions?subscription=sub_nope").await;
    assert_eq!(empty["data"], json!([]));
    assert_eq!(get_json(&sim, "v1/checkout/sessions?limit=0").await.0, 400);
}

#[tokio::test]
async fn customers_are_retrieved_and_expanded() {
    let sim = started(config()).await;
    let (_, subscription) = sim.buy(DEFAULT_PRICE_ID, "f@example.com", None).expect("bought");
    let customer = sim.subscription(&subscription).expect("sub").customer;
    let (status, object) = get_json(&sim, &format!("v1/customers/{customer}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&object["id"], &object["object"], &object["email"]),
        (&json!(customer), &json!("customer"), &json!("f@example.com"))
    );
    assert_eq!((&object["name"], &object["metadata"]), (&Value::Null, &json!({})));
    let (_, expanded) = get_json(&sim, &format!("v1/subscriptions/{subscription}?expand[]=customer")).await;
    assert_eq!(expanded["customer"], object, "the same object");
    let (status, missing) = get_json(&sim, "v1/customers/cus_nope").await;
    assert_eq!(
        (status, &missing["error"]["code"], &missing["error"]["param"]),
        (404, &json!("resource_missing"), &json!("id"))
    );
    assert_eq!(sim.customers().len(), 1);
}

/// POSTs a portal form; the status and the page.
async fn portal_post(sim: &StripeSim, path: &str, body: &str) -> (u16, String) {
    let answer = http()
        .post(sim.base_url().join(path).expect("url"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_owned())
        .send()
        .await
        .expect("answer");
    (answer.status().as_u16(), answer.text().await.expect("html"))
}

/// The text of the portal session's page.
async fn page_of(session: &Value) -> String {
    let page = http().get(session["url"].as_str().expect("url")).send().await.expect("page");
    page.text().await.expect("html")
}

#[tokio::test]
async fn the_portal_cancels_changes_seats_and_switches_prices() {
    let sim = started(config()).await;
    let (_, subscription) = sim.buy(DEFAULT_PRICE_ID, "g@example.com", None).expect("bought");
    let customer = sim.subscription(&subscription).expect("sub").customer;

    let (status, _, missing) =
        post_form(&sim, "v1/billing_portal/sessions", "return_url=http://x/", None).await;
    assert_eq!(
        (status, &missing["error"]["code"], &missing["error"]["param"]),
        (400, &json!("parameter_missing"), &json!("customer"))
    );
    let (status, _, unknown) = post_form(&sim, "v1/billing_portal/sessions", "customer=cus_nope", None).await;
    assert_eq!(
        (status, &unknown["error"]["code"], &unknown["error"]["param"]),
        (400, &json!("resource_missing"), &json!("customer"))
    );
    let (status, _, bad) =
        post_form(&sim, "v1/billing_portal/sessions", &format!("customer={customer}&return_url=nope"), None)
            .await;
    assert_eq!((status, &bad["error"]["param"]), (400, &json!("return_url")));

    let body = format!("customer={customer}&return_url=http%3A%2F%2F127.0.0.1%3A9%2Faccount");
    let (status, _, session) = post_form(&sim, "v1/billing_portal/sessions", &body, None).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(
        (&session["object"], &session["customer"], &session["livemode"]),
        (&json!("billing_portal.session"), &json!(customer), &json!(false))
    );
    assert_eq!(session["return_url"], "http://127.0.0.1:9/account");
    let bps = session["id"].as_str().expect("id").to_owned();
    assert!(
        bps.starts_with("bps_") && session["configuration"].as_str().is_some_and(|c| c.starts_with("bpc_"))
    );
    assert_eq!(session["url"], sim.base_url().join(&format!("portal/{bps}")).expect("url").as_str());
    assert_eq!(sim.portal_sessions().len(), 1);
    assert_eq!(sim.events().last().expect("event").event_type, "billing_portal.session.created");

    let page = http().get(session["url"].as_str().expect("url")).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    for needle in [
        subscription.as_str(),
        "active",
        "USD 5.00 every month",
        r#"class="cancel-at-period-end""#,
        r#"class="cancel-now""#,
        r#"class="quantity""#,
        r#"name="quantity""#,
        YEARLY,
        r#"<a class="return" href="http://127.0.0.1:9/account""#,
    ] {
        assert!(html.contains(needle), "{needle} in {html}");
    }

    let base = format!("portal/{bps}/subscriptions/{subscription}");
    let seen = sim.events().len();
    let (status, html) = portal_post(&sim, &format!("{base}/cancel"), "when=at_period_end").await;
    assert!(
        status == 200 && html.contains(r#"class="return""#) && html.contains("end of the period"),
        "{html}"
    );
    assert!(sim.subscription(&subscription).expect("sub").cancel_at_period_end);
    let page = page_of(&session).await;
    assert!(page.contains(r#"class="reactivate""#), "{page}");
    assert_eq!(portal_post(&sim, &format!("{base}/reactivate"), "").await.0, 200);
    assert!(!sim.subscription(&subscription).expect("sub").cancel_at_period_end);
    assert_eq!(portal_post(&sim, &format!("{base}/quantity"), "quantity=3").await.0, 200);
    assert_eq!(sim.subscription(&subscription).expect("sub").quantity, 3);
    assert_eq!(portal_post(&sim, &format!("{base}/quantity"), "quantity=0").await.0, 400);
    assert_eq!(portal_post(&sim, &format!("{base}/price"), &format!("price={YEARLY}")).await.0, 200);
    assert_eq!(sim.subscription(&subscription).expect("sub").price_id, YEARLY);
    let events: Vec<_> = sim.events().into_iter().skip(seen).collect();
    assert_eq!(
        types(&events),
        [
            "customer.subscription.updated",
            "customer.subscription.updated",
            "customer.subscription.updated",
            "customer.subscription.updated",
            "invoice.paid"
        ]
    );
    assert_eq!(events[0].previous_attributes().expect("previous")["cancel_at_period_end"], false);
    assert_eq!(events[1].previous_attributes().expect("previous")["cancel_at_period_end"], true);

    let (status, _) = portal_post(&sim, &format!("{base}/cancel"), "when=now").await;
    assert_eq!(status, 200);
    assert_eq!(sim.events().last().expect("event").event_type, "customer.subscription.deleted");
    let page = page_of(&session).await;
    assert!(page.contains("canceled") && !page.contains(r#"class="cancel-now""#), "{page}");

    let (_, other) = sim.buy(DEFAULT_PRICE_ID, "h@example.com", None).expect("bought");
    assert_eq!(
        portal_post(&sim, &format!("portal/{bps}/subscriptions/{other}/cancel"), "when=now").await.0,
        404,
        "another customer's"
    );
    sim.expire_portal_session(&bps).expect("expired");
    let gone = http().get(session["url"].as_str().expect("url")).send().await.expect("page");
    assert_eq!(gone.status(), 404);
    assert!(gone.text().await.expect("html").contains("expired"));
    assert_eq!(portal_post(&sim, &format!("{base}/quantity"), "quantity=2").await.0, 404);
    assert_eq!(
        http().get(sim.base_url().join("portal/bps_nope").expect("url")).send().await.expect("page").status(),
        404
    );
}
