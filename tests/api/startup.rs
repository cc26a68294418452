//! The binary as a user starts it: settings errors before listening, `PORT=0`, graceful shutdown.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stripe-licensespring"));
    command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[test]
fn missing_settings_stop_the_server_before_it_listens_naming_each_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = binary()
        .current_dir(dir.path())
        .env("STRIPE_PRIVATE_KEY", "pk_test_notASecretKeyButStillHidden")
        .env("PORT", "not-a-port")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for name in [
        "API_MANAGAMENT_KEY",
        "PRODUCT_SHORT_CODE",
        "ORDER_BASE_STRING",
        "STRIPE_PRIVATE_KEY: expected a Stripe secret key",
        "STRIPE_PRODUCT",
        "STRIPE_SECRET",
        "PORT: expected a TCP port",
    ] {
        assert!(stderr.contains(name), "{name} not in:\n{stderr}");
    }
    assert!(!stderr.contains("notASecretKeyButStillHidden"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[test]
fn a_corrupt_env_file_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "STRIPE_SECRET=\"whsec_unterminated\n").unwrap();
    let output = binary().current_dir(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(".env: cannot be parsed"), "{stderr}");
    assert!(!stderr.contains("whsec_unterminated"), "{stderr}");
}

#[tokio::test]
async fn port_zero_serves_on_the_printed_port_and_sigterm_stops_it_cleanly() {
    let settings = TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9");
    let mut command = binary();
    command.current_dir(settings.dir.path()).env("RUST_LOG", "info");
    for (name, value) in &settings.values {
        command.env(name, value);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();

    // tracing writes to stdout; find the line that says where the server listens.
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines.next().expect("the server logs before it exits").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.trim().to_owned();
        }
    };
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);

    let health = reqwest::get(format!("http://{address}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
}

#[tokio::test]
async fn a_corrupt_cache_file_stops_the_start_and_is_left_unchanged() {
    let settings = TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9");
    let path = settings.dir.path().join("cache.json");
    let corrupt = br#"[{"sub_id": "sub_1", "license_key": "K", "interval": "month", "license_id": "#;
    std::fs::write(&path, corrupt).expect("write");

    let error = stripe_licensespring::App::build(&settings.settings()).await.err().expect("refuses to start");
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "names the file: {message}");
    assert!(message.contains("not JSON"), "says what is wrong: {message}");
    assert_eq!(std::fs::read(&path).expect("still there"), corrupt, "left byte for byte");
}

#[tokio::test]
async fn a_missing_cache_file_is_created_empty_at_start() {
    let settings = TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9");
    let path = settings.dir.path().join("cache.json");
    let _app = TestApp::spawn(settings).await;
    assert_eq!(std::fs::read_to_string(&path).expect("created"), "[]");
}

// Multi-threaded: the simulators must answer the server's start (it reads the prices) while
// `ServerProcess::spawn` blocks this thread waiting for it; on one thread that read timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_as_a_child_process_handles_a_webhook_and_reports_its_resources() {
    use sim::licensespring::LicenseSpringSimConfig;
    use sim::stripe::StripeSimConfig;
    use stripe_licensespring::demo::Simulators;

    use crate::server_process::{ServerProcess, server_env};

    let upstreams =
        Simulators::start(StripeSimConfig::default(), LicenseSpringSimConfig::default(), WEBHOOK_SECRET)
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = server_env(&upstreams, &dir.path().join("cache.json"));
    let server = ServerProcess::spawn(
        std::path::Path::new(env!("CARGO_BIN_EXE_stripe-licensespring")),
        dir.path(),
        &env,
    )
    .unwrap();

    let subscription = upstreams.stripe.create_subscription(sim::stripe::DEFAULT_PRICE_ID).unwrap();
    let event = upstreams.stripe.events().into_iter().last().unwrap();
    let signature = sim::sign_stripe_payload(&event.body, WEBHOOK_SECRET, chrono::Utc::now().timestamp());
    let response = reqwest::Client::new()
        .post(server.url("/webhooks"))
        .header("stripe-signature", signature)
        .body(event.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let license = upstreams.licensespring.licenses().pop().expect("a license");
    let subscription = upstreams.stripe.subscription(&subscription).unwrap();
    assert_eq!(
        subscription.metadata.get("license_key").map(String::as_str),
        Some(license.license_key.as_str())
    );

    assert!(server.cpu_time().is_some());
    assert!(server.peak_rss_kib().is_some_and(|kib| kib > 0));
    assert!(server.log().iter().any(|line| line.contains("outcome=created")));
    assert!(server.terminate(Duration::from_secs(10)), "stops on SIGTERM");
}

#[tokio::test]
async fn a_price_stripe_does_not_have_or_that_is_not_recurring_stops_the_start_naming_it() {
    use sim::licensespring::LicenseSpringSimConfig;
    use sim::stripe::{SimPrice, StripeSimConfig};
    use stripe_licensespring::demo::Simulators;

    let stripe = StripeSimConfig {
        prices: vec![
            SimPrice::new(sim::stripe::DEFAULT_PRICE_ID, sim::stripe::Interval::Month, 1),
            SimPrice::one_time("price_1TestOneTime0000001", 900),
        ],
        ..StripeSimConfig::default()
    };
    let simulators =
        Simulators::start(stripe, LicenseSpringSimConfig::default(), WEBHOOK_SECRET).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (price, reason) in [
        ("price_1TestOneTime0000001", "is a one-time price; a subscription needs a recurring one"),
        ("price_1TestNoSuchPrice000", "does not exist in this Stripe account"),
    ] {
        let mut command = binary();
        command.current_dir(dir.path()).env("PORT", "0");
        for (name, value) in simulators.settings() {
            command.env(name, value);
        }
        command.env("STRIPE_PRODUCT", format!("{},{price}", sim::stripe::DEFAULT_PRICE_ID));
        // The simulators answer on this test's runtime: wait for the binary off it.
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
        assert_eq!(output.status.code(), Some(1), "{price}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("STRIPE_PRODUCT: the price {price} {reason}")), "{stderr}");
    }
}

/// Waits (5 s at most) until `server` has logged a line containing `text`; answers the log.
async fn log_with(server: &crate::server_process::ServerProcess, text: &str) -> Vec<String> {
    let started = Instant::now();
    while !server.log().iter().any(|line| line.contains(text)) && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.log()
}

// Multi-threaded: the simulators must answer the server's start while `spawn` waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_names_the_address_the_webhook_url_the_store_and_the_env_file_read() {
    use sim::licensespring::LicenseSpringSimConfig;
    use sim::stripe::StripeSimConfig;
    use stripe_licensespring::demo::Simulators;

    use crate::server_process::ServerProcess;

    let simulators =
        Simulators::start(StripeSimConfig::default(), LicenseSpringSimConfig::default(), WEBHOOK_SECRET)
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().canonicalize().unwrap();
    std::fs::create_dir(home.join("state")).unwrap();
    // Half the settings in .env, half in the environment; the cache path relative to the directory.
    let (in_file, mut env): (Vec<_>, Vec<_>) = simulators
        .settings()
        .into_iter()
        .partition(|(name, _)| name == "STRIPE_SECRET" || name == "PRODUCT_SHORT_CODE");
    let dotenv: String = in_file.iter().map(|(name, value)| format!("{name}={value}\n")).collect();
    std::fs::write(home.join(".env"), dotenv).unwrap();
    env.push(("CACHE_PATH".to_owned(), "state/cache.json".to_owned()));
    env.push(("PUBLIC_URL".to_owned(), "https://shop.example.com/store/".to_owned()));
    env.push(("RUST_LOG".to_owned(), "info".to_owned()));
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_stripe-licensespring"));

    let server = ServerProcess::spawn(binary, &home, &env).unwrap();
    let log = log_with(&server, "settings: ").await.join("\n");
    assert!(log.contains(&format!("listening on http://{}", server.address)), "{log}");
    assert!(
        log.contains(
            "Stripe webhook endpoint: https://shop.example.com/store/webhooks (events: invoice.paid,"
        ),
        "the URL to give Stripe, under PUBLIC_URL: {log}"
    );
    let cache = home.join("state/cache.json");
    assert!(log.contains(&format!("store: cache file {} (0 of at most 100", cache.display())), "{log}");
    assert!(
        log.contains(&format!("settings: the environment, then {}", home.join(".env").display())),
        "{log}"
    );
    drop(server);

    // No .env: said so; without PUBLIC_URL the webhook URL is the address itself.
    std::fs::remove_file(home.join(".env")).unwrap();
    env.extend(in_file);
    env.retain(|(name, _)| name != "PUBLIC_URL");
    let server = ServerProcess::spawn(binary, &home, &env).unwrap();
    let log = log_with(&server, "settings: ").await.join("\n");
    assert!(log.contains(&format!("Stripe webhook endpoint: http://{}/webhooks", server.address)), "{log}");
    assert!(log.contains("settings: the environment only (no .env file read)"), "{log}");
}

#[test]
fn a_port_in_use_stops_the_start_naming_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let settings =
        TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9").set("PORT", &port.to_string());
    let mut command = binary();
    command.current_dir(settings.dir.path());
    for (name, value) in &settings.values {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port} (HOST, PORT)")), "{stderr}");
    assert!(stderr.contains("stop it, or set PORT to a free port"), "{stderr}");
    drop(taken);
}

#[test]
fn with_no_settings_at_all_the_sandbox_is_suggested() {
    let dir = tempfile::tempdir().unwrap();
    let output = binary().current_dir(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("STRIPE_PRIVATE_KEY: missing"), "{stderr}");
    assert!(stderr.contains("To try it without any account: stripe-licensespring --demo"), "{stderr}");

    // One setting given: a start that went wrong, not a first try; no suggestion.
    let output = binary().current_dir(dir.path()).env("STRIPE_PRODUCT", "price_1").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&output.stderr).contains("--demo"));
}
