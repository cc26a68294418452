//! The simulated account: the store, the simulated clock, and what changes them (subscribing,
//! renewing, billing, canceling). Billing and canceling emit their events through `webhooks`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Days, Months, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::sync::{mpsc, watch};
use url::Url;

use super::http::IdempotencyEntry;
use serde_json::{Value, json};

use super::render::previous_attributes;
use super::{
    AfterFailedPayments, ApiGeneration, DeliveryAttempt, Interval, InvoiceStatus, SimCheckoutSession,
    SimCustomer, SimEvent, SimInvoice, SimInvoiceLine, SimPaymentLink, SimPortalSession, SimPrice,
    SimSubscription, StripeSimConfig, StripeSimError, SubscribeOptions, SubscriptionStatus,
};
use crate::frontdoor::lock;

/// The email of a buyer who gave none (a subscription made by a control, a bare checkout POST).
pub(super) const DEFAULT_BUYER_EMAIL: &str = "buyer@example.com";

pub(super) struct Shared {
    pub(super) config: StripeSimConfig,
    pub(super) base_url: Url,
    pub(super) price_created: i64,
    pub(super) store: Mutex<Store>,
    /// Events waiting for delivery (only read when a webhook is configured).
    pub(super) queue: mpsc::UnboundedSender<SimEvent>,
    /// How many events are being delivered or waiting for a retry.
    pub(super) pending: watch::Sender<usize>,
}

#[derive(Default)]
pub(super) struct Store {
    /// Simulated time minus real time, in seconds.
    pub(super) clock_offset: i64,
    pub(super) links: Vec<SimPaymentLink>,
    pub(super) customers: Vec<SimCustomer>,
    pub(super) checkout_sessions: Vec<SimCheckoutSession>,
    pub(super) portal_sessions: Vec<SimPortalSession>,
    pub(super) subscriptions: Vec<SimSubscription>,
    pub(super) invoices: Vec<SimInvoice>,
    pub(super) events: Vec<SimEvent>,
    pub(super) idempotency: HashMap<String, IdempotencyEntry>,
    pub(super) deliveries: Vec<DeliveryAttempt>,
    /// Subscriptions whose next payment (renewal or retry) is to be declined.
    pub(super) declines: HashSet<String>,
    /// Positions in `subscriptions`, `invoices`, `customers` and `events` by id, so that
    /// creating or finding one costs the same with 10,000 of them as with one.
    subscription_index: HashMap<String, usize>,
    invoice_index: HashMap<String, usize>,
    customer_index: HashMap<String, usize>,
    event_index: HashMap<String, usize>,
    /// Each event's `created`, parallel to `events`.
    pub(super) event_created: Vec<i64>,
    /// Positions in `events`, sorted by (`created`, position): oldest first. Events are mostly
    /// emitted in `created` order, but not always (a renewal of a period that ended before the
    /// clock's now is dated at the period's end).
    pub(super) event_order: Vec<usize>,
    /// Events with a successful delivery attempt.
    pub(super) delivered: HashSet<String>,
    /// How many of the next events are to be lost ([`StripeSim::lose_next_deliveries`]).
    ///
    /// [`StripeSim::lose_next_deliveries`]: super::StripeSim::lose_next_deliveries
    pub(super) lose_next: usize,
    /// Subscriptions whose events are to be lost from now on.
    pub(super) lose_of: HashSet<String>,
    /// The events that were lost, oldest first.
    pub(super) lost: Vec<String>,
}

impl Store {
    /// An empty store whose clock runs `clock_offset` seconds ahead of real time.
    pub(super) fn with_clock_offset(clock_offset: i64) -> Store {
        Store { clock_offset, ..Store::default() }
    }

    pub(super) fn now(&self) -> i64 {
        Utc::now().timestamp() + self.clock_offset
    }

    /// Moves the clock forward to `t`, never back.
    fn advance_to(&mut self, t: i64) {
        let now = self.now();
        if t > now {
            self.clock_offset += t - now;
        }
    }

    pub(super) fn subscription_mut(&mut self, id: &str) -> Option<&mut SimSubscription> {
        let position = *self.subscription_index.get(id)?;
        self.subscriptions.get_mut(position)
    }

    pub(super) fn subscription(&self, id: &str) -> Option<&SimSubscription> {
        self.subscriptions.get(*self.subscription_index.get(id)?)
    }

    /// Where the subscription is in `subscriptions` (creation order).
    pub(super) fn subscription_position(&self, id: &str) -> Option<usize> {
        self.subscription_index.get(id).copied()
    }

    fn add_subscription(&mut self, subscription: SimSubscription) {
        self.subscription_index.insert(subscription.id.clone(), self.subscriptions.len());
        self.subscriptions.push(subscription);
    }

    pub(super) fn invoice(&self, id: &str) -> Option<&SimInvoice> {
        self.invoices.get(*self.invoice_index.get(id)?)
    }

    fn add_invoice(&mut self, invoice: SimInvoice) {
        self.invoice_index.insert(invoice.id.clone(), self.invoices.len());
        self.invoices.push(invoice);
    }

    pub(super) fn event(&self, id: &str) -> Option<&SimEvent> {
        self.events.get(*self.event_index.get(id)?)
    }

    /// Where the event is in `event_order`.
    pub(super) fn event_order_position(&self, id: &str) -> Option<usize> {
        let position = *self.event_index.get(id)?;
        let key = (self.event_created[position], position);
        let at = self.event_order.partition_point(|&i| (self.event_created[i], i) < key);
        (self.event_order.get(at) == Some(&position)).then_some(at)
    }

    /// Keeps an event created at `created` (simulated time).
    pub(super) fn add_event(&mut self, event: SimEvent, created: i64) {
        let position = self.events.len();
        self.event_index.insert(event.id.clone(), position);
        self.events.push(event);
        self.event_created.push(created);
        // Almost always at the end, so the insertion moves little.
        let at = self.event_order.partition_point(|&i| (self.event_created[i], i) <= (created, position));
        self.event_order.insert(at, position);
    }

    fn known_subscription_mut(&mut self, id: &str) -> Result<&mut SimSubscription, StripeSimError> {
        self.subscription_mut(id).ok_or_else(|| StripeSimError::UnknownSubscription(id.to_owned()))
    }

    /// The subscription, unless it is unknown or canceled.
    fn active_subscription_mut(&mut self, id: &str) -> Result<&mut SimSubscription, StripeSimError> {
        let subscription = self.known_subscription_mut(id)?;
        if subscription.status == SubscriptionStatus::Canceled {
            return Err(StripeSimError::Canceled(id.to_owned()));
        }
        Ok(subscription)
    }

    fn invoice_mut(&mut self, id: &str) -> Option<&mut SimInvoice> {
        let position = *self.invoice_index.get(id)?;
        self.invoices.get_mut(position)
    }

    pub(super) fn customer(&self, id: &str) -> Option<&SimCustomer> {
        self.customers.get(*self.customer_index.get(id)?)
    }

    /// A new customer (`cus_...`), stored.
    pub(super) fn new_customer(&mut self, email: String, name: Option<String>) -> SimCustomer {
        let customer = SimCustomer { id: new_id("cus"), email, name, created: self.now() };
        self.customer_index.insert(customer.id.clone(), self.customers.len());
        self.customers.push(customer.clone());
        customer
    }
}

/// Who subscribes: an existing customer, or a new one with this email (a default when `None`)
/// and name.
#[derive(Debug, Default)]
pub(super) struct Buyer {
    pub(super) customer: Option<String>,
    pub(super) email: Option<String>,
    pub(super) name: Option<String>,
}

/// What an invoice of the subscription's current period is for: its lines are `credits` (a
/// proration) then the period's line (`$0` for a `trial`).
struct NewInvoice {
    billing_reason: &'static str,
    created: i64,
    /// The invoice's own period runs from here to the current period's start.
    looking_back_from: i64,
    finalized_at: i64,
    credits: Vec<SimInvoiceLine>,
    trial: bool,
}

impl NewInvoice {
    /// A `subscription_cycle` or `subscription_update` invoice finalized at once, at `now`.
    fn immediate(billing_reason: &'static str, now: i64, looking_back_from: i64) -> NewInvoice {
        NewInvoice {
            billing_reason,
            created: now,
            looking_back_from,
            finalized_at: now,
            credits: Vec::new(),
            trial: false,
        }
    }
}

/// A new billing cycle from `now` (resume, a switch to another interval): the anchor is reset.
fn restart_cycle(subscription: &mut SimSubscription, price: &SimPrice, now: i64) {
    subscription.billing_cycle_anchor = now;
    subscription.cycle += 1;
    subscription.current_period_start = now;
    subscription.current_period_end = add_cycles(now, price, 1);
}

/// What one update of a subscription changes (`POST /v1/subscriptions/{id}`, or a control).
#[derive(Debug, Default)]
pub(super) struct SubscriptionChange {
    /// The whole new metadata.
    pub(super) metadata: Option<BTreeMap<String, String>>,
    pub(super) quantity: Option<u32>,
    pub(super) price_id: Option<String>,
    pub(super) cancel_at_period_end: Option<bool>,
}

impl SubscriptionChange {
    fn only_metadata(&self) -> bool {
        self.quantity.is_none() && self.price_id.is_none() && self.cancel_at_period_end.is_none()
    }
}

/// The end of the period that starts at `start`: the first anchor-based boundary after it.
fn period_end_after(anchor: i64, price: &SimPrice, start: i64) -> i64 {
    let mut cycles = 1;
    loop {
        let end = add_cycles(anchor, price, cycles);
        if end > start || cycles >= 100_000 {
            return end;
        }
        cycles += 1;
    }
}

/// A Stripe-looking id: `cus_1Ab...`, 24 random characters after the prefix.
pub(super) fn new_id(prefix: &str) -> String {
    let random: String = rand::rng().sample_iter(Alphanumeric).take(23).map(char::from).collect();
    format!("{prefix}_1{random}")
}

/// `anchor` plus `cycles` billing intervals, in calendar arithmetic from the anchor, so a
/// subscription started on the 31st comes back to the 31st after a short month.
fn add_cycles(anchor: i64, price: &SimPrice, cycles: u32) -> i64 {
    let start = DateTime::from_timestamp(anchor, 0).unwrap_or(DateTime::UNIX_EPOCH);
    let n = price.interval_count.max(1).saturating_mul(cycles);
    let end = match price.interval {
        Interval::Day => start.checked_add_days(Days::new(n.into())),
        Interval::Week => start.checked_add_days(Days::new(u64::from(n) * 7)),
        Interval::Month => start.checked_add_months(Months::new(n)),
        Interval::Year => start.checked_add_months(Months::new(n.saturating_mul(12))),
    };
    end.map_or(i64::MAX / 2, |end| end.timestamp())
}

impl Shared {
    pub(super) fn price(&self, id: &str) -> Option<&SimPrice> {
        self.config.prices.iter().find(|p| p.id == id)
    }

    fn known_price(&self, id: &str) -> Result<&SimPrice, StripeSimError> {
        self.price(id).ok_or_else(|| StripeSimError::UnknownPrice(id.to_owned()))
    }

    pub(super) fn recurring_price(&self, id: &str) -> Result<&SimPrice, StripeSimError> {
        let price = self.known_price(id)?;
        if !price.recurring {
            return Err(StripeSimError::NotAllowed(format!(
                "price {id} is a one-time price; a subscription needs a recurring price"
            )));
        }
        Ok(price)
    }

    fn render_subscription(&self, subscription: &SimSubscription) -> Value {
        self.subscription_json(subscription, self.config.generation)
    }

    pub(super) fn subscribe(
        &self,
        price_id: &str,
        options: SubscribeOptions,
        metadata: BTreeMap<String, String>,
        buyer: Buyer,
    ) -> Result<String, StripeSimError> {
        let mut store = lock(&self.store);
        self.subscribe_in(&mut store, price_id, options, metadata, buyer).map(|(id, _)| id)
    }

    /// A subscription (and its customer, unless the buyer has one), its first invoice paid:
    /// `customer.subscription.created`, `invoice.paid`. Returns its id and the events.
    pub(super) fn subscribe_in(
        &self,
        store: &mut Store,
        price_id: &str,
        options: SubscribeOptions,
        metadata: BTreeMap<String, String>,
        buyer: Buyer,
    ) -> Result<(String, Vec<SimEvent>), StripeSimError> {
        let price = self.recurring_price(price_id)?;
        if options.quantity == 0 {
            return Err(StripeSimError::NotAllowed("quantity must be at least 1".to_owned()));
        }
        let customer = match buyer.customer {
            Some(id) => store.customer(&id).cloned().ok_or(StripeSimError::UnknownCustomer(id))?,
            None => {
                store.new_customer(buyer.email.unwrap_or_else(|| DEFAULT_BUYER_EMAIL.to_owned()), buyer.name)
            }
        };
        let now = store.now();
        let trial_end =
            options.trial_days.filter(|days| *days > 0).map(|days| now + i64::from(days) * 86_400);
        let subscription = SimSubscription {
            id: new_id("sub"),
            customer: customer.id,
            customer_email: customer.email,
            customer_name: customer.name,
            item_id: new_id("si"),
            price_id: price.id.clone(),
            quantity: options.quantity,
            status: if trial_end.is_some() {
                SubscriptionStatus::Trialing
            } else {
                SubscriptionStatus::Active
            },
            metadata,
            created: now,
            // A trial's end is the anchor: the first paid period starts there.
            billing_cycle_anchor: trial_end.unwrap_or(now),
            cycle: 0,
            current_period_start: now,
            current_period_end: trial_end.unwrap_or_else(|| add_cycles(now, price, 1)),
            trial_start: trial_end.map(|_| now),
            trial_end,
            cancel_at_period_end: false,
            canceled_at: None,
            ended_at: None,
            cancellation_reason: None,
            latest_invoice: String::new(),
        };
        let id = subscription.id.clone();
        store.add_subscription(subscription);
        // The first invoice is finalized at once, before anyone could write metadata, so its
        // snapshot holds only what the subscription was created with. A trial's is for $0
        // ("an immediate invoice is still created, but for $0"), which is paid without a charge.
        let first = NewInvoice {
            trial: trial_end.is_some(),
            ..NewInvoice::immediate("subscription_create", now, now)
        };
        let invoice_id = self.issue_invoice(store, &id, first)?;
        let object = self.snapshot(store, &id)?;
        let created = self.emit(store, "customer.subscription.created", Some(id.clone()), now, object, None);
        let paid = self.pay_invoice(store, &invoice_id, now + 5)?;
        Ok((id, vec![created, paid]))
    }

    /// The subscription's line for its current period (`$0` for a trial).
    fn period_line(&self, subscription: &SimSubscription, trial: bool) -> SimInvoiceLine {
        let unit_amount = self.price(&subscription.price_id).map_or(0, |p| p.unit_amount);
        SimInvoiceLine {
            id: new_id("il"),
            amount: if trial { 0 } else { unit_amount * i64::from(subscription.quantity) },
            price_id: subscription.price_id.clone(),
            quantity: subscription.quantity,
            period_start: subscription.current_period_start,
            period_end: subscription.current_period_end,
            proration: false,
            trial,
        }
    }

    /// A finalized, not yet paid invoice for the subscription's current period (not stored).
    fn new_invoice(&self, store: &Store, subscription: &SimSubscription, spec: NewInvoice) -> SimInvoice {
        let NewInvoice { billing_reason, created, looking_back_from, finalized_at, mut credits, trial } =
            spec;
        credits.push(self.period_line(subscription, trial));
        let lines = credits;
        let number = format!("SIM-{:04}", store.invoices.len() + 1);
        let total: i64 = lines.iter().map(|line| line.amount).sum();
        let (line_period_start, line_period_end) = lines
            .last()
            .map_or((subscription.current_period_start, subscription.current_period_end), |line| {
                (line.period_start, line.period_end)
            });
        SimInvoice {
            id: new_id("in"),
            number,
            subscription: subscription.id.clone(),
            billing_reason: billing_reason.to_owned(),
            status: InvoiceStatus::Open,
            created,
            finalized_at,
            paid_at: None,
            voided_at: None,
            marked_uncollectible_at: None,
            period_start: looking_back_from,
            period_end: subscription.current_period_start,
            line_period_start,
            line_period_end,
            lines,
            amount_due: total.max(0),
            amount_paid: 0,
            attempt_count: 0,
            next_payment_attempt: None,
            customer_email: subscription.customer_email.clone(),
            customer_name: subscription.customer_name.clone(),
            subscription_metadata: subscription.metadata.clone(),
        }
    }

    /// Stores a new invoice of the subscription's current period and makes it the latest.
    fn issue_invoice(&self, store: &mut Store, id: &str, spec: NewInvoice) -> Result<String, StripeSimError> {
        let subscription = store.known_subscription_mut(id)?.clone();
        let invoice = self.new_invoice(store, &subscription, spec);
        let invoice_id = invoice.id.clone();
        store.add_invoice(invoice);
        store.known_subscription_mut(id)?.latest_invoice = invoice_id.clone();
        Ok(invoice_id)
    }

    /// [`issue_invoice`](Self::issue_invoice), then `customer.subscription.updated` for the
    /// change from `before` (at the invoice's creation). Returns the invoice and the event.
    fn invoice_and_emit_updated(
        &self,
        store: &mut Store,
        id: &str,
        before: &Value,
        extra_previous: Option<(&str, Value)>,
        spec: NewInvoice,
    ) -> Result<(String, Vec<SimEvent>), StripeSimError> {
        let created = spec.created;
        let invoice_id = self.issue_invoice(store, id, spec)?;
        let updated = self.emit_updated(store, id, before, extra_previous, created)?;
        Ok((invoice_id, updated.into_iter().collect()))
    }

    fn render_invoice(&self, store: &Store, invoice_id: &str) -> Result<(SimInvoice, Value), StripeSimError> {
        let invoice = store.invoice(invoice_id).cloned();
        let invoice =
            invoice.ok_or_else(|| StripeSimError::NotAllowed(format!("no invoice {invoice_id}")))?;
        let subscription = store.subscription(&invoice.subscription).cloned();
        let subscription =
            subscription.ok_or_else(|| StripeSimError::UnknownSubscription(invoice.subscription.clone()))?;
        let object = self.invoice_json(&invoice, &subscription, self.config.generation);
        Ok((invoice, object))
    }

    /// Pays a stored invoice at `paid_at` (a charge, unless it is for $0) and emits `invoice.paid`
    /// a second later.
    fn pay_invoice(
        &self,
        store: &mut Store,
        invoice_id: &str,
        paid_at: i64,
    ) -> Result<SimEvent, StripeSimError> {
        let invoice = store
            .invoice_mut(invoice_id)
            .ok_or_else(|| StripeSimError::NotAllowed(format!("no invoice {invoice_id}")))?;
        invoice.status = InvoiceStatus::Paid;
        invoice.paid_at = Some(paid_at);
        invoice.amount_paid = invoice.amount_due;
        if invoice.amount_due > 0 {
            invoice.attempt_count += 1;
        }
        invoice.next_payment_attempt = None;
        let subscription = invoice.subscription.clone();
        let (_, object) = self.render_invoice(store, invoice_id)?;
        store.advance_to(paid_at + 1);
        Ok(self.emit(store, "invoice.paid", Some(subscription), paid_at + 1, object, None))
    }

    /// A failed charge of a stored invoice at `at`: `attempt_count` + 1, the next retry
    /// scheduled (or none left), `invoice.payment_failed`. Returns the event and whether retries
    /// remain.
    fn fail_invoice(
        &self,
        store: &mut Store,
        invoice_id: &str,
        at: i64,
    ) -> Result<(SimEvent, bool), StripeSimError> {
        let retries = &self.config.payment_retries;
        let invoice = store
            .invoice_mut(invoice_id)
            .ok_or_else(|| StripeSimError::NotAllowed(format!("no invoice {invoice_id}")))?;
        invoice.status = InvoiceStatus::Open;
        invoice.attempt_count += 1;
        let wait = retries.get(invoice.attempt_count as usize - 1);
        invoice.next_payment_attempt =
            wait.map(|wait| at + i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 4));
        let retrying = wait.is_some();
        let subscription = invoice.subscription.clone();
        let (_, object) = self.render_invoice(store, invoice_id)?;
        store.advance_to(at + 1);
        Ok((self.emit(store, "invoice.payment_failed", Some(subscription), at + 1, object, None), retrying))
    }

    /// Emits `customer.subscription.updated` for the change from `before` (the subscription's
    /// JSON before it) to its state now; nothing when nothing rendered changed.
    fn emit_updated(
        &self,
        store: &mut Store,
        id: &str,
        before: &Value,
        extra_previous: Option<(&str, Value)>,
        created: i64,
    ) -> Result<Option<SimEvent>, StripeSimError> {
        let subscription = store.known_subscription_mut(id)?.clone();
        let after = self.render_subscription(&subscription);
        let Some(mut previous) = previous_attributes(before, &after) else {
            return Ok(None);
        };
        if let Some((name, value)) = extra_previous {
            previous[name] = value;
        }
        Ok(Some(self.emit(
            store,
            "customer.subscription.updated",
            Some(id.to_owned()),
            created,
            after,
            Some(previous),
        )))
    }

    /// The subscription's JSON now, for a later [`emit_updated`](Self::emit_updated).
    fn snapshot(&self, store: &mut Store, id: &str) -> Result<Value, StripeSimError> {
        let subscription = store.known_subscription_mut(id)?.clone();
        Ok(self.render_subscription(&subscription))
    }

    pub(super) fn renew(&self, id: &str, declined: bool) -> Result<Vec<SimEvent>, StripeSimError> {
        let mut store = lock(&self.store);
        let subscription = store.active_subscription_mut(id)?;
        match subscription.status {
            SubscriptionStatus::Active | SubscriptionStatus::Trialing => {}
            other => {
                return Err(StripeSimError::NotAllowed(format!(
                    "subscription {id} is {}; only active and trialing subscriptions renew",
                    other.as_str()
                )));
            }
        }
        let price = self.recurring_price(&subscription.price_id)?.clone();
        let start = subscription.current_period_end;
        let previous_start = subscription.current_period_start;
        let ends = subscription.cancel_at_period_end;
        store.advance_to(start);
        if ends {
            let subscription = store.known_subscription_mut(id)?;
            subscription.status = SubscriptionStatus::Canceled;
            subscription.ended_at = Some(start);
            subscription.cancellation_reason.get_or_insert_with(|| "cancellation_requested".to_owned());
            let object = self.render_subscription(&subscription.clone());
            store.declines.remove(id);
            return Ok(vec![self.emit(
                &mut store,
                "customer.subscription.deleted",
                Some(id.to_owned()),
                start,
                object,
                None,
            )]);
        }
        let declined = store.declines.remove(id) || declined;
        let before = self.snapshot(&mut store, id)?;
        let subscription = store.known_subscription_mut(id)?;
        // A trial's end: the status moves, and the first paid period begins.
        subscription.status = SubscriptionStatus::Active;
        subscription.cycle += 1;
        subscription.current_period_start = start;
        subscription.current_period_end = period_end_after(subscription.billing_cycle_anchor, &price, start);
        // The renewal invoice is created at the period start and finalized (and charged) about
        // an hour later.
        let renewal = NewInvoice {
            finalized_at: start + 3600,
            ..NewInvoice::immediate("subscription_cycle", start, previous_start)
        };
        let (invoice_id, mut events) =
            self.invoice_and_emit_updated(&mut store, id, &before, None, renewal)?;
        let charged_at = start + 3600 + 5;
        if !declined {
            events.push(self.pay_invoice(&mut store, &invoice_id, charged_at)?);
            return Ok(events);
        }
        let (failed, retrying) = self.fail_invoice(&mut store, &invoice_id, charged_at)?;
        events.push(failed);
        let before = self.snapshot(&mut store, id)?;
        store.known_subscription_mut(id)?.status = SubscriptionStatus::PastDue;
        events.extend(self.emit_updated(&mut store, id, &before, None, charged_at + 1)?);
        if !retrying {
            events.extend(self.retries_exhausted(&mut store, id, &invoice_id, charged_at + 1)?);
        }
        Ok(events)
    }

    pub(super) fn retry_payment(&self, id: &str, succeeds: bool) -> Result<Vec<SimEvent>, StripeSimError> {
        let mut store = lock(&self.store);
        let subscription = store.active_subscription_mut(id)?;
        if subscription.status != SubscriptionStatus::PastDue {
            return Err(StripeSimError::NotAllowed(format!(
                "subscription {id} is {}, not past_due: no payment to retry",
                subscription.status.as_str()
            )));
        }
        let invoice_id = subscription.latest_invoice.clone();
        let invoice = store.invoice(&invoice_id);
        let Some(at) =
            invoice.filter(|i| i.status == InvoiceStatus::Open).and_then(|i| i.next_payment_attempt)
        else {
            return Err(StripeSimError::NotAllowed(format!(
                "subscription {id} has no payment retry scheduled"
            )));
        };
        store.advance_to(at);
        let succeeds = succeeds && !store.declines.remove(id);
        let mut events = Vec::new();
        if succeeds {
            events.push(self.pay_invoice(&mut store, &invoice_id, at)?);
            let before = self.snapshot(&mut store, id)?;
            store.known_subscription_mut(id)?.status = SubscriptionStatus::Active;
            events.extend(self.emit_updated(&mut store, id, &before, None, at + 1)?);
            return Ok(events);
        }
        let (failed, retrying) = self.fail_invoice(&mut store, &invoice_id, at)?;
        events.push(failed);
        if !retrying {
            events.extend(self.retries_exhausted(&mut store, id, &invoice_id, at + 1)?);
        }
        Ok(events)
    }

    /// The last retry failed: the subscription ends per `after_failed_payments`.
    fn retries_exhausted(
        &self,
        store: &mut Store,
        id: &str,
        invoice_id: &str,
        at: i64,
    ) -> Result<Vec<SimEvent>, StripeSimError> {
        let mut events = Vec::new();
        let (invoice_event, status) = match self.config.after_failed_payments {
            AfterFailedPayments::Unpaid => {
                let before = self.snapshot(store, id)?;
                store.known_subscription_mut(id)?.status = SubscriptionStatus::Unpaid;
                events.extend(self.emit_updated(store, id, &before, None, at)?);
                ("invoice.marked_uncollectible", InvoiceStatus::Uncollectible)
            }
            AfterFailedPayments::Cancel => {
                let subscription = store.known_subscription_mut(id)?;
                subscription.status = SubscriptionStatus::Canceled;
                subscription.canceled_at = Some(at);
                subscription.ended_at = Some(at);
                subscription.cancellation_reason = Some("payment_failed".to_owned());
                let object = self.render_subscription(&subscription.clone());
                events.push(self.emit(
                    store,
                    "customer.subscription.deleted",
                    Some(id.to_owned()),
                    at,
                    object,
                    None,
                ));
                ("invoice.voided", InvoiceStatus::Void)
            }
        };
        if let Some(invoice) = store.invoice_mut(invoice_id) {
            invoice.status = status;
            invoice.next_payment_attempt = None;
            match status {
                InvoiceStatus::Void => invoice.voided_at = Some(at),
                _ => invoice.marked_uncollectible_at = Some(at),
            }
        }
        let (_, object) = self.render_invoice(store, invoice_id)?;
        events.push(self.emit(store, invoice_event, Some(id.to_owned()), at, object, None));
        Ok(events)
    }

    pub(super) fn decline_next_payment(&self, id: &str) -> Result<(), StripeSimError> {
        let mut store = lock(&self.store);
        store.active_subscription_mut(id)?;
        store.declines.insert(id.to_owned());
        Ok(())
    }

    pub(super) fn pause(&self, id: &str) -> Result<Vec<SimEvent>, StripeSimError> {
        let mut store = lock(&self.store);
        let subscription = store.active_subscription_mut(id)?;
        if !matches!(subscription.status, SubscriptionStatus::Active | SubscriptionStatus::Trialing) {
            return Err(StripeSimError::NotAllowed(format!(
                "subscription {id} is {}; only active or trialing subscriptions can be paused",
                subscription.status.as_str()
            )));
        }
        let now = store.now();
        let before = self.snapshot(&mut store, id)?;
        store.known_subscription_mut(id)?.status = SubscriptionStatus::Paused;
        let mut events: Vec<SimEvent> =
            self.emit_updated(&mut store, id, &before, None, now)?.into_iter().collect();
        let object = self.snapshot(&mut store, id)?;
        events.push(self.emit(
            &mut store,
            "customer.subscription.paused",
            Some(id.to_owned()),
            now,
            object,
            None,
        ));
        Ok(events)
    }

    pub(super) fn resume(&self, id: &str) -> Result<Vec<SimEvent>, StripeSimError> {
        let mut store = lock(&self.store);
        let subscription = store.active_subscription_mut(id)?;
        if subscription.status != SubscriptionStatus::Paused {
            return Err(StripeSimError::NotAllowed(format!(
                "subscription {id} is {}, not paused",
                subscription.status.as_str()
            )));
        }
        let price = self.recurring_price(&subscription.price_id)?.clone();
        let now = store.now();
        let before = self.snapshot(&mut store, id)?;
        let subscription = store.known_subscription_mut(id)?;
        let previous_start = subscription.current_period_start;
        subscription.status = SubscriptionStatus::Active;
        // Resuming resets the billing cycle anchor (`billing_cycle_anchor=now`, the default).
        restart_cycle(subscription, &price, now);
        let resumed = NewInvoice::immediate("subscription_cycle", now, previous_start);
        let (invoice_id, mut events) =
            self.invoice_and_emit_updated(&mut store, id, &before, None, resumed)?;
        let object = self.snapshot(&mut store, id)?;
        events.push(self.emit(
            &mut store,
            "customer.subscription.resumed",
            Some(id.to_owned()),
            now,
            object,
            None,
        ));
        events.push(self.pay_invoice(&mut store, &invoice_id, now + 5)?);
        Ok(events)
    }

    pub(super) fn update(
        &self,
        id: &str,
        change: SubscriptionChange,
    ) -> Result<Vec<SimEvent>, StripeSimError> {
        let mut store = lock(&self.store);
        self.update_in(&mut store, id, change)
    }

    /// Applies one update: metadata, seats, price, `cancel_at_period_end`, in one
    /// `customer.subscription.updated`; a switch to a price of another interval (outside a
    /// trial) also restarts the billing cycle and pays a `subscription_update` invoice.
    pub(super) fn update_in(
        &self,
        store: &mut Store,
        id: &str,
        change: SubscriptionChange,
    ) -> Result<Vec<SimEvent>, StripeSimError> {
        let subscription = store.known_subscription_mut(id)?;
        if subscription.status == SubscriptionStatus::Canceled && !change.only_metadata() {
            return Err(StripeSimError::Canceled(id.to_owned()));
        }
        if change.quantity == Some(0) {
            return Err(StripeSimError::NotAllowed("quantity must be at least 1".to_owned()));
        }
        let old_price = self.price_or_placeholder(&subscription.price_id);
        let new_price = match &change.price_id {
            Some(price_id) => Some(self.recurring_price(price_id)?.clone()),
            None => None,
        };
        let now = store.now();
        let before = self.snapshot(store, id)?;
        let subscription = store.known_subscription_mut(id)?;
        let old_quantity = subscription.quantity;
        let mut reset_cycle = None;
        if let Some(metadata) = change.metadata {
            subscription.metadata = metadata;
        }
        if let Some(cancel) = change.cancel_at_period_end {
            if cancel != subscription.cancel_at_period_end {
                subscription.cancel_at_period_end = cancel;
                subscription.canceled_at = cancel.then_some(now);
                subscription.cancellation_reason = cancel.then(|| "cancellation_requested".to_owned());
            }
        }
        if let Some(quantity) = change.quantity {
            subscription.quantity = quantity;
        }
        if let Some(price) = new_price.filter(|price| price.id != subscription.price_id) {
            // During a trial the trial goes on and the new price is billed at its end.
            let trialing = subscription.status == SubscriptionStatus::Trialing;
            if !price.same_interval(&old_price) && !trialing {
                reset_cycle =
                    Some((subscription.current_period_start, subscription.current_period_end, price.clone()));
            }
            subscription.price_id = price.id;
        }
        let mut reset_invoice = None;
        if let Some((old_start, old_end, price)) = reset_cycle {
            // The unused part of the current period is credited at the old price and quantity.
            let length = (old_end - old_start).max(1);
            let unused = (old_end - now).clamp(0, length);
            let old_total = old_price.unit_amount * i64::from(old_quantity);
            let credit = SimInvoiceLine {
                id: new_id("il"),
                amount: -((old_total * unused + length / 2) / length),
                price_id: old_price.id.clone(),
                quantity: old_quantity,
                period_start: now,
                period_end: old_end,
                proration: true,
                trial: false,
            };
            restart_cycle(store.known_subscription_mut(id)?, &price, now);
            reset_invoice = Some(NewInvoice {
                credits: vec![credit],
                ..NewInvoice::immediate("subscription_update", now, old_start)
            });
        }
        // Pre-basil payloads also carry the deprecated top-level `quantity`, which Stripe lists
        // among the previous attributes of a seat change [unverified: the simulator's object, as
        // the fixtures, does not render it].
        let quantity_changed = change.quantity.is_some_and(|q| q != old_quantity);
        let extra = (quantity_changed && self.config.generation == ApiGeneration::Acacia)
            .then(|| ("quantity", json!(old_quantity)));
        let Some(invoice) = reset_invoice else {
            return Ok(self.emit_updated(store, id, &before, extra, now)?.into_iter().collect());
        };
        let (invoice_id, mut events) = self.invoice_and_emit_updated(store, id, &before, extra, invoice)?;
        events.push(self.pay_invoice(store, &invoice_id, now + 5)?);
        Ok(events)
    }

    pub(super) fn cancel(&self, id: &str) -> Result<SimEvent, StripeSimError> {
        let mut store = lock(&self.store);
        let now = store.now();
        let subscription = store.active_subscription_mut(id)?;
        subscription.status = SubscriptionStatus::Canceled;
        subscription.canceled_at = Some(now);
        subscription.ended_at = Some(now);
        subscription.cancellation_reason = Some("cancellation_requested".to_owned());
        let object = self.subscription_json(&subscription.clone(), self.config.generation);
        store.declines.remove(id);
        Ok(self.emit(&mut store, "customer.subscription.deleted", Some(id.to_owned()), now, object, None))
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::add_cycles;
    use crate::stripe::test_support::started;
    use crate::stripe::{DEFAULT_PRICE_ID, Interval, SimPrice, StripeSimConfig};

    #[test]
    fn periods_use_calendar_arithmetic_from_the_anchor() {
        let t = |text: &str| DateTime::parse_from_rfc3339(text).expect("time").timestamp();
        let monthly = SimPrice::new("price_m", Interval::Month, 1);
        let anchor = t("2025-01-31T10:00:00Z");
        assert_eq!(add_cycles(anchor, &monthly, 1), t("2025-02-28T10:00:00Z"));
        assert_eq!(add_cycles(anchor, &monthly, 2), t("2025-03-31T10:00:00Z"));
        let quarterly = SimPrice::new("price_q", Interval::Month, 3);
        assert_eq!(add_cycles(anchor, &quarterly, 1), t("2025-04-30T10:00:00Z"));
        let biweekly = SimPrice::new("price_w", Interval::Week, 2);
        assert_eq!(add_cycles(anchor, &biweekly, 1), t("2025-02-14T10:00:00Z"));
        let yearly = SimPrice::new("price_y", Interval::Year, 1);
        assert_eq!(add_cycles(t("2024-02-29T00:00:00Z"), &yearly, 1), t("2025-02-28T00:00:00Z"));
        let daily = SimPrice::new("price_d", Interval::Day, 10);
        assert_eq!(add_cycles(anchor, &daily, 1), t("2025-02-10T10:00:00Z"));
    }

    #[tokio::test]
    async fn renewals_follow_the_simulated_clock() {
        let clock_start = DateTime::parse_from_rfc3339("2025-01-31T10:00:00Z").expect("time").to_utc();
        let sim =
            started(StripeSimConfig { clock_start: Some(clock_start), ..StripeSimConfig::default() }).await;
        assert!((sim.now() - clock_start).num_seconds().abs() < 5);
        let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
        sim.renew(&id).expect("renewed");
        let subscription = sim.subscription(&id).expect("sub");
        let end = DateTime::from_timestamp(subscription.current_period_end, 0).expect("time");
        assert_eq!(end.date_naive().to_string(), "2025-03-31", "back on the 31st after February");
        assert_eq!(subscription.cycle, 1);
        assert_eq!(sim.invoices().len(), 2);
    }
}
