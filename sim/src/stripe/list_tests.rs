//! `GET /v1/subscriptions` and `GET /v1/events` over HTTP: filters, pagination, expansions, the
//! events' 30-day window, `delivery_success` after a lost delivery, and a large listing.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};
use url::Url;

use super::test_support::{get_json, http, started};
use super::{
    ACACIA_API_VERSION, DEFAULT_API_KEY, DEFAULT_PRICE_ID, Interval, SimPrice, StripeSim, StripeSimConfig,
    WebhookTarget,
};

const YEARLY: &str = "price_1SimYearly000000001";

fn two_prices() -> StripeSimConfig {
    StripeSimConfig {
        prices: vec![
            SimPrice::new(DEFAULT_PRICE_ID, Interval::Month, 1),
            SimPrice::new(YEARLY, Interval::Year, 1),
        ],
        ..StripeSimConfig::default()
    }
}

fn ids(list: &Value) -> Vec<String> {
    let data = list["data"].as_array().unwrap_or_else(|| panic!("a list: {list:#}"));
    data.iter().map(|item| item["id"].as_str().expect("id").to_owned()).collect()
}

async fn list(sim: &StripeSim, path: &str) -> Value {
    let (status, answer) = get_json(sim, path).await;
    assert_eq!(status, 200, "{path}: {answer:#}");
    answer
}

async fn refused(sim: &StripeSim, path: &str) -> Value {
    let (status, answer) = get_json(sim, path).await;
    assert_eq!(status, 400, "{path}: {answer:#}");
    assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer:#}");
    answer["error"].clone()
}

/// Every page of a list, following `starting_after`: the ids, and how many pages.
async fn walk(sim: &StripeSim, path: &str) -> (Vec<String>, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    let mut next = path.to_owned();
    loop {
        let page = list(sim, &next).await;
        pages += 1;
        let page_ids = ids(&page);
        all.extend(page_ids.iter().cloned());
        if page["has_more"] != true {
            return (all, pages);
        }
        next = format!("{path}&starting_after={}", page_ids.last().expect("a full page"));
    }
}

#[tokio::test]
async fn the_default_status_filter_leaves_out_canceled_subscriptions() {
    let sim = started(StripeSimConfig::default()).await;
    let kept = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    let canceled = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    let paused = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    sim.cancel(&canceled).expect("canceled");
    sim.pause(&paused).expect("paused");

    let answer = list(&sim, "v1/subscriptions").await;
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["url"], "/v1/subscriptions");
    assert_eq!(answer["has_more"], false);
    assert_eq!(ids(&answer), vec![paused.clone(), kept.clone()], "newest first, no canceled");
    assert_eq!(
        ids(&list(&sim, "v1/subscriptions?status=all").await),
        vec![paused.clone(), canceled.clone(), kept.clone()]
    );
    assert_eq!(ids(&list(&sim, "v1/subscriptions?status=canceled").await), vec![canceled.clone()]);
    assert_eq!(ids(&list(&sim, "v1/subscriptions?status=ended").await), vec![canceled.clone()]);
    assert_eq!(ids(&list(&sim, "v1/subscriptions?status=paused").await), vec![paused]);
    assert_eq!(ids(&list(&sim, "v1/subscriptions?status=active").await), vec![kept]);
    assert!(ids(&list(&sim, "v1/subscriptions?status=incomplete_expired").await).is_empty());
    assert_eq!(refused(&sim, "v1/subscriptions?status=gone").await["param"], "status");
    assert_eq!(refused(&sim, "v1/subscriptions?colour=red").await["code"], "parameter_unknown");
}

#[tokio::test]
async fn filters_by_price_customer_and_creation_time() {
    let sim = started(two_prices()).await;
    let monthly = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    let yearly = sim.create_subscription(YEARLY).expect("subscribed");
    let switched = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    sim.switch_price(&switched, YEARLY).expect("switched");

    let path = format!("v1/subscriptions?price={YEARLY}");
    assert_eq!(ids(&list(&sim, &path).await), vec![switched.clone(), yearly.clone()], "the price now");
    let path = format!("v1/subscriptions?price={DEFAULT_PRICE_ID}");
    assert_eq!(ids(&list(&sim, &path).await), vec![monthly.clone()]);
    let customer = sim.subscription(&yearly).expect("sub").customer;
    assert_eq!(
        ids(&list(&sim, &format!("v1/subscriptions?customer={customer}")).await),
        vec![yearly.clone()]
    );

    // A renewal moves the clock a month on: a later subscription is created after it.
    sim.renew(&monthly).expect("renewed");
    let later = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    let first_created = sim.subscription(&monthly).expect("sub").created;
    let switched_created = sim.subscription(&switched).expect("sub").created;
    let later_created = sim.subscription(&later).expect("sub").created;
    assert!(later_created > switched_created + 86_400);
    let path = format!("v1/subscriptions?created%5Bgt%5D={switched_created}");
    assert_eq!(ids(&list(&sim, &path).await), vec![later.clone()], "encoded brackets");
    let path = format!("v1/subscriptions?created[lte]={first_created}&price={DEFAULT_PRICE_ID}");
    assert_eq!(ids(&list(&sim, &path).await), vec![monthly]);
    let path = format!("v1/subscriptions?created={later_created}");
    assert_eq!(ids(&list(&sim, &path).await), vec![later]);
    assert_eq!(refused(&sim, "v1/subscriptions?created[gt]=soon").await["code"], "parameter_invalid_integer");
}

#[tokio::test]
async fn pages_with_cursors_both_ways() {
    let sim = started(StripeSimConfig::default()).await;
    let mut created: Vec<String> =
        (0..25).map(|_| sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed")).collect();
    created.reverse();
    let newest_first = created;

    let first = list(&sim, "v1/subscriptions").await;
    assert_eq!(ids(&first), newest_first[..10], "10 by default");
    assert_eq!(first["has_more"], true);
    let (all, pages) = walk(&sim, "v1/subscriptions?limit=10").await;
    assert_eq!((all.as_slice(), pages), (newest_first.as_slice(), 3));
    let last = list(&sim, &format!("v1/subscriptions?limit=10&starting_after={}", newest_first[19])).await;
    assert_eq!((ids(&last).len(), &last["has_more"]), (5, &json!(false)));

    // `ending_before`: the objects just newer than the cursor, still newest first.
    let newer = list(&sim, &format!("v1/subscriptions?limit=10&ending_before={}", newest_first[20])).await;
    assert_eq!(ids(&newer), newest_first[10..20]);
    assert_eq!(newer["has_more"], true, "ten more, newer still");
    let newest = list(&sim, &format!("v1/subscriptions?limit=10&ending_before={}", newest_first[10])).await;
    assert_eq!((ids(&newest), &newest["has_more"]), (newest_first[..10].to_vec(), &json!(false)));
    let none = list(&sim, &format!("v1/subscriptions?ending_before={}", newest_first[0])).await;
    assert!(ids(&none).is_empty() && none["has_more"] == false);

    let both = format!("v1/subscriptions?starting_after={0}&ending_before={0}", newest_first[3]);
    refused(&sim, &both).await;
    let unknown = refused(&sim, "v1/subscriptions?starting_after=sub_nope").await;
    assert_eq!((&unknown["code"], &unknown["param"]), (&json!("resource_missing"), &json!("starting_after")));
    let unknown = refused(&sim, "v1/subscriptions?ending_before=sub_nope").await;
    assert_eq!(unknown["param"], "ending_before");
}

#[tokio::test]
async fn limits_are_1_to_100() {
    let sim = started(StripeSimConfig::default()).await;
    for _ in 0..3 {
        sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    }
    for bad in ["0", "101", "-1", "ten"] {
        let error = refused(&sim, &format!("v1/subscriptions?limit={bad}")).await;
        assert_eq!((&error["code"], &error["param"]), (&json!("parameter_invalid_integer"), &json!("limit")));
        refused(&sim, &format!("v1/events?limit={bad}")).await;
    }
    let one = list(&sim, "v1/subscriptions?limit=1").await;
    assert_eq!((ids(&one).len(), &one["has_more"]), (1, &json!(true)));
    let all = list(&sim, "v1/subscriptions?limit=100").await;
    assert_eq!((ids(&all).len(), &all["has_more"]), (3, &json!(false)));
}

async fn get_with_version(sim: &StripeSim, path: &str, version: &str) -> Value {
    let response = http()
        .get(sim.base_url().join(path).expect("url"))
        .bearer_auth(DEFAULT_API_KEY)
        .header("Stripe-Version", version)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

#[tokio::test]
async fn list_items_are_rendered_as_retrieve_renders_them_with_expansions() {
    let sim = started(StripeSimConfig::default()).await;
    let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    sim.renew(&id).expect("renewed");
    let one = format!("v1/subscriptions/{id}");

    let listed = list(&sim, "v1/subscriptions").await;
    assert_eq!(listed["data"][0], get_json(&sim, &one).await.1, "the same object");
    let acacia = get_with_version(&sim, "v1/subscriptions", ACACIA_API_VERSION).await;
    assert_eq!(acacia["data"][0], get_with_version(&sim, &one, ACACIA_API_VERSION).await);
    assert!(acacia["data"][0].get("current_period_end").is_some(), "acacia's top-level period");

    let expanded =
        list(&sim, "v1/subscriptions?expand%5B%5D=data.latest_invoice&expand[]=data.customer").await;
    let retrieved = get_json(&sim, &format!("{one}?expand[]=latest_invoice&expand[]=customer")).await.1;
    assert_eq!(expanded["data"][0], retrieved);
    let invoice = &expanded["data"][0]["latest_invoice"];
    assert_eq!(invoice["object"], "invoice");
    assert_eq!(invoice["id"], sim.subscription(&id).expect("sub").latest_invoice);
    assert_eq!(invoice["billing_reason"], "subscription_cycle");
    assert_eq!(expanded["data"][0]["customer"]["object"], "customer");

    for bad in ["latest_invoice", "data.items", "data.latest_invoice.payment_intent"] {
        let error = refused(&sim, &format!("v1/subscriptions?expand[]={bad}")).await;
        assert_eq!(error["param"], "expand", "{bad}");
    }
}

/// Two renewals move the clock two months on (July to August to September: 31 days each).
#[tokio::test]
async fn events_are_listed_newest_first_for_the_last_30_days() {
    let clock_start = chrono::DateTime::parse_from_rfc3339("2025-07-01T10:00:00Z").expect("time").to_utc();
    let sim = started(StripeSimConfig { clock_start: Some(clock_start), ..StripeSimConfig::default() }).await;
    let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    let old = sim.events();
    sim.renew(&id).expect("renewed");
    sim.renew(&id).expect("renewed again");
    let all = sim.events();
    let recent: Vec<_> = all.iter().skip(all.len() - 2).collect();
    assert_eq!(
        recent.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        ["customer.subscription.updated", "invoice.paid"]
    );

    let listed = list(&sim, "v1/events").await;
    assert_eq!((&listed["object"], &listed["url"]), (&json!("list"), &json!("/v1/events")));
    let newest_first: Vec<String> = recent.iter().rev().map(|e| e.id.clone()).collect();
    assert_eq!(ids(&listed), newest_first, "the second month's events only");
    assert_eq!(listed["has_more"], false);
    assert_eq!(listed["data"][0], recent[1].json(), "the event exactly as delivered");
    assert!(old.iter().all(|e| !ids(&listed).contains(&e.id)), "more than 30 days old");

    // Filters.
    let paid = list(&sim, "v1/events?type=invoice.paid").await;
    assert_eq!(ids(&paid), vec![recent[1].id.clone()]);
    let lifecycle = list(&sim, "v1/events?type=customer.subscription.*").await;
    assert_eq!(ids(&lifecycle), vec![recent[0].id.clone()]);
    let both =
        list(&sim, "v1/events?types%5B%5D=invoice.paid&types%5B%5D=customer.subscription.deleted&limit=100")
            .await;
    assert_eq!(ids(&both), vec![recent[1].id.clone()]);
    let created = recent[1].json()["created"].as_i64().expect("created");
    assert_eq!(
        ids(&list(&sim, &format!("v1/events?created[gte]={created}")).await),
        vec![recent[1].id.clone()]
    );
    assert_eq!(
        ids(&list(&sim, &format!("v1/events?created[lt]={created}")).await),
        vec![recent[0].id.clone()]
    );

    // Pages, and cursors (an older event may name the page's edge).
    let first = list(&sim, "v1/events?limit=1").await;
    assert_eq!((ids(&first), &first["has_more"]), (vec![recent[1].id.clone()], &json!(true)));
    let next = list(&sim, &format!("v1/events?limit=1&starting_after={}", recent[1].id)).await;
    assert_eq!((ids(&next), &next["has_more"]), (vec![recent[0].id.clone()], &json!(false)));
    let replay = list(&sim, &format!("v1/events?ending_before={}&limit=100", old[0].id)).await;
    assert_eq!(ids(&replay), newest_first, "newer than a 2-month-old event, within the window");

    assert_eq!(
        refused(&sim, "v1/events?type=invoice.paid&types[]=invoice.paid").await["type"],
        "invalid_request_error"
    );
    let many: String = (0..21).map(|i| format!("&types[]=t{i}")).collect();
    assert_eq!(refused(&sim, &format!("v1/events?limit=5{many}")).await["param"], "types");
    assert_eq!(refused(&sim, "v1/events?delivery_success=maybe").await["param"], "delivery_success");
    assert_eq!(refused(&sim, "v1/events?starting_after=evt_nope").await["code"], "resource_missing");
    // Without a webhook endpoint nothing counts as delivered.
    assert!(ids(&list(&sim, "v1/events?delivery_success=true").await).is_empty());
    assert_eq!(ids(&list(&sim, "v1/events?delivery_success=false").await), newest_first);
}

/// A webhook endpoint that accepts everything.
async fn accepting_endpoint() -> Url {
    let app = Router::new().route("/webhooks", post(|| async { StatusCode::OK }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = Url::parse(&format!("http://{}/webhooks", listener.local_addr().expect("addr"))).expect("url");
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn lost_deliveries_are_listed_as_undelivered() {
    let url = accepting_endpoint().await;
    let config = StripeSimConfig {
        webhook: Some(WebhookTarget { url, secrets: vec!["whsec_list_tests".to_owned()] }),
        ..StripeSimConfig::default()
    };
    let sim = started(config).await;
    sim.lose_next_deliveries(1);
    let first = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    assert!(sim.wait_for_deliveries_idle(Duration::from_secs(5)).await);
    let events = sim.events();
    let (created, paid) = (&events[0], &events[1]);
    assert_eq!(created.event_type, "customer.subscription.created");
    assert_eq!(sim.lost_events(), vec![created.clone()]);
    assert!(sim.deliveries().iter().all(|d| d.event_id != created.id), "never attempted");
    assert!(!sim.delivered(&created.id) && sim.delivered(&paid.id));

    let undelivered = list(&sim, "v1/events?delivery_success=false").await;
    assert_eq!(ids(&undelivered), vec![created.id.clone()]);
    assert_eq!(ids(&list(&sim, "v1/events?delivery_success=true").await), vec![paid.id.clone()]);

    // Every event of one subscription, until told to stop.
    let second = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    sim.lose_deliveries_of(&first);
    sim.cancel(&first).expect("canceled");
    sim.cancel(&second).expect("canceled");
    sim.stop_losing_deliveries();
    sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    assert!(sim.wait_for_deliveries_idle(Duration::from_secs(5)).await);
    let lost: Vec<String> =
        sim.lost_events().iter().map(|e| format!("{} {:?}", e.event_type, e.subscription)).collect();
    assert_eq!(
        lost,
        vec![
            format!("customer.subscription.created {:?}", Some(&first)),
            format!("customer.subscription.deleted {:?}", Some(&first)),
        ]
    );
    let path = "v1/events?delivery_success=false&type=customer.subscription.deleted";
    assert_eq!(ids(&list(&sim, path).await).len(), 1);

    // A resend delivers a lost event.
    sim.resend_event(&created.id).expect("resent");
    assert!(sim.wait_for_deliveries_idle(Duration::from_secs(5)).await);
    assert!(sim.delivered(&created.id));
}

#[tokio::test]
async fn lists_many_subscriptions_in_pages() {
    // Five pages keep the suite quick in a debug build (each creation renders its events' JSON);
    // `cargo bench --bench reconcile` pages through 10,000 against the release build.
    const COUNT: usize = 500;
    let sim = started(StripeSimConfig::default()).await;
    let mut created: Vec<String> =
        (0..COUNT).map(|_| sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed")).collect();
    created.reverse();
    let path = format!("v1/subscriptions?price={DEFAULT_PRICE_ID}&limit=100&status=all");
    let (all, pages) = walk(&sim, &path).await;
    assert_eq!(pages, COUNT / 100);
    assert!(all == created, "every subscription once, newest first");
    let events = list(&sim, "v1/events?limit=100&type=invoice.paid").await;
    assert_eq!(events["has_more"], true);
}
