//! Shared test harness: the real server on a loopback port, and a scripted upstream that records
//! every request it receives.
#![allow(dead_code)] // each test module uses a different part of the harness

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
pub use sim::RecordedRequest;
use stripe_licensespring::App;
use stripe_licensespring::demo::Simulators;
use stripe_licensespring::settings::Settings;

/// Settings a test starts from: every required value set, upstreams pointed at `stripe_base` and
/// `licensespring_base`, and the cache in a fresh temporary directory.
pub struct TestSettings {
    pub values: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
}

pub const STRIPE_KEY: &str = "sk_test_51TestKeyDoNotLeak0000000000";
pub const LICENSESPRING_KEY: &str = "AbCdEfGh.0123456789abcdefghijklmnopqrstuv";
pub const WEBHOOK_SECRET: &str = "whsec_test_secret_abc123";
pub const PRICE_ID: &str = "price_1TestMonthly00000001";
pub const PRODUCT_CODE: &str = "ACME";
pub const ORDER_BASE: &str = stripe_licensespring::demo::ORDER_BASE_STRING;

impl TestSettings {
    pub fn new(stripe_base: &str, licensespring_base: &str) -> TestSettings {
        let dir = tempfile::tempdir().expect("temp dir");
        let cache = dir.path().join("cache.json");
        let values = [
            ("API_MANAGAMENT_KEY", LICENSESPRING_KEY),
            ("PRODUCT_SHORT_CODE", PRODUCT_CODE),
            ("ORDER_BASE_STRING", ORDER_BASE),
            ("BASE_URL", licensespring_base),
            ("STRIPE_PRIVATE_KEY", STRIPE_KEY),
            ("STRIPE_PRODUCT", PRICE_ID),
            ("STRIPE_SECRET", WEBHOOK_SECRET),
            ("STRIPE_API_BASE", stripe_base),
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("CACHE_PATH", cache.to_str().expect("utf-8 temp path")),
            ("UPSTREAM_TIMEOUT_SECS", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        TestSettings { values, dir }
    }

    /// Settings pointing at `simulators` (their keys, first price and product), with the cache in
    /// a fresh temporary directory.
    pub fn for_simulators(simulators: &Simulators) -> TestSettings {
        let mut settings = TestSettings::new("http://127.0.0.1:9", "http://127.0.0.1:9");
        for (name, value) in simulators.settings() {
            settings = settings.set(&name, &value);
        }
        settings
    }

    pub fn set(mut self, name: &str, value: &str) -> TestSettings {
        self.values.retain(|(k, _)| k != name);
        self.values.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn settings(&self) -> Settings {
        Settings::from_lookup(|name| self.values.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .expect("test settings are valid")
    }
}

/// The real application, serving on a free loopback port until dropped.
pub struct TestApp {
    pub address: SocketAddr,
    pub http: reqwest::Client,
    pub settings: TestSettings,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestApp {
    pub async fn spawn(settings: TestSettings) -> TestApp {
        let app = App::build(&settings.settings()).await.expect("the app starts");
        let address = app.address();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.serve(async {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(40))
            .build()
            .expect("client");
        TestApp { address, http, settings, shutdown: Some(tx) }
    }

    /// The app with `stripe` answering as Stripe: the start reads each configured price (answered
    /// here, monthly USD 5.00), then the upstream's log is cleared, so a test sees its own requests.
    pub async fn spawn_with_scripted_stripe(settings: TestSettings, stripe: &ScriptedUpstream) -> TestApp {
        let prices = settings.settings().stripe_price_ids;
        for price in &prices {
            stripe.push(Scripted::json(200, price_json(price)));
        }
        let app = TestApp::spawn(settings).await;
        let read: Vec<String> = stripe.requests().iter().map(|r| r.path.clone()).collect();
        let expected: Vec<String> = prices.iter().map(|price| format!("/v1/prices/{price}")).collect();
        assert_eq!(read, expected, "the start reads each configured price once");
        stripe.clear_requests();
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("request reaches the app")
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.http.post(self.url(path)).send().await.expect("request reaches the app")
    }

    /// POSTs a form, as a page's `<form method="post">` does.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        self.http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("request reaches the app")
    }

    /// POSTs `body` to `/webhooks` as Stripe does, with this `Stripe-Signature` (none when `None`).
    pub async fn post_webhook(
        &self,
        body: impl Into<reqwest::Body>,
        signature: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url("/webhooks"))
            .header("content-type", "application/json; charset=utf-8")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        request.send().await.expect("request reaches the app")
    }
}

/// A `Stripe-Signature` value for `body`, signed with `secret` at Unix time `t`, the way Stripe
/// signs: HMAC-SHA256 of `"{t}.{body}"`, keyed by the whole secret, as lower-case hex.
pub fn sign(body: &[u8], secret: &str, t: i64) -> String {
    sim::sign_stripe_payload(body, secret, t)
}

/// Stripe's answer for a recurring price: USD 5.00 a month.
pub fn price_json(id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "object": "price", "active": true, "currency": "usd", "unit_amount": 500,
        "type": "recurring", "recurring": {"interval": "month", "interval_count": 1},
        "product": "prod_1Test"
    })
}

/// The current Unix time, for signing.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// What the scripted upstream answers next.
#[derive(Debug, Clone)]
pub enum Scripted {
    Answer {
        status: u16,
        content_type: &'static str,
        body: String,
        /// Extra response headers, e.g. `Stripe-Should-Retry`.
        headers: Vec<(&'static str, &'static str)>,
    },
    /// Waits this long before answering 200 `{}`: longer than the client's timeout means a hang.
    Hang(Duration),
}

impl Scripted {
    pub fn json(status: u16, body: serde_json::Value) -> Scripted {
        Scripted::Answer {
            status,
            content_type: "application/json",
            body: body.to_string(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, body: &str) -> Scripted {
        Scripted::Answer { status, content_type: "text/html", body: body.to_owned(), headers: Vec::new() }
    }

    /// The same answer with one more response header.
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> Scripted {
        if let Scripted::Answer { headers, .. } = &mut self {
            headers.push((name, value));
        }
        self
    }
}

#[derive(Default)]
struct Script {
    requests: Vec<RecordedRequest>,
    queue: VecDeque<Scripted>,
    fallback: Option<Scripted>,
}

/// A fake upstream that answers from a script (a queue, then a fallback; `200 {}` when both are
/// empty) and records each request exactly, for tests of what a client sends.
#[derive(Clone)]
pub struct ScriptedUpstream {
    pub base_url: String,
    script: Arc<Mutex<Script>>,
}

impl ScriptedUpstream {
    pub async fn start() -> ScriptedUpstream {
        let script = Arc::new(Mutex::new(Script::default()));
        let shared = script.clone();
        let app =
            axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let script = shared.clone();
                async move { answer(script, method, uri, headers, body).await }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ScriptedUpstream { base_url: format!("http://{address}"), script }
    }

    /// Answers the next request with this, then go back to the queue/fallback.
    pub fn push(&self, answer: Scripted) {
        self.script.lock().unwrap().queue.push_back(answer);
    }

    /// Answers every request (after the queue) with this.
    pub fn always(&self, answer: Scripted) {
        self.script.lock().unwrap().fallback = Some(answer);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.script.lock().unwrap().requests.clone()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.script.lock().unwrap().requests.clear();
    }
}

async fn answer(
    script: Arc<Mutex<Script>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let next = {
        let mut script = script.lock().unwrap();
        script.requests.push(RecordedRequest {
            method,
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers,
            body,
        });
        script.queue.pop_front().or_else(|| script.fallback.clone())
    };
    match next {
        None => (StatusCode::OK, [("content-type", "application/json")], "{}").into_response(),
        Some(Scripted::Answer { status, content_type, body, headers }) => {
            let mut response =
                (StatusCode::from_u16(status).expect("valid status"), [("content-type", content_type)], body)
                    .into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, axum::http::HeaderValue::from_static(value));
            }
            response
        }
        Some(Scripted::Hang(duration)) => {
            tokio::time::sleep(duration).await;
            (StatusCode::OK, [("content-type", "application/json")], "{}").into_response()
        }
    }
}
