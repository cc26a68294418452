//! The simulated account: the store, the simulated clock, and what changes them (subscribing,
//! renewing, billing, canceling). Billing and canceling emit their events through `webhooks`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Days, Months, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::sync::{mpsc, watch};
use url::Url;

use super::http::IdempotencyEntry;
use super::{
    DeliveryAttempt, Interval, SimEvent, SimInvoice, SimPaymentLink, SimPrice, SimSubscription,
    StripeSimConfig, StripeSimError, SubscriptionStatus,
};
use crate::frontdoor::lock;

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
    pub(super) subscriptions: Vec<SimSubscription>,
    pub(super) invoices: Vec<SimInvoice>,
    pub(super) events: Vec<SimEvent>,
    pub(super) idempotency: HashMap<String, IdempotencyEntry>,
    pub(super) deliveries: Vec<DeliveryAttempt>,
}

impl Store {
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
        self.subscriptions.iter_mut().find(|s| s.id == id)
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

    pub(super) fn pay_link(&self, link_id: &str, email: Option<String>) -> Result<String, StripeSimError> {
        let link = lock(&self.store).links.iter().find(|l| l.id == link_id).cloned();
        let link = link.ok_or_else(|| StripeSimError::UnknownPaymentLink(link_id.to_owned()))?;
        self.subscribe(&link.price_id, link.subscription_metadata, email)
    }

    pub(super) fn subscribe(
        &self,
        price_id: &str,
        metadata: BTreeMap<String, String>,
        email: Option<String>,
    ) -> Result<String, StripeSimError> {
        let price = self.price(price_id).ok_or_else(|| StripeSimError::UnknownPrice(price_id.to_owned()))?;
        let mut store = lock(&self.store);
        let now = store.now();
        let subscription = SimSubscription {
            id: new_id("sub"),
            customer: new_id("cus"),
            customer_email: email.unwrap_or_else(|| "buyer@example.com".to_owned()),
            item_id: new_id("si"),
            price_id: price.id.clone(),
            status: SubscriptionStatus::Active,
            metadata,
            created: now,
            billing_cycle_anchor: now,
            cycle: 0,
            current_period_start: now,
            current_period_end: add_cycles(now, price, 1),
            canceled_at: None,
            ended_at: None,
            latest_invoice: String::new(),
        };
        let id = subscription.id.clone();
        store.subscriptions.push(subscription);
        // The first invoice is finalized at once, before anyone could write metadata, so its
        // snapshot holds only what the subscription was created with.
        self.bill(&mut store, &id, "subscription_create", now, now, now)?;
        Ok(id)
    }

    pub(super) fn renew(&self, id: &str) -> Result<SimEvent, StripeSimError> {
        let mut store = lock(&self.store);
        let subscription = store.active_subscription_mut(id)?;
        let price = self
            .price(&subscription.price_id)
            .ok_or_else(|| StripeSimError::UnknownPrice(subscription.price_id.clone()))?;
        let previous_start = subscription.current_period_start;
        let start = subscription.current_period_end;
        subscription.cycle += 1;
        subscription.current_period_start = start;
        subscription.current_period_end =
            add_cycles(subscription.billing_cycle_anchor, price, subscription.cycle + 1);
        // A renewal invoice is created at the period start and finalized an hour later.
        self.bill(&mut store, id, "subscription_cycle", start, previous_start, start + 3600)
    }

    /// Creates, finalizes and pays the invoice for the subscription's current period, and emits
    /// `invoice.paid`. The invoice's own period looks back: `looking_back_from` to the current
    /// period's start.
    fn bill(
        &self,
        store: &mut Store,
        id: &str,
        billing_reason: &str,
        created: i64,
        looking_back_from: i64,
        finalized_at: i64,
    ) -> Result<SimEvent, StripeSimError> {
        let number = format!("SIM-{:04}", store.invoices.len() + 1);
        let subscription = store.known_subscription_mut(id)?;
        let amount = self.price(&subscription.price_id).map_or(0, |p| p.unit_amount);
        let invoice = SimInvoice {
            id: new_id("in"),
            number,
            subscription: id.to_owned(),
            billing_reason: billing_reason.to_owned(),
            created,
            finalized_at,
            paid_at: finalized_at + 5,
            period_start: looking_back_from,
            period_end: subscription.current_period_start,
            line_period_start: subscription.current_period_start,
            line_period_end: subscription.current_period_end,
            amount_paid: amount,
            subscription_metadata: subscription.metadata.clone(),
        };
        subscription.latest_invoice = invoice.id.clone();
        let subscription = subscription.clone();
        let object = self.invoice_json(&invoice, &subscription, self.config.generation);
        let event_time = invoice.paid_at + 1;
        store.invoices.push(invoice);
        store.advance_to(event_time);
        Ok(self.emit(store, "invoice.paid", Some(id.to_owned()), event_time, object))
    }

    pub(super) fn cancel(&self, id: &str) -> Result<SimEvent, StripeSimError> {
        let mut store = lock(&self.store);
        let now = store.now();
        let subscription = store.active_subscription_mut(id)?;
        subscription.status = SubscriptionStatus::Canceled;
        subscription.canceled_at = Some(now);
        subscription.ended_at = Some(now);
        let object = self.subscription_json(&subscription.clone(), self.config.generation);
        Ok(self.emit(&mut store, "customer.subscription.deleted", Some(id.to_owned()), now, object))
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
