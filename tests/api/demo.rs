//! The sandbox (`--demo`) over plain HTTP: the whole flow a person clicks through, so it stays
//! covered where the browser test cannot run, and the binary as a user starts it.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::DateTime;
use stripe_licensespring::demo::{Demo, DemoOptions, start_demo};

use crate::helpers::*;

fn sandbox_options() -> DemoOptions {
    DemoOptions {
        host: "127.0.0.1".to_owned(),
        port: 0,
        cache_path: None,
        log_filter: "info".to_owned(),
        log_format: Default::default(),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The text of the cell with this class in the subscription's row of the home page.
fn cell(page: &str, subscription: &str, class: &str) -> Option<String> {
    let row = &page[page.find(&format!(r#"<tr id="{subscription}">"#))?..];
    let row = &row[..row.find("</tr>")?];
    let start = row.find(&format!(r#"class="{class}">"#))? + class.len() + 9;
    let end = start + row[start..].find('<')?;
    Some(row[start..end].to_owned())
}

/// The date the subscription's current period ends, as the page shows it.
fn period_end(demo: &Demo, subscription: &str) -> String {
    let end = demo.panel().stripe().subscription(subscription).expect("known");
    DateTime::from_timestamp(end.current_period_end, 0).expect("time").date_naive().to_string()
}

/// Pays through the simulator's checkout page as a browser would: create the link, open the
/// checkout page, press Pay. Returns where Pay sent the buyer.
async fn buy(http: &reqwest::Client, home: &str) -> String {
    let created = http.post(format!("{home}create-payment-link")).send().await.expect("app answers");
    assert_eq!(created.status(), 303);
    let checkout = created.headers()["location"].to_str().expect("text").to_owned();
    assert!(checkout.contains("/checkout/plink_"), "{checkout}");
    let page = http.get(&checkout).send().await.expect("simulator answers");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("page").contains("Pay (simulated)"));
    let paid = http
        .post(&checkout)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=")
        .send()
        .await
        .expect("simulator answers");
    assert_eq!(paid.status(), 303);
    paid.headers()["location"].to_str().expect("text").to_owned()
}

/// GETs the home page until `ready` holds for it (the webhook is handled in the background).
async fn home_until(http: &reqwest::Client, home: &str, ready: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let page = http.get(home).send().await.expect("app answers").text().await.expect("page");
        if ready(&page) {
            return page;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the page never got there:\n{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_sandbox_sells_renews_and_cancels_with_the_page_showing_each_step() {
    let demo = start_demo(&sandbox_options()).await.expect("the sandbox starts");
    let home = demo.url().to_string();
    let http = client();

    let page = http.get(&home).send().await.expect("app answers").text().await.expect("page");
    assert!(page.contains("<strong>Sandbox.</strong>"), "{page}");
    assert!(page.contains("nothing is charged"));
    assert!(page.contains("No subscription yet"));

    let back = buy(&http, &home).await;
    assert!(
        back.starts_with(&format!("{home}thank-you?session_id=cs_")),
        "the checkout sends the buyer to the thank-you page: {back}"
    );
    let subscription = demo.panel().stripe().subscriptions().pop().expect("a subscription").id;
    let thanks = http.get(&back).send().await.expect("app answers");
    assert_eq!(thanks.status(), 200);
    let thanks = thanks.text().await.expect("page");
    let key_in_stripe = demo
        .panel()
        .stripe()
        .subscription(&subscription)
        .and_then(|s| s.metadata.get("license_key").cloned());
    let key_in_stripe = key_in_stripe.expect("the thank-you page made the license");
    assert!(thanks.contains(&key_in_stripe), "the key on the thank-you page: {thanks}");
    // The key is in Stripe before the license exists: wait for the license itself.
    let page =
        home_until(&http, &home, |page| cell(page, &subscription, "enabled").as_deref() == Some("yes")).await;
    let key = cell(&page, &subscription, "license-key").expect("key");
    assert_eq!(key.len(), 19, "{key}");
    assert_eq!(key, key_in_stripe, "the store shows the same key");
    assert_eq!(cell(&page, &subscription, "interval").as_deref(), Some("month"));
    let first_end = period_end(&demo, &subscription);
    assert_eq!(cell(&page, &subscription, "valid-until"), Some(first_end.clone()));
    assert_eq!(cell(&page, &subscription, "enabled").as_deref(), Some("yes"));
    assert!(!page.contains(r#"http-equiv="refresh""#), "nothing pending, no refresh");

    let renewed =
        http.post(format!("{home}sandbox/subscriptions/{subscription}/renew")).send().await.expect("answer");
    assert_eq!(renewed.status(), 303);
    assert_eq!(renewed.headers()["location"], "/");
    let page = http.get(&home).send().await.expect("app answers").text().await.expect("page");
    assert!(page.contains("the next period was billed and paid"), "the page says what just happened: {page}");
    let second_end = period_end(&demo, &subscription);
    assert!(second_end > first_end);
    assert_eq!(cell(&page, &subscription, "valid-until"), Some(second_end), "shown as soon as the 303 lands");

    let canceled =
        http.post(format!("{home}sandbox/subscriptions/{subscription}/cancel")).send().await.expect("answer");
    assert_eq!(canceled.status(), 303);
    let page = http.get(&home).send().await.expect("app answers").text().await.expect("page");
    assert_eq!(cell(&page, &subscription, "enabled").as_deref(), Some("no"));
    assert_eq!(cell(&page, &subscription, "status").as_deref(), Some("canceled"));

    let again =
        http.post(format!("{home}sandbox/subscriptions/{subscription}/renew")).send().await.expect("answer");
    assert_eq!(again.status(), 409);
    assert!(again.text().await.expect("page").contains("is canceled"));
    let unknown =
        http.post(format!("{home}sandbox/subscriptions/sub_nope/cancel")).send().await.expect("answer");
    assert_eq!(unknown.status(), 404);

    let cache = demo.cache_path().to_owned();
    assert!(cache.starts_with(std::env::temp_dir()), "a temporary cache: {}", cache.display());
    demo.shutdown().await.expect("stops cleanly");
    assert!(!cache.exists(), "the temporary cache is removed on exit");
}

#[tokio::test]
async fn outside_demo_mode_there_is_no_sandbox() {
    let app = TestApp::spawn(TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9")).await;
    let page = app.get("/").await.text().await.expect("page");
    assert!(!page.contains("Sandbox"), "{page}");
    assert_eq!(app.post("/sandbox/subscriptions/sub_1/renew").await.status(), 404);
}

#[tokio::test]
async fn the_binary_runs_the_sandbox_without_env_and_logs_no_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A broken .env stops a normal start; the sandbox must not even read it.
    std::fs::write(dir.path().join(".env"), "STRIPE_SECRET=\"whsec_unterminated\n").expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stripe-licensespring"))
        .arg("--demo")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PORT", "0")
        .env("RUST_LOG", "debug")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");

    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let home = loop {
        let Some(Ok(line)) = lines.next() else {
            let mut stderr = String::new();
            let _ = child.stderr.take().expect("stderr").read_to_string(&mut stderr);
            panic!("the sandbox exited before printing its URL:\n{}\n{stderr}", seen.join("\n"));
        };
        seen.push(line.clone());
        if let Some(rest) = line.strip_prefix("Sandbox: open ") {
            break rest.split_whitespace().next().expect("a URL").to_owned();
        }
    };
    // Keep reading, so the child never blocks on a full pipe; the lines are checked at the end.
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<String>>());

    let http = client();
    buy(&http, &home).await;
    home_until(&http, &home, |page| page.contains(r#"<td class="enabled">yes</td>"#)).await;

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("exits");
    assert!(exit.success(), "{exit:?}");
    seen.extend(rest.join().expect("reader"));
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    let output = format!("{}\n{stderr}", seen.join("\n"));

    assert!(output.contains("nothing is charged"), "{output}");
    assert!(output.contains("nothing leaves this machine"), "{output}");
    assert!(output.contains("outcome=created"), "the webhook was handled: {output}");
    for secret_prefix in ["whsec_", "sk_test_", "Api-Key", "Bearer"] {
        assert!(!output.contains(secret_prefix), "{secret_prefix} in the logs:\n{output}");
    }
    assert!(!dir.path().join("cache.json").exists(), "the real cache file is never written");
}

#[tokio::test]
async fn a_lost_webhook_shows_as_drift_and_the_sandbox_reconciles_it() {
    let demo = start_demo(&sandbox_options()).await.expect("the sandbox starts");
    let home = demo.url().to_string();
    let http = client();
    let back = buy(&http, &home).await;
    http.get(&back).send().await.expect("the thank-you page");
    let subscription = demo.panel().stripe().subscriptions().pop().expect("a subscription").id;
    let first_end = period_end(&demo, &subscription);

    let lost = http.post(format!("{home}sandbox/lose-next-webhooks")).send().await.expect("answer");
    assert_eq!(lost.status(), 303);
    let renewed =
        http.post(format!("{home}sandbox/subscriptions/{subscription}/renew")).send().await.expect("answer");
    assert_eq!(renewed.status(), 303);
    let page = http.get(&home).send().await.expect("app answers").text().await.expect("page");
    assert_eq!(
        cell(&page, &subscription, "valid-until"),
        Some(first_end),
        "the renewal's webhook was lost: {page}"
    );
    assert!(!demo.panel().stripe().lost_events().is_empty());

    let reconciled = http.post(format!("{home}sandbox/reconcile")).send().await.expect("answer");
    assert_eq!(reconciled.status(), 303);
    let page = http.get(&home).send().await.expect("app answers").text().await.expect("page");
    assert_eq!(
        cell(&page, &subscription, "valid-until"),
        Some(period_end(&demo, &subscription)),
        "repaired: {page}"
    );
    assert!(page.contains("Reconcile found 1 difference(s) and repaired 1"), "{page}");
    demo.shutdown().await.expect("stops cleanly");
}
