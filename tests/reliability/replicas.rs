//! Several server processes sharing one PostgreSQL database (`DATABASE_URL`): every promise of one
//! process holds across them. Each test gets a database of its own; without a PostgreSQL server
//! they are skipped, saying so (in CI they fail instead).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sim::stripe::{DEFAULT_PRICE_ID, SimEvent};
use sim::{Fault, FaultKind};
use stripe_licensespring::demo::Simulators;

use crate::postgres::TestDatabase;
use crate::server_process::ServerProcess;
use crate::soak::{SOAK_SETTINGS, check_end_state, soak};
use crate::support::*;
use crate::tcp_proxy::TcpProxy;

/// `count` servers on `database`, each with a home (and an unused cache file) of its own.
fn replicas(
    upstreams: &Simulators,
    database_url: &str,
    count: usize,
    extra: &[(&str, &str)],
) -> Vec<(ServerHome, ServerProcess)> {
    (0..count)
        .map(|_| {
            let home = ServerHome::new();
            let mut settings = vec![("DATABASE_URL", database_url)];
            settings.extend_from_slice(extra);
            let server = home.spawn(upstreams, &settings);
            (home, server)
        })
        .collect()
}

/// A new subscription and its first `invoice.paid`.
fn subscribed(upstreams: &Simulators) -> (String, SimEvent) {
    let subscription = upstreams.stripe.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    let event = upstreams.stripe.events().pop().expect("its first invoice.paid");
    (subscription, event)
}

/// A proxy in front of `database`'s server, and the `DATABASE_URL` that goes through it.
async fn behind_proxy(database: &TestDatabase) -> (TcpProxy, String) {
    let mut url: url::Url = database.url.parse().expect("a URL");
    let host = url.host_str().expect("host");
    let server: SocketAddr =
        format!("{host}:{}", url.port().unwrap_or(5432)).parse().expect("an IP address and port");
    let proxy = TcpProxy::start(server).await;
    url.set_host(Some("127.0.0.1")).expect("host");
    url.set_port(Some(proxy.address.port())).expect("port");
    (proxy, url.to_string())
}

/// The last day of the subscription's current period, as Stripe has it.
fn period_end(upstreams: &Simulators, subscription: &str) -> chrono::NaiveDate {
    let end = upstreams.stripe.subscription(subscription).expect("known").current_period_end;
    chrono::DateTime::from_timestamp(end, 0).expect("a time").date_naive()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_first_invoice_at_three_replicas_at_once_makes_one_license() {
    let Some(database) = TestDatabase::create().await else { return };
    let upstreams = upstreams().await;
    let servers = replicas(&upstreams, &database.url, 3, &[]);
    let said = servers[0].1.log().join("\n");
    let url: url::Url = database.url.parse().expect("a URL");
    let host = url.host_str().expect("a host");
    let store_line = format!("store: PostgreSQL at {host}:{}/{}", url.port().unwrap_or(5432), database.name);
    assert!(said.contains(&store_line), "start-up names the database, not the password:\n{said}");
    let http = http_client();
    let mut subscriptions = Vec::new();
    for _ in 0..5 {
        let (subscription, event) = subscribed(&upstreams);
        // Three copies at each replica, all at once.
        let deliveries: Vec<_> = servers
            .iter()
            .flat_map(|(_, server)| std::iter::repeat_n(server.url(""), 3))
            .map(|url| {
                let (http, event) = (http.clone(), event.clone());
                tokio::spawn(async move { deliver(&http, &url, &event).await })
            })
            .collect();
        for delivery in deliveries {
            let status = delivery.await.expect("delivered").expect("answered");
            assert_eq!(status, 200, "{subscription}: every copy is accepted");
        }
        subscriptions.push(subscription);
    }
    let by_order = licenses_by_order(&upstreams);
    for subscription in &subscriptions {
        only_license(&upstreams, &by_order, subscription, "three replicas");
    }
    assert_no_orphans(&upstreams, &by_order, subscriptions.len(), "three replicas");
    assert_eq!(
        upstreams.licensespring.requests().iter().filter(|r| r.path.contains("/create_order")).count(),
        subscriptions.len(),
        "one create order per subscription: the other copies waited for the lock, then found it done"
    );
    let stored: HashSet<String> = database.subscriptions().await.into_iter().collect();
    assert_eq!(stored, subscriptions.iter().cloned().collect(), "each stored once");
    // Each subscription stored once, by whichever replica created it: the replicas' metrics say so.
    let mut inserts = 0.0;
    for (_, server) in &servers {
        let text =
            http.get(server.url("/metrics")).send().await.expect("answered").text().await.expect("text");
        inserts += text
            .lines()
            .filter(|line| {
                line.starts_with("stripe_licensespring_store_writes_total{")
                    && ["store=\"postgres\"", "operation=\"insert\"", "result=\"ok\""]
                        .iter()
                        .all(|l| line.contains(l))
            })
            .map(|line| line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()).expect("a count"))
            .sum::<f64>();
    }
    assert_eq!(
        inserts,
        subscriptions.len() as f64,
        "one insert per subscription, counted by the replica that made it"
    );
    // Nine deliveries of each event, one record of it, all counted.
    let client = database.client().await;
    let rows =
        client.query("SELECT attempts, handled, outcome FROM deliveries", &[]).await.expect("deliveries");
    assert_eq!(rows.len(), subscriptions.len());
    for row in rows {
        let (attempts, handled, outcome): (i32, bool, String) = (row.get(0), row.get(1), row.get(2));
        assert_eq!((attempts, handled, outcome.as_str()), (9, true, "created"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soak_spread_over_two_replicas_leaves_one_right_license_per_subscription() {
    let Some(database) = TestDatabase::create().await else { return };
    let total = count("REPLICA_SOAK_SUBSCRIPTIONS", 100);
    let seed = seed("SOAK_SEED");
    let upstreams = upstreams().await;
    let servers = replicas(&upstreams, &database.url, 2, &SOAK_SETTINGS);
    let urls: Vec<String> = servers.iter().map(|(_, server)| server.url("")).collect();
    let soak = soak(&upstreams, &urls, total, seed).await;
    let stored: HashSet<String> = database.subscriptions().await.into_iter().collect();
    check_end_state(&upstreams, &soak.subscriptions, &stored, &soak.context);
    eprintln!("delivery soak over two replicas: {}", soak.summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_flow_loses_nothing_and_its_lock_is_released() {
    let Some(database) = TestDatabase::create().await else { return };
    let upstreams = upstreams().await;
    let mut servers = replicas(&upstreams, &database.url, 2, &[("UPSTREAM_TIMEOUT_SECS", "10")]);
    let (_, survivor) = servers.pop().expect("two");
    let (_, doomed) = servers.pop().expect("two");
    let http = http_client();

    // Done before the kill, by the replica about to die: acknowledged, so it must stay done.
    let (done_before, first) = subscribed(&upstreams);
    assert_eq!(deliver(&http, &doomed.url(""), &first).await.expect("answered"), 200);

    // The next flow hangs at LicenseSpring while holding its subscription's lock...
    let (killed_mid_flow, event) = subscribed(&upstreams);
    let create_orders =
        || upstreams.licensespring.requests().iter().filter(|r| r.path.contains("/create_order")).count();
    let before = create_orders();
    upstreams.licensespring.add_fault(Fault::new("/create_order", FaultKind::Hang(Duration::from_secs(8))));
    let in_flight = tokio::spawn({
        let (http, url, event) = (http.clone(), doomed.url(""), event.clone());
        async move { deliver(&http, &url, &event).await }
    });
    let started = Instant::now();
    while create_orders() == before {
        assert!(started.elapsed() < Duration::from_secs(10), "the flow never reached create order");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...when its process dies.
    doomed.kill();
    assert!(in_flight.await.expect("joined").is_err(), "the killed replica never answered");

    // Stripe delivers again, to the other replica: it gets the lock at once (the database let go
    // of the dead one's) and completes the work.
    let started = Instant::now();
    deliver_until_ok(&http, &survivor.url(""), &event, 3).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the dead replica's lock was released at once, not after a timeout ({:?}); the survivor's log:\n{}",
        started.elapsed(),
        survivor.log().join("\n")
    );
    let by_order = licenses_by_order(&upstreams);
    for subscription in [&done_before, &killed_mid_flow] {
        only_license(&upstreams, &by_order, subscription, "after the kill");
    }
    assert_no_orphans(&upstreams, &by_order, 2, "after the kill");
    let stored: HashSet<String> = database.subscriptions().await.into_iter().collect();
    assert_eq!(stored, HashSet::from([done_before, killed_mid_flow]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_is_answered_5xx_then_everything_converges() {
    let Some(database) = TestDatabase::create().await else { return };
    let (proxy, through_proxy) = behind_proxy(&database).await;

    let upstreams = upstreams().await;
    let home = ServerHome::new();
    let server = home.spawn(&upstreams, &[("DATABASE_URL", &through_proxy)]);
    let http = http_client();
    let (before, first) = subscribed(&upstreams);
    assert_eq!(deliver(&http, &server.url(""), &first).await.expect("answered"), 200);

    // The database goes away: deliveries are refused with 5xx (so Stripe retries), promptly.
    proxy.cut().await;
    let during: Vec<(String, SimEvent)> = (0..3).map(|_| subscribed(&upstreams)).collect();
    for (subscription, event) in &during {
        let started = Instant::now();
        let status = deliver(&http, &server.url(""), event).await.expect("answered");
        assert!(status.is_server_error(), "{subscription}: {status} while the database is away");
        assert!(started.elapsed() < Duration::from_secs(25), "answered within Stripe's patience");
    }
    let renewal = upstreams.stripe.renew(&before).expect("renewed");
    assert!(deliver(&http, &server.url(""), &renewal).await.expect("answered").is_server_error());
    let readyz = http.get(server.url("/readyz")).send().await.expect("answered");
    assert_eq!(readyz.status(), 503, "not ready while the database is away");
    let why = readyz.text().await.expect("a body");
    assert!(why.contains("database at 127.0.0.1:"), "{why}");

    // It comes back: ready again, and the redeliveries complete everything, with no restart.
    proxy.restore();
    let started = Instant::now();
    while http.get(server.url("/readyz")).send().await.expect("answered").status() != 200 {
        assert!(started.elapsed() < Duration::from_secs(20), "ready again once the database is back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, event) in &during {
        deliver_until_ok(&http, &server.url(""), event, 20).await;
    }
    deliver_until_ok(&http, &server.url(""), &renewal, 20).await;
    let mut subscriptions: Vec<String> = during.iter().map(|(s, _)| s.clone()).collect();
    subscriptions.push(before.clone());
    let by_order = licenses_by_order(&upstreams);
    for subscription in &subscriptions {
        only_license(&upstreams, &by_order, subscription, "after the database came back");
    }
    let renewed = &by_order[&order_id(&before)][0];
    assert_eq!(
        renewed.validity_period,
        Some(period_end(&upstreams, &before)),
        "the renewal was applied once it could be"
    );
    let stored: HashSet<String> = database.subscriptions().await.into_iter().collect();
    assert_eq!(stored, subscriptions.into_iter().collect::<HashSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_hangs_is_answered_5xx_in_time_and_nothing_is_lost() {
    let Some(database) = TestDatabase::create().await else { return };
    let (proxy, through_proxy) = behind_proxy(&database).await;
    let upstreams = upstreams().await;
    let home = ServerHome::new();
    let server = home.spawn(&upstreams, &[("DATABASE_URL", &through_proxy)]);
    let http = http_client();
    let (subscription, first) = subscribed(&upstreams);
    assert_eq!(deliver(&http, &server.url(""), &first).await.expect("answered"), 200);

    // The database stops answering, its connections left open: the webhook is still answered,
    // 5xx, before Stripe gives up on it (30 s), and /readyz says not ready.
    proxy.freeze();
    let renewal = upstreams.stripe.renew(&subscription).expect("renewed");
    let started = Instant::now();
    let status = deliver(&http, &server.url(""), &renewal).await.expect("answered");
    let waited = started.elapsed();
    assert!(status.is_server_error(), "{status} while the database hangs");
    assert!(waited < Duration::from_secs(26), "answered in time, after {waited:?}");
    let started = Instant::now();
    let readyz = http.get(server.url("/readyz")).send().await.expect("answered");
    assert_eq!(readyz.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(10), "readiness answered in {:?}", started.elapsed());

    // It answers again: the redelivery applies the renewal.
    proxy.thaw();
    deliver_until_ok(&http, &server.url(""), &renewal, 40).await;
    let by_order = licenses_by_order(&upstreams);
    let license = only_license(&upstreams, &by_order, &subscription, "after the hang");
    assert_eq!(license.validity_period, Some(period_end(&upstreams, &subscription)));
    eprintln!("a hanging database: the webhook answered {status} after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_migrate_the_schema_once() {
    let Some(database) = TestDatabase::create().await else { return };
    let upstreams = upstreams().await;
    // Three processes started together on an empty database: each migrates at start, under the
    // migration lock, so one creates the schema and the others find it done.
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let env = {
                let mut env =
                    crate::server_process::server_env(&upstreams, std::path::Path::new("cache.json"));
                env.push(("DATABASE_URL".to_owned(), database.url.clone()));
                env
            };
            std::thread::spawn(move || {
                let home = ServerHome::new();
                let server = ServerProcess::spawn(server_binary(), home.dir.path(), &env);
                (home, server)
            })
        })
        .collect();
    let servers: Vec<_> = starts.into_iter().map(|start| start.join().expect("joined")).collect();
    for (_, server) in &servers {
        let server = server.as_ref().expect("every replica starts");
        let said = server.log().join("\n");
        assert!(!said.contains("ERROR"), "{said}");
    }
    let client = database.client().await;
    let versions: Vec<i32> = client
        .query("SELECT version FROM schema_migrations ORDER BY version", &[])
        .await
        .expect("schema_migrations")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, [1], "each migration recorded once");
    let http = http_client();
    let (_, first) = subscribed(&upstreams);
    for (_, server) in &servers {
        let url = server.as_ref().expect("started").url("");
        assert_eq!(deliver(&http, &url, &first).await.expect("answered"), 200, "every replica serves");
    }
}
