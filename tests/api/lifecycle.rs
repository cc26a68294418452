//! The license follows the whole subscription: each row of SPEC's table "The license follows the
//! subscription", end to end against the simulators, with every event Stripe sends delivered as
//! Stripe would; then whole lives delivered twice, in reverse and shuffled, ending in the state
//! the test's own reading of the table gives for Stripe's final objects.

use chrono::Days;
use rand::seq::SliceRandom;
use reqwest::Method;
use sim::stripe::{AfterFailedPayments, Interval, SimEvent, SimPrice, SubscribeOptions, SubscriptionStatus};

use crate::flows::{StoreKind, World, WorldOptions, YEARLY, postgres_available};
use crate::helpers::*;
use crate::spec_table::{Policy, assert_license_follows, date};

/// A monthly price the server does not sell.
const UNSOLD: &str = "price_1TestUnsoldMonthly01";
const GRACE_DAYS: u32 = 3;
const PER_SEAT: u32 = 2;

/// Sells the monthly and yearly prices, with grace days and seats.
async fn world_on(store: StoreKind, after_failed_payments: AfterFailedPayments) -> World {
    World::start_with(WorldOptions {
        store,
        settings: vec![
            ("STRIPE_PRODUCT", format!("{PRICE_ID},{YEARLY}")),
            ("GRACE_DAYS", GRACE_DAYS.to_string()),
            ("ACTIVATIONS_PER_SEAT", PER_SEAT.to_string()),
        ],
        extra_prices: vec![SimPrice::new(UNSOLD, Interval::Month, 1)],
        after_failed_payments,
        ..WorldOptions::default()
    })
    .await
}

const POLICY: Policy = Policy { grace_days: GRACE_DAYS, activations_per_seat: Some(PER_SEAT) };

fn assert_follows(world: &World, subscription: &str, context: &str) {
    assert_license_follows(&world.stripe, subscription, &world.license_of(subscription), POLICY, context);
}

/// Delivers each event as Stripe does: again, later, until it is accepted.
async fn deliver_until_accepted(world: &World, events: &[SimEvent]) {
    let mut pending: Vec<&SimEvent> = events.iter().collect();
    for _round in 0..5 {
        let mut failed = Vec::new();
        for event in pending {
            let response = world.deliver(event).await;
            if !response.status().is_success() {
                assert!(
                    response.status().is_server_error(),
                    "{} {}: {}",
                    event.event_type,
                    event.id,
                    response.status()
                );
                failed.push(event);
            }
        }
        if failed.is_empty() {
            return;
        }
        pending = failed;
    }
    panic!(
        "events still refused after 5 rounds: {:?}",
        pending.iter().map(|e| &e.event_type).collect::<Vec<_>>()
    );
}

async fn deliver_all(world: &World, events: &[SimEvent]) {
    for event in events {
        world.deliver_ok(event).await;
    }
}

/// A new subscription (with its events delivered); its id.
async fn subscribed(world: &World, options: SubscribeOptions) -> String {
    let subscription = world.stripe.create_subscription_with(PRICE_ID, options).expect("subscribed");
    deliver_all(world, &world.stripe.events_of(&subscription)).await;
    subscription
}

on_both_stores!(a_trial_makes_a_trial_license_until_its_end_and_the_first_charge_ends_it, |store| {
    let world = world_on(store, AfterFailedPayments::Unpaid).await;
    let trial = SubscribeOptions { trial_days: Some(14), quantity: 1 };
    let subscription = subscribed(&world, trial).await;
    let license = world.license_of(&subscription);
    assert!(license.is_trial && license.enabled);
    let trial_end = world.stripe.subscription(&subscription).unwrap().trial_end.expect("a trial");
    assert_eq!(license.validity_period, Some(date(trial_end)));
    assert_follows(&world, &subscription, "trialing");

    // The trial ends: the first charged invoice.
    let before = world.stripe.events_of(&subscription).len();
    world.stripe.renew(&subscription).expect("renewed");
    deliver_all(&world, &world.stripe.events_of(&subscription)[before..]).await;
    let license = world.license_of(&subscription);
    assert!(!license.is_trial, "no longer a trial");
    assert_eq!(license.validity_period, Some(world.period_end(&subscription)));
    assert_follows(&world, &subscription, "first charge");
});

on_both_stores!(a_declined_renewal_keeps_the_license_for_the_grace_days_and_payment_restores_it, |store| {
    let world = world_on(store, AfterFailedPayments::Unpaid).await;
    let subscription = subscribed(&world, SubscribeOptions::default()).await;
    let paid_through = world.period_end(&subscription);

    deliver_all(&world, &world.stripe.renew_declined(&subscription).expect("declined")).await;
    let license = world.license_of(&subscription);
    assert!(license.enabled, "past_due: still enabled");
    assert_eq!(
        license.validity_period,
        paid_through.checked_add_days(Days::new(GRACE_DAYS.into())),
        "+ grace"
    );
    assert_follows(&world, &subscription, "past_due");

    deliver_all(&world, &world.stripe.retry_payment(&subscription, false).expect("declined again")).await;
    assert_follows(&world, &subscription, "past_due, second attempt");

    deliver_all(&world, &world.stripe.retry_payment(&subscription, true).expect("paid")).await;
    let license = world.license_of(&subscription);
    assert!(license.enabled);
    assert_eq!(license.validity_period, Some(world.period_end(&subscription)), "the new period, paid");
    assert_follows(&world, &subscription, "paid after past_due");
});

on_both_stores!(every_retry_declined_ends_unpaid_and_disabled_with_the_validity_kept, |store| {
    let world = world_on(store, AfterFailedPayments::Unpaid).await;
    let subscription = subscribed(&world, SubscribeOptions::default()).await;
    deliver_all(&world, &world.stripe.renew_declined(&subscription).unwrap()).await;
    let validity = world.license_of(&subscription).validity_period;
    for _ in 0..3 {
        deliver_all(&world, &world.stripe.retry_payment(&subscription, false).unwrap()).await;
    }
    assert_eq!(world.stripe.subscription(&subscription).unwrap().status, SubscriptionStatus::Unpaid);
    let license = world.license_of(&subscription);
    assert!(!license.enabled, "unpaid: disabled");
    assert_eq!(license.validity_period, validity, "its validity kept");
    assert_follows(&world, &subscription, "unpaid");
});

on_both_stores!(every_retry_declined_with_cancel_ends_like_the_tutorials_deletion, |store| {
    let world = world_on(store, AfterFailedPayments::Cancel).await;
    let subscription = subscribed(&world, SubscribeOptions::default()).await;
    deliver_all(&world, &world.stripe.renew_declined(&subscription).unwrap()).await;
    for _ in 0..3 {
        deliver_all(&world, &world.stripe.retry_payment(&subscription, false).unwrap()).await;
    }
    let license = world.license_of(&subscription);
    assert!(!license.enabled);
    assert_eq!(license.valid_duration.as_deref(), Some("1m"));
    assert_follows(&world, &subscription, "canceled after failed payments");
    assert!(world.cached_subscriptions().await.is_empty(), "dropped from the cache");
});

on_both_stores!(a_pause_disables_and_a_resume_enables_again_for_the_new_period, |store| {
    let world = world_on(store, AfterFailedPayments::Unpaid).await;
    let subscription = subscribed(&world, SubscribeOptions::default()).await;
    let validity = world.license_of(&subscription).validity_period;

    deliver_all(&world, &world.stripe.pause(&subscription).unwrap()).await;
    let license = world.license_of(&subscription);
    assert!(!license.enabled, "paused: disabled");
    assert_eq!(license.validity_period, validity, "its validity kept");

    deliver_all(&world, &world.stripe.resume(&subscription).unwrap()).await;
    let license = world.license_of(&subscription);
    assert!(license.enabled, "resumed: enabled again");
    assert_eq!(license.validity_period, Some(world.period_end(&subscription)));
    assert_follows(&world, &subscription, "resumed");
});

on_both_stores!(cancel_at_period_end_changes_nothing_until_the_period_ends, |store| {
    let world = world_on(store, AfterFailedPayments::Unpaid).await;
    let subscription = subscribed(&world, SubscribeOptions::default()).await;
    let before = world.license_of(&subscription);
    let (stripe_calls, licensespring_calls) =
        (world.stripe.request_count(), world.licensespring.request_count());
    deliver_all(&world, &world.stripe.set_cancel_at_period_end(&subscription, true).unwrap()).await;
    assert_eq!(world.license_of(&subscription), before, "runs to the paid period's end");
    assert_eq!(world.licensespring.request_count() - licensespring_calls, 1, "read, not written");
    assert!(world.stripe.request_count() > stripe_calls, "the subscription is read, not the event trusted");

    let ended = world.stripe.renew(&subscription).expect("the period ends");
    assert_eq!(ended.event_type, "customer.subscription.deleted");
    world.deliver_ok(&ended).await;
    assert_follows(&world, &subscription, "ended at the period's end");
});

on_both_stores!(seats_set_max_activations_at_creation_and_on_every_change, |store| {
    let world = world_on(store, AfterFailedPayments::Unpaid).await;
    let subscription = subscribed(&world, SubscribeOptions { quantity: 3, trial_days: None }).await;
    assert_eq!(world.license_of(&subscription).max_activations, 3 * PER_SEAT);
    deliver_all(&world, &world.stripe.set_quantity(&subscription, 5).unwrap()).await;
    assert_eq!(world.license_of(&subscription).max_activations, 5 * PER_SEAT);
    deliver_all(&world, &world.stripe.set_quantity(&subscription, 1).unwrap()).await;
    assert_eq!(world.license_of(&subscription).max_activations, PER_SEAT);
    assert_follows(&world, &subscription, "one seat");
});

on_both_stores!(a_switch_to_another_configured_price_keeps_the_license_and_follows_its_invoices, |store| {
    let world = world_on(store, AfterFailedPayments::Unpaid).await;
    let subscription = subscribed(&world, SubscribeOptions::default()).await;
    let key = world.license_of(&subscription).license_key;
    deliver_all(&world, &world.stripe.switch_price(&subscription, YEARLY).unwrap()).await;
    let license = world.license_of(&subscription);
    assert_eq!(license.license_key, key, "the same license");
    assert_eq!(license.validity_period, Some(world.period_end(&subscription)), "a year ahead now");
    let entry = world.stored().await.iter().find(|e| e["sub_id"] == subscription.as_str()).cloned();
    assert_eq!(entry.expect("cached")["interval"], "year", "the cache's interval follows");
    assert_follows(&world, &subscription, "yearly");
});

on_both_stores!(a_switch_to_a_price_that_is_not_sold_leaves_the_license_as_it_is, |store| {
    let world = world_on(store, AfterFailedPayments::Unpaid).await;
    let subscription = subscribed(&world, SubscribeOptions::default()).await;
    let before = world.license_of(&subscription);
    let writes = || {
        world.licensespring_calls(Method::PATCH, "/licenses/")
            + world.licensespring_calls(Method::POST, "/licenses/")
    };
    let writes_before = writes();
    deliver_all(&world, &world.stripe.switch_price(&subscription, UNSOLD).unwrap()).await;
    assert_eq!(world.license_of(&subscription), before);
    assert_eq!(writes(), writes_before, "nothing written to LicenseSpring");
    deliver_all(&world, &world.stripe.set_quantity(&subscription, 4).unwrap()).await;
    assert_eq!(world.license_of(&subscription), before, "still left alone");
});

on_both_stores!(an_update_of_only_the_metadata_calls_nobody, |store| {
    let world = world_on(store, AfterFailedPayments::Unpaid).await;
    let subscription = world.stripe.create_subscription(PRICE_ID).unwrap();
    let first = world.last_event_of(&subscription, "invoice.paid");
    world.deliver_ok(&first).await;
    // Writing the key made Stripe send an update of the metadata.
    let updated = world.last_event_of(&subscription, "customer.subscription.updated");
    assert_eq!(
        updated.previous_attributes().map(|p| p.as_object().unwrap().keys().cloned().collect::<Vec<_>>()),
        Some(vec!["metadata".to_owned()])
    );
    let calls = (world.stripe.request_count(), world.licensespring.request_count());
    world.deliver_ok(&updated).await;
    assert_eq!((world.stripe.request_count(), world.licensespring.request_count()), calls);
});

on_both_stores!(a_renewal_of_an_enabled_license_costs_no_stripe_call, |store| {
    let world = world_on(store, AfterFailedPayments::Unpaid).await;
    let subscription = subscribed(&world, SubscribeOptions::default()).await;
    let renewal = world.stripe.renew(&subscription).unwrap();
    let stripe_calls = world.stripe.request_count();
    world.deliver_ok(&renewal).await;
    assert_eq!(world.stripe.request_count(), stripe_calls);
    assert_eq!(world.license_of(&subscription).validity_period, Some(world.period_end(&subscription)));
});

on_both_stores!(a_late_invoice_of_an_ended_subscription_never_reenables_it, |store| {
    let world = world_on(store, AfterFailedPayments::Unpaid).await;
    let subscription = subscribed(&world, SubscribeOptions::default()).await;
    let renewal = world.stripe.renew(&subscription).unwrap();
    world.deliver_ok(&world.stripe.cancel(&subscription).unwrap()).await;
    world.deliver_ok(&renewal).await;
    let license = world.license_of(&subscription);
    assert!(!license.enabled, "still disabled");
    assert_follows(&world, &subscription, "late invoice after the end");
});

/// One subscription's eventful life, in this simulator's order; its id and every event.
fn live(world: &World, ends_canceled: bool) -> (String, Vec<SimEvent>) {
    let stripe = &world.stripe;
    let subscription = stripe
        .create_subscription_with(PRICE_ID, SubscribeOptions { quantity: 2, trial_days: Some(7) })
        .unwrap();
    stripe.renew(&subscription).unwrap();
    stripe.renew_declined(&subscription).unwrap();
    stripe.retry_payment(&subscription, false).unwrap();
    stripe.retry_payment(&subscription, true).unwrap();
    stripe.set_quantity(&subscription, 3).unwrap();
    stripe.pause(&subscription).unwrap();
    stripe.resume(&subscription).unwrap();
    stripe.switch_price(&subscription, YEARLY).unwrap();
    if ends_canceled {
        stripe.cancel(&subscription).unwrap();
    }
    (subscription.clone(), stripe.events_of(&subscription))
}

on_both_stores!(a_whole_life_delivered_twice_ends_in_the_final_state, |store| {
    for ends_canceled in [false, true] {
        let mut world = world_on(store, AfterFailedPayments::Unpaid).await;
        let (subscription, events) = live(&world, ends_canceled);
        deliver_until_accepted(&world, &events).await;
        assert_follows(&world, &subscription, "in order");
        // Every event again, to a server that remembers none of them (and lost its cache).
        world.restart_with_empty_cache().await;
        deliver_until_accepted(&world, &events).await;
        assert_follows(&world, &subscription, "all delivered twice");
        assert_eq!(world.licensespring.orders().len(), 1, "one order");
    }
});

on_both_stores!(a_whole_life_delivered_in_reverse_or_shuffled_ends_in_the_final_state, |store| {
    for ends_canceled in [false, true] {
        for order in ["reverse", "shuffled"] {
            let world = world_on(store, AfterFailedPayments::Unpaid).await;
            let (subscription, mut events) = live(&world, ends_canceled);
            match order {
                "reverse" => events.reverse(),
                _ => events.shuffle(&mut rand::rng()),
            }
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            deliver_until_accepted(&world, &events).await;
            assert_follows(&world, &subscription, &format!("{order}, ended {ends_canceled}: {types:?}"));
            assert_eq!(world.licensespring.licenses().len(), 1, "one license");
        }
    }
});
