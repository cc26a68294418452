//! Stripe API client: the few REST calls this server makes, form-encoded as Stripe expects, with
//! Stripe's error JSON turned into a typed error. The base URL is configurable so tests and the
//! sandbox point it at a local simulator.
//!
//! Subscription calls retry retryable failures in process, briefly: see [`RETRY_DELAYS`].

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;

use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::model::{
    BillingInterval, ExpandableId, IntervalUnit, LicenseKey, SubscriptionId, SubscriptionStatus,
};
use crate::settings::Secret;
use crate::upstream::{self, TransportFailure};

/// Pauses before the in-process retries of a subscription call (at most two retries), each
/// scaled by a random factor in [½, 1] (Stripe's advice: exponential backoff with jitter).
pub const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(500), Duration::from_millis(1000)];

/// No retry starts later than this after the first attempt, so a subscription call takes at most
/// this plus one upstream timeout. A timeout is not retried in process: it has already used the
/// call's whole time budget, and Stripe's redelivery of the webhook will come back to it.
pub const RETRY_WINDOW: Duration = Duration::from_secs(3);

/// Why a Stripe call failed. Never carries the API key.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with an error status; `message` is Stripe's own.
    #[error("Stripe answered {status}: {message}")]
    Api {
        status: u16,
        error_type: Option<String>,
        code: Option<String>,
        message: String,
        /// What `Stripe-Should-Retry` said, when present.
        should_retry: Option<bool>,
    },
    #[error("Stripe did not answer in time")]
    Timeout,
    #[error("could not reach Stripe: {0}")]
    Transport(String),
    #[error("Stripe's answer could not be read: {0}")]
    Unreadable(String),
    /// Refused before sending: the id would not be one URL path segment.
    #[error("not a Stripe object id (letters, digits and _ only): {0:?}")]
    InvalidId(String),
}

impl StripeError {
    /// Whether trying the same request again may succeed (Stripe's own retry rules: the
    /// `Stripe-Should-Retry` header wins; then network faults, 409, 429 and 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            StripeError::Api { status, should_retry, .. } => {
                should_retry.unwrap_or(*status == 409 || *status == 429 || *status >= 500)
            }
            StripeError::Timeout | StripeError::Transport(_) => true,
            StripeError::Unreadable(_) | StripeError::InvalidId(_) => false,
        }
    }

    /// The HTTP status Stripe answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            StripeError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A created Payment Link; the server needs only its URL.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentLink {
    pub id: String,
    pub url: String,
}

/// A Stripe subscription, read from either payload generation (before and from
/// `2025-03-31.basil`): from `GET /v1/subscriptions/{id}`, or from a webhook's `data.object`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSubscription")]
pub struct Subscription {
    pub id: SubscriptionId,
    pub status: SubscriptionStatus,
    /// `metadata.license_key`, once this server has written it.
    pub license_key: Option<LicenseKey>,
    pub metadata: BTreeMap<String, String>,
    /// The customer's id (`cus_...`).
    pub customer: Option<String>,
    /// The first recurring item's price id (`None` for a legacy plan without a price).
    pub price_id: Option<String>,
    /// That item's `quantity` (seats); 1 when Stripe gives none.
    pub quantity: u32,
    /// The first recurring item's `price.recurring` (else legacy `plan`) interval and count.
    pub interval: BillingInterval,
    /// The current period: top-level before basil, per item from basil on (the latest).
    pub current_period_start: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub trial_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    /// The most recent invoice, when the answer expanded it (`expand[]=latest_invoice`).
    pub latest_invoice: Option<InvoiceSummary>,
    pub canceled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// What the license depends on of an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InvoiceSummary {
    pub id: String,
    /// `draft`, `open`, `paid`, `uncollectible` or `void`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub amount_paid: Option<i64>,
}

impl InvoiceSummary {
    pub fn is_paid(&self) -> bool {
        self.status.as_deref() == Some("paid")
    }
}

#[derive(Deserialize)]
struct RawSubscription {
    id: SubscriptionId,
    status: SubscriptionStatus,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    customer: Option<ExpandableId>,
    #[serde(default)]
    current_period_start: Option<i64>,
    #[serde(default)]
    current_period_end: Option<i64>,
    #[serde(default)]
    trial_end: Option<i64>,
    #[serde(default)]
    cancel_at_period_end: bool,
    #[serde(default)]
    latest_invoice: Option<ExpandableInvoice>,
    #[serde(default)]
    canceled_at: Option<i64>,
    #[serde(default)]
    ended_at: Option<i64>,
    items: RawItems,
}

/// `latest_invoice`: an id, or the invoice itself when expanded.
#[derive(Deserialize)]
#[serde(untagged)]
enum ExpandableInvoice {
    Expanded(InvoiceSummary),
    /// Not expanded: only its id (a string; an expanded invoice that does not parse stays an error).
    Id(#[allow(dead_code)] String),
}

#[derive(Deserialize)]
struct RawItems {
    data: Vec<RawItem>,
}

#[derive(Deserialize)]
struct RawItem {
    #[serde(default)]
    price: Option<RawPrice>,
    #[serde(default)]
    plan: Option<RawRecurring>,
    #[serde(default)]
    quantity: Option<u32>,
    #[serde(default)]
    current_period_start: Option<i64>,
    #[serde(default)]
    current_period_end: Option<i64>,
}

#[derive(Deserialize)]
struct RawPrice {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    recurring: Option<RawRecurring>,
}

#[derive(Deserialize)]
struct RawRecurring {
    interval: String,
    interval_count: u32,
}

impl TryFrom<RawSubscription> for Subscription {
    type Error = String;

    fn try_from(raw: RawSubscription) -> Result<Subscription, String> {
        let (item, recurring) = raw
            .items
            .data
            .iter()
            .find_map(|item| {
                let recurring = item.price.as_ref().and_then(|p| p.recurring.as_ref()).or(item.plan.as_ref());
                recurring.map(|recurring| (item, recurring))
            })
            .ok_or_else(|| format!("subscription {} has no recurring price", raw.id))?;
        let unit = IntervalUnit::parse(&recurring.interval)
            .ok_or_else(|| format!("subscription {}: unknown interval {:?}", raw.id, recurring.interval))?;
        let interval = BillingInterval { unit, count: recurring.interval_count };
        let price_id = item.price.as_ref().and_then(|price| price.id.clone());
        let quantity = item.quantity.unwrap_or(1);
        let latest = |field: fn(&RawItem) -> Option<i64>, top: Option<i64>| {
            raw.items.data.iter().filter_map(field).chain(top).max().map(timestamp).transpose()
        };
        let current_period_start = latest(|item| item.current_period_start, raw.current_period_start)?;
        let current_period_end = latest(|item| item.current_period_end, raw.current_period_end)?;
        let latest_invoice = match raw.latest_invoice {
            Some(ExpandableInvoice::Expanded(invoice)) => Some(invoice),
            Some(ExpandableInvoice::Id(_)) | None => None,
        };
        let license_key = raw
            .metadata
            .get("license_key")
            .filter(|key| !key.trim().is_empty())
            .map(|key| LicenseKey(key.clone()));
        Ok(Subscription {
            license_key,
            customer: raw.customer.map(|ExpandableId(id)| id),
            price_id,
            quantity,
            interval,
            current_period_start,
            current_period_end,
            trial_end: raw.trial_end.map(timestamp).transpose()?,
            cancel_at_period_end: raw.cancel_at_period_end,
            latest_invoice,
            canceled_at: raw.canceled_at.map(timestamp).transpose()?,
            ended_at: raw.ended_at.map(timestamp).transpose()?,
            id: raw.id,
            status: raw.status,
            metadata: raw.metadata,
        })
    }
}

fn timestamp(seconds: i64) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp(seconds, 0).ok_or_else(|| format!("timestamp {seconds} is out of range"))
}

/// A Stripe price, as the store shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawFullPrice")]
pub struct Price {
    pub id: String,
    /// `None` for a one-time price.
    pub interval: Option<BillingInterval>,
    /// In the currency's smallest unit (cents); `None` for tiered or custom prices.
    pub unit_amount: Option<i64>,
    /// Lower-case ISO code, e.g. `usd`.
    pub currency: String,
    /// `false` once archived in the Dashboard.
    pub active: bool,
}

#[derive(Deserialize)]
struct RawFullPrice {
    id: String,
    #[serde(default)]
    recurring: Option<RawRecurring>,
    #[serde(default)]
    unit_amount: Option<i64>,
    #[serde(default)]
    currency: String,
    #[serde(default = "active_by_default")]
    active: bool,
}

fn active_by_default() -> bool {
    true
}

impl TryFrom<RawFullPrice> for Price {
    type Error = String;

    fn try_from(raw: RawFullPrice) -> Result<Price, String> {
        let interval = match raw.recurring {
            None => None,
            Some(recurring) => {
                let unit = IntervalUnit::parse(&recurring.interval)
                    .ok_or_else(|| format!("price {}: unknown interval {:?}", raw.id, recurring.interval))?;
                Some(BillingInterval { unit, count: recurring.interval_count })
            }
        };
        Ok(Price {
            id: raw.id,
            interval,
            unit_amount: raw.unit_amount,
            currency: raw.currency,
            active: raw.active,
        })
    }
}

#[derive(Serialize)]
struct LicenseKeyMetadata<'a> {
    metadata: LicenseKeyField<'a>,
}

#[derive(Serialize)]
struct LicenseKeyField<'a> {
    license_key: &'a LicenseKey,
}

#[derive(Serialize)]
struct LineItem<'a> {
    price: &'a str,
    quantity: u32,
}

#[derive(Serialize)]
struct CreatePaymentLink<'a> {
    line_items: [LineItem<'a>; 1],
    after_completion: AfterCompletion<'a>,
}

#[derive(Serialize)]
struct AfterCompletion<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    redirect: Redirect<'a>,
}

#[derive(Serialize)]
struct Redirect<'a> {
    url: &'a str,
}

#[derive(Serialize)]
struct CreatePortalSession<'a> {
    customer: &'a str,
    return_url: &'a str,
}

/// A Checkout Session (what a payment link's checkout made), as the thank-you page reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    /// `open`, `complete` or `expired`.
    #[serde(default)]
    pub status: Option<String>,
    /// `paid`, `unpaid` (still processing) or `no_payment_required` (e.g. a free trial).
    #[serde(default)]
    pub payment_status: Option<String>,
    #[serde(default)]
    pub subscription: Option<ExpandableId>,
    #[serde(default)]
    pub customer: Option<ExpandableId>,
    #[serde(default)]
    pub customer_details: Option<CustomerDetails>,
}

/// The buyer, as Checkout (or a Customer) records them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CustomerDetails {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// A Stripe customer (`GET /v1/customers/{id}`); a deleted one has neither email nor name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(flatten)]
    pub details: CustomerDetails,
}

/// One page of a Stripe list (`{"object": "list", "has_more": ..., "data": [...]}`), newest first.
#[derive(Debug, Clone, Deserialize)]
pub struct ListPage<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

/// An event from `GET /v1/events`: its JSON as it would have been delivered.
#[derive(Debug, Clone)]
pub struct ListedEvent {
    pub id: String,
    pub created: i64,
    /// The event's JSON, for the same parser a delivery goes through.
    pub body: Vec<u8>,
}

impl<'de> Deserialize<'de> for ListedEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let id = value.get("id").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
        let created = value.get("created").and_then(serde_json::Value::as_i64).unwrap_or_default();
        let body = serde_json::to_vec(&value).map_err(serde::de::Error::custom)?;
        Ok(ListedEvent { id, created, body })
    }
}

/// Stripe's largest page.
pub const PAGE_LIMIT: &str = "100";

/// A customer portal session: where to send the customer.
#[derive(Debug, Clone, Deserialize)]
pub struct PortalSession {
    pub url: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    error_type: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

/// One Stripe account's API, reached through one pooled HTTP client.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: Url,
    secret_key: Secret,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl StripeClient {
    pub fn new(base: Url, secret_key: Secret, timeout: Duration) -> StripeClient {
        StripeClient { http: upstream::http_client(timeout), base, secret_key }
    }

    /// `POST /v1/payment_links` selling one unit of a recurring price; after payment Stripe sends
    /// the buyer to `redirect_url`, in which `{CHECKOUT_SESSION_ID}` becomes the session's id.
    pub async fn create_payment_link(
        &self,
        price_id: &str,
        redirect_url: &str,
    ) -> Result<PaymentLink, StripeError> {
        let form = CreatePaymentLink {
            line_items: [LineItem { price: price_id, quantity: 1 }],
            after_completion: AfterCompletion { kind: "redirect", redirect: Redirect { url: redirect_url } },
        };
        self.post_form("create_payment_link", "/v1/payment_links", &form, None).await
    }

    /// `GET /v1/checkout/sessions/{id}`. Retries retryable failures briefly.
    pub async fn retrieve_checkout_session(&self, id: &str) -> Result<CheckoutSession, StripeError> {
        let path = format!("/v1/checkout/sessions/{}", path_segment(id)?);
        with_retries(|| self.get("retrieve_checkout_session", &path, &[])).await
    }

    /// `GET /v1/customers/{id}`. Retries retryable failures briefly.
    pub async fn retrieve_customer(&self, id: &str) -> Result<Customer, StripeError> {
        let path = format!("/v1/customers/{}", path_segment(id)?);
        with_retries(|| self.get("retrieve_customer", &path, &[])).await
    }

    /// `POST /v1/billing_portal/sessions`: a customer portal session for `customer`, whose back
    /// link goes to `return_url`. Not retried: a retry could make a second session, and the
    /// customer can press the button again.
    pub async fn create_portal_session(
        &self,
        customer: &str,
        return_url: &str,
    ) -> Result<PortalSession, StripeError> {
        let form = CreatePortalSession { customer, return_url };
        self.post_form("create_portal_session", "/v1/billing_portal/sessions", &form, None).await
    }

    /// `GET /v1/subscriptions/{id}?expand[]=latest_invoice`: the live subscription (its metadata
    /// is authoritative, unlike an invoice's snapshot) and whether its latest invoice is paid.
    /// Retries retryable failures briefly, see [`RETRY_DELAYS`].
    pub async fn retrieve_subscription(&self, id: &SubscriptionId) -> Result<Subscription, StripeError> {
        let path = format!("/v1/subscriptions/{}", path_segment(id.as_str())?);
        with_retries(|| self.get("retrieve_subscription", &path, &[("expand[]", "latest_invoice")])).await
    }

    /// One page of `GET /v1/subscriptions?status=all&price=..&limit=100&expand[]=data.latest_invoice`
    /// (every status, canceled too), after the subscription `starting_after`.
    pub async fn list_subscriptions(
        &self,
        price_id: &str,
        starting_after: Option<&str>,
    ) -> Result<ListPage<Subscription>, StripeError> {
        let mut query = vec![
            ("status", "all"),
            ("price", price_id),
            ("limit", PAGE_LIMIT),
            ("expand[]", "data.latest_invoice"),
        ];
        query.extend(starting_after.map(|id| ("starting_after", id)));
        with_retries(|| self.get("list_subscriptions", "/v1/subscriptions", &query)).await
    }

    /// One page of `GET /v1/events` of these types created at `created_gte` or later, after the
    /// event `starting_after` (newest first; Stripe keeps 30 days).
    pub async fn list_events(
        &self,
        types: &[&str],
        created_gte: i64,
        starting_after: Option<&str>,
    ) -> Result<ListPage<ListedEvent>, StripeError> {
        let created = created_gte.to_string();
        let mut query: Vec<(&str, &str)> = types.iter().map(|kind| ("types[]", *kind)).collect();
        query.push(("created[gte]", &created));
        query.push(("limit", PAGE_LIMIT));
        query.extend(starting_after.map(|id| ("starting_after", id)));
        with_retries(|| self.get("list_events", "/v1/events", &query)).await
    }

    /// `GET /v1/prices/{id}`: what the store shows on a subscribe button, and whether the price is
    /// recurring. Not retried: the caller reads the prices again later when Stripe did not answer.
    pub async fn retrieve_price(&self, id: &str) -> Result<Price, StripeError> {
        let path = format!("/v1/prices/{}", path_segment(id)?);
        self.get("retrieve_price", &path, &[]).await
    }

    /// `POST /v1/subscriptions/{id}` with `metadata[license_key]=..` (Stripe merges metadata, so
    /// other keys stay). One fresh `Idempotency-Key` per call, reused only by this call's own
    /// retries: a key reused by a later webhook delivery could replay a saved 500 for a day.
    pub async fn set_subscription_license_key(
        &self,
        id: &SubscriptionId,
        license_key: &LicenseKey,
    ) -> Result<Subscription, StripeError> {
        let path = format!("/v1/subscriptions/{}", path_segment(id.as_str())?);
        let form = LicenseKeyMetadata { metadata: LicenseKeyField { license_key } };
        let idempotency_key = new_idempotency_key();
        with_retries(|| self.post_form("update_subscription", &path, &form, Some(&idempotency_key))).await
    }

    /// POSTs a form body with Stripe's nested-bracket encoding (`a[0][b]=c`); `operation` names
    /// the call in the metrics.
    pub(crate) async fn post_form<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        form: &impl Serialize,
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let body = serde_qs::to_string(form)
            .map_err(|e| StripeError::Unreadable(format!("cannot encode form: {e}")))?;
        let mut request = self
            .http
            .post(upstream::url_under(&self.base, path))
            .bearer_auth(self.secret_key.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        Self::read(upstream::exchange("stripe", operation, request).await)
    }

    /// GETs `path` with `query` (`expand[]` and the like, encoded as Stripe expects); `operation`
    /// names the call in the metrics.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, StripeError> {
        let mut request =
            self.http.get(upstream::url_under(&self.base, path)).bearer_auth(self.secret_key.expose());
        if !query.is_empty() {
            request = request.query(query);
        }
        Self::read(upstream::exchange("stripe", operation, request).await)
    }

    fn read<T: DeserializeOwned>(answer: reqwest::Result<upstream::Answer>) -> Result<T, StripeError> {
        let upstream::Answer { status, headers, body: bytes } = answer.map_err(transport_error)?;
        let should_retry = headers
            .get("Stripe-Should-Retry")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<bool>().ok());
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| StripeError::Unreadable(e.to_string()));
        }
        let (error_type, code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody { error }) => (error.error_type, error.code, error.message),
            Err(_) => (None, None, None),
        };
        Err(StripeError::Api {
            status: status.as_u16(),
            error_type,
            code,
            message: message.unwrap_or_else(|| upstream::excerpt(&bytes)),
            should_retry,
        })
    }
}

fn transport_error(error: reqwest::Error) -> StripeError {
    match TransportFailure::from(error) {
        TransportFailure::Timeout => StripeError::Timeout,
        TransportFailure::Failed(reason) => StripeError::Transport(reason),
    }
}

/// A Stripe id as one URL path segment: anything but letters, digits and `_` is refused, so an id
/// can never add path segments or a query.
fn path_segment(id: &str) -> Result<&str, StripeError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(id)
    } else {
        Err(StripeError::InvalidId(id.to_owned()))
    }
}

/// 32 random letters and digits (Stripe allows up to 255 characters).
fn new_idempotency_key() -> String {
    rand::rng().sample_iter(Alphanumeric).take(32).map(char::from).collect()
}

/// Runs `attempt`, then again after [`RETRY_DELAYS`] (with jitter) while it fails retryably, within
/// [`RETRY_WINDOW`]. The caller's closure must send the same request (and Idempotency-Key) each time.
async fn with_retries<T, F, Fut>(mut attempt: F) -> Result<T, StripeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StripeError>>,
{
    let started = Instant::now();
    let mut delays = RETRY_DELAYS.iter();
    loop {
        let error = match attempt().await {
            Err(error) if error.is_retryable() && !matches!(error, StripeError::Timeout) => error,
            result => return result,
        };
        let Some(delay) = delays.next() else { return Err(error) };
        let delay = delay.mul_f64(rand::rng().random_range(0.5..=1.0));
        if started.elapsed() + delay > RETRY_WINDOW {
            return Err(error);
        }
        tracing::debug!(%error, delay_ms = delay.as_millis(), "retrying a Stripe call");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deleted_subscription(generation: &str) -> serde_json::Value {
        let path = format!(
            "{}/tests/fixtures/stripe/events/{generation}/customer.subscription.deleted.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).expect("fixture");
        let event: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
        event["data"]["object"].clone()
    }

    fn at(seconds: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(seconds, 0)
    }

    #[test]
    fn both_generations_read_into_the_same_subscription() {
        for generation in ["acacia", "basil"] {
            let subscription: Subscription =
                serde_json::from_value(deleted_subscription(generation)).expect(generation);
            assert_eq!(subscription.id.as_str(), "sub_1TestLicense0000000001", "{generation}");
            assert_eq!(subscription.status, SubscriptionStatus::Canceled);
            assert_eq!(subscription.license_key, Some(LicenseKey("TEST-7KQM-4XRW-9BNC".to_owned())));
            assert_eq!(subscription.interval, BillingInterval { unit: IntervalUnit::Month, count: 1 });
            assert_eq!(subscription.current_period_end, at(1769270400), "{generation}");
            assert_eq!(subscription.canceled_at, at(1767456000));
            assert_eq!(subscription.ended_at, at(1767456000));
        }
    }

    #[test]
    fn period_end_is_the_latest_of_the_items_and_plan_is_a_fallback() {
        let subscription: Subscription = serde_json::from_value(serde_json::json!({
            "id": "sub_1", "status": "active", "metadata": {},
            "items": {"data": [
                {"plan": {"interval": "week", "interval_count": 2}, "current_period_end": 1700000000},
                {"price": {"recurring": null}, "current_period_end": 1800000000},
            ]},
        }))
        .expect("subscription");
        assert_eq!(subscription.interval, BillingInterval { unit: IntervalUnit::Week, count: 2 });
        assert_eq!(subscription.current_period_end, at(1800000000));
        assert_eq!(subscription.license_key, None);
        assert_eq!((subscription.canceled_at, subscription.ended_at), (None, None));
    }

    #[test]
    fn a_subscription_without_a_recurring_price_is_unreadable() {
        let read = |items| {
            serde_json::from_value::<Subscription>(
                serde_json::json!({"id": "sub_1", "status": "active", "items": {"data": items}}),
            )
            .map_err(|e| e.to_string())
        };
        let error = read(serde_json::json!([])).expect_err("no items");
        assert!(error.contains("sub_1 has no recurring price"), "{error}");
        let error = read(serde_json::json!([{"plan": {"interval": "fortnight", "interval_count": 1}}]))
            .expect_err("unit");
        assert!(error.contains("unknown interval \"fortnight\""), "{error}");
    }

    #[test]
    fn only_plain_ids_become_path_segments() {
        assert_eq!(path_segment("sub_1TestLicense0000000001").ok(), Some("sub_1TestLicense0000000001"));
        for bad in ["", "sub_1/../../v1/customers", "sub_1?expand=x", "sub_1%2F", "sub 1", "süb_1"] {
            assert!(matches!(path_segment(bad), Err(StripeError::InvalidId(_))), "{bad:?}");
        }
    }

    #[test]
    fn idempotency_keys_are_fresh() {
        let (a, b) = (new_idempotency_key(), new_idempotency_key());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
