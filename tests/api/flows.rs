//! The billing flows end to end: the real server against the Stripe and LicenseSpring simulators,
//! with the test delivering the simulator's signed events itself (so it can repeat, reorder and
//! retry them as Stripe does).

use chrono::{DateTime, NaiveDate, Utc};
use reqwest::Method;
use std::time::Duration;

use sim::licensespring::{LicenseSpringSimConfig, SimLicense};
use sim::stripe::{AfterFailedPayments, ApiGeneration, Interval, SimEvent, SimPrice, StripeSimConfig};
use sim::{Fault, FaultKind};
use stripe_licensespring::demo::Simulators;
use stripe_licensespring::model::{LicenseKey, SubscriptionId};
use stripe_licensespring::settings::Secret;
use stripe_licensespring::stripe::StripeClient;

use crate::helpers::*;
use crate::postgres::TestDatabase;

pub const DAILY: &str = "price_1TestDaily000000001";
pub const WEEKLY: &str = "price_1TestWeekly00000001";
pub const QUARTERLY: &str = "price_1TestQuarterly00001";
pub const YEARLY: &str = "price_1TestYearly00000001";

/// Both simulators and the app wired to them (`world.stripe`, `world.licensespring`).
pub struct World {
    pub simulators: Simulators,
    pub app: TestApp,
    /// The settings the test changed, kept for a restart.
    overrides: Vec<(&'static str, String)>,
    /// The app's database, when it keeps its state in PostgreSQL.
    pub database: Option<TestDatabase>,
}

/// Which store the app keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    CacheFile,
    Postgres,
}

/// Whether a PostgreSQL server answers for the tests (outside CI, a test that needs one is
/// skipped, saying so; in CI it fails without one).
pub async fn postgres_available() -> bool {
    TestDatabase::create().await.is_some()
}

/// A scenario run on both stores, as `name::cache_file` and `name::postgres` (the latter skipped,
/// saying so, where no database answers outside CI). The scenario gets the store to start on.
macro_rules! on_both_stores {
    ($(#[$meta:meta])* $name:ident, |$store:ident| $body:block) => {
        $(#[$meta])*
        mod $name {
            use super::*;

            async fn scenario($store: StoreKind) $body

            #[tokio::test]
            async fn cache_file() {
                scenario(StoreKind::CacheFile).await
            }

            #[tokio::test]
            async fn postgres() {
                if postgres_available().await {
                    scenario(StoreKind::Postgres).await
                }
            }
        }
    };
}

impl std::ops::Deref for World {
    type Target = Simulators;
    fn deref(&self) -> &Simulators {
        &self.simulators
    }
}

pub struct WorldOptions {
    pub generation: ApiGeneration,
    pub licensespring: LicenseSpringSimConfig,
    pub settings: Vec<(&'static str, String)>,
    /// Prices the Stripe simulator has besides the five below.
    pub extra_prices: Vec<SimPrice>,
    pub after_failed_payments: AfterFailedPayments,
    pub store: StoreKind,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            generation: ApiGeneration::Basil,
            licensespring: LicenseSpringSimConfig {
                api_key: LICENSESPRING_KEY.to_owned(),
                products: vec![PRODUCT_CODE.to_owned()],
                ..LicenseSpringSimConfig::default()
            },
            settings: Vec::new(),
            extra_prices: Vec::new(),
            after_failed_payments: AfterFailedPayments::Unpaid,
            store: StoreKind::CacheFile,
        }
    }
}

impl World {
    pub async fn start() -> World {
        World::start_with(WorldOptions::default()).await
    }

    pub async fn start_on(store: StoreKind) -> World {
        World::start_with(WorldOptions { store, ..WorldOptions::default() }).await
    }

    pub async fn start_with(options: WorldOptions) -> World {
        let stripe = StripeSimConfig {
            api_key: STRIPE_KEY.to_owned(),
            prices: [
                SimPrice::new(PRICE_ID, Interval::Month, 1),
                SimPrice::new(DAILY, Interval::Day, 1),
                SimPrice::new(WEEKLY, Interval::Week, 1),
                SimPrice::new(QUARTERLY, Interval::Month, 3),
                SimPrice::new(YEARLY, Interval::Year, 1).with_amount(5_000),
            ]
            .into_iter()
            .chain(options.extra_prices)
            .collect(),
            generation: options.generation,
            after_failed_payments: options.after_failed_payments,
            ..StripeSimConfig::default()
        };
        let simulators =
            Simulators::start(stripe, options.licensespring, WEBHOOK_SECRET).await.expect("simulators start");
        let database = World::new_database(options.store).await;
        let settings = World::settings(&simulators, &options.settings, database.as_ref());
        let app = TestApp::spawn(settings).await;
        World { simulators, app, overrides: options.settings, database }
    }

    async fn new_database(store: StoreKind) -> Option<TestDatabase> {
        match store {
            StoreKind::CacheFile => None,
            StoreKind::Postgres => {
                Some(TestDatabase::create().await.expect("a PostgreSQL server for the tests"))
            }
        }
    }

    fn settings(
        simulators: &Simulators,
        overrides: &[(&'static str, String)],
        database: Option<&TestDatabase>,
    ) -> TestSettings {
        let mut settings = TestSettings::for_simulators(simulators);
        if let Some(database) = database {
            settings = settings.set("DATABASE_URL", &database.url);
        }
        for (name, value) in overrides {
            settings = settings.set(name, value);
        }
        settings
    }

    /// Starts a second app on the same simulators with a store of its own (a lost cache file, or
    /// a new database).
    pub async fn restart_with_empty_cache(&mut self) {
        let store = if self.database.is_some() { StoreKind::Postgres } else { StoreKind::CacheFile };
        let database = World::new_database(store).await;
        self.app =
            TestApp::spawn(World::settings(&self.simulators, &self.overrides, database.as_ref())).await;
        self.database = database;
    }

    /// POSTs the event to `/webhooks`, signed now with the webhook secret, as Stripe does.
    pub async fn deliver(&self, event: &SimEvent) -> reqwest::Response {
        deliver_to(&self.app, event).await
    }

    pub async fn deliver_ok(&self, event: &SimEvent) {
        let response = self.deliver(event).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{} {}: {body}", event.event_type, event.id);
        assert_eq!(body, r#"{"success":true}"#);
    }

    /// A new paid subscription on `price`; returns it and its first `invoice.paid`.
    pub fn subscribe(&self, price: &str) -> (String, SimEvent) {
        let subscription = self.stripe.create_subscription(price).expect("subscription created");
        (subscription.clone(), self.last_event_of(&subscription, "invoice.paid"))
    }

    pub fn last_event_of(&self, subscription: &str, event_type: &str) -> SimEvent {
        self.stripe
            .events()
            .into_iter()
            .rev()
            .find(|e| e.subscription.as_deref() == Some(subscription) && e.event_type == event_type)
            .expect("the simulator emitted the event")
    }

    /// The key in the Stripe subscription's metadata.
    pub fn key_in_stripe(&self, subscription: &str) -> Option<String> {
        self.stripe.subscription(subscription).expect("known").metadata.get("license_key").cloned()
    }

    /// The one license whose order belongs to this subscription.
    pub fn license_of(&self, subscription: &str) -> SimLicense {
        let store_id = format!("{ORDER_BASE}_{subscription}");
        let licenses: Vec<SimLicense> =
            self.licensespring.licenses().into_iter().filter(|l| l.order_store_id == store_id).collect();
        assert_eq!(licenses.len(), 1, "exactly one license for {subscription}: {licenses:?}");
        licenses.into_iter().next().unwrap()
    }

    /// Writes the subscription's `license_key` metadata through the Stripe API, as this server does.
    pub async fn write_key_in_stripe(&self, subscription: &str, key: &str) {
        let stripe =
            StripeClient::new(self.stripe.base_url(), Secret::new(STRIPE_KEY), Duration::from_secs(5));
        stripe
            .set_subscription_license_key(
                &SubscriptionId(subscription.to_owned()),
                &LicenseKey(key.to_owned()),
            )
            .await
            .expect("written");
    }

    pub fn period_end(&self, subscription: &str) -> NaiveDate {
        let end = self.stripe.subscription(subscription).expect("known").current_period_end;
        DateTime::<Utc>::from_timestamp(end, 0).unwrap().date_naive()
    }

    /// The cache file's entries, as JSON.
    pub fn cache(&self) -> serde_json::Value {
        let path = self.app.settings.dir.path().join("cache.json");
        serde_json::from_slice(&std::fs::read(path).expect("cache file")).expect("cache is JSON")
    }

    /// What the store holds, oldest first, in the cache file's shape, from either store.
    pub async fn stored(&self) -> Vec<serde_json::Value> {
        let Some(database) = &self.database else {
            return self.cache().as_array().expect("an array").clone();
        };
        let rows = database
            .client()
            .await
            .query("SELECT sub_id, license_key, interval, license_id FROM subscriptions ORDER BY seq", &[])
            .await
            .expect("the subscriptions table");
        rows.iter()
            .map(|row| {
                serde_json::json!({
                    "sub_id": row.get::<_, String>(0), "license_key": row.get::<_, String>(1),
                    "interval": row.get::<_, String>(2), "license_id": row.get::<_, i64>(3),
                })
            })
            .collect()
    }

    /// The subscriptions the store holds, oldest first.
    pub async fn cached_subscriptions(&self) -> Vec<String> {
        self.stored().await.iter().map(|e| e["sub_id"].as_str().unwrap().to_owned()).collect()
    }

    pub fn licensespring_calls(&self, method: Method, path_contains: &str) -> usize {
        self.licensespring
            .requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .count()
    }
}

pub async fn deliver_to(app: &TestApp, event: &SimEvent) -> reqwest::Response {
    signed_delivery(app, event).send().await.expect("the app answers")
}

/// The webhook request Stripe would send for this event, signed now.
pub fn signed_delivery(app: &TestApp, event: &SimEvent) -> reqwest::RequestBuilder {
    let signature = sim::sign_stripe_payload(&event.body, WEBHOOK_SECRET, Utc::now().timestamp());
    app.http
        .post(app.url("/webhooks"))
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", signature)
        .body(event.body.clone())
}

/// Checks the state a created subscription must be in: one enabled license with the key that is in
/// Stripe's metadata, valid until the paid period's end, and an entry in the store.
async fn assert_licensed(world: &World, subscription: &str) {
    let license = world.license_of(subscription);
    assert_eq!(world.key_in_stripe(subscription).as_deref(), Some(license.license_key.as_str()));
    assert!(license.enabled);
    assert_eq!(license.license_type, "subscription");
    assert!(!license.is_trial);
    assert_eq!(license.validity_period, Some(world.period_end(subscription)));
    let stored = world.stored().await;
    let entry = stored.iter().find(|e| e["sub_id"] == subscription).expect("stored");
    assert_eq!(entry["license_key"], license.license_key.as_str());
    assert_eq!(entry["license_id"], license.id);
    assert_eq!(entry["interval"], "month");
}

on_both_stores!(first_invoice_creates_one_license_in_both_payload_generations, |store| {
    for generation in [ApiGeneration::Basil, ApiGeneration::Acacia] {
        let world = World::start_with(WorldOptions { generation, store, ..WorldOptions::default() }).await;
        let (subscription, invoice) = world.subscribe(PRICE_ID);
        assert_eq!(invoice.json()["api_version"], generation.api_version());
        world.deliver_ok(&invoice).await;
        assert_licensed(&world, &subscription).await;
        assert_eq!(world.licensespring.orders().len(), 1);
    }
});

on_both_stores!(renewal_extends_to_the_new_period_end_and_repeats_change_nothing, |store| {
    let world = World::start_on(store).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    world.deliver_ok(&first).await;
    let first_end = world.period_end(&subscription);

    let renewal = world.stripe.renew(&subscription).unwrap();
    world.deliver_ok(&renewal).await;
    let license = world.license_of(&subscription);
    let second_end = world.period_end(&subscription);
    assert!(second_end > first_end);
    assert_eq!(license.validity_period, Some(second_end));

    // The same renewal again, and the older first invoice late: never shortened, never re-extended.
    let patches = world.licensespring_calls(Method::PATCH, "/licenses/");
    world.deliver_ok(&renewal).await;
    world.deliver_ok(&first).await;
    assert_eq!(world.license_of(&subscription).validity_period, Some(second_end));
    assert_eq!(world.licensespring_calls(Method::PATCH, "/licenses/"), patches, "no second extension");
    assert_eq!(world.licensespring.licenses().len(), 1);
});

on_both_stores!(renewal_in_the_older_payload_generation_extends_too, |store| {
    let world = World::start_with(WorldOptions {
        store,
        generation: ApiGeneration::Acacia,
        ..WorldOptions::default()
    })
    .await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    world.deliver_ok(&first).await;
    let renewal = world.stripe.renew(&subscription).unwrap();
    world.deliver_ok(&renewal).await;
    assert_eq!(world.license_of(&subscription).validity_period, Some(world.period_end(&subscription)));
});

on_both_stores!(deletion_disables_with_one_billing_cycle_for_each_interval, |store| {
    let world = World::start_on(store).await;
    for (price, duration) in
        [(DAILY, "1d"), (WEEKLY, "7d"), (PRICE_ID, "1m"), (QUARTERLY, "3m"), (YEARLY, "1y")]
    {
        let (subscription, first) = world.subscribe(price);
        world.deliver_ok(&first).await;
        let deleted = world.stripe.cancel(&subscription).unwrap();
        world.deliver_ok(&deleted).await;
        let license = world.license_of(&subscription);
        assert!(!license.enabled, "{price}: disabled");
        assert_eq!(license.valid_duration.as_deref(), Some(duration), "{price}");
        assert!(
            !world.cached_subscriptions().await.contains(&subscription.to_string()),
            "{price}: dropped from the cache"
        );
    }
    // A repeated deletion changes nothing and still answers 200.
    let subscription = world.stripe.subscriptions()[0].id.clone();
    let deleted = world.last_event_of(&subscription, "customer.subscription.deleted");
    let disables = world.licensespring_calls(Method::POST, "/disable/");
    world.deliver_ok(&deleted).await;
    assert_eq!(world.licensespring_calls(Method::POST, "/disable/"), disables);
});

on_both_stores!(a_subscription_missing_from_a_lost_cache_is_found_through_stripes_metadata, |store| {
    let mut world = World::start_on(store).await;
    let (renewed, first) = world.subscribe(PRICE_ID);
    world.deliver_ok(&first).await;
    let (deleted_sub, first_of_deleted) = world.subscribe(YEARLY);
    world.deliver_ok(&first_of_deleted).await;

    world.restart_with_empty_cache().await;
    assert!(world.cached_subscriptions().await.is_empty());

    let renewal = world.stripe.renew(&renewed).unwrap();
    world.deliver_ok(&renewal).await;
    assert_eq!(world.license_of(&renewed).validity_period, Some(world.period_end(&renewed)));

    let deleted = world.stripe.cancel(&deleted_sub).unwrap();
    world.deliver_ok(&deleted).await;
    let license = world.license_of(&deleted_sub);
    assert!(!license.enabled);
    assert_eq!(license.valid_duration.as_deref(), Some("1y"));
    assert_eq!(world.licensespring.licenses().len(), 2, "nothing created again");
});

#[tokio::test]
async fn an_evicted_subscription_is_still_renewed() {
    let world = World::start_with(WorldOptions {
        settings: vec![("CACHE_CAPACITY", "2".to_owned())],
        ..WorldOptions::default()
    })
    .await;
    let mut subscriptions = Vec::new();
    for _ in 0..3 {
        let (subscription, first) = world.subscribe(PRICE_ID);
        world.deliver_ok(&first).await;
        subscriptions.push(subscription);
    }
    let cached = world.cached_subscriptions().await;
    assert_eq!(cached, vec![subscriptions[1].to_string(), subscriptions[2].to_string()], "oldest evicted");

    let renewal = world.stripe.renew(&subscriptions[0]).unwrap();
    world.deliver_ok(&renewal).await;
    assert_eq!(
        world.license_of(&subscriptions[0]).validity_period,
        Some(world.period_end(&subscriptions[0]))
    );
}

#[tokio::test]
async fn the_tutorials_cache_file_is_used_as_it_is() {
    // A subscription licensed by some earlier server (the tutorial), recorded in a tutorial-format
    // cache file next to the tutorial's own entries.
    let world = World::start().await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    world.deliver_ok(&first).await;
    let license = world.license_of(&subscription);

    let tutorial = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cache/tutorial-cache.json"
    ))
    .unwrap();
    let mut entries: Vec<serde_json::Value> = serde_json::from_str(&tutorial).unwrap();
    entries.push(serde_json::json!({
        "sub_id": subscription.as_str(), "license_key": license.license_key.as_str(),
        "interval": "month", "license_id": license.id
    }));
    let settings = TestSettings::for_simulators(&world.simulators);
    std::fs::write(settings.dir.path().join("cache.json"), serde_json::to_string(&entries).unwrap()).unwrap();
    let app = TestApp::spawn(settings).await;

    let stripe_reads = world.stripe.requests().iter().filter(|r| r.method == Method::GET).count();
    let renewal = world.stripe.renew(&subscription).unwrap();
    assert_eq!(deliver_to(&app, &renewal).await.status(), 200);
    assert_eq!(world.license_of(&subscription).validity_period, Some(world.period_end(&subscription)));
    let stripe_reads_after = world.stripe.requests().iter().filter(|r| r.method == Method::GET).count();
    assert_eq!(stripe_reads_after, stripe_reads, "the cached license id was used; Stripe was not asked");

    let deleted = world.stripe.cancel(&subscription).unwrap();
    assert_eq!(deliver_to(&app, &deleted).await.status(), 200);
    let after: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(app.settings.dir.path().join("cache.json")).unwrap()).unwrap();
    let tutorial_entries: Vec<serde_json::Value> = serde_json::from_str(&tutorial).unwrap();
    assert_eq!(
        after, tutorial_entries,
        "only the deleted subscription left; the tutorial's entries kept as they were"
    );
}

on_both_stores!(sequential_duplicates_make_one_license, |store| {
    let world = World::start_on(store).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    for _ in 0..3 {
        world.deliver_ok(&first).await;
    }
    assert_licensed(&world, &subscription).await;
    assert_eq!(world.licensespring.orders().len(), 1);
    assert_eq!(world.licensespring_calls(Method::POST, "/create_order/"), 1);
});

on_both_stores!(ten_concurrent_copies_make_one_license, |store| {
    let world = World::start_on(store).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    let deliveries: Vec<_> =
        (0..10).map(|_| tokio::spawn(signed_delivery(&world.app, &first).send())).collect();
    for delivery in deliveries {
        assert_eq!(delivery.await.unwrap().unwrap().status(), 200);
    }
    assert_licensed(&world, &subscription).await;
    assert_eq!(world.licensespring.licenses().len(), 1);
    assert_eq!(world.licensespring.orders().len(), 1);
});

/// Delivers once with the fault in place (must fail with 5xx and record nothing), then again.
async fn fails_then_recovers(world: &World, event: &SimEvent) {
    let response = world.deliver(event).await;
    assert!(response.status().is_server_error(), "a failed upstream answers 5xx, got {}", response.status());
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    world.deliver_ok(event).await;
}

on_both_stores!(a_failed_create_order_is_completed_by_the_redelivery, |store| {
    let world = World::start_on(store).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    world.licensespring.add_fault(Fault::new("/create_order/", FaultKind::json(500, r#"{"detail":"boom"}"#)));
    let response = world.deliver(&first).await;
    assert!(response.status().is_server_error());
    assert!(world.cached_subscriptions().await.is_empty(), "nothing half-recorded");
    let key = world.key_in_stripe(&subscription).expect("the key was written before the order");
    world.deliver_ok(&first).await;
    assert_licensed(&world, &subscription).await;
    assert_eq!(world.license_of(&subscription).license_key.as_str(), key, "the retry reused the key");
});

on_both_stores!(a_create_order_whose_answer_was_lost_is_recognised_as_done, |store| {
    let world = World::start_on(store).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    // LicenseSpring creates the order but the answer is a 500.
    world.licensespring.add_fault(Fault::new("/create_order/", FaultKind::json(500, "{}")).after_effect());
    fails_then_recovers(&world, &first).await;
    assert_licensed(&world, &subscription).await;
    assert_eq!(world.licensespring.orders().len(), 1);
});

on_both_stores!(a_failed_metadata_update_is_completed_by_the_redelivery, |store| {
    let world = World::start_on(store).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    world.stripe.add_fault(
        Fault::new(
            format!("/v1/subscriptions/{subscription}"),
            FaultKind::json(500, r#"{"error":{"type":"api_error","message":"boom"}}"#),
        )
        .method(Method::POST)
        .times(3),
    );
    fails_then_recovers(&world, &first).await;
    assert_licensed(&world, &subscription).await;
});

on_both_stores!(a_failed_license_lookup_is_completed_by_the_redelivery, |store| {
    let mut world = World::start_on(store).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    world.deliver_ok(&first).await;
    world.restart_with_empty_cache().await;
    world
        .licensespring
        .add_fault(Fault::new("/api/v1/licenses/", FaultKind::json(500, "{}")).method(Method::GET));
    let renewal = world.stripe.renew(&subscription).unwrap();
    fails_then_recovers(&world, &renewal).await;
    assert_eq!(world.license_of(&subscription).validity_period, Some(world.period_end(&subscription)));
});

on_both_stores!(a_create_order_answer_without_license_ids_is_handled, |store| {
    let world = World::start_with(WorldOptions {
        store,
        licensespring: LicenseSpringSimConfig {
            api_key: LICENSESPRING_KEY.to_owned(),
            products: vec![PRODUCT_CODE.to_owned()],
            order_answer_without_license_ids: true,
            validity_period_as_datetime: true,
        },
        ..WorldOptions::default()
    })
    .await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    world.deliver_ok(&first).await;
    assert_licensed(&world, &subscription).await;
    let renewal = world.stripe.renew(&subscription).unwrap();
    world.deliver_ok(&renewal).await;
    assert_eq!(world.license_of(&subscription).validity_period, Some(world.period_end(&subscription)));
});

on_both_stores!(unknown_events_and_one_off_invoices_call_no_upstream, |store| {
    let world = World::start_on(store).await;
    let (_subscription, first) = world.subscribe(PRICE_ID);
    let before = (world.stripe.request_count(), world.licensespring.request_count());

    let mut updated = first.clone();
    let mut json = first.json();
    json["type"] = "customer.subscription.trial_will_end".into();
    updated.body = serde_json::to_vec_pretty(&json).unwrap();
    world.deliver_ok(&updated).await;

    let mut one_off = first.json();
    let invoice = &mut one_off["data"]["object"];
    invoice["billing_reason"] = "manual".into();
    invoice["parent"] = serde_json::Value::Null;
    for line in invoice["lines"]["data"].as_array_mut().unwrap() {
        line["parent"] = serde_json::Value::Null;
    }
    let mut manual = first.clone();
    manual.body = serde_json::to_vec_pretty(&one_off).unwrap();
    world.deliver_ok(&manual).await;

    assert_eq!((world.stripe.request_count(), world.licensespring.request_count()), before);
    assert!(world.licensespring.licenses().is_empty());
});

on_both_stores!(the_first_invoice_of_an_already_canceled_subscription_leaves_the_license_disabled, |store| {
    let world = World::start_on(store).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    // Out of order: the cancellation arrives before the first invoice.
    let deleted = world.stripe.cancel(&subscription).unwrap();
    world.deliver_ok(&deleted).await;
    world.deliver_ok(&first).await;
    let license = world.license_of(&subscription);
    assert!(!license.enabled, "no enabled license for a canceled subscription");
    assert_eq!(license.valid_duration.as_deref(), Some("1m"));
    assert!(world.cached_subscriptions().await.is_empty());
    // The cancellation delivered again now finds the license and leaves it as it is.
    world.deliver_ok(&deleted).await;
    assert!(!world.license_of(&subscription).enabled);
});

on_both_stores!(a_renewal_before_its_first_invoice_waits_for_it, |store| {
    let world = World::start_on(store).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    let renewal = world.stripe.renew(&subscription).unwrap();
    // Out of order: Stripe will deliver the renewal again, so "not yet" is a 5xx.
    let early = world.deliver(&renewal).await;
    assert_eq!(early.status(), 503);
    world.deliver_ok(&first).await;
    world.deliver_ok(&renewal).await;
    assert_eq!(world.license_of(&subscription).validity_period, Some(world.period_end(&subscription)));
});

on_both_stores!(an_order_holding_another_key_is_adopted_and_stripe_follows_it, |store| {
    // The race: an earlier attempt created the order with key B, but a late metadata write left A in
    // Stripe. The license is what the customer has, so Stripe's metadata must end up saying B.
    let world = World::start_on(store).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    let http = reqwest::Client::new();
    world.write_key_in_stripe(&subscription, "AAAA-AAAA-AAAA-AAAA").await;
    let order = serde_json::json!({"id": format!("{ORDER_BASE}_{subscription}"), "items": [{"product_code": PRODUCT_CODE,
        "licenses": [{"key": "BBBB-BBBB-BBBB-BBBB", "license_type": "subscription", "is_trial": false,
                      "validity_period": "2030-01-01"}]}]});
    let created = http
        .post(format!("{}api/v1/orders/create_order/", world.licensespring.base_url()))
        .header("authorization", format!("Api-Key {LICENSESPRING_KEY}"))
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);

    world.deliver_ok(&first).await;
    let license = world.license_of(&subscription);
    assert_eq!(license.license_key.as_str(), "BBBB-BBBB-BBBB-BBBB");
    assert_eq!(world.key_in_stripe(&subscription).as_deref(), Some("BBBB-BBBB-BBBB-BBBB"));
    assert_eq!(world.stored().await[0]["license_key"], "BBBB-BBBB-BBBB-BBBB");
    assert_eq!(world.licensespring.licenses().len(), 1);
});

on_both_stores!(a_license_whose_key_never_reached_stripe_is_found_through_its_order, |store| {
    // The cache is lost and Stripe's metadata has no key: the order this server made still leads
    // to the license, so a renewal extends it instead of waiting forever.
    let mut world = World::start_on(store).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    world.deliver_ok(&first).await;
    // An empty value deletes the key, as with Stripe.
    world.write_key_in_stripe(&subscription, "").await;
    assert_eq!(world.key_in_stripe(&subscription), None);
    world.restart_with_empty_cache().await;

    let renewal = world.stripe.renew(&subscription).unwrap();
    world.deliver_ok(&renewal).await;
    assert_eq!(world.license_of(&subscription).validity_period, Some(world.period_end(&subscription)));
});
