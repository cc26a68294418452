//! The subscription lifecycle: the events each control emits, in order, with their
//! `previous_attributes`, in both payload generations where they differ.

use std::time::Duration;

use serde_json::{Value, json};

use super::test_support::{at, get_json, post_form, started};
use super::{
    AfterFailedPayments, ApiGeneration, DEFAULT_PRICE_ID, Interval, InvoiceStatus, SimEvent, SimPrice,
    StripeSim, StripeSimConfig, StripeSimError, SubscribeOptions, SubscriptionStatus,
};

const YEARLY: &str = "price_1SimYearly000000001";
const MONTHLY_PLUS: &str = "price_1SimMonthlyPlus0001";
const ONE_TIME: &str = "price_1SimOneTime0000001";

fn config(generation: ApiGeneration) -> StripeSimConfig {
    let mut config = StripeSimConfig { generation, ..StripeSimConfig::default() };
    config.prices.push(SimPrice::new(YEARLY, Interval::Year, 1).with_amount(5000));
    config.prices.push(SimPrice::new(MONTHLY_PLUS, Interval::Month, 1).with_amount(900));
    config.prices.push(SimPrice::one_time(ONE_TIME, 2500));
    config
}

fn types(events: &[SimEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

/// The events emitted since the first `skip`.
fn since(sim: &StripeSim, skip: usize) -> Vec<SimEvent> {
    sim.events().into_iter().skip(skip).collect()
}

fn previous(event: &SimEvent) -> Value {
    event.previous_attributes().unwrap_or_else(|| panic!("{} has no previous_attributes", event.event_type))
}

#[tokio::test]
async fn creation_and_renewal_emit_subscription_events_first() {
    for generation in [ApiGeneration::Basil, ApiGeneration::Acacia] {
        let sim = started(config(generation)).await;
        let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
        let created = sim.events();
        assert_eq!(types(&created), ["customer.subscription.created", "invoice.paid"]);
        assert!(created.iter().all(|e| e.subscription.as_deref() == Some(id.as_str())));
        assert!(created[0].is("customer.subscription.created", &id));
        assert_eq!(created[0].object()["latest_invoice"], created[1].object()["id"]);
        assert!(created[0].previous_attributes().is_none());
        let first = sim.subscription(&id).expect("subscription");

        let paid = sim.renew(&id).expect("renewed");
        assert_eq!(paid.event_type, "invoice.paid");
        let renewal = since(&sim, 2);
        assert_eq!(types(&renewal), ["customer.subscription.updated", "invoice.paid"]);
        let updated = &renewal[0];
        let before = previous(updated);
        assert_eq!(before["latest_invoice"], json!(first.latest_invoice));
        assert!(before.get("status").is_none(), "the status did not move: {before}");
        match generation {
            ApiGeneration::Basil => {
                assert!(before.get("current_period_end").is_none());
                assert_eq!(at(&before, "/items/data/0/current_period_end"), first.current_period_end);
                assert_eq!(at(&before, "/items/data/0/quantity"), 1, "the whole item");
            }
            ApiGeneration::Acacia => {
                assert_eq!(before["current_period_start"], first.current_period_start);
                assert_eq!(before["current_period_end"], first.current_period_end);
                assert!(before.get("items").is_none());
            }
        }
        let paid_at = |e: &SimEvent| e.json()["created"].as_i64().expect("created");
        assert!(paid_at(&renewal[1]) - paid_at(updated) >= 3600, "paid about an hour after the rollover");
        assert_eq!(renewal.last(), Some(&paid));
        assert_eq!(sim.events_of(&id).len(), 4);
    }
}

#[tokio::test]
async fn trials_start_with_a_zero_invoice_and_end_at_renewal() {
    let sim = started(config(ApiGeneration::Basil)).await;
    let body = format!(
        "line_items[0][price]={DEFAULT_PRICE_ID}&line_items[0][quantity]=2&subscription_data%5Btrial_period_days%5D=14"
    );
    let (status, _, link) = post_form(&sim, "v1/payment_links", &body, None).await;
    assert_eq!(status, 200, "{link}");
    assert_eq!(link["subscription_data"]["trial_period_days"], 14);
    assert_eq!(sim.payment_links()[0].trial_period_days, Some(14));
    for refused in ["0", "-3", "two", "731"] {
        let body = format!(
            "line_items[0][price]={DEFAULT_PRICE_ID}&line_items[0][quantity]=1&subscription_data[trial_period_days]={refused}"
        );
        let (status, _, error) = post_form(&sim, "v1/payment_links", &body, None).await;
        assert_eq!(status, 400, "{refused}: {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert_eq!(error["error"]["param"], "subscription_data[trial_period_days]");
    }

    let paid = super::test_support::http()
        .post(link["url"].as_str().expect("url"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("email=t%40example.com&name=Tess")
        .send()
        .await
        .expect("answer");
    assert_eq!(paid.status(), 200);
    let subscription = sim.subscriptions().pop().expect("subscription");
    let id = subscription.id.clone();
    assert_eq!(subscription.status, SubscriptionStatus::Trialing);
    assert_eq!(subscription.quantity, 2);
    let (trial_start, trial_end) =
        (subscription.trial_start.expect("start"), subscription.trial_end.expect("end"));
    assert_eq!(trial_end - trial_start, 14 * 86_400);
    assert_eq!(
        (subscription.current_period_start, subscription.current_period_end),
        (trial_start, trial_end)
    );
    let events = sim.events();
    assert_eq!(
        types(&events),
        ["customer.subscription.created", "invoice.paid", "checkout.session.completed"],
        "a checkout also completes its session"
    );
    assert_eq!(events[2].object()["payment_status"], "no_payment_required", "the $0 trial invoice");
    let object = events[0].object();
    assert_eq!((&object["status"], &object["trial_end"]), (&json!("trialing"), &json!(trial_end)));
    assert_eq!(at(&object, "/items/data/0/quantity"), 2);
    let invoice = events[1].object();
    assert_eq!(at(&invoice, "/billing_reason"), "subscription_create");
    assert_eq!((at(&invoice, "/amount_paid"), at(&invoice, "/amount_due")), (json!(0), json!(0)));
    assert_eq!(at(&invoice, "/status"), "paid");
    assert_eq!(at(&invoice, "/customer_name"), "Tess");
    assert_eq!(at(&invoice, "/lines/data/0/period/start"), trial_start);
    assert_eq!(at(&invoice, "/lines/data/0/period/end"), trial_end);
    assert_eq!(at(&invoice, "/lines/data/0/amount"), 0);

    sim.renew(&id).expect("trial ends");
    let renewal = since(&sim, 3);
    assert_eq!(types(&renewal), ["customer.subscription.updated", "invoice.paid"]);
    assert_eq!(previous(&renewal[0])["status"], "trialing");
    assert_eq!(renewal[0].object()["status"], "active");
    let invoice = renewal[1].object();
    assert_eq!(at(&invoice, "/billing_reason"), "subscription_cycle");
    assert_eq!(at(&invoice, "/amount_paid"), 1000, "2 seats × USD 5.00");
    assert_eq!(at(&invoice, "/lines/data/0/period/start"), trial_end);
    let subscription = sim.subscription(&id).expect("subscription");
    assert_eq!(subscription.status, SubscriptionStatus::Active);
    assert_eq!(subscription.current_period_start, trial_end);
    assert_eq!(subscription.trial_end, Some(trial_end), "the trial's bounds stay");

    let programmatic = sim
        .create_subscription_with(DEFAULT_PRICE_ID, SubscribeOptions { quantity: 3, trial_days: Some(7) })
        .expect("subscribed");
    let subscription = sim.subscription(&programmatic).expect("subscription");
    assert_eq!((subscription.status, subscription.quantity), (SubscriptionStatus::Trialing, 3));
    assert_eq!(sim.invoices().last().expect("invoice").amount_paid, 0);
}

#[tokio::test]
async fn declined_renewals_retry_then_go_unpaid() {
    let sim = started(config(ApiGeneration::Basil)).await;
    let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    let events = sim.renew_declined(&id).expect("declined");
    assert_eq!(
        types(&events),
        ["customer.subscription.updated", "invoice.payment_failed", "customer.subscription.updated"]
    );
    assert_eq!(events, since(&sim, 2), "returned as emitted");
    assert!(previous(&events[0]).get("items").is_some(), "the rollover");
    assert_eq!(previous(&events[2]), json!({"status": "active"}));
    assert_eq!(events[2].object()["status"], "past_due");
    let failed = events[1].object();
    assert_eq!((at(&failed, "/status"), at(&failed, "/attempt_count")), (json!("open"), json!(1)));
    assert_eq!((at(&failed, "/amount_paid"), at(&failed, "/amount_due")), (json!(0), json!(500)));
    let failed_at = events[1].json()["created"].as_i64().expect("created");
    let mut next = at(&failed, "/next_payment_attempt").as_i64().expect("a retry is scheduled");
    assert!((next - failed_at - 3 * 86_400).abs() < 5, "the first retry 3 days later");
    assert_eq!(sim.subscription(&id).expect("sub").status, SubscriptionStatus::PastDue);
    assert!(matches!(sim.renew(&id), Err(StripeSimError::NotAllowed(_))));

    for (attempt, days) in [(2, Some(5)), (3, Some(7)), (4, None)] {
        let events = sim.retry_payment(&id, false).expect("retried");
        assert!(sim.now().timestamp() >= next, "the clock moved to the retry");
        let invoice = events[0].object();
        assert_eq!(events[0].event_type, "invoice.payment_failed");
        assert_eq!(at(&invoice, "/attempt_count"), attempt);
        match days {
            Some(days) => {
                assert_eq!(events.len(), 1);
                let scheduled = at(&invoice, "/next_payment_attempt").as_i64().expect("scheduled");
                assert!((scheduled - next - days * 86_400).abs() < 5, "attempt {attempt}");
                next = scheduled;
            }
            None => {
                assert_eq!(at(&invoice, "/next_payment_attempt"), Value::Null);
                assert_eq!(
                    types(&events),
                    [
                        "invoice.payment_failed",
                        "customer.subscription.updated",
                        "invoice.marked_uncollectible"
                    ]
                );
                assert_eq!(previous(&events[1]), json!({"status": "past_due"}));
                assert_eq!(events[1].object()["status"], "unpaid");
                assert_eq!(events[2].object()["status"], "uncollectible");
            }
        }
    }
    assert_eq!(sim.subscription(&id).expect("sub").status, SubscriptionStatus::Unpaid);
    let invoice = sim.invoices().pop().expect("invoice");
    assert_eq!((invoice.status, invoice.attempt_count), (InvoiceStatus::Uncollectible, 4));
    assert!(matches!(sim.retry_payment(&id, true), Err(StripeSimError::NotAllowed(_))));
}

#[tokio::test]
async fn exhausted_retries_can_cancel_and_a_retry_can_succeed() {
    let sim = started(StripeSimConfig {
        payment_retries: vec![Duration::from_secs(86_400)],
        after_failed_payments: AfterFailedPayments::Cancel,
        generation: ApiGeneration::Acacia,
        ..StripeSimConfig::default()
    })
    .await;
    let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    sim.renew_declined(&id).expect("declined");
    let events = sim.retry_payment(&id, false).expect("retried");
    assert_eq!(types(&events), ["invoice.payment_failed", "customer.subscription.deleted", "invoice.voided"]);
    let deleted = events[1].object();
    assert_eq!(at(&deleted, "/status"), "canceled");
    assert_eq!(at(&deleted, "/cancellation_details/reason"), "payment_failed");
    assert!(at(&deleted, "/ended_at").is_i64());
    assert_eq!(
        (at(&events[2].object(), "/status"), at(&events[2].object(), "/paid")),
        (json!("void"), json!(false))
    );
    assert_eq!(sim.retry_payment(&id, true), Err(StripeSimError::Canceled(id.clone())));

    let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    sim.renew_declined(&id).expect("declined");
    let events = sim.retry_payment(&id, true).expect("paid");
    assert_eq!(types(&events), ["invoice.paid", "customer.subscription.updated"]);
    let invoice = events[0].object();
    assert_eq!((at(&invoice, "/status"), at(&invoice, "/attempt_count")), (json!("paid"), json!(2)));
    assert_eq!((at(&invoice, "/amount_paid"), at(&invoice, "/paid")), (json!(500), json!(true)));
    assert_eq!(previous(&events[1]), json!({"status": "past_due"}));
    assert_eq!(events[1].object()["status"], "active");

    // The sandbox button: the next plain renewal (then retry) is declined, once each.
    sim.decline_next_payment(&id).expect("marked");
    let failed = sim.renew(&id).expect("renewed");
    assert_eq!(failed.event_type, "invoice.payment_failed");
    assert_eq!(sim.subscription(&id).expect("sub").status, SubscriptionStatus::PastDue);
    sim.decline_next_payment(&id).expect("marked");
    assert_eq!(
        types(&sim.retry_payment(&id, true).expect("retried")),
        ["invoice.payment_failed", "customer.subscription.deleted", "invoice.voided"]
    );
}

#[tokio::test]
async fn pause_and_resume() {
    let sim = started(config(ApiGeneration::Basil)).await;
    let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    assert!(matches!(sim.resume(&id), Err(StripeSimError::NotAllowed(_))));
    assert!(matches!(sim.retry_payment(&id, true), Err(StripeSimError::NotAllowed(_))));
    let paused = sim.pause(&id).expect("paused");
    assert_eq!(types(&paused), ["customer.subscription.updated", "customer.subscription.paused"]);
    assert_eq!(previous(&paused[0]), json!({"status": "active"}));
    assert_eq!(
        (paused[1].object()["status"].clone(), paused[1].object()["pause_collection"].clone()),
        (json!("paused"), Value::Null)
    );
    assert!(matches!(sim.renew(&id), Err(StripeSimError::NotAllowed(_))), "no periods while paused");
    assert!(matches!(sim.pause(&id), Err(StripeSimError::NotAllowed(_))));

    let before = sim.subscription(&id).expect("sub");
    let resumed = sim.resume(&id).expect("resumed");
    assert_eq!(
        types(&resumed),
        ["customer.subscription.updated", "customer.subscription.resumed", "invoice.paid"]
    );
    let changed = previous(&resumed[0]);
    assert_eq!(changed["status"], "paused");
    assert_eq!(changed["billing_cycle_anchor"], before.billing_cycle_anchor);
    assert_eq!(changed["latest_invoice"], json!(before.latest_invoice));
    let after = sim.subscription(&id).expect("sub");
    assert_eq!(after.status, SubscriptionStatus::Active);
    assert!((after.billing_cycle_anchor - sim.now().timestamp()).abs() < 10, "anchored at the resume");
    assert_eq!(after.current_period_start, after.billing_cycle_anchor);
    let invoice = resumed[2].object();
    assert_eq!(
        (at(&invoice, "/billing_reason"), at(&invoice, "/status")),
        (json!("subscription_cycle"), json!("paid"))
    );
    assert_eq!(at(&invoice, "/lines/data/0/period/start"), after.current_period_start);

    // The REST calls do the same.
    let path = format!("v1/subscriptions/{id}/pause");
    let (status, _, answer) = post_form(&sim, &path, "", None).await;
    assert_eq!((status, &answer["status"]), (200, &json!("paused")));
    let (status, _, refused) = post_form(&sim, &path, "", None).await;
    assert_eq!((status, &refused["error"]["type"]), (400, &json!("invalid_request_error")));
    let (status, _, answer) =
        post_form(&sim, &format!("v1/subscriptions/{id}/resume"), "expand[]=latest_invoice", None).await;
    assert_eq!((status, &answer["status"]), (200, &json!("active")));
    assert_eq!(answer["latest_invoice"]["object"], "invoice");
    assert_eq!(post_form(&sim, "v1/subscriptions/sub_nope/pause", "", None).await.0, 404);
}

#[tokio::test]
async fn seats_and_price_switches() {
    for generation in [ApiGeneration::Basil, ApiGeneration::Acacia] {
        let sim = started(config(generation)).await;
        let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
        let invoices = sim.invoices().len();
        let events = sim.set_quantity(&id, 4).expect("seats");
        assert_eq!(types(&events), ["customer.subscription.updated"]);
        let before = previous(&events[0]);
        assert_eq!(at(&before, "/items/data/0/quantity"), 1);
        match generation {
            ApiGeneration::Acacia => assert_eq!(before["quantity"], 1),
            ApiGeneration::Basil => assert!(before.get("quantity").is_none()),
        }
        assert_eq!(at(&events[0].object(), "/items/data/0/quantity"), 4);
        assert_eq!(sim.invoices().len(), invoices, "no invoice for a seat change");
        assert!(matches!(sim.set_quantity(&id, 0), Err(StripeSimError::NotAllowed(_))));

        let events = sim.switch_price(&id, MONTHLY_PLUS).expect("same interval");
        assert_eq!(types(&events), ["customer.subscription.updated"]);
        assert_eq!(at(&previous(&events[0]), "/items/data/0/price/id"), DEFAULT_PRICE_ID);
        assert_eq!(sim.invoices().len(), invoices);

        let monthly = sim.subscription(&id).expect("sub");
        let events = sim.switch_price(&id, YEARLY).expect("another interval");
        assert_eq!(types(&events), ["customer.subscription.updated", "invoice.paid"]);
        let before = previous(&events[0]);
        assert_eq!(before["billing_cycle_anchor"], monthly.billing_cycle_anchor);
        assert_eq!(before["latest_invoice"], json!(monthly.latest_invoice));
        let yearly = sim.subscription(&id).expect("sub");
        assert!((yearly.billing_cycle_anchor - sim.now().timestamp()).abs() < 10);
        assert_eq!(yearly.price_id, YEARLY);
        let invoice = events[1].object();
        assert_eq!(at(&invoice, "/billing_reason"), "subscription_update");
        let lines = at(&invoice, "/lines/data").as_array().expect("lines").clone();
        assert_eq!(lines.len(), 2);
        let credit = lines[0]["amount"].as_i64().expect("amount");
        assert!((-3600..-3500).contains(&credit), "almost a whole month of 4 × USD 9.00 back: {credit}");
        assert_eq!(lines[1]["amount"], 20_000, "4 × USD 50.00");
        assert_eq!(lines[1]["period"]["start"], yearly.current_period_start);
        assert_eq!(at(&invoice, "/amount_paid"), 20_000 + credit);
        match generation {
            ApiGeneration::Basil => {
                assert_eq!(lines[0]["parent"]["invoice_item_details"]["proration"], true);
                assert_eq!(lines[1]["parent"]["subscription_item_details"]["proration"], false);
            }
            ApiGeneration::Acacia => {
                assert_eq!(
                    (&lines[0]["proration"], &lines[0]["type"]),
                    (&json!(true), &json!("invoiceitem"))
                );
                assert_eq!(lines[1]["price"]["recurring"]["interval"], "year");
            }
        }
        assert_eq!(
            sim.switch_price(&id, "price_nope"),
            Err(StripeSimError::UnknownPrice("price_nope".into()))
        );
        assert!(matches!(sim.switch_price(&id, ONE_TIME), Err(StripeSimError::NotAllowed(_))));
    }
}

#[tokio::test]
async fn cancel_at_period_end_ends_at_renewal() {
    let sim = started(config(ApiGeneration::Basil)).await;
    let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    let events = sim.set_cancel_at_period_end(&id, true).expect("set");
    assert_eq!(types(&events), ["customer.subscription.updated"]);
    let before = previous(&events[0]);
    assert_eq!(before["cancel_at_period_end"], false);
    assert_eq!(before["cancel_at"], Value::Null);
    let object = events[0].object();
    let subscription = sim.subscription(&id).expect("sub");
    assert_eq!(
        (&object["status"], &object["cancel_at"]),
        (&json!("active"), &json!(subscription.current_period_end))
    );
    assert!(sim.set_cancel_at_period_end(&id, true).expect("unchanged").is_empty());
    let back = sim.set_cancel_at_period_end(&id, false).expect("reactivated");
    assert_eq!(previous(&back[0])["cancel_at_period_end"], true);
    sim.set_cancel_at_period_end(&id, true).expect("set");

    let deleted = sim.renew(&id).expect("ended");
    assert_eq!(deleted.event_type, "customer.subscription.deleted");
    let object = deleted.object();
    assert_eq!(
        (&object["status"], &object["ended_at"]),
        (&json!("canceled"), &json!(subscription.current_period_end))
    );
    assert_eq!(sim.invoices().len(), 1, "no renewal invoice");
    assert_eq!(sim.set_quantity(&id, 2), Err(StripeSimError::Canceled(id.clone())));
}

#[tokio::test]
async fn rest_updates_emit_updated_events() {
    for generation in [ApiGeneration::Basil, ApiGeneration::Acacia] {
        let sim = started(config(generation)).await;
        let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
        let path = format!("v1/subscriptions/{id}");
        let (status, _, _) = post_form(&sim, &path, "metadata[license_key]=K1&metadata[a]=1", None).await;
        assert_eq!(status, 200);
        let updated = sim.events().pop().expect("event");
        assert_eq!(updated.event_type, "customer.subscription.updated");
        assert_eq!(previous(&updated), json!({"metadata": {"a": null, "license_key": null}}));
        post_form(&sim, &path, "metadata[license_key]=K2", None).await;
        assert_eq!(previous(&sim.events().pop().expect("event")), json!({"metadata": {"license_key": "K1"}}));
        let count = sim.events().len();
        post_form(&sim, &path, "metadata[license_key]=K2", None).await;
        assert_eq!(sim.events().len(), count, "no change, no event");

        let item = sim.subscription(&id).expect("sub").item_id;
        let body = format!(
            "items[0][id]={item}&items[0][quantity]=3&items%5B0%5D%5Bprice%5D={MONTHLY_PLUS}&cancel_at_period_end=true&proration_behavior=none"
        );
        let (status, _, answer) = post_form(&sim, &path, &body, None).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            (&answer["cancel_at_period_end"], &answer["items"]["data"][0]["quantity"]),
            (&json!(true), &json!(3))
        );
        let events = since(&sim, count);
        assert_eq!(types(&events), ["customer.subscription.updated"], "one event for one update");
        let before = previous(&events[0]);
        assert_eq!(
            (&before["cancel_at_period_end"], &before["items"]["data"][0]["quantity"]),
            (&json!(false), &json!(1))
        );
        assert_eq!(before["items"]["data"][0]["price"]["id"], DEFAULT_PRICE_ID);

        for (refused, code) in [
            ("items[0][id]=si_nope&items[0][quantity]=2", "resource_missing"),
            (&*format!("items[0][id]={item}&items[0][quantity]=0"), "parameter_invalid_integer"),
            ("cancel_at_period_end=maybe", "parameter_invalid_boolean"),
            ("proration_behavior=sometimes", "parameter_invalid"),
            ("pause_collection[behavior]=void", "parameter_unknown"),
        ] {
            let (status, _, error) = post_form(&sim, &path, refused, None).await;
            assert_eq!((status, &error["error"]["code"]), (400, &json!(code)), "{refused}: {error}");
        }
        sim.cancel(&id).expect("canceled");
        let (status, _, _) =
            post_form(&sim, &path, &format!("items[0][id]={item}&items[0][quantity]=2"), None).await;
        assert_eq!(status, 400, "a canceled subscription takes only metadata");
    }
}

#[tokio::test]
async fn retrieve_expands_the_latest_invoice_and_the_customer() {
    for generation in [ApiGeneration::Basil, ApiGeneration::Acacia] {
        let sim = started(config(generation)).await;
        let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
        let subscription = sim.subscription(&id).expect("sub");
        let (status, plain) = get_json(&sim, &format!("v1/subscriptions/{id}")).await;
        assert_eq!((status, &plain["latest_invoice"]), (200, &json!(subscription.latest_invoice)));
        assert_eq!(plain["pause_collection"], Value::Null);
        for query in
            ["expand%5B%5D=latest_invoice&expand%5B%5D=customer", "expand[]=latest_invoice&expand[]=customer"]
        {
            let (status, expanded) = get_json(&sim, &format!("v1/subscriptions/{id}?{query}")).await;
            assert_eq!(status, 200, "{expanded}");
            let invoice = &expanded["latest_invoice"];
            assert_eq!(
                (&invoice["object"], &invoice["id"]),
                (&json!("invoice"), &json!(subscription.latest_invoice))
            );
            assert_eq!(invoice["status"], "paid");
            assert_eq!(invoice["amount_paid"], 500);
            let customer = &expanded["customer"];
            assert_eq!(
                (&customer["object"], &customer["id"]),
                (&json!("customer"), &json!(subscription.customer))
            );
            assert_eq!(customer["email"], "buyer@example.com");
        }
        let (status, error) = get_json(&sim, &format!("v1/subscriptions/{id}?expand[]=plan")).await;
        assert_eq!((status, &error["error"]["type"]), (400, &json!("invalid_request_error")));
        assert_eq!(error["error"]["param"], "expand");
    }
}

#[tokio::test]
async fn one_time_prices_render_and_cannot_be_subscribed() {
    let sim = started(config(ApiGeneration::Basil)).await;
    let (status, price) = get_json(&sim, &format!("v1/prices/{ONE_TIME}")).await;
    assert_eq!(status, 200);
    assert_eq!((&price["type"], &price["recurring"]), (&json!("one_time"), &Value::Null));
    assert_eq!((&price["unit_amount"], &price["currency"]), (&json!(2500), &json!("usd")));
    let (_, yearly) = get_json(&sim, &format!("v1/prices/{YEARLY}")).await;
    assert_eq!((&yearly["type"], &yearly["unit_amount"]), (&json!("recurring"), &json!(5000)));
    assert!(matches!(sim.create_subscription(ONE_TIME), Err(StripeSimError::NotAllowed(_))));
    assert!(sim.events().is_empty());
}
