//! `DATABASE_URL`: what a user sees when the database is not there, `migrate-cache`, the schema
//! at start, and the deliveries the database records.

use std::process::Command;

use crate::flows::{StoreKind, World};
use crate::helpers::*;
use crate::postgres::TestDatabase;

const PASSWORD: &str = "hunter2-never-shown";

fn binary(dir: &std::path::Path, settings: &TestSettings) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stripe-licensespring"));
    command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir(dir);
    for (name, value) in &settings.values {
        command.env(name, value);
    }
    command
}

#[test]
fn an_unreachable_database_stops_the_start_naming_the_host_and_never_the_password() {
    let settings = TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9")
        .set("DATABASE_URL", &format!("postgres://billing:{PASSWORD}@127.0.0.1:9/billing"));
    let output = binary(settings.dir.path(), &settings).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot reach the database at 127.0.0.1:9/billing"), "{stderr}");
    assert!(!stderr.contains(PASSWORD) && !stdout.contains(PASSWORD), "{stderr}{stdout}");
    assert!(!stdout.contains("listening"), "{stdout}");
}

#[test]
fn a_malformed_database_url_is_a_settings_error_that_does_not_repeat_it() {
    for url in [format!("postgres://billing:{PASSWORD}@/billing"), format!("mysql://x:{PASSWORD}@h:port/db")]
    {
        let settings =
            TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9").set("DATABASE_URL", &url);
        let output = binary(settings.dir.path(), &settings).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains("DATABASE_URL: expected postgres://"), "{stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
    }
}

#[tokio::test]
async fn migrate_cache_imports_the_tutorials_file_once_and_keeps_what_the_database_knows() {
    let Some(database) = TestDatabase::create().await else { return };
    let settings = TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9")
        .set("DATABASE_URL", &database.url)
        .set("CACHE_PATH", "tutorial-cache.json");
    let tutorial = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cache/tutorial-cache.json");
    std::fs::copy(tutorial, settings.dir.path().join("tutorial-cache.json")).unwrap();
    let in_file: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(tutorial).unwrap()).unwrap();
    let run = |settings: &TestSettings| {
        let output = binary(settings.dir.path(), settings).arg("migrate-cache").output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
        stdout
    };
    let n = in_file.len();
    let first = run(&settings);
    assert!(
        first.contains(&format!("{n} subscription(s) imported")) && first.contains("0 already there"),
        "{first}"
    );
    let client = database.client().await;
    let rows = client
        .query("SELECT sub_id, license_key, interval, license_id FROM subscriptions ORDER BY seq", &[])
        .await
        .unwrap();
    let stored: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({"sub_id": row.get::<_, String>(0), "license_key": row.get::<_, String>(1),
                "interval": row.get::<_, String>(2), "license_id": row.get::<_, i64>(3)})
        })
        .collect();
    let expected: Vec<serde_json::Value> = in_file
        .iter()
        .map(|e| {
            serde_json::json!({"sub_id": e["sub_id"], "license_key": e["license_key"],
            "interval": e["interval"], "license_id": e["license_id"]})
        })
        .collect();
    assert_eq!(stored, expected, "every entry, in the file's order");

    // The database moved on (a new key for the first); a second run changes nothing.
    let first_sub = expected[0]["sub_id"].as_str().unwrap().to_owned();
    client
        .execute("UPDATE subscriptions SET license_key = 'NEWER' WHERE sub_id = $1", &[&first_sub])
        .await
        .unwrap();
    let second = run(&settings);
    assert!(
        second.contains("0 subscription(s) imported") && second.contains(&format!("{n} already there")),
        "{second}"
    );
    let key: String = client
        .query_one("SELECT license_key FROM subscriptions WHERE sub_id = $1", &[&first_sub])
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, "NEWER", "what the database knows is kept");
    let versions: i64 = client.query_one("SELECT count(*) FROM schema_migrations", &[]).await.unwrap().get(0);
    assert_eq!(versions, 1, "the schema was migrated once, however often the binary started");
}

#[test]
fn migrate_cache_without_database_url_says_what_it_needs() {
    let settings = TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9");
    let output = binary(settings.dir.path(), &settings).arg("migrate-cache").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL is not set"));
}

async fn deliveries(database: &TestDatabase) -> Vec<(String, String, Option<String>, String, bool, i32)> {
    let client = database.client().await;
    let rows = client
        .query(
            "SELECT event_id, event_type, subscription_id, outcome, handled, attempts FROM deliveries
             ORDER BY first_seen, event_id",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect()
}

#[tokio::test]
async fn each_delivery_is_recorded_and_a_repeat_after_a_restart_calls_nobody() {
    let Some(_) = TestDatabase::create().await else { return };
    let mut world = World::start_on(StoreKind::Postgres).await;
    let (subscription, first) = world.subscribe(PRICE_ID);
    // First refused by LicenseSpring (5xx, recorded as failed), then accepted.
    world
        .licensespring
        .add_fault(sim::Fault::new("/create_order/", sim::FaultKind::json(500, r#"{"detail":"x"}"#)));
    assert_eq!(world.deliver(&first).await.status(), 502);
    let database = world.database.as_ref().unwrap();
    let failed = deliveries(database).await;
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].3.as_str(), failed[0].4, failed[0].5), ("failed", false, 1));
    world.deliver_ok(&first).await;

    // Another server process on the same database (a restart, or another replica): the repeat is
    // recognised from the database and calls neither upstream.
    let settings = TestSettings::for_simulators(&world.simulators).set("DATABASE_URL", &database.url);
    world.app = TestApp::spawn(settings).await;
    let calls = world.stripe.request_count() + world.licensespring.request_count();
    world.deliver_ok(&first).await;
    assert_eq!(world.stripe.request_count() + world.licensespring.request_count(), calls, "nobody called");

    let recorded = deliveries(world.database.as_ref().unwrap()).await;
    let expected: (String, String, Option<String>, String, bool, i32) =
        (first.id.clone(), "invoice.paid".into(), Some(subscription.clone()), "created".into(), true, 3);
    assert_eq!(recorded, vec![expected]);
}

#[tokio::test]
async fn deliveries_older_than_ninety_days_are_deleted_at_start() {
    let Some(_) = TestDatabase::create().await else { return };
    let world = World::start_on(StoreKind::Postgres).await;
    let (_, first) = world.subscribe(PRICE_ID);
    world.deliver_ok(&first).await;
    let database = world.database.as_ref().unwrap();
    let client = database.client().await;
    client
        .execute(
            "INSERT INTO deliveries (event_id, event_type, outcome, handled, first_seen, last_seen)
             VALUES ('evt_old', 'invoice.paid', 'extended', true, now() - interval '91 days',
                     now() - interval '91 days')",
            &[],
        )
        .await
        .unwrap();
    // Another start on the same database (a restart, a new replica).
    let settings = TestSettings::for_simulators(&world.simulators).set("DATABASE_URL", &database.url);
    let _second = TestApp::spawn(settings).await;
    let ids: Vec<String> = client
        .query("SELECT event_id FROM deliveries", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![first.id.clone()], "the old one deleted, the recent one kept");
}

/// `sslmode=require`: TLS with the server's certificate verified. The tests' PostgreSQL (Debian's)
/// serves a self-signed certificate for `localhost`: refused against the public CAs, accepted once
/// `SSL_CERT_FILE` names it.
#[tokio::test]
async fn sslmode_require_speaks_tls_and_verifies_the_servers_certificate() {
    let Some(database) = TestDatabase::create().await else { return };
    let client = database.client().await;
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    // Debian's clusters serve TLS with the snakeoil certificate (package ssl-cert) by default.
    let server_certificate = match client.query_one("SHOW ssl_cert_file", &[]).await {
        Ok(row) => row.get::<_, String>(0),
        Err(_) => "/etc/ssl/certs/ssl-cert-snakeoil.pem".to_owned(), // not a superuser: the default
    };
    assert_eq!(ssl, "on", "the tests' PostgreSQL serves TLS (Debian's default)");
    let mut url: url::Url = database.url.parse().unwrap();
    url.set_host(Some("localhost")).unwrap();
    url.set_query(Some("sslmode=require"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cache.json"), "[]").unwrap();
    let settings = TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9")
        .set("DATABASE_URL", url.as_str())
        .set("CACHE_PATH", dir.path().join("cache.json").to_str().unwrap());
    let migrate = |trusted: &str| {
        let output = binary(settings.dir.path(), &settings)
            .env("SSL_CERT_FILE", trusted)
            .arg("migrate-cache")
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.code(), text)
    };

    let (status, said) = migrate("/etc/ssl/certs/ca-certificates.crt");
    assert_eq!(status, Some(2), "{said}");
    let target = format!("localhost:5432/{}", database.name);
    assert!(said.contains(&format!("cannot reach the database at {target}")), "{said}");
    assert!(said.to_lowercase().contains("certificate"), "the certificate is named as the fault: {said}");

    let (status, said) = migrate(&server_certificate);
    assert_eq!(status, Some(0), "{said}");
    assert!(said.contains(&format!("0 subscription(s) imported into PostgreSQL at {target}")), "{said}");
}
