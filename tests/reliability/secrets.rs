//! Secrets never leave: the server runs every flow (including failures and refusals) with
//! distinctive values for every secret setting and the most verbose logging, and neither a log line
//! nor a response body holds any of them.

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use sim::licensespring::LicenseSpringSimConfig;
use sim::stripe::StripeSimConfig;
use sim::{Fault, FaultKind};

use crate::server_process::server_env;
use crate::support::*;

const STRIPE_KEY: &str = "sk_test_SECRETstripeKEYq7Zp3Lx9";
const LICENSESPRING_KEY: &str = "SeCrEtLs.SECRETlicensespringKEYw4Rt8Yh2Nm6Kd";
/// The server holds two webhook secrets (a roll); the simulator signs with the first.
const OLD_WEBHOOK_SECRET: &str = "whsec_SECRETwebhookOLDm3Vb7Xc";
const SHARED_KEY: &str = "SECRETsharedKEYp5Gt1Wz";
const UUID: &str = "5ec2e7a1-9f3b-4c2d-8e1f-5ec2e75ec2e7";
const ADMIN_TOKEN: &str = "SECRETadminTOKENk8Jd2Qw5";
const METRICS_TOKEN: &str = "SECRETmetricsTOKENr3Hs9Lp1";

/// Each secret, and its distinctive part without the well-known prefix (a masked or re-encoded
/// copy would still hold that).
fn needles() -> Vec<&'static str> {
    let secrets = [
        STRIPE_KEY,
        LICENSESPRING_KEY,
        WEBHOOK_SECRET,
        OLD_WEBHOOK_SECRET,
        SHARED_KEY,
        UUID,
        ADMIN_TOKEN,
        METRICS_TOKEN,
    ];
    let cores = [
        "SECRETstripeKEYq7Zp3Lx9",
        "SECRETlicensespringKEYw4Rt8Yh2Nm6Kd",
        "reliability_suite_secret",
        "SECRETwebhookOLDm3Vb7Xc",
    ];
    secrets.into_iter().chain(cores).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_log_line_or_response_body() {
    let upstreams = upstreams_with(
        StripeSimConfig { api_key: STRIPE_KEY.to_owned(), ..StripeSimConfig::default() },
        LicenseSpringSimConfig { api_key: LICENSESPRING_KEY.to_owned(), ..LicenseSpringSimConfig::default() },
        WEBHOOK_SECRET,
    )
    .await;
    let home = ServerHome::new();
    let secret_settings = [
        ("STRIPE_SECRET", &*format!("{OLD_WEBHOOK_SECRET},{WEBHOOK_SECRET}")),
        ("SHARED_KEY", SHARED_KEY),
        ("UUID", UUID),
        ("API_URL", "https://api.licensespring.com"),
        ("UPSTREAM_TIMEOUT_SECS", "1"),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("METRICS_TOKEN", METRICS_TOKEN),
    ];
    let server = home.spawn(&upstreams, &[&secret_settings[..], &[("RUST_LOG", "trace")]].concat());
    let http = http_client();
    let mut seen = Vec::<String>::new();
    let mut exchange = async |method: Method, path: &str| {
        let response = http.request(method, server.url(path)).send().await.expect("answered");
        let status = response.status();
        seen.push(format!("{:?}", response.headers()));
        seen.push(response.text().await.expect("a body"));
        status.as_u16()
    };

    // Pages, payment links (working, then with Stripe failing), health, an unknown route.
    assert_eq!(exchange(Method::GET, "/").await, 200);
    assert_eq!(exchange(Method::GET, "/create-payment-link").await, 200);
    assert_eq!(exchange(Method::POST, "/create-payment-link").await, 303);
    upstreams
        .stripe
        .add_fault(Fault::new("/v1/payment_links", FaultKind::html(500, "<h1>down</h1>")).times(2));
    assert_eq!(exchange(Method::GET, "/create-payment-link").await, 502);
    assert_eq!(exchange(Method::POST, "/create-payment-link").await, 502);
    assert_eq!(exchange(Method::GET, "/healthz").await, 200);
    assert_eq!(exchange(Method::GET, "/nowhere").await, 404);

    // Every webhook flow, a failing and a hanging upstream, and refused deliveries.
    let subscription =
        upstreams.stripe.create_subscription(sim::stripe::DEFAULT_PRICE_ID).expect("subscribed");
    let first = upstreams.stripe.events().pop().expect("invoice.paid");
    upstreams
        .licensespring
        .add_fault(Fault::new("/create_order", FaultKind::html(502, "<html>Bad gateway</html>")));
    upstreams.stripe.add_fault(
        Fault::new("/v1/subscriptions", FaultKind::Hang(Duration::from_secs(2))).method(Method::GET),
    );
    let mut webhook = async |event: &sim::stripe::SimEvent, secret: &str, t: i64| {
        let response = http
            .post(server.url("/webhooks"))
            .header("stripe-signature", sim::sign_stripe_payload(&event.body, secret, t))
            .body(event.body.clone())
            .send()
            .await
            .expect("answered");
        let status = response.status().as_u16();
        seen.push(response.text().await.expect("a body"));
        status
    };
    let now = chrono::Utc::now().timestamp();
    assert_eq!(webhook(&first, WEBHOOK_SECRET, now).await, 502, "Stripe hangs");
    assert_eq!(webhook(&first, WEBHOOK_SECRET, now).await, 502, "LicenseSpring fails");
    assert_eq!(webhook(&first, WEBHOOK_SECRET, now).await, 200, "created");
    assert_eq!(webhook(&first, OLD_WEBHOOK_SECRET, now).await, 200, "repeated, old secret");
    let renewal = upstreams.stripe.renew(&subscription).expect("renewed");
    assert_eq!(webhook(&renewal, WEBHOOK_SECRET, now).await, 200, "renewed");
    assert_eq!(webhook(&renewal, "whsec_forged", now).await, 400, "forged");
    assert_eq!(webhook(&renewal, WEBHOOK_SECRET, now - 3600).await, 400, "replayed");
    let deleted = upstreams.stripe.cancel(&subscription).expect("canceled");
    assert_eq!(webhook(&deleted, WEBHOOK_SECRET, now).await, 200, "deleted");

    // The operator's pages, with the right token, a wrong one and none.
    for (path, authorization, status) in [
        ("/admin", Some(format!("Bearer {ADMIN_TOKEN}")), 200),
        ("/admin?failed=1", Some(format!("Bearer {ADMIN_TOKEN}")), 200),
        ("/admin", Some("Bearer SECRETadminTOKENk8Jd2Qw".to_owned()), 401),
        ("/admin", None, 401),
        ("/metrics", Some(format!("Bearer {METRICS_TOKEN}")), 200),
        ("/metrics", None, 401),
        ("/readyz", None, 200),
    ] {
        let mut request = http.get(server.url(path));
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request.send().await.expect("answered");
        assert_eq!(response.status().as_u16(), status, "{path}");
        seen.push(format!("{:?}", response.headers()));
        seen.push(response.text().await.expect("a body"));
    }

    // The log is read by a background thread: give it the last lines.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log();
    assert!(log.len() > 50 && log.iter().any(|l| l.contains("outcome=disabled")));
    assert!(server.terminate(Duration::from_secs(10)), "stops on SIGTERM");

    // A start refused for a bad setting prints the settings problems: not the secrets either.
    let mut env = server_env(&upstreams, &home.cache_path());
    env.extend(secret_settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    env.push(("PORT".to_owned(), "not-a-port".to_owned()));
    let refused = Command::new(server_binary())
        .env_clear()
        .envs(env)
        .current_dir(home.dir.path())
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(2));
    let refused_output = [refused.stdout, refused.stderr].map(|b| String::from_utf8_lossy(&b).into_owned());

    let bytes = log.iter().map(String::len).sum::<usize>();
    let haystacks = log.iter().chain(&seen).chain(&refused_output);
    for text in haystacks {
        for needle in needles() {
            assert!(!text.contains(needle), "a secret ({}...) leaked in: {text}", &needle[..6]);
        }
    }
    eprintln!(
        "secrets: {} secret values searched in {} log lines ({bytes} bytes, RUST_LOG=trace) and {} \
         response parts: none found",
        needles().len(),
        log.len(),
        seen.len(),
    );
}
