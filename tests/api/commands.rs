//! `reconcile`, `replay` and `check`, as a user runs them: the binary against the simulators and
//! the same settings (and cache file) as a server that missed some webhooks.

use std::process::Output;

use chrono::Days;
use reqwest::Method;
use sim::stripe::SubscribeOptions;
use sim::{Fault, FaultKind};
use stripe_licensespring::licensespring::{LicenseSpringClient, NewLicenseTerms};
use stripe_licensespring::model::LicenseKey;
use stripe_licensespring::settings::Secret;

use crate::flows::{StoreKind, World, WorldOptions, postgres_available};
use crate::helpers::*;
use crate::spec_table::{Policy, assert_license_follows};

const POLICY: Policy = Policy { grace_days: 0, activations_per_seat: Some(2) };

async fn world_on(store: StoreKind) -> World {
    World::start_with(WorldOptions {
        store,
        settings: vec![("STRIPE_PRODUCT", PRICE_ID.to_owned()), ("ACTIVATIONS_PER_SEAT", "2".to_owned())],
        ..WorldOptions::default()
    })
    .await
}

/// Runs the binary with `args` and the app's own settings (its cache file too); the simulators
/// answer on this test's runtime meanwhile.
async fn run(world: &World, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_stripe-licensespring"));
    command.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    command.current_dir(world.app.settings.dir.path());
    for (name, value) in &world.app.settings.values {
        command.env(name, value);
    }
    command.env_remove("STRIPE_SECRET"); // the commands need none
    let Output { status, stdout, stderr } = command.output().await.expect("the binary runs");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// A subscription whose every event so far was delivered.
async fn in_step(world: &World, options: SubscribeOptions) -> String {
    let subscription = world.stripe.create_subscription_with(PRICE_ID, options).unwrap();
    for event in world.stripe.events_of(&subscription) {
        world.deliver_ok(&event).await;
    }
    subscription
}

fn line_of<'a>(stdout: &'a str, needle: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line about {needle}:\n{stdout}"))
}

on_both_stores!(each_kind_of_drift_is_found_then_repaired_and_a_second_run_is_clean, |store| {
    let world = world_on(store).await;
    let missing = world.stripe.create_subscription(PRICE_ID).unwrap(); // its webhooks never came
    let extension_lost = in_step(&world, SubscribeOptions::default()).await;
    world.stripe.renew(&extension_lost).unwrap();
    let cancellation_lost = in_step(&world, SubscribeOptions::default()).await;
    world.stripe.cancel(&cancellation_lost).unwrap();
    let pause_lost = in_step(&world, SubscribeOptions::default()).await;
    world.stripe.pause(&pause_lost).unwrap();
    let seats_wrong = in_step(&world, SubscribeOptions::default()).await;
    world.stripe.set_quantity(&seats_wrong, 3).unwrap();
    let fine = in_step(&world, SubscribeOptions { quantity: 2, trial_days: None }).await;
    // A license of this server's orders whose subscription Stripe does not have.
    let licensespring = LicenseSpringClient::new(
        world.licensespring.base_url(),
        Secret::new(LICENSESPRING_KEY),
        std::time::Duration::from_secs(5),
    );
    let ghost_order = format!("{ORDER_BASE}_sub_1GhostNeverExisted000001");
    let terms = NewLicenseTerms {
        valid_until: chrono::Utc::now().date_naive().checked_add_days(Days::new(30)).unwrap(),
        is_trial: false,
        max_activations: None,
    };
    let ghost = licensespring
        .create_order(&ghost_order, PRODUCT_CODE, &LicenseKey("GHST-2222-3333-4444".into()), &terms, None)
        .await
        .unwrap();

    let (status, stdout, stderr) = run(&world, &["reconcile"]).await;
    assert_eq!(status, Some(1), "differences found: {stdout}{stderr}");
    assert!(line_of(&stdout, &missing).contains("no license (active): should have one"), "{stdout}");
    assert!(line_of(&stdout, &extension_lost).contains("should be valid until"), "{stdout}");
    assert!(line_of(&stdout, &cancellation_lost).contains("should be valid for 1m, disabled"), "{stdout}");
    assert!(line_of(&stdout, &pause_lost).contains("(paused): should be disabled"), "{stdout}");
    assert!(line_of(&stdout, &seats_wrong).contains("should be 6 activations"), "{stdout}");
    assert!(
        line_of(&stdout, &format!("license {ghost}"))
            .contains("Stripe has no subscription sub_1GhostNeverExisted000001"),
        "{stdout}"
    );
    assert!(!stdout.contains(&fine), "a subscription in step is not listed: {stdout}");
    assert!(stdout.contains("6 subscriptions, 6 licenses: 6 difference(s)"), "{stdout}");
    let writes = world.licensespring_calls(Method::PATCH, "/licenses/")
        + world.licensespring_calls(Method::POST, "/create_order/");

    let (status, stdout, _) = run(&world, &["reconcile", "--apply"]).await;
    assert_eq!(status, Some(0), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("repaired:")).count(), 6, "{stdout}");
    assert!(stdout.contains("repaired 6, failed 0"), "{stdout}");
    assert!(
        world.licensespring_calls(Method::PATCH, "/licenses/")
            + world.licensespring_calls(Method::POST, "/create_order/")
            > writes
    );

    let (status, stdout, _) = run(&world, &["reconcile"]).await;
    assert_eq!(status, Some(0), "a second run finds nothing: {stdout}");
    assert!(stdout.contains("7 licenses: all in step"), "{stdout}");
    for subscription in [&missing, &extension_lost, &cancellation_lost, &pause_lost, &seats_wrong, &fine] {
        assert_license_follows(
            &world.stripe,
            subscription,
            &world.license_of(subscription),
            POLICY,
            "after --apply",
        );
    }
    assert!(!world.licensespring.license(ghost.0).expect("the ghost").enabled, "the orphan is disabled");
});

on_both_stores!(one_failure_is_reported_and_the_run_goes_on, |store| {
    let world = world_on(store).await;
    let first = in_step(&world, SubscribeOptions::default()).await;
    let second = in_step(&world, SubscribeOptions::default()).await;
    world.stripe.renew(&first).unwrap();
    world.stripe.renew(&second).unwrap();
    let failing = world.license_of(&first).id;
    world.licensespring.add_fault(
        Fault::new(format!("/licenses/{failing}/"), FaultKind::json(500, r#"{"detail":"boom"}"#))
            .method(Method::PATCH)
            .times(10),
    );
    let (status, stdout, _) = run(&world, &["reconcile", "--apply"]).await;
    assert_eq!(status, Some(1), "{stdout}");
    assert!(line_of(&stdout, &format!("FAILED: {first}")).contains("boom"), "{stdout}");
    assert!(line_of(&stdout, &format!("repaired: {second}")).contains("valid until"), "{stdout}");
    assert!(stdout.contains("repaired 1, failed 1"), "{stdout}");
    world.licensespring.clear_faults();
    let (status, stdout, _) = run(&world, &["reconcile", "--apply"]).await;
    assert_eq!(status, Some(0), "the next run repairs the rest: {stdout}");
});

on_both_stores!(reconcile_pages_through_every_subscription_and_license, |store| {
    let world = world_on(store).await;
    for _ in 0..230 {
        in_step(&world, SubscribeOptions::default()).await;
    }
    let lists_before = world
        .stripe
        .requests()
        .iter()
        .filter(|r| r.method == Method::GET && r.path == "/v1/subscriptions")
        .count();
    let (status, stdout, stderr) = run(&world, &["reconcile"]).await;
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("230 subscriptions, 230 licenses: all in step"), "{stdout}");
    let lists: Vec<_> = world
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::GET && r.path == "/v1/subscriptions")
        .skip(lists_before)
        .collect();
    assert_eq!(lists.len(), 3, "100 a page: {lists:?}");
    assert!(lists[1].query.as_deref().unwrap_or_default().contains("starting_after=sub_"), "{:?}", lists[1]);
    let license_pages = world.licensespring_calls(Method::GET, "/api/v1/licenses/");
    assert!(license_pages >= 3, "100 licenses a page: {license_pages}");
});

on_both_stores!(a_lost_week_of_events_is_replayed_oldest_first, |store| {
    let world = world_on(store).await;
    let subscriptions: Vec<String> = {
        let mut made = Vec::new();
        for _ in 0..4 {
            made.push(in_step(&world, SubscribeOptions::default()).await);
        }
        made
    };
    // Real time (the command's clock); the simulated clock may run ahead of it.
    let since = chrono::Utc::now() - chrono::Duration::minutes(1);
    // A week of events that never arrived: renewals, a pause, seats, a cancellation.
    world.stripe.renew(&subscriptions[0]).unwrap();
    world.stripe.renew(&subscriptions[1]).unwrap();
    world.stripe.pause(&subscriptions[2]).unwrap();
    world.stripe.set_quantity(&subscriptions[1], 4).unwrap();
    world.stripe.cancel(&subscriptions[3]).unwrap();

    let since_arg = since.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (status, stdout, stderr) = run(&world, &["replay", "--since", &since_arg]).await;
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("event(s) since"), "a summary by outcome: {stdout}");
    assert!(stdout.contains("extended") && stdout.contains("disabled"), "{stdout}");
    for subscription in &subscriptions {
        assert_license_follows(
            &world.stripe,
            subscription,
            &world.license_of(subscription),
            POLICY,
            "after replay",
        );
    }
    let (status, stdout, _) = run(&world, &["replay", "--since", &since_arg]).await;
    assert_eq!(status, Some(0), "replaying again is safe: {stdout}");
    let (status, _, stderr) = run(&world, &["replay", "--since", "2020-01-01"]).await;
    assert_eq!(status, Some(2));
    assert!(stderr.contains("Stripe keeps events for 30 days"), "{stderr}");
});

#[tokio::test]
async fn check_asks_each_upstream_one_question() {
    let world = world_on(StoreKind::CacheFile).await;
    let (status, stdout, _) = run(&world, &["check"]).await;
    assert_eq!(status, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("ok    Stripe price {PRICE_ID}: USD 5.00 / month, recurring")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("ok    LicenseSpring: the key reaches product {PRODUCT_CODE}")),
        "{stdout}"
    );

    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_stripe-licensespring"));
    command.arg("check").env_clear().current_dir(world.app.settings.dir.path());
    for (name, value) in &world.app.settings.values {
        command.env(name, value);
    }
    command.env("STRIPE_PRODUCT", format!("{PRICE_ID},price_1TestNoSuchPrice000"));
    command.env("PRODUCT_SHORT_CODE", "NOPE");
    let output = command.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        line_of(&stdout, "price_1TestNoSuchPrice000").starts_with("FAIL")
            && stdout.contains("fix STRIPE_PRODUCT"),
        "{stdout}"
    );
    assert!(line_of(&stdout, "LicenseSpring product NOPE").starts_with("FAIL"), "{stdout}");
    assert!(!stdout.contains(LICENSESPRING_KEY) && !stdout.contains(STRIPE_KEY), "no secret");
}

#[tokio::test]
async fn the_binary_has_help_a_version_and_names_an_unknown_option() {
    let world = world_on(StoreKind::CacheFile).await;
    let (status, stdout, _) = run(&world, &["--help"]).await;
    assert_eq!(status, Some(0));
    for command in ["reconcile", "replay", "check", "--demo", "--version"] {
        assert!(stdout.contains(command), "{command} in --help: {stdout}");
    }
    for command in ["reconcile", "replay", "check"] {
        let (status, stdout, _) = run(&world, &[command, "--help"]).await;
        assert_eq!(status, Some(0), "{command} --help");
        assert!(stdout.contains("Usage: stripe-licensespring"), "{stdout}");
    }
    let (status, stdout, _) = run(&world, &["--version"]).await;
    assert_eq!(
        (status, stdout.trim()),
        (Some(0), concat!("stripe-licensespring ", env!("CARGO_PKG_VERSION")))
    );
    let (status, _, stderr) = run(&world, &["--frobnicate"]).await;
    assert_eq!(status, Some(2));
    assert!(stderr.contains("unexpected argument '--frobnicate'"), "{stderr}");
    let (status, _, stderr) = run(&world, &["replay"]).await;
    assert_eq!(status, Some(2), "--since is required");
    assert!(stderr.contains("--since"), "{stderr}");
}
