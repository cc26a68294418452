//! What an operator relies on: `GET /metrics` (parsed as Prometheus parses it, its counters checked
//! after known traffic), `METRICS_TOKEN`, `GET /readyz` with a store that breaks and mends, and
//! `LOG_FORMAT=json`. The metrics are the process's, so the servers whose counters are checked run
//! as child processes, each with its own.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::json;
use sim::licensespring::LicenseSpringSimConfig;
use sim::stripe::StripeSimConfig;
use sim::{Fault, FaultKind};
use stripe_licensespring::demo::Simulators;

use crate::helpers::*;
use crate::server_process::{ServerProcess, server_env};

const METRICS_TOKEN: &str = "metrics-Token-7fK2pQ9xZ";

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_stripe-licensespring"))
}

async fn simulators() -> Simulators {
    Simulators::start(StripeSimConfig::default(), LicenseSpringSimConfig::default(), WEBHOOK_SECRET)
        .await
        .expect("simulators start")
}

/// The server binary against `simulators`, with `extra` settings, in a fresh directory.
fn spawn(simulators: &Simulators, extra: &[(&str, &str)]) -> (ServerProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env = server_env(simulators, &dir.path().join("cache.json"));
    for (name, value) in extra {
        env.retain(|(k, _)| k != name);
        env.push(((*name).to_owned(), (*value).to_owned()));
    }
    (ServerProcess::spawn(binary(), dir.path(), &env).expect("the server starts"), dir)
}

/// Delivers `body` to the server's `/webhooks`, signed with `secret`; answers the status.
async fn deliver(server: &ServerProcess, body: &[u8], secret: &str) -> u16 {
    let signature = sign(body, secret, now());
    let response = reqwest::Client::new()
        .post(server.url("/webhooks"))
        .header("content-type", "application/json; charset=utf-8")
        .header("stripe-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .expect("the server answers");
    response.status().as_u16()
}

/// The first event of `event_type` about `subscription` that the Stripe simulator recorded.
fn event_of(simulators: &Simulators, subscription: &str, event_type: &str) -> Vec<u8> {
    let events = simulators.stripe.events_of(subscription);
    let event = events.into_iter().find(|event| event.event_type == event_type);
    event.unwrap_or_else(|| panic!("no {event_type} for {subscription}")).body
}

/// `text` as Prometheus reads it. Strict: every line must be a comment Prometheus knows (`HELP`,
/// `TYPE`) or a sample, and every family must have both.
fn parse_metrics(text: &str) -> Scrape {
    for line in text.lines() {
        assert!(!matches!(LineInfo::parse(line), LineInfo::Ignored), "not Prometheus text: {line:?}\n{text}");
    }
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("parses");
    for family in text.lines().filter_map(|line| line.strip_prefix("# TYPE ")) {
        let name = family.split(' ').next().unwrap_or_default();
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP:\n{text}");
    }
    scrape
}

/// The value of the sample `name` whose labels are exactly `labels`; `None` when there is none.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: HashMap<String, String> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let sample = scrape.samples.iter().find(|s| s.metric == name && *s.labels == wanted)?;
    match sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
        _ => None,
    }
}

/// The sum of the samples of `name` whose labels include all of `labels`.
fn sum(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)));
    matching
        .map(|s| match s.value {
            Value::Counter(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

async fn get_metrics(server: &ServerProcess) -> String {
    let response = reqwest::get(server.url("/metrics")).await.expect("answered");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    response.text().await.expect("a body")
}

// Multi-threaded: the simulators must answer the server's start while `spawn` waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_webhooks_upstream_calls_and_store_writes_of_known_traffic() {
    let simulators = simulators().await;
    let (server, dir) = spawn(&simulators, &[]);
    let price = sim::stripe::DEFAULT_PRICE_ID;

    // Before any traffic: the start read the price once; no webhook; the 5xx counter is there, at 0.
    let before = parse_metrics(&get_metrics(&server).await);
    let calls = "stripe_licensespring_upstream_calls_total";
    assert_eq!(value(&before, calls, &stripe_call("retrieve_price", "200")), Some(1.0));
    assert_eq!(value(&before, "stripe_licensespring_webhook_5xx_total", &[]), Some(0.0));
    assert_eq!(sum(&before, "stripe_licensespring_webhooks_total", &[]), 0.0);

    // A: created, then the same delivery again; B: LicenseSpring fails once (502), then created.
    let a = simulators.stripe.create_subscription(price).unwrap();
    let paid_a = event_of(&simulators, &a, "invoice.paid");
    assert_eq!(deliver(&server, &paid_a, WEBHOOK_SECRET).await, 200);
    assert_eq!(deliver(&server, &paid_a, WEBHOOK_SECRET).await, 200);
    let b = simulators.stripe.create_subscription(price).unwrap();
    let paid_b = event_of(&simulators, &b, "invoice.paid");
    simulators.licensespring.add_fault(Fault::new(
        "/api/v1/orders/generate_license",
        FaultKind::json(500, r#"{"detail": "down"}"#),
    ));
    assert_eq!(deliver(&server, &paid_b, WEBHOOK_SECRET).await, 502);
    assert_eq!(deliver(&server, &paid_b, WEBHOOK_SECRET).await, 200);
    // A canceled; an event type this server does not handle; a delivery with a wrong signature.
    let deleted_a = simulators.stripe.cancel(&a).unwrap().body;
    assert_eq!(deliver(&server, &deleted_a, WEBHOOK_SECRET).await, 200);
    let unhandled = json!({"id": "evt_1TestUnhandled", "object": "event", "created": now(),
        "type": "customer.subscription.trial_will_end", "data": {"object": {"id": b, "object": "subscription"}}});
    assert_eq!(deliver(&server, unhandled.to_string().as_bytes(), WEBHOOK_SECRET).await, 200);
    assert_eq!(deliver(&server, &paid_a, "whsec_not_the_secret").await, 400);

    let text = get_metrics(&server).await;
    let scrape = parse_metrics(&text);
    let webhooks = "stripe_licensespring_webhooks_total";
    for (event_type, outcome, count) in [
        ("invoice.paid", "created", 2.0),
        ("invoice.paid", "duplicate", 1.0),
        ("invoice.paid", "failed", 1.0),
        ("customer.subscription.deleted", "disabled", 1.0),
        ("other", "ignored", 1.0),
        ("other", "rejected", 1.0),
    ] {
        let labels = [("event_type", event_type), ("outcome", outcome)];
        assert_eq!(value(&scrape, webhooks, &labels), Some(count), "{event_type} {outcome}:\n{text}");
    }
    assert_eq!(sum(&scrape, webhooks, &[]), 7.0, "seven deliveries:\n{text}");
    assert_eq!(value(&scrape, "stripe_licensespring_webhook_5xx_total", &[]), Some(1.0), "{text}");
    assert!(!text.contains("trial_will_end"), "an unhandled type is `other`, not a label of its own");

    // Upstream calls: exactly what each simulator received, by operation and status.
    let stripe_requests = simulators.stripe.request_count() as f64;
    let licensespring_requests = simulators.licensespring.request_count() as f64;
    assert_eq!(sum(&scrape, calls, &[("upstream", "stripe")]), stripe_requests, "{text}");
    assert_eq!(sum(&scrape, calls, &[("upstream", "licensespring")]), licensespring_requests, "{text}");
    assert_eq!(value(&scrape, calls, &licensespring("generate_license_key", "500")), Some(1.0), "{text}");
    assert_eq!(value(&scrape, calls, &licensespring("generate_license_key", "200")), Some(2.0), "{text}");
    assert_eq!(value(&scrape, calls, &licensespring("create_order", "200")), Some(2.0), "{text}");
    assert_eq!(value(&scrape, calls, &stripe_call("retrieve_price", "200")), Some(1.0), "{text}");
    let orders =
        simulators.licensespring.requests().iter().filter(|r| r.path.contains("create_order")).count();
    assert_eq!(orders, 2, "the simulator agrees");
    // Each operation's latency histogram counted every call of it, in seconds.
    let duration = "stripe_licensespring_upstream_call_duration_seconds";
    for operation in ["generate_license_key", "create_order"] {
        let labels = [("upstream", "licensespring"), ("operation", operation)];
        let calls_of = sum(&scrape, calls, &labels);
        assert_eq!(value(&scrape, &format!("{duration}_count"), &labels), Some(calls_of), "{operation}");
        let seconds = value(&scrape, &format!("{duration}_sum"), &labels).expect("a sum");
        assert!(seconds > 0.0 && seconds < calls_of * 2.0, "{operation}: {seconds} s for {calls_of} calls");
    }
    assert!(text.contains(&format!(
        "{duration}_bucket{{upstream=\"stripe\",operation=\"retrieve_price\",le=\"+Inf\"}} 1"
    )));

    // Store writes: two subscriptions recorded, one dropped, as the cache file shows.
    let writes = "stripe_licensespring_store_writes_total";
    assert_eq!(value(&scrape, writes, &store("insert", "ok")), Some(2.0), "{text}");
    assert_eq!(value(&scrape, writes, &store("remove", "ok")), Some(1.0), "{text}");
    assert_eq!(sum(&scrape, writes, &[("result", "error")]), 0.0);
    let store_duration = "stripe_licensespring_store_write_duration_seconds_count";
    assert_eq!(
        value(&scrape, store_duration, &[("store", "cache_file"), ("operation", "insert")]),
        Some(2.0)
    );
    let cache: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.path().join("cache.json")).unwrap()).unwrap();
    assert_eq!(cache.iter().map(|e| e["sub_id"].as_str().unwrap()).collect::<Vec<_>>(), [b.as_str()]);

    // No id, key or secret is a label or a value.
    let license = simulators.licensespring.licenses().pop().expect("a license");
    for leak in [a.as_str(), b.as_str(), license.license_key.as_str(), WEBHOOK_SECRET, "sk_test", "evt_"] {
        assert!(!text.contains(leak), "{leak} in /metrics:\n{text}");
    }
    for secret in secret_settings(&simulators) {
        assert!(!text.contains(&secret), "a secret setting's value in /metrics");
    }
}

#[tokio::test]
async fn metrics_token_asks_for_the_bearer_token_and_nothing_else_opens_it() {
    let stripe = ScriptedUpstream::start().await;
    let settings = TestSettings::new(&stripe.base_url, &stripe.base_url).set("METRICS_TOKEN", METRICS_TOKEN);
    let app = TestApp::spawn_with_scripted_stripe(settings, &stripe).await;
    let metrics = |authorization: Option<&str>| {
        let mut request = app.http.get(app.url("/metrics"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };
    for (authorization, what) in [
        (None, "no token"),
        (Some(format!("Bearer {METRICS_TOKEN}x")), "a longer token"),
        (Some(format!("Bearer {}", &METRICS_TOKEN[..METRICS_TOKEN.len() - 1])), "a shorter token"),
        (Some("Bearer metrics-token-7fk2pq9xz".to_owned()), "another case"),
        (Some(format!("Basic {METRICS_TOKEN}")), "another scheme"),
        (Some(METRICS_TOKEN.to_owned()), "no scheme"),
    ] {
        let response = metrics(authorization.as_deref()).await.expect("answered");
        assert_eq!(response.status(), 401, "{what}");
        let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        assert!(challenge.as_deref().is_some_and(|c| c.starts_with("Bearer")), "{what}: {challenge:?}");
        let body = response.text().await.unwrap();
        assert!(!body.contains("stripe_licensespring_") && !body.contains(METRICS_TOKEN), "{what}: {body}");
    }
    let response = metrics(Some(&format!("Bearer {METRICS_TOKEN}"))).await.expect("answered");
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let scrape = parse_metrics(&text);
    assert!(value(&scrape, "stripe_licensespring_webhook_5xx_total", &[]).is_some(), "{text}");
    for secret in [METRICS_TOKEN, STRIPE_KEY, LICENSESPRING_KEY, WEBHOOK_SECRET] {
        assert!(!text.contains(secret), "a secret in /metrics");
    }
    assert!(stripe.requests().is_empty(), "/metrics calls no upstream");

    // Without METRICS_TOKEN, /metrics is open, as is the custom.
    let open =
        TestApp::spawn_with_scripted_stripe(TestSettings::new(&stripe.base_url, &stripe.base_url), &stripe)
            .await;
    assert_eq!(open.get("/metrics").await.status(), 200);
}

#[tokio::test]
async fn readyz_says_503_while_the_cache_cannot_be_written_and_ready_again_once_it_can() {
    let stripe = ScriptedUpstream::start().await;
    let settings = TestSettings::new(&stripe.base_url, &stripe.base_url);
    let state = settings.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let cache = state.join("cache.json");
    let settings = settings.set("CACHE_PATH", cache.to_str().unwrap());
    let app = TestApp::spawn_with_scripted_stripe(settings, &stripe).await;
    let readyz = async || {
        let response = app.get("/readyz").await;
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!(readyz().await, (200, "ready\n".to_owned()));

    // The cache's directory is gone (root ignores permissions, so a removal is the test).
    std::fs::remove_dir_all(&state).unwrap();
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: cannot create a file beside the cache file"), "{body}");
    assert!(body.contains("state/cache.json"), "names the file: {body}");
    assert_eq!(app.get("/healthz").await.status(), 200, "the process still runs");

    // The directory is back: the next write recreates the file from memory.
    std::fs::create_dir(&state).unwrap();
    assert_eq!(readyz().await, (200, "ready\n".to_owned()));

    // A directory where the cache file should be: no write could replace it.
    std::fs::create_dir(&cache).unwrap();
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("it is not a regular file"), "{body}");
    std::fs::remove_dir(&cache).unwrap();
    assert_eq!(readyz().await.0, 200);
    assert!(stripe.requests().is_empty(), "/readyz calls no upstream");
}

// Multi-threaded: the simulators must answer the server's start while `spawn` waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_request_fields_and_no_secret() {
    let simulators = simulators().await;
    let (server, _dir) = spawn(
        &simulators,
        &[("LOG_FORMAT", "json"), ("RUST_LOG", "debug"), ("METRICS_TOKEN", METRICS_TOKEN)],
    );
    let subscription = simulators.stripe.create_subscription(sim::stripe::DEFAULT_PRICE_ID).unwrap();
    let paid = event_of(&simulators, &subscription, "invoice.paid");
    assert_eq!(deliver(&server, &paid, WEBHOOK_SECRET).await, 200);
    assert_eq!(reqwest::get(server.url("/")).await.unwrap().status(), 200);
    assert_eq!(reqwest::get(server.url("/metrics")).await.unwrap().status(), 401);

    // Each request's line is written as it is answered; wait for the third.
    let started = Instant::now();
    let answered = |lines: &[String]| lines.iter().filter(|l| l.contains("\"answered\"")).count();
    while answered(&server.log()) < 3 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = server.log();
    let objects: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
        })
        .collect();
    for object in &objects {
        assert!(object.is_object(), "{object}");
        assert!(object["timestamp"].is_string() && object["level"].is_string(), "{object}");
    }
    let request = |uri: &str| {
        objects
            .iter()
            .find(|o| o["message"] == "answered" && o["span"]["uri"] == uri)
            .unwrap_or_else(|| panic!("no request line for {uri} in:\n{}", lines.join("\n")))
    };
    let webhook = request("/webhooks");
    let event_id = paid_event_id(&paid);
    assert_eq!(webhook["level"], "INFO");
    assert_eq!(webhook["status"], 200);
    assert!(webhook["latency_ms"].is_number(), "{webhook}");
    let span = &webhook["span"];
    assert_eq!(span["method"], "POST");
    assert_eq!(span["event_id"], event_id.as_str());
    assert_eq!(span["event_type"], "invoice.paid");
    assert_eq!(span["subscription"], subscription.as_str());
    assert_eq!(span["outcome"], "created");
    assert!(span["detail"].as_str().is_some_and(|d| d.contains("created")), "{webhook}");
    assert_eq!(request("/")["status"], 200);
    assert_eq!(request("/")["span"]["method"], "GET");
    assert_eq!(request("/metrics")["status"], 401);
    assert!(
        objects.iter().any(|o| o["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Stripe webhook endpoint: http://"))),
        "the start-up lines are JSON too"
    );

    let everything = lines.join("\n");
    let mut secrets = secret_settings(&simulators);
    secrets.push(METRICS_TOKEN.to_owned());
    for secret in secrets {
        assert!(!everything.contains(&secret), "a secret in the log:\n{everything}");
    }
}

/// The values of the secret settings a server against `simulators` has.
fn secret_settings(simulators: &Simulators) -> Vec<String> {
    let names = ["STRIPE_PRIVATE_KEY", "API_MANAGAMENT_KEY", "STRIPE_SECRET"];
    let secrets: Vec<String> = simulators
        .settings()
        .into_iter()
        .filter(|(k, _)| names.contains(&k.as_str()))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(secrets.len(), names.len());
    secrets
}

fn stripe_call<'a>(operation: &'a str, status: &'a str) -> [(&'a str, &'a str); 3] {
    [("upstream", "stripe"), ("operation", operation), ("status", status)]
}

fn licensespring<'a>(operation: &'a str, status: &'a str) -> [(&'a str, &'a str); 3] {
    [("upstream", "licensespring"), ("operation", operation), ("status", status)]
}

fn store<'a>(operation: &'a str, result: &'a str) -> [(&'a str, &'a str); 3] {
    [("store", "cache_file"), ("operation", operation), ("result", result)]
}

fn paid_event_id(body: &[u8]) -> String {
    let event: serde_json::Value = serde_json::from_slice(body).unwrap();
    event["id"].as_str().unwrap().to_owned()
}
