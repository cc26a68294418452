//! A Stripe simulator: the REST calls `stripe-licensespring` makes (payment links, reading and
//! updating a subscription, reading a price), a checkout page that "pays" a payment link,
//! programmatic renewals and cancellations on a simulated clock, and the `invoice.paid` and
//! `customer.subscription.deleted` events those produce, rendered in either payload generation
//! and delivered as signed webhooks with retries, as Stripe does.
//!
//! The subscription lifecycle is simulated too: trials, seats (quantity), price switches (with a
//! proration invoice when the interval changes), `cancel_at_period_end`, failed renewal payments
//! with a retry schedule ending in `unpaid` or `canceled`, and pause/resume (`status: paused`).
//! Each change emits what Stripe emits, in Stripe's order: `customer.subscription.created`,
//! `customer.subscription.updated` (with `data.previous_attributes`), `.paused`, `.resumed`,
//! `.deleted`, `invoice.paid`, `invoice.payment_failed`, `invoice.marked_uncollectible`,
//! `invoice.voided`.
//!
//! Everything is in memory; nothing leaves the machine. What is not modelled: `invoice.created`,
//! `invoice.finalized`, `customer.subscription.trial_will_end`, `pause_collection`, pending
//! invoice items (a quantity change invoices nothing), the fake `v0` signature of test-mode
//! deliveries, `customer.created`/`customer.updated`, `checkout.session.async_payment_failed`,
//! and the portal's payment-method, invoice-history and profile pages.
//!
//! Reconciliation and replay read `GET /v1/subscriptions` and `GET /v1/events` (filters,
//! cursor pagination, `data.` expansions, the events' 30-day window, `delivery_success`); to make
//! drift to find, [`StripeSim::lose_next_deliveries`] and [`StripeSim::lose_deliveries_of`] keep
//! events from ever reaching the webhook endpoint.
//!
//! This file holds the handle and the public types; `state` the store, the simulated clock and
//! the billing; `webhooks` event emission, signing and delivery; `http` the REST API (`http/lists` its list calls); `render`
//! the JSON of Stripe's objects; `checkout` the checkout pages; `sessions` Checkout Sessions,
//! customers and customer portal sessions; `portal` the customer portal's pages.
//!
//! Checkout: opening a payment link's page (`GET /checkout/{plink}`) opens a Checkout Session;
//! paying completes it (`customer.subscription.created`, `invoice.paid`, then
//! `checkout.session.completed`) and sends the buyer to the link's redirect URL with
//! `{CHECKOUT_SESSION_ID}` filled in. The customer portal (`POST /v1/billing_portal/sessions`,
//! then `GET /portal/{bps}`) cancels, changes seats and switches prices through the same code as
//! the controls, so it emits the same events.

mod checkout;
mod http;
#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod list_tests;
mod portal;
mod render;
#[cfg(test)]
mod session_tests;
mod sessions;
mod state;
#[cfg(test)]
mod test_support;
mod webhooks;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use url::Url;

use crate::Redacted;
use crate::frontdoor::{BoundListener, Frontdoor, SimServer, handle_methods, lock};
use state::{Buyer, Shared, Store, SubscriptionChange};

pub use webhooks::sign_stripe_payload;

/// The key the default configuration accepts.
pub const DEFAULT_API_KEY: &str = "sk_test_51SimulatorDefaultKey0000000000000000000000";
/// The one price the default configuration sells: USD 5.00 a month.
pub const DEFAULT_PRICE_ID: &str = "price_1SimMonthly00000001";
pub const BASIL_API_VERSION: &str = "2025-03-31.basil";
pub const ACACIA_API_VERSION: &str = "2025-02-24.acacia";

/// Which payload generation events and REST answers are rendered in (the fixture events in
/// `tests/fixtures/stripe/events/basil/` and `.../acacia/` show one of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiGeneration {
    /// `2025-03-31.basil` and later: `invoice.parent.subscription_details`, periods on items.
    #[default]
    Basil,
    /// `2025-02-24.acacia` and earlier: `invoice.subscription`, top-level `current_period_*`.
    Acacia,
}

impl ApiGeneration {
    pub fn api_version(self) -> &'static str {
        match self {
            ApiGeneration::Basil => BASIL_API_VERSION,
            ApiGeneration::Acacia => ACACIA_API_VERSION,
        }
    }

    /// The generation an API version renders (`2025-03-31.basil` and every later one is basil);
    /// `None` when the text does not start with a `YYYY-MM-DD` date.
    pub fn of_version(version: &str) -> Option<ApiGeneration> {
        let date = version.get(..10)?;
        NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        Some(if date >= "2025-03-31" { ApiGeneration::Basil } else { ApiGeneration::Acacia })
    }
}

/// The unit of a price's `recurring.interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

impl Interval {
    /// Stripe's name for it: `day`, `week`, `month`, `year`.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }
}

/// A price the simulator sells: recurring (what subscriptions are made of) or one-time (which
/// no subscription can be on; for tests of configuration errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimPrice {
    pub id: String,
    /// Meaningless when `recurring` is false.
    pub interval: Interval,
    pub interval_count: u32,
    /// In the currency's smallest unit (cents).
    pub unit_amount: i64,
    /// Lower-case ISO code, e.g. `usd`.
    pub currency: String,
    /// `type: recurring` (true) or `type: one_time` with `recurring: null` (false).
    pub recurring: bool,
}

impl SimPrice {
    /// A recurring price of USD 5.00 every `interval_count` `interval`s.
    pub fn new(id: impl Into<String>, interval: Interval, interval_count: u32) -> SimPrice {
        SimPrice {
            id: id.into(),
            interval,
            interval_count,
            unit_amount: 500,
            currency: "usd".to_owned(),
            recurring: true,
        }
    }

    /// A one-time price (`type: one_time`, `recurring: null`) of `unit_amount` cents in USD.
    pub fn one_time(id: impl Into<String>, unit_amount: i64) -> SimPrice {
        SimPrice { unit_amount, recurring: false, ..SimPrice::new(id, Interval::Month, 1) }
    }

    /// The same price at another amount, in cents.
    pub fn with_amount(mut self, unit_amount: i64) -> SimPrice {
        self.unit_amount = unit_amount;
        self
    }

    /// Whether two recurring prices bill on the same schedule (a switch between them keeps the
    /// billing cycle).
    fn same_interval(&self, other: &SimPrice) -> bool {
        self.interval == other.interval && self.interval_count == other.interval_count
    }

    fn product_id(&self) -> String {
        format!("prod_{}", self.id.trim_start_matches("price_"))
    }

    /// `USD 5.00`.
    fn amount_text(&self) -> String {
        let sign = if self.unit_amount < 0 { "-" } else { "" };
        let cents = self.unit_amount.unsigned_abs();
        format!("{} {sign}{}.{:02}", self.currency.to_uppercase(), cents / 100, cents % 100)
    }

    /// `month`, `3 months`.
    pub fn interval_text(&self) -> String {
        match self.interval_count {
            1 => self.interval.as_str().to_owned(),
            n => format!("{n} {}s", self.interval.as_str()),
        }
    }
}

/// Where events are delivered, and the signing secrets (one `v1` per secret, as during a roll).
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: Url,
    pub secrets: Vec<String>,
}

/// Prints `[redacted]` for each secret.
impl fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let WebhookTarget { url, secrets } = self;
        let secrets: Vec<Redacted> = secrets.iter().map(|_| Redacted).collect();
        f.debug_struct("WebhookTarget").field("url", url).field("secrets", &secrets).finish()
    }
}

#[derive(Clone)]
pub struct StripeSimConfig {
    /// The secret key requests must carry as `Authorization: Bearer <key>`.
    pub api_key: String,
    pub prices: Vec<SimPrice>,
    /// The generation of events and of REST answers (a `Stripe-Version` header overrides it for
    /// that REST answer, as with Stripe).
    pub generation: ApiGeneration,
    /// `None`: events are only stored ([`StripeSim::events`]); tests deliver them themselves.
    pub webhook: Option<WebhookTarget>,
    /// Waits before the second, third, ... delivery attempt of a failed event; after the last,
    /// the event stays undelivered (see [`StripeSim::resend_event`]).
    pub retry_delays: Vec<Duration>,
    /// How long one delivery attempt may take before it counts as failed.
    pub delivery_timeout: Duration,
    /// Where the checkout page sends the buyer after paying (303; `{CHECKOUT_SESSION_ID}` in it
    /// is filled in); `None` shows a thank-you page. A payment link's own
    /// `after_completion[redirect][url]` wins.
    pub after_payment_url: Option<Url>,
    /// The simulated clock's time at start; `None` starts it at the real time.
    pub clock_start: Option<DateTime<Utc>>,
    /// Waits between a renewal's failed payment attempt and the next retry, each from the
    /// previous attempt; the default (3, 5, 7 days) makes 4 attempts in all, as a custom Stripe
    /// retry schedule "3, 5, 7 days after the previous attempt" does.
    pub payment_retries: Vec<Duration>,
    /// What happens to a subscription when the last retry fails (Stripe's Dashboard setting).
    pub after_failed_payments: AfterFailedPayments,
}

/// The subscription's fate once every payment retry has failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AfterFailedPayments {
    /// `status: unpaid`; the invoice is marked uncollectible.
    #[default]
    Unpaid,
    /// `status: canceled` (`customer.subscription.deleted`); the invoice is voided.
    Cancel,
}

/// Prints `[redacted]` for the API key (and, through [`WebhookTarget`], the webhook secrets).
impl fmt::Debug for StripeSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let StripeSimConfig {
            api_key: _,
            prices,
            generation,
            webhook,
            retry_delays,
            delivery_timeout,
            after_payment_url,
            clock_start,
            payment_retries,
            after_failed_payments,
        } = self;
        f.debug_struct("StripeSimConfig")
            .field("api_key", &Redacted)
            .field("prices", prices)
            .field("generation", generation)
            .field("webhook", webhook)
            .field("retry_delays", retry_delays)
            .field("delivery_timeout", delivery_timeout)
            .field("after_payment_url", after_payment_url)
            .field("clock_start", clock_start)
            .field("payment_retries", payment_retries)
            .field("after_failed_payments", after_failed_payments)
            .finish()
    }
}

impl Default for StripeSimConfig {
    fn default() -> Self {
        StripeSimConfig {
            api_key: DEFAULT_API_KEY.to_owned(),
            prices: vec![SimPrice::new(DEFAULT_PRICE_ID, Interval::Month, 1)],
            generation: ApiGeneration::Basil,
            webhook: None,
            retry_delays: [1, 2, 4, 8].map(Duration::from_secs).to_vec(),
            delivery_timeout: Duration::from_secs(10),
            after_payment_url: None,
            clock_start: None,
            payment_retries: [3, 5, 7].map(|days| Duration::from_secs(days * 86_400)).to_vec(),
            after_failed_payments: AfterFailedPayments::Unpaid,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Trialing,
    Active,
    /// A renewal's payment failed; retries are scheduled.
    PastDue,
    /// Every retry failed (with [`AfterFailedPayments::Unpaid`]); no more attempts.
    Unpaid,
    /// Paused through the pause endpoint (not `pause_collection`): no periods, no invoices.
    Paused,
    Canceled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Unpaid => "unpaid",
            SubscriptionStatus::Paused => "paused",
            SubscriptionStatus::Canceled => "canceled",
        }
    }
}

/// A subscription with one item (`quantity` units of one price). Times are Unix seconds on the
/// simulated clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSubscription {
    /// `sub_...`.
    pub id: String,
    pub customer: String,
    pub customer_email: String,
    /// The customer's name, when the checkout page was given one.
    pub customer_name: Option<String>,
    pub item_id: String,
    pub price_id: String,
    /// Seats: `items.data[0].quantity`.
    pub quantity: u32,
    pub status: SubscriptionStatus,
    /// The live metadata (what `GET /v1/subscriptions/{id}` shows).
    pub metadata: BTreeMap<String, String>,
    pub created: i64,
    /// Where periods are counted from: the start, the trial's end, or the last reset (resume,
    /// a switch to a price of another interval).
    pub billing_cycle_anchor: i64,
    /// Which billing period is current: 0 for the first (the trial, when there is one).
    pub cycle: u32,
    pub current_period_start: i64,
    pub current_period_end: i64,
    pub trial_start: Option<i64>,
    pub trial_end: Option<i64>,
    /// Ends at the current period's end instead of renewing.
    pub cancel_at_period_end: bool,
    /// When the cancel was requested (for `cancel_at_period_end`, the request, not the end).
    pub canceled_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// `cancellation_details.reason`: `cancellation_requested` or `payment_failed`.
    pub cancellation_reason: Option<String>,
    pub latest_invoice: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceStatus {
    Paid,
    /// Finalized, not paid (a failed payment, with retries scheduled).
    Open,
    Void,
    Uncollectible,
}

impl InvoiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::Paid => "paid",
            InvoiceStatus::Open => "open",
            InvoiceStatus::Void => "void",
            InvoiceStatus::Uncollectible => "uncollectible",
        }
    }
}

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimInvoiceLine {
    /// `il_...`.
    pub id: String,
    /// Cents; negative for a proration credit.
    pub amount: i64,
    pub price_id: String,
    pub quantity: u32,
    pub period_start: i64,
    pub period_end: i64,
    /// A proration (credit for unused time) rather than the subscription's period.
    pub proration: bool,
    /// A trial's $0 line.
    pub trial: bool,
}

/// A subscription invoice: paid, or open while its payment is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimInvoice {
    pub id: String,
    pub number: String,
    /// The subscription's id.
    pub subscription: String,
    /// `subscription_create`, `subscription_cycle` or `subscription_update`.
    pub billing_reason: String,
    pub status: InvoiceStatus,
    pub created: i64,
    pub finalized_at: i64,
    /// `None` until paid.
    pub paid_at: Option<i64>,
    pub voided_at: Option<i64>,
    pub marked_uncollectible_at: Option<i64>,
    /// The invoice's own period, which looks back one period (not the service period).
    pub period_start: i64,
    pub period_end: i64,
    /// The paid service period: the subscription line's period (the last line).
    pub line_period_start: i64,
    pub line_period_end: i64,
    /// Every line, the subscription's period last (a proration credit before it).
    pub lines: Vec<SimInvoiceLine>,
    /// The lines' total, never below 0 (a larger credit would go to the customer's balance).
    pub amount_due: i64,
    /// `amount_due` once paid, else 0.
    pub amount_paid: i64,
    /// Payment attempts so far (0 for a $0 invoice, which is paid without one).
    pub attempt_count: u32,
    /// When the next retry is scheduled; `None` when paid or out of retries.
    pub next_payment_attempt: Option<i64>,
    /// Frozen at finalization, as Stripe's are.
    pub customer_email: String,
    pub customer_name: Option<String>,
    /// The subscription's metadata, frozen when the invoice was finalized.
    pub subscription_metadata: BTreeMap<String, String>,
}

/// Options of [`StripeSim::create_subscription_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Seats; at least 1.
    pub quantity: u32,
    /// A trial of this many days (`trialing`, a $0 first invoice); `None` or `Some(0)`: none.
    pub trial_days: Option<u32>,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions { quantity: 1, trial_days: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimPaymentLink {
    pub id: String,
    /// `<simulator>/checkout/<id>`.
    pub url: String,
    pub price_id: String,
    pub quantity: u32,
    pub metadata: BTreeMap<String, String>,
    /// `subscription_data[metadata]`: put on every subscription the link creates.
    pub subscription_metadata: BTreeMap<String, String>,
    /// `after_completion[redirect][url]` as given (with `after_completion[type]=redirect`), its
    /// `{CHECKOUT_SESSION_ID}` placeholder unfilled; `None` for `hosted_confirmation`.
    pub redirect_url: Option<String>,
    /// `subscription_data[trial_period_days]`: subscriptions it creates start with this trial.
    pub trial_period_days: Option<u32>,
}

/// An event as it was rendered: `body` is the exact JSON that is (or would be) delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    pub id: String,
    pub event_type: String,
    /// The id of the subscription the event is about (for `checkout.session.*` events, the
    /// session's subscription, once it has one).
    pub subscription: Option<String>,
    pub body: Vec<u8>,
}

impl SimEvent {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// `data.object`.
    pub fn object(&self) -> Value {
        self.json().pointer("/data/object").cloned().unwrap_or(Value::Null)
    }

    /// `data.previous_attributes` (only `*.updated` events have it).
    pub fn previous_attributes(&self) -> Option<Value> {
        self.json().pointer("/data/previous_attributes").cloned()
    }

    /// Whether the event is of this type and about this subscription.
    pub fn is(&self, event_type: &str, subscription: &str) -> bool {
        self.event_type == event_type && self.subscription.as_deref() == Some(subscription)
    }
}

/// One webhook delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    pub event_id: String,
    /// 1 for the first attempt.
    pub attempt: usize,
    /// The endpoint's status; `None` for a timeout or connection error.
    pub status: Option<u16>,
    /// What went wrong when there was no status.
    pub error: Option<String>,
}

impl DeliveryAttempt {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| (200..300).contains(&status))
    }
}

/// Why a programmatic control could not act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeSimError {
    #[error("no such payment link: {0}")]
    UnknownPaymentLink(String),
    #[error("no such price: {0}")]
    UnknownPrice(String),
    #[error("no such subscription: {0}")]
    UnknownSubscription(String),
    #[error("subscription {0} is canceled")]
    Canceled(String),
    /// The control does not apply in the subscription's state (e.g. resuming one not paused).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("no such event: {0}")]
    UnknownEvent(String),
    #[error("no webhook endpoint is configured")]
    NoWebhook,
    #[error("no such checkout session: {0}")]
    UnknownCheckoutSession(String),
    #[error("no such customer: {0}")]
    UnknownCustomer(String),
    #[error("no such customer portal session: {0}")]
    UnknownPortalSession(String),
}

/// A customer: made by each checkout (and each subscription a control creates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCustomer {
    /// `cus_...`.
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub created: i64,
}

/// A Checkout Session's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutStatus {
    Open,
    Complete,
    Expired,
}

impl CheckoutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckoutStatus::Open => "open",
            CheckoutStatus::Complete => "complete",
            CheckoutStatus::Expired => "expired",
        }
    }
}

/// A Checkout Session's `payment_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutPaymentStatus {
    Unpaid,
    Paid,
    /// The first invoice is $0 (a trial) [unverified: documented as "payment is delayed to a
    /// future date"; that a free trial gives it is the simulator's guess].
    NoPaymentRequired,
}

impl CheckoutPaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckoutPaymentStatus::Unpaid => "unpaid",
            CheckoutPaymentStatus::Paid => "paid",
            CheckoutPaymentStatus::NoPaymentRequired => "no_payment_required",
        }
    }
}

/// `customer_details` of a completed Checkout Session: what the buyer typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCustomerDetails {
    pub email: String,
    pub name: Option<String>,
}

/// A Checkout Session of a payment link (`mode: subscription`, one line item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCheckoutSession {
    /// `cs_test_` and 58 letters and digits, as in Stripe's fixtures.
    pub id: String,
    /// The `plink_...` it was opened from.
    pub payment_link: String,
    pub price_id: String,
    pub quantity: u32,
    pub status: CheckoutStatus,
    pub payment_status: CheckoutPaymentStatus,
    pub created: i64,
    /// `created` + 24 hours.
    pub expires_at: i64,
    /// The checkout page of this session (`url` in the JSON only while `open`).
    pub url: String,
    /// The link's `after_completion[redirect][url]`, placeholder and all.
    pub success_url: Option<String>,
    /// Set at completion.
    pub customer: Option<String>,
    /// Set at completion.
    pub customer_details: Option<SimCustomerDetails>,
    /// Set once paid (at completion, or when a processing payment settles).
    pub subscription: Option<String>,
    /// The subscription's first invoice, once paid.
    pub invoice: Option<String>,
    /// The payment link's metadata, copied.
    pub metadata: BTreeMap<String, String>,
    /// `amount_total`: the first invoice's total (0 with a trial).
    pub amount_total: i64,
    /// The id of its one line item (`li_...`).
    pub line_item_id: String,
}

/// How the buyer pays a Checkout Session ([`StripeSim::complete_checkout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutPayment {
    /// Required (not empty).
    pub email: String,
    pub name: Option<String>,
    /// An asynchronous payment method still processing: the session completes unpaid, and
    /// nothing is subscribed until [`StripeSim::settle_checkout`].
    pub processing: bool,
}

impl CheckoutPayment {
    /// A card payment that succeeds at once, without a name.
    pub fn new(email: impl Into<String>) -> CheckoutPayment {
        CheckoutPayment { email: email.into(), name: None, processing: false }
    }
}

/// A customer portal session (`POST /v1/billing_portal/sessions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimPortalSession {
    /// `bps_...`.
    pub id: String,
    pub customer: String,
    pub return_url: Option<String>,
    /// `<simulator>/portal/<id>`.
    pub url: String,
    pub configuration: String,
    pub created: i64,
    /// After this (simulated time) the portal page answers 404: an hour after creation
    /// [unverified: Stripe documents the URL as short-lived, not how long].
    pub expires_at: i64,
}

/// A running Stripe simulator. Dropping it stops the server and the webhook deliveries.
pub struct StripeSim {
    server: SimServer,
    shared: Arc<Shared>,
}

/// Starts a simulator on a free loopback port.
pub async fn start(config: StripeSimConfig) -> io::Result<StripeSim> {
    let bound = BoundListener::bind().await?;
    let frontdoor = Frontdoor::new("/v1/");
    let http = reqwest::Client::builder()
        .timeout(config.delivery_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| io::Error::other(format!("webhook client: {error}")))?;
    let (queue, queued) = mpsc::unbounded_channel();
    let real_now = Utc::now().timestamp();
    let clock_offset = config.clock_start.map_or(0, |start| start.timestamp() - real_now);
    let shared = Arc::new(Shared {
        base_url: bound.base_url.clone(),
        // Prices "were created" the day before the simulation starts.
        price_created: real_now + clock_offset - 86_400,
        store: Mutex::new(Store::with_clock_offset(clock_offset)),
        queue,
        pending: watch::Sender::new(0),
        config,
    });
    if shared.config.webhook.is_some() {
        tokio::spawn(webhooks::dispatch(shared.clone(), frontdoor.clone(), http, queued));
    }
    let server = bound.serve(http::routes(shared.clone()), frontdoor);
    Ok(StripeSim { server, shared })
}

impl StripeSim {
    /// `http://127.0.0.1:<port>/`: what `stripe-licensespring`'s `STRIPE_API_BASE` is set to.
    pub fn base_url(&self) -> Url {
        self.server.base_url.clone()
    }

    /// The simulated clock.
    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(lock(&self.shared.store).now(), 0).unwrap_or_else(Utc::now)
    }

    /// What the checkout page's Pay button does, without a payment link: a customer and a
    /// subscription on the price (one seat, no trial), `customer.subscription.created`, its
    /// first invoice paid, and `invoice.paid` (`subscription_create`). Returns the id.
    pub fn create_subscription(&self, price_id: &str) -> Result<String, StripeSimError> {
        self.create_subscription_with(price_id, SubscribeOptions::default())
    }

    /// [`create_subscription`](Self::create_subscription) with seats and a trial: with
    /// `trial_days`, `status: trialing`, the first period is the trial, and the first invoice is
    /// $0 (still `invoice.paid`, `subscription_create`). A one-time price is `NotAllowed`.
    pub fn create_subscription_with(
        &self,
        price_id: &str,
        options: SubscribeOptions,
    ) -> Result<String, StripeSimError> {
        self.shared.subscribe(price_id, options, BTreeMap::new(), Buyer::default())
    }

    /// Bills the next period: the clock moves to the current period's end, the period rolls
    /// over (`customer.subscription.updated`; a trial ends: `trialing` → `active`), a
    /// `subscription_cycle` invoice is paid about an hour later, and its `invoice.paid` (whose
    /// metadata snapshot holds the subscription's metadata now) is returned. With
    /// `cancel_at_period_end` the subscription ends instead and `customer.subscription.deleted`
    /// is returned; after [`decline_next_payment`](Self::decline_next_payment) the payment fails
    /// as in [`renew_declined`](Self::renew_declined) and `invoice.payment_failed` is returned.
    pub fn renew(&self, subscription: &str) -> Result<SimEvent, StripeSimError> {
        let events = self.shared.renew(subscription, false)?;
        let main = events.iter().rev().find(|e| e.event_type != "customer.subscription.updated");
        main.or(events.last())
            .cloned()
            .ok_or_else(|| StripeSimError::NotAllowed(format!("renewing {subscription} emitted nothing")))
    }

    /// A renewal whose payment is declined: the period rolls over (`customer.subscription.updated`),
    /// the invoice is finalized and its charge fails (`invoice.payment_failed`: `open`,
    /// `attempt_count` 1, `next_payment_attempt` set), and the subscription goes `past_due`
    /// (`customer.subscription.updated`, previous `status: active`). The events, in order.
    pub fn renew_declined(&self, subscription: &str) -> Result<Vec<SimEvent>, StripeSimError> {
        self.shared.renew(subscription, true)
    }

    /// The next scheduled payment retry of a `past_due` subscription (the clock moves to its
    /// `next_payment_attempt`). Success: `invoice.paid`, then `customer.subscription.updated`
    /// (`active`, previous `past_due`). Failure: `invoice.payment_failed` (`attempt_count` + 1);
    /// after the last retry of `payment_retries` also, per `after_failed_payments`,
    /// `customer.subscription.updated` (`unpaid`) and `invoice.marked_uncollectible`, or
    /// `customer.subscription.deleted` and `invoice.voided`. The events, in order.
    pub fn retry_payment(&self, subscription: &str, succeeds: bool) -> Result<Vec<SimEvent>, StripeSimError> {
        self.shared.retry_payment(subscription, succeeds)
    }

    /// Marks the next payment of the subscription (its next renewal or retry) to be declined:
    /// a plain [`renew`](Self::renew) or [`retry_payment`](Self::retry_payment) then fails, once.
    /// For a sandbox's "decline the next payment" button.
    pub fn decline_next_payment(&self, subscription: &str) -> Result<(), StripeSimError> {
        self.shared.decline_next_payment(subscription)
    }

    /// Pauses (`status: paused`, not `pause_collection`): `customer.subscription.updated`
    /// (previous `status`), then `customer.subscription.paused`. Only `active` or `trialing`
    /// subscriptions can be paused.
    pub fn pause(&self, subscription: &str) -> Result<Vec<SimEvent>, StripeSimError> {
        self.shared.pause(subscription)
    }

    /// Resumes a paused subscription: `active`, a new period from now (the billing cycle anchor
    /// is reset), a paid `subscription_cycle` invoice; `customer.subscription.updated`,
    /// `customer.subscription.resumed`, `invoice.paid`.
    pub fn resume(&self, subscription: &str) -> Result<Vec<SimEvent>, StripeSimError> {
        self.shared.resume(subscription)
    }

    /// Changes the seats: `customer.subscription.updated` (previous `items`, and in the acacia
    /// generation `quantity`); nothing is invoiced (Stripe makes pending prorations, billed at
    /// the next renewal; the simulator bills the next renewal at the new quantity, without them).
    pub fn set_quantity(&self, subscription: &str, quantity: u32) -> Result<Vec<SimEvent>, StripeSimError> {
        self.shared
            .update(subscription, SubscriptionChange { quantity: Some(quantity), ..Default::default() })
    }

    /// Moves the subscription to another recurring price. Same interval: only
    /// `customer.subscription.updated`. Another interval: the billing cycle restarts now and a
    /// `subscription_update` invoice (a credit for the unused time, then the new period) is paid
    /// at once: `customer.subscription.updated`, then `invoice.paid`.
    pub fn switch_price(&self, subscription: &str, price_id: &str) -> Result<Vec<SimEvent>, StripeSimError> {
        let change = SubscriptionChange { price_id: Some(price_id.to_owned()), ..Default::default() };
        self.shared.update(subscription, change)
    }

    /// Sets or clears `cancel_at_period_end`: `customer.subscription.updated` (previous
    /// `cancel_at_period_end`, `cancel_at`, `canceled_at`, `cancellation_details`); nothing when
    /// it already has that value. A later [`renew`](Self::renew) ends the subscription.
    pub fn set_cancel_at_period_end(
        &self,
        subscription: &str,
        cancel: bool,
    ) -> Result<Vec<SimEvent>, StripeSimError> {
        self.shared.update(
            subscription,
            SubscriptionChange { cancel_at_period_end: Some(cancel), ..Default::default() },
        )
    }

    /// Cancels at once (`status: canceled`, `canceled_at` = `ended_at` = now) and emits and
    /// returns `customer.subscription.deleted` carrying the live metadata.
    pub fn cancel(&self, subscription: &str) -> Result<SimEvent, StripeSimError> {
        self.shared.cancel(subscription)
    }

    /// The events about one subscription, oldest first.
    pub fn events_of(&self, subscription: &str) -> Vec<SimEvent> {
        let store = lock(&self.shared.store);
        store.events.iter().filter(|e| e.subscription.as_deref() == Some(subscription)).cloned().collect()
    }

    pub fn subscriptions(&self) -> Vec<SimSubscription> {
        lock(&self.shared.store).subscriptions.clone()
    }

    pub fn subscription(&self, id: &str) -> Option<SimSubscription> {
        lock(&self.shared.store).subscription(id).cloned()
    }

    pub fn invoices(&self) -> Vec<SimInvoice> {
        lock(&self.shared.store).invoices.clone()
    }

    pub fn payment_links(&self) -> Vec<SimPaymentLink> {
        lock(&self.shared.store).links.clone()
    }

    pub fn prices(&self) -> Vec<SimPrice> {
        self.shared.config.prices.clone()
    }

    /// Every event, oldest first.
    pub fn events(&self) -> Vec<SimEvent> {
        lock(&self.shared.store).events.clone()
    }

    /// Every delivery attempt, in the order they finished.
    pub fn deliveries(&self) -> Vec<DeliveryAttempt> {
        lock(&self.shared.store).deliveries.clone()
    }

    /// Whether a delivery is in progress or waiting for a retry.
    pub fn deliveries_pending(&self) -> bool {
        *self.shared.pending.borrow() > 0
    }

    /// Waits until no delivery is in progress or waiting for a retry; `false` on timeout.
    pub async fn wait_for_deliveries_idle(&self, timeout: Duration) -> bool {
        let mut pending = self.shared.pending.subscribe();
        tokio::time::timeout(timeout, pending.wait_for(|count| *count == 0)).await.is_ok_and(|r| r.is_ok())
    }

    /// Delivers an event again, with a fresh retry schedule (Stripe's "resend").
    pub fn resend_event(&self, event_id: &str) -> Result<(), StripeSimError> {
        if self.shared.config.webhook.is_none() {
            return Err(StripeSimError::NoWebhook);
        }
        let store = lock(&self.shared.store);
        let event = store.event(event_id).cloned();
        let event = event.ok_or_else(|| StripeSimError::UnknownEvent(event_id.to_owned()))?;
        self.shared.enqueue(event);
        Ok(())
    }

    /// Loses the deliveries of the next `n` events (whatever they are about), to make drift: each
    /// is kept, listed by `GET /v1/events` (with `delivery_success=false`) and returned by
    /// [`events`](Self::events), but never sent to the webhook endpoint. The simulator drops it
    /// rather than failing it: no [`DeliveryAttempt`] is logged and it is never pending.
    /// [`resend_event`](Self::resend_event) still delivers it. Calls add up.
    pub fn lose_next_deliveries(&self, n: usize) {
        let mut store = lock(&self.shared.store);
        store.lose_next = store.lose_next.saturating_add(n);
    }

    /// Loses the deliveries of every later event about the subscription (as
    /// [`lose_next_deliveries`](Self::lose_next_deliveries) loses them), until
    /// [`stop_losing_deliveries`](Self::stop_losing_deliveries). The subscription need not
    /// exist yet.
    pub fn lose_deliveries_of(&self, subscription: &str) {
        lock(&self.shared.store).lose_of.insert(subscription.to_owned());
    }

    /// Delivers every later event again: forgets the count of
    /// [`lose_next_deliveries`](Self::lose_next_deliveries) and the subscriptions of
    /// [`lose_deliveries_of`](Self::lose_deliveries_of). Events already lost stay lost.
    pub fn stop_losing_deliveries(&self) {
        let mut store = lock(&self.shared.store);
        store.lose_next = 0;
        store.lose_of.clear();
    }

    /// The events whose delivery was lost, oldest first.
    pub fn lost_events(&self) -> Vec<SimEvent> {
        let store = lock(&self.shared.store);
        store.lost.iter().filter_map(|id| store.event(id).cloned()).collect()
    }

    /// Whether a delivery of the event succeeded (what `delivery_success` of `GET /v1/events`
    /// reads); always false without a webhook endpoint.
    pub fn delivered(&self, event_id: &str) -> bool {
        lock(&self.shared.store).delivered.contains(event_id)
    }

    /// Opens a Checkout Session of the payment link, as opening its page does (no event).
    /// Returns its id (`cs_test_...`).
    pub fn open_checkout(&self, link_id: &str) -> Result<String, StripeSimError> {
        self.shared.open_checkout(link_id)
    }

    /// Pays an open Checkout Session, as the page's Pay button does: a customer with the email
    /// and name, then (unless `processing`) the subscription, `customer.subscription.created`,
    /// `invoice.paid`, and last `checkout.session.completed` (`payment_status: paid`, or
    /// `no_payment_required` for a trial). With `processing`, only `checkout.session.completed`
    /// (`payment_status: unpaid`, `subscription: null`). The events, in order.
    pub fn complete_checkout(
        &self,
        session_id: &str,
        payment: CheckoutPayment,
    ) -> Result<Vec<SimEvent>, StripeSimError> {
        self.shared.complete_checkout(session_id, payment)
    }

    /// The processing payment of a completed, unpaid session succeeds: the subscription,
    /// `customer.subscription.created`, `invoice.paid`, then
    /// `checkout.session.async_payment_succeeded` (`payment_status: paid`).
    pub fn settle_checkout(&self, session_id: &str) -> Result<Vec<SimEvent>, StripeSimError> {
        self.shared.settle_checkout(session_id)
    }

    /// Expires an open session (`status: expired`) and returns `checkout.session.expired`.
    pub fn expire_checkout(&self, session_id: &str) -> Result<SimEvent, StripeSimError> {
        self.shared.expire_checkout(session_id)
    }

    /// A payment link of one unit of the price, opened and paid with this email and name (the
    /// events of [`complete_checkout`](Self::complete_checkout)). Returns the session's and the
    /// subscription's ids.
    pub fn buy(
        &self,
        price_id: &str,
        email: &str,
        name: Option<&str>,
    ) -> Result<(String, String), StripeSimError> {
        self.shared.buy(price_id, email, name)
    }

    /// Every Checkout Session, oldest first.
    pub fn checkout_sessions(&self) -> Vec<SimCheckoutSession> {
        lock(&self.shared.store).checkout_sessions.clone()
    }

    pub fn checkout_session(&self, id: &str) -> Option<SimCheckoutSession> {
        lock(&self.shared.store).checkout_sessions.iter().find(|s| s.id == id).cloned()
    }

    /// Every customer, oldest first.
    pub fn customers(&self) -> Vec<SimCustomer> {
        lock(&self.shared.store).customers.clone()
    }

    /// Every customer portal session, oldest first.
    pub fn portal_sessions(&self) -> Vec<SimPortalSession> {
        lock(&self.shared.store).portal_sessions.clone()
    }

    /// Ends a portal session now: its page answers 404 from then on.
    pub fn expire_portal_session(&self, id: &str) -> Result<(), StripeSimError> {
        self.shared.expire_portal_session(id)
    }

    handle_methods!("/v1/");

    /// Stops the server and the deliveries, and waits for the server to finish (dropping the
    /// handle only signals it).
    pub async fn shutdown(&self) {
        self.server.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_key_and_the_secrets() {
        let config = StripeSimConfig {
            webhook: Some(WebhookTarget {
                url: Url::parse("http://127.0.0.1:9/webhooks").expect("url"),
                secrets: vec!["whsec_one".to_owned(), "whsec_two".to_owned()],
            }),
            ..StripeSimConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains(DEFAULT_API_KEY) && !shown.contains("whsec_"), "{shown}");
        assert!(shown.contains("secrets: [[redacted], [redacted]]"), "{shown}");
        assert!(shown.contains(DEFAULT_PRICE_ID), "the rest is shown: {shown}");
    }

    #[test]
    fn interval_texts() {
        assert_eq!(SimPrice::new("price_m", Interval::Month, 1).interval_text(), "month");
        assert_eq!(SimPrice::new("price_q", Interval::Month, 3).interval_text(), "3 months");
        assert_eq!(SimPrice::new("price_w", Interval::Week, 2).amount_text(), "USD 5.00");
    }
}
