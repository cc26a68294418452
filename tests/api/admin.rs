//! `/admin`: who may see it, what it shows after known traffic (on both stores), Sync repairing a
//! drifted license, and cross-site requests refused.

use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use stripe_licensespring::licensespring::LicenseSpringClient;
use stripe_licensespring::model::LicenseId;
use stripe_licensespring::settings::Secret;

use crate::flows::{StoreKind, World, WorldOptions, postgres_available};
use crate::helpers::*;

const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

async fn world_on(store: StoreKind) -> World {
    World::start_with(WorldOptions {
        store,
        settings: vec![("ADMIN_TOKEN", ADMIN_TOKEN.to_owned())],
        ..WorldOptions::default()
    })
    .await
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// The admin page's HTML, read with the token.
async fn admin_page(world: &World, query: &str) -> String {
    let response = world
        .app
        .http
        .get(world.app.url(&format!("/admin{query}")))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.text().await.unwrap()
}

/// The table row of one subscription or delivery (`data-...` attribute), as text without tags.
fn row(page: &str, attribute: &str, id: &str) -> String {
    let start =
        page.find(&format!("{attribute}=\"{id}\"")).unwrap_or_else(|| panic!("no row for {id}:\n{page}"));
    let start = start + page[start..].find('>').expect("the tag ends") + 1;
    let html = &page[start..start + page[start..].find("</tr>").expect("row end")];
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn form_body(fields: &[(&str, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish()
}

fn csrf_of(page: &str) -> String {
    let start = page.find(r#"name="csrf" value=""#).expect("a Sync form") + r#"name="csrf" value=""#.len();
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn the_admin_page_needs_the_token_in_either_scheme_and_is_absent_without_one() {
    let world = World::start().await;
    let response = world.app.get("/admin").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND, "no ADMIN_TOKEN, no admin page");

    let world = world_on(StoreKind::CacheFile).await;
    let answer = |authorization: Option<String>| {
        let mut request = world.app.http.get(world.app.url("/admin"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        async move { request.send().await.unwrap() }
    };
    for (what, authorization) in [
        ("none", None),
        ("a wrong bearer token", Some("Bearer wrong-token-0123456789".to_owned())),
        ("a wrong password", Some(basic("admin", "wrong-token-0123456789"))),
        ("a prefix of the token", Some(format!("Bearer {}", &ADMIN_TOKEN[..10]))),
        ("another scheme", Some(format!("Token {ADMIN_TOKEN}"))),
    ] {
        let response = answer(authorization).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.starts_with("Basic realm="), "{what}: {challenge}");
        assert!(!response.text().await.unwrap().contains(ADMIN_TOKEN));
    }
    for authorization in
        [format!("Bearer {ADMIN_TOKEN}"), basic("admin", ADMIN_TOKEN), basic("anyone at all", ADMIN_TOKEN)]
    {
        assert_eq!(answer(Some(authorization.clone())).await.status(), 200, "{authorization}");
    }
}

on_both_stores!(the_admin_page_shows_each_subscription_and_delivery_and_the_failed_ones, |store| {
    let world = world_on(store).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    world.deliver_ok(&first).await;
    let license = world.license_of(&subscription);

    // A renewal LicenseSpring refuses: delivered once, failed, not redelivered yet.
    let renewal = world.stripe.renew(&subscription).unwrap();
    world.licensespring.add_fault(
        sim::Fault::new("/licenses/", sim::FaultKind::json(500, r#"{"detail":"down"}"#)).times(10),
    );
    assert!(world.deliver(&renewal).await.status().is_server_error());
    world.licensespring.clear_faults();

    let page = admin_page(&world, "").await;
    assert!(page.contains("1 in the store"), "{page}");
    let shown = row(&page, "data-subscription", &subscription);
    let valid_until = license.validity_period.unwrap().to_string();
    assert_eq!(shown, format!("{subscription} {} active {valid_until} yes Sync", license.license_key));
    let created = row(&page, "data-event", &first.id);
    assert!(created.contains(&format!("invoice.paid {} {subscription} created 1", first.id)), "{created}");
    let failed = row(&page, "data-event", &renewal.id);
    assert!(failed.contains(" failed 1 LicenseSpring answered 500"), "{failed}");

    let only_failed = admin_page(&world, "?failed=1").await;
    assert!(only_failed.contains(&renewal.id) && !only_failed.contains(&first.id), "{only_failed}");

    // Redelivered and handled: no longer among the failed, two attempts.
    world.deliver_ok(&renewal).await;
    let page = admin_page(&world, "").await;
    assert!(row(&page, "data-event", &renewal.id).contains(" extended 2"), "{page}");
    assert!(!admin_page(&world, "?failed=1").await.contains(&renewal.id));
    for secret in [STRIPE_KEY, LICENSESPRING_KEY, WEBHOOK_SECRET, ADMIN_TOKEN] {
        assert!(!page.contains(secret), "the admin page shows a secret");
    }
});

#[tokio::test]
async fn sync_repairs_a_drifted_license_and_a_cross_site_post_changes_nothing() {
    let world = world_on(StoreKind::CacheFile).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    world.deliver_ok(&first).await;
    let license = world.license_of(&subscription);
    // Someone disables it by hand in LicenseSpring: it no longer follows the subscription.
    let licensespring = LicenseSpringClient::new(
        world.licensespring.base_url(),
        Secret::new(LICENSESPRING_KEY),
        Duration::from_secs(5),
    );
    licensespring.disable_license(LicenseId(license.id)).await.unwrap();
    let page = admin_page(&world, "").await;
    assert!(row(&page, "data-subscription", &subscription).contains(" disabled "), "{page}");
    let csrf = csrf_of(&page);
    assert!(!csrf.is_empty() && !ADMIN_TOKEN.contains(&csrf));

    let post = |fields: Vec<(&'static str, String)>, extra: Option<(&'static str, &'static str)>| {
        let mut request = world
            .app
            .http
            .post(world.app.url("/admin/sync"))
            .header("authorization", basic("admin", ADMIN_TOKEN))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&fields));
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        async move { request.send().await.unwrap() }
    };
    let fields = |csrf: &str| vec![("subscription", subscription.clone()), ("csrf", csrf.to_owned())];
    // Another site's page can make the browser send the Basic credentials, but not the form's token;
    // and a browser says where a request comes from.
    for (what, fields, header) in [
        ("no token", fields(""), None),
        ("a wrong token", fields("0123abcd"), None),
        ("another origin", fields(&csrf), Some(("origin", "https://attacker.example"))),
        ("cross-site", fields(&csrf), Some(("sec-fetch-site", "cross-site"))),
    ] {
        let response = post(fields, header).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
        assert!(!world.license_of(&subscription).enabled, "{what}: nothing changed");
    }
    let anonymous = world
        .app
        .http
        .post(world.app.url("/admin/sync"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&fields(&csrf)))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(world.app.get("/admin/sync").await.status().is_client_error(), "GET changes nothing");

    let response = post(fields(&csrf), Some(("sec-fetch-site", "same-origin"))).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/admin?notice="), "{location}");
    assert!(world.license_of(&subscription).enabled, "Sync enabled it again, as the subscription is active");
    let page = admin_page(&world, &location["/admin".len()..]).await;
    assert!(page.contains(&format!("{subscription}: license {}: enabled", license.id)), "{page}");
    assert!(row(&page, "data-subscription", &subscription).contains(" active "), "{page}");
}

on_both_stores!(the_admin_page_shows_the_newest_fifty_of_many_subscriptions, |store| {
    // Sixty subscriptions recorded by an earlier server (their licenses unknown to this
    // LicenseSpring: their rows say so), the newest last.
    let entries: Vec<serde_json::Value> = (0..60)
        .map(|n| {
            serde_json::json!({"sub_id": format!("sub_{n:02}"), "license_key": format!("KEY-{n:02}"),
                "interval": "month", "license_id": 9_000_000 + n})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("earlier.json");
    std::fs::write(&cache, serde_json::to_string(&entries).unwrap()).unwrap();
    let world = World::start_with(WorldOptions {
        store,
        settings: vec![
            ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("CACHE_PATH", cache.to_str().unwrap().to_owned()),
        ],
        ..WorldOptions::default()
    })
    .await;
    if let Some(database) = &world.database {
        let client = database.client().await;
        for entry in &entries {
            client
                .execute(
                    "INSERT INTO subscriptions (sub_id, license_key, interval, license_id) VALUES ($1, $2, 'month', $3)",
                    &[&entry["sub_id"].as_str(), &entry["license_key"].as_str(), &entry["license_id"].as_i64()],
                )
                .await
                .unwrap();
        }
    }
    let page = admin_page(&world, "").await;
    assert!(page.contains("60 in the store") && page.contains("the newest 50 shown"), "{page}");
    let shown: Vec<&str> =
        page.split("data-subscription=\"").skip(1).map(|rest| &rest[..rest.find('"').unwrap()]).collect();
    let newest: Vec<String> = (10..60).rev().map(|n| format!("sub_{n:02}")).collect();
    assert_eq!(shown, newest, "the newest 50, newest first");
    assert!(row(&page, "data-subscription", "sub_59").contains("KEY-59 not read:"), "{page}");
});
