//! Upstream faults: LicenseSpring or Stripe refusing connections, answering too slowly, answering
//! HTML error pages, or dropping the connection. The webhook answers 5xx within a bound derived
//! from the server's timeouts, and the redelivery, once the upstream is back, completes the work.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::server_process::ServerProcess;
use reqwest::Method;
use sim::stripe::{DEFAULT_PRICE_ID, SimEvent};
use sim::{Fault, FaultKind};
use stripe_licensespring::demo::Simulators;
use stripe_licensespring::stripe::RETRY_WINDOW;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::support::*;

/// The server's upstream timeout in these tests (`UPSTREAM_TIMEOUT_SECS`).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(1);
/// A failed webhook is answered within: Stripe's in-process retries, one timed-out call, and
/// slack for a loaded debug build. Far below the 25 s request timeout.
const ANSWER_BOUND: Duration = Duration::from_secs(RETRY_WINDOW.as_secs() + UPSTREAM_TIMEOUT.as_secs() + 3);

/// The server, pointed at the simulators through relays that can refuse connections.
struct Rig {
    upstreams: Simulators,
    stripe_relay: Relay,
    licensespring_relay: Relay,
    server: ServerProcess,
    http: reqwest::Client,
    _home: ServerHome,
}

impl Rig {
    async fn start() -> Rig {
        let upstreams = upstreams().await;
        let stripe_relay = Relay::start(address_of(&upstreams.stripe.base_url())).await;
        let licensespring_relay = Relay::start(address_of(&upstreams.licensespring.base_url())).await;
        let home = ServerHome::new();
        let server = home.spawn(
            &upstreams,
            &[
                ("STRIPE_API_BASE", &format!("http://{}/", stripe_relay.address)),
                ("BASE_URL", &format!("http://{}/", licensespring_relay.address)),
                ("UPSTREAM_TIMEOUT_SECS", &UPSTREAM_TIMEOUT.as_secs().to_string()),
            ],
        );
        Rig { upstreams, stripe_relay, licensespring_relay, server, http: http_client(), _home: home }
    }

    fn subscribe(&self) -> (String, SimEvent) {
        let subscription = self.upstreams.stripe.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
        (subscription, self.upstreams.stripe.events().pop().expect("its invoice.paid"))
    }

    /// Delivers while the fault is in place: a 5xx within [`ANSWER_BOUND`]; how long it took.
    async fn deliver_failing(&self, event: &SimEvent, what: &str) -> Duration {
        let started = Instant::now();
        let status = deliver(&self.http, &self.server.url(""), event).await.expect("answered");
        let elapsed = started.elapsed();
        assert!(status.is_server_error(), "{what}: answered {status}");
        assert!(elapsed < ANSWER_BOUND, "{what}: answered after {elapsed:?}");
        elapsed
    }

    /// With the upstreams healthy again, the redelivery completes the work: one enabled license
    /// with the key Stripe holds.
    async fn redeliver_completes(&self, subscription: &str, event: &SimEvent, what: &str) {
        self.upstreams.stripe.clear_faults();
        self.upstreams.licensespring.clear_faults();
        let status = deliver(&self.http, &self.server.url(""), event).await.expect("answered");
        assert_eq!(status, 200, "{what}: the redelivery");
        let licenses = licenses_by_order(&self.upstreams).remove(&order_id(subscription)).unwrap_or_default();
        assert_eq!(licenses.len(), 1, "{what}: {licenses:?}");
        let in_stripe = self
            .upstreams
            .stripe
            .subscription(subscription)
            .expect("known")
            .metadata
            .get("license_key")
            .cloned();
        assert_eq!(in_stripe.as_deref(), Some(licenses[0].license_key.as_str()), "{what}");
        assert!(licenses[0].enabled, "{what}");
    }

    /// Runs one fault case: `inject`, a failing delivery, the fault cleared, a completing one.
    async fn case(&mut self, what: &str, inject: impl AsyncFnOnce(&mut Rig)) -> Duration {
        let (subscription, event) = self.subscribe();
        inject(self).await;
        let elapsed = self.deliver_failing(&event, what).await;
        self.stripe_relay.restore().await;
        self.licensespring_relay.restore().await;
        self.redeliver_completes(&subscription, &event, what).await;
        eprintln!("upstream faults: {what}: 5xx after {} ms, then completed", elapsed.as_millis());
        elapsed
    }
}

fn address_of(url: &url::Url) -> SocketAddr {
    url.socket_addrs(|| None).expect("a loopback address")[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_answered_5xx_and_the_redelivery_completes_the_work() {
    let mut rig = Rig::start().await;
    rig.case("LicenseSpring refuses connections", async |rig| rig.licensespring_relay.refuse().await).await;
    rig.case("Stripe refuses connections", async |rig| rig.stripe_relay.refuse().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstreams_are_answered_5xx_within_the_timeouts_and_the_redelivery_completes_the_work() {
    let mut rig = Rig::start().await;
    let past_timeout = FaultKind::Hang(UPSTREAM_TIMEOUT + Duration::from_secs(1));
    rig.case("LicenseSpring too slow to create the order", async |rig| {
        rig.upstreams.licensespring.add_fault(Fault::new("/create_order/", past_timeout.clone()));
    })
    .await;
    rig.case("Stripe too slow to read the subscription", async |rig| {
        rig.upstreams
            .stripe
            .add_fault(Fault::new("/v1/subscriptions/", past_timeout.clone()).method(Method::GET));
    })
    .await;
    rig.case("both too slow for every call", async |rig| {
        rig.upstreams.stripe.add_fault(Fault::new("", past_timeout.clone()).times(100));
        rig.upstreams.licensespring.add_fault(Fault::new("", past_timeout.clone()).times(100));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_error_pages_are_answered_5xx_and_the_redelivery_completes_the_work() {
    let mut rig = Rig::start().await;
    let page =
        |status| FaultKind::html(status, "<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>");
    rig.case("LicenseSpring answers an HTML 502", async |rig| {
        rig.upstreams.licensespring.add_fault(Fault::new("/generate_license/", page(502)));
    })
    .await;
    rig.case("LicenseSpring answers an HTML 200", async |rig| {
        rig.upstreams.licensespring.add_fault(Fault::new("/create_order/", page(200)));
    })
    .await;
    // Enough times to outlast the Stripe client's in-process retries.
    rig.case("Stripe answers an HTML 503", async |rig| {
        rig.upstreams
            .stripe
            .add_fault(Fault::new("/v1/subscriptions/", page(503)).method(Method::POST).times(10));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_answered_5xx_and_the_redelivery_completes_the_work() {
    let mut rig = Rig::start().await;
    rig.case("LicenseSpring creates the order, then drops the connection", async |rig| {
        rig.upstreams.licensespring.add_fault(Fault::new("/create_order/", FaultKind::Close).after_effect());
    })
    .await;
    rig.case("Stripe drops every connection", async |rig| {
        rig.upstreams.stripe.add_fault(Fault::new("", FaultKind::Close).times(10));
    })
    .await;
}

/// A TCP relay in front of a simulator. Refusing closes its listening socket (a connection
/// attempt gets ECONNREFUSED) and cuts the connections it relays, so pooled ones fail too;
/// restoring listens on the same port again.
struct Relay {
    address: SocketAddr,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let mut relay = Relay { address: SocketAddr::from(([127, 0, 0, 1], 0)), target, task: None };
        relay.restore().await;
        relay
    }

    /// Returns once the listening socket is closed.
    async fn refuse(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn restore(&mut self) {
        if self.task.is_some() {
            return;
        }
        let socket = TcpSocket::new_v4().expect("socket");
        // The port is reused at once, while the cut connections linger in TIME_WAIT.
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(self.address).expect("the relay's port is free again");
        let listener = socket.listen(128).expect("listens");
        self.address = listener.local_addr().expect("address");
        let target = self.target;
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) cuts every relayed connection.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        // Let the task start: a relay must be listening before it is used.
        tokio::task::yield_now().await;
        self.task = Some(task);
    }
}
