//! HTTP routes: the home page, payment links, health, readiness and metrics, and the Stripe
//! webhook endpoint.
//!
//! What a deployment adds (the sandbox's panel and its controls, in demo mode) comes in from
//! outside as a [`StorePanel`] and a router of its own: this module depends on nothing above it.

mod admin;
mod auth;
mod buyer;
mod ops;
mod store;
mod webhooks;

pub use store::{PriceCatalog, PriceOption, PriceProblem, check_price};

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;
use tracing::field::Empty;

use crate::billing::Billing;
use crate::settings::{Secret, Settings};
use crate::store::Store;
use url::Url;

/// How long any request may take before it is answered 503. Each upstream call has its own, shorter,
/// timeout; this bounds a whole webhook so Stripe always gets an answer within 30 s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(25);

/// How long a webhook's body may take to arrive once its headers have (`408` after that).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest accepted request body; Stripe events are far smaller.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How many large webhook bodies (over [`SMALL_BODY_BYTES`], or of unknown length) may be held in
/// memory at once; more wait their turn. With [`MAX_BODY_BYTES`] this bounds what a flood of large
/// uploads can take. Stripe's events are small and never wait, so slow or large senders cannot
/// hold up genuine deliveries; and a body is dropped before its flow starts.
pub const MAX_BODIES_IN_MEMORY: usize = 16;

/// A webhook body declared at most this long is read without waiting for a permit.
pub const SMALL_BODY_BYTES: u64 = 64 * 1024;

/// A part of the store page that a deployment adds below the store (the sandbox's table of
/// simulated subscriptions, in demo mode). It renders itself, so the store knows nothing of it.
pub trait StorePanel: Send + Sync {
    /// The panel as HTML, drawn fresh for each page view. Whatever it shows from elsewhere must be
    /// escaped by the panel (askama templates do that).
    fn render(&self) -> PanelHtml;
}

/// What a [`StorePanel`] puts on the page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PanelHtml {
    /// Shown above the store, e.g. "this is a sandbox".
    pub notice: String,
    /// Shown below the store.
    pub section: String,
    /// Work is still under way: the page reloads itself in a second.
    pub refresh_soon: bool,
}

/// What a deployment adds to the app: a panel on the store page, and routes of its own (which
/// get the same request logging and time limit as every other route).
#[derive(Default)]
pub struct Extras {
    pub panel: Option<Arc<dyn StorePanel>>,
    pub routes: Router,
}

/// What every handler shares: the upstream clients and the settings they need.
#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

pub struct AppContext {
    /// The configured prices, as the store's buttons show them.
    pub prices: Arc<PriceCatalog>,
    /// Where buyers' browsers reach this server (`PUBLIC_URL`).
    pub public_url: Url,
    /// What the thank-you page calls the product (`PRODUCT_SHORT_CODE`).
    pub product_name: String,
    pub webhook_secrets: Vec<Secret>,
    pub webhook_tolerance: Duration,
    /// Enables `/admin` (`ADMIN_TOKEN`).
    pub admin_token: Option<Secret>,
    /// What `/metrics` asks for as `Authorization: Bearer` (`METRICS_TOKEN`), when set.
    pub metrics_token: Option<Secret>,
    pub billing: Billing,
    /// One permit per large webhook body held in memory ([`MAX_BODIES_IN_MEMORY`]).
    pub body_permits: tokio::sync::Semaphore,
    pub panel: Option<Arc<dyn StorePanel>>,
}

impl AppState {
    pub fn new(
        settings: &Settings,
        store: Store,
        panel: Option<Arc<dyn StorePanel>>,
        public_url: Url,
    ) -> AppState {
        AppState(Arc::new(AppContext {
            prices: Arc::new(PriceCatalog::new(&settings.stripe_price_ids)),
            public_url,
            product_name: settings.product_short_code.clone(),
            webhook_secrets: settings.webhook_secrets.clone(),
            webhook_tolerance: settings.webhook_tolerance,
            admin_token: settings.admin_token.clone(),
            metrics_token: settings.metrics_token.clone(),
            billing: Billing::from_settings(settings, store),
            body_permits: tokio::sync::Semaphore::new(MAX_BODIES_IN_MEMORY),
            panel,
        }))
    }
}

impl AppContext {
    /// `path` (with its query) under `PUBLIC_URL`.
    pub fn public_link(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.public_url.as_str().trim_end_matches('/'))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppContext;
    fn deref(&self) -> &AppContext {
        &self.0
    }
}

/// Every route, with `extra_routes` (a deployment's own) merged in.
pub fn router(state: AppState, extra_routes: Router) -> Router {
    Router::new()
        .route("/", get(store::home))
        .route(
            "/create-payment-link",
            get(store::create_payment_link_json).post(store::create_payment_link_redirect),
        )
        .route("/thank-you", get(buyer::thank_you))
        .route("/billing-portal", axum::routing::post(buyer::billing_portal))
        .route("/admin", get(admin::page))
        .route("/admin/sync", axum::routing::post(admin::sync))
        .route("/favicon.svg", get(favicon))
        .route("/healthz", get(healthz))
        .merge(webhooks::router())
        .merge(ops::router())
        .with_state(state)
        .merge(extra_routes)
        .fallback(not_found)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_request)
                // 5xx answers are already logged, at WARN, by `log_request`.
                .on_failure(()),
        )
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, REQUEST_TIMEOUT))
        // Outermost, so that it sees the timeout's 503 too.
        .layer(axum::middleware::from_fn(ops::count_webhook_5xx))
}

/// Each request's span: the handlers fill in what they learn (a webhook's event, subscription and
/// outcome; an upstream's error), and [`log_request`] writes it all as the request's one log line.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> Span {
    tracing::info_span!(
        "request",
        method = %request.method(),
        uri = %request.uri(),
        event_id = Empty,
        event_type = Empty,
        subscription = Empty,
        outcome = Empty,
        detail = Empty,
        error = Empty,
    )
}

/// The one log line per request, in its span: WARN for a 5xx answer, INFO otherwise.
fn log_request(response: &Response, latency: Duration, _span: &Span) {
    let status = response.status().as_u16();
    // Hundredths of a millisecond: enough to read, and no float noise in the log.
    let latency_ms = (latency.as_secs_f64() * 100_000.0).round() / 100.0;
    if response.status().is_server_error() {
        tracing::warn!(status, latency_ms, "answered");
    } else {
        tracing::info!(status, latency_ms, "answered");
    }
}

/// Adds a fact to the current request's log line (a field declared in [`request_span`]).
pub(crate) fn note(field: &'static str, value: &dyn std::fmt::Display) {
    Span::current().record(field, tracing::field::display(value));
}

/// The name at the top of every page.
pub const STORE_NAME: &str = "Software store";

/// A page saying in a sentence how things stand, with a link back to the store: an error (what
/// went wrong and what to do) or a notice (nothing went wrong).
#[derive(Template, WebTemplate)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub title: String,
    pub message: String,
    /// The card's style: `error` or `notice`.
    tone: &'static str,
}

impl MessagePage {
    pub fn error(title: &str, message: impl Into<String>) -> MessagePage {
        MessagePage { title: title.to_owned(), message: message.into(), tone: "error" }
    }

    pub fn notice(title: &str, message: impl Into<String>) -> MessagePage {
        MessagePage { title: title.to_owned(), message: message.into(), tone: "notice" }
    }
}

const FAVICON: &str = include_str!("../../templates/favicon.svg");

async fn favicon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=86400")], FAVICON)
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found")
}
