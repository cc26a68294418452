//! The billing flows: verified Stripe events in, LicenseSpring licenses kept in step.
//!
//! [`Billing::handle_event`] is the one entry point: it answers a repeated delivery from memory,
//! picks the flow for the event's type and runs it. The flows are plain async functions over typed
//! inputs (the event model's facts), the two clients and the subscription store; no HTTP request or
//! response types here. Every flow is safe to repeat:
//! Stripe delivers at least once, in any order, and retries after failures, so each step either
//! finds its work already done or does it again with the same result.
//!
//! What makes "exactly one license per subscription" hold without a database:
//! - events of one subscription run one at a time in this process ([`SubscriptionLocks`]);
//! - the license key is written to the Stripe subscription's metadata *before* the order is
//!   created, and a key found there is reused, so a retry continues with the same key;
//! - the order id is derived from the subscription (`{ORDER_BASE_STRING}_{sub id}`), so a second
//!   create is refused by LicenseSpring and recognised as "already done" (the license is found by
//!   its key, else by that order id; if the order holds another key, Stripe's metadata is set to it);
//! - "extend" sets an absolute date (the paid period's end) and never shortens.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};

use crate::cache::{CacheEntry, SubscriptionStore};
use crate::licensespring::{License, LicenseSpringClient, LicenseSpringError, LicenseValidity};
use crate::model::{LicenseId, LicenseKey, SubscriptionId, SubscriptionStatus};
use crate::stripe::{StripeClient, StripeError};
use crate::webhook::{BillingReason, Event, EventKind, InvoicePaid, SubscriptionDeleted};

/// What handling an event did; logged, and answered 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new license was created for the subscription's first invoice.
    Created { license_id: LicenseId },
    /// The first invoice of an already-canceled subscription: the license exists but is disabled.
    CreatedDisabled { license_id: LicenseId },
    /// The license is now valid until this date.
    Extended { license_id: LicenseId, until: NaiveDate },
    /// The license was disabled with one cycle's valid duration.
    Disabled { license_id: LicenseId },
    /// The work was already done (a repeated or concurrent delivery).
    Duplicate,
    /// Nothing to do, and why.
    Ignored(&'static str),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Created { license_id } => write!(f, "license {license_id} created"),
            Outcome::CreatedDisabled { license_id } => {
                write!(f, "license {license_id} created disabled: the subscription had already ended")
            }
            Outcome::Extended { license_id, until } => write!(f, "license {license_id} valid until {until}"),
            Outcome::Disabled { license_id } => write!(f, "license {license_id} disabled"),
            Outcome::Duplicate => f.write_str("already done"),
            Outcome::Ignored(reason) => f.write_str(reason),
        }
    }
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Created { .. } => "created",
            Outcome::CreatedDisabled { .. } => "created_disabled",
            Outcome::Extended { .. } => "extended",
            Outcome::Disabled { .. } => "disabled",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored(_) => "ignored",
        }
    }
}

/// Why a flow could not finish; every kind is answered 5xx so that Stripe delivers again.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    LicenseSpring(#[from] LicenseSpringError),
    /// The subscription store could not record the change.
    #[error("cache: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
    /// The event cannot be handled yet (for example a renewal whose first invoice has not been
    /// processed); a later delivery will.
    #[error("not yet: {0}")]
    NotYet(String),
}

/// Serialises the events of one subscription inside this process. Entries are dropped as soon as no
/// event of that subscription is in flight, so the map stays as small as the concurrency.
#[derive(Default)]
pub struct SubscriptionLocks {
    locks: Mutex<HashMap<SubscriptionId, Arc<tokio::sync::Mutex<()>>>>,
}

pub struct SubscriptionGuard<'a> {
    owner: &'a SubscriptionLocks,
    id: SubscriptionId,
    lock: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SubscriptionLocks {
    pub async fn lock(&self, id: &SubscriptionId) -> SubscriptionGuard<'_> {
        let mutex = {
            let mut locks = self.locks.lock().expect("lock map poisoned");
            locks.entry(id.clone()).or_default().clone()
        };
        let lock = mutex.lock_owned().await;
        SubscriptionGuard { owner: self, id: id.clone(), lock: Some(lock) }
    }
}

impl Drop for SubscriptionGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self.owner.locks.lock().expect("lock map poisoned");
        drop(self.lock.take());
        // Only the map holds it now: nobody waits for this subscription.
        if locks.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            locks.remove(&self.id);
        }
    }
}

/// Event ids this process finished recently, so a repeated delivery is answered without any
/// upstream call. Only a shortcut: correctness never depends on it (it is lost on restart).
pub struct RecentEvents {
    capacity: usize,
    inner: Mutex<(VecDeque<String>, HashSet<String>)>,
}

impl RecentEvents {
    pub fn new(capacity: usize) -> RecentEvents {
        RecentEvents { capacity, inner: Mutex::new((VecDeque::new(), HashSet::new())) }
    }

    pub fn contains(&self, event_id: &str) -> bool {
        self.inner.lock().expect("poisoned").1.contains(event_id)
    }

    pub fn record(&self, event_id: &str) {
        let mut inner = self.inner.lock().expect("poisoned");
        let (order, set) = &mut *inner;
        if set.insert(event_id.to_owned()) {
            order.push_back(event_id.to_owned());
            if order.len() > self.capacity {
                if let Some(oldest) = order.pop_front() {
                    set.remove(&oldest);
                }
            }
        }
    }
}

/// How many handled event ids are remembered for answering repeats at once.
const RECENT_EVENTS: usize = 10_000;

/// Everything the flows use.
pub struct Billing<S> {
    stripe: StripeClient,
    licensespring: LicenseSpringClient,
    store: S,
    product_short_code: String,
    order_base_string: String,
    locks: SubscriptionLocks,
    /// Event ids handled lately: a repeated delivery is answered without calling anybody.
    recent_events: RecentEvents,
}

impl<S: SubscriptionStore> Billing<S> {
    /// `product_short_code` is the LicenseSpring product every license is of; `order_base_string`
    /// prefixes the order ids this server creates.
    pub fn new(
        stripe: StripeClient,
        licensespring: LicenseSpringClient,
        store: S,
        product_short_code: String,
        order_base_string: String,
    ) -> Billing<S> {
        Billing {
            stripe,
            licensespring,
            store,
            product_short_code,
            order_base_string,
            locks: SubscriptionLocks::default(),
            recent_events: RecentEvents::new(RECENT_EVENTS),
        }
    }

    /// The Stripe client the flows use, for the routes that call Stripe themselves (payment links).
    pub fn stripe(&self) -> &StripeClient {
        &self.stripe
    }

    /// Handles a verified event: a repeat of one handled lately is answered without any upstream
    /// call; otherwise the event's flow runs, and its success is remembered.
    pub async fn handle_event(&self, event: &Event) -> Result<Outcome, BillingError> {
        if self.recent_events.contains(&event.id) {
            return Ok(Outcome::Duplicate);
        }
        let outcome = match &event.kind {
            EventKind::InvoicePaid(invoice) => self.invoice_paid(invoice).await?,
            EventKind::SubscriptionDeleted(deleted) => self.subscription_deleted(deleted).await?,
            EventKind::Ignored => Outcome::Ignored("event type not handled"),
        };
        self.recent_events.record(&event.id);
        Ok(outcome)
    }

    /// The LicenseSpring order id for a subscription: deterministic, so a second create is refused.
    pub fn order_id(&self, subscription: &SubscriptionId) -> String {
        format!("{}_{}", self.order_base_string, subscription)
    }

    /// `invoice.paid`: create the license on the first invoice, extend it on any later one.
    pub async fn invoice_paid(&self, invoice: &InvoicePaid) -> Result<Outcome, BillingError> {
        let Some(paid) = &invoice.subscription else {
            return Ok(Outcome::Ignored("the invoice belongs to no subscription"));
        };
        let Some(paid_until) = paid.paid_until else {
            return Ok(Outcome::Ignored("the invoice holds only prorations"));
        };
        let subscription = &paid.id;
        let _guard = self.locks.lock(subscription).await;

        if let Some(entry) = self.store.get(subscription).await.map_err(store_error)? {
            let license = self.licensespring.retrieve_license(entry.license_id).await?;
            return self.extend(&license, paid_until).await;
        }
        if invoice.billing_reason == Some(BillingReason::SubscriptionCreate) {
            return self.create(subscription, paid_until).await;
        }
        // Not in the cache (evicted or lost): find the license through the key in Stripe's metadata.
        let Some(license) = self.find_license(subscription, paid.license_key.as_ref()).await? else {
            return Err(BillingError::NotYet(format!(
                "{subscription} has no license yet: its first invoice has not been processed"
            )));
        };
        if !license.enabled {
            return Ok(Outcome::Ignored("the license is disabled: the subscription has ended"));
        }
        self.extend(&license, paid_until).await
    }

    /// `customer.subscription.deleted`: one cycle's valid duration, disabled, dropped from the cache.
    pub async fn subscription_deleted(&self, deleted: &SubscriptionDeleted) -> Result<Outcome, BillingError> {
        let subscription = &deleted.id;
        let _guard = self.locks.lock(subscription).await;

        let license = match self.store.get(subscription).await.map_err(store_error)? {
            Some(entry) => Some(self.licensespring.retrieve_license(entry.license_id).await?),
            None => self.find_license(subscription, deleted.license_key.as_ref()).await?,
        };
        let Some(license) = license else {
            // Canceled before its first invoice was processed: when that invoice arrives, the
            // create flow sees the cancellation and leaves the new license disabled.
            return Ok(Outcome::Ignored("no license for this subscription"));
        };
        let duration = deleted.interval.valid_duration();
        let outcome = if !license.enabled && license.valid_duration.as_deref() == Some(duration.as_str()) {
            Outcome::Duplicate
        } else {
            self.disable(license.id, &duration).await?;
            Outcome::Disabled { license_id: license.id }
        };
        self.store.remove(subscription).await.map_err(store_error)?;
        Ok(outcome)
    }

    /// The license of a subscription the cache does not know, through the `license_key` in the
    /// event's metadata or, failing that, in the Stripe subscription's own; and, should neither lead
    /// to it, through the order this server created for the subscription.
    async fn find_license(
        &self,
        subscription: &SubscriptionId,
        key_in_event: Option<&LicenseKey>,
    ) -> Result<Option<License>, BillingError> {
        let key = match key_in_event {
            Some(key) => Some(key.clone()),
            None => self.stripe.retrieve_subscription(subscription).await?.license_key,
        };
        if let Some(key) = key
            && let Some(license) = self.licensespring.find_license_by_key(&key).await?
        {
            return Ok(Some(license));
        }
        Ok(self.licensespring.find_license_by_order(&self.order_id(subscription)).await?)
    }

    async fn create(
        &self,
        subscription_id: &SubscriptionId,
        paid_until: DateTime<Utc>,
    ) -> Result<Outcome, BillingError> {
        // The subscription's own metadata is authoritative (the invoice's snapshot never has the key
        // on a first invoice), and its status tells whether it was canceled meanwhile.
        let subscription = self.stripe.retrieve_subscription(subscription_id).await?;
        let key = match &subscription.license_key {
            // An earlier attempt got this far: continue with its key.
            Some(key) => key.clone(),
            None => {
                let key = self.licensespring.generate_license_key(&self.product_short_code).await?;
                self.stripe.set_subscription_license_key(subscription_id, &key).await?;
                key
            }
        };
        let order_id = self.order_id(subscription_id);
        let created = self
            .licensespring
            .create_order(&order_id, &self.product_short_code, &key, paid_until.date_naive())
            .await;
        let (license_id, key, is_new) = match created {
            Ok(license_id) => (license_id, key, true),
            // The order id is ours and unique: a refusal may mean an earlier attempt created it.
            Err(error) if error.is_order_refusal() => {
                let license = match self.licensespring.find_license_by_key(&key).await? {
                    Some(license) => license,
                    None => match self.licensespring.find_license_by_order(&order_id).await? {
                        Some(license) => license,
                        None => return Err(error.into()),
                    },
                };
                if license.license_key != key {
                    // The order holds another key: an earlier attempt's metadata write was overtaken
                    // (Stripe applied it late). The license is what the customer has; Stripe follows.
                    self.stripe.set_subscription_license_key(subscription_id, &license.license_key).await?;
                }
                (license.id, license.license_key, false)
            }
            Err(error) => return Err(error.into()),
        };

        if subscription.status == SubscriptionStatus::Canceled || subscription.ended_at.is_some() {
            // Canceled before its first invoice was handled: the customer must not keep an enabled license.
            self.disable(license_id, &subscription.interval.valid_duration()).await?;
            self.store.remove(subscription_id).await.map_err(store_error)?;
            return Ok(Outcome::CreatedDisabled { license_id });
        }
        let entry = CacheEntry::new(subscription_id.clone(), key, subscription.interval.unit, license_id);
        self.store.insert(entry).await.map_err(store_error)?;
        Ok(if is_new { Outcome::Created { license_id } } else { Outcome::Duplicate })
    }

    /// Makes the license valid until `paid_until`'s UTC date, unless it already is valid longer.
    async fn extend(&self, license: &License, paid_until: DateTime<Utc>) -> Result<Outcome, BillingError> {
        let until = paid_until.date_naive();
        if license.validity_period.is_some_and(|current| current >= until) {
            return Ok(Outcome::Duplicate);
        }
        self.licensespring.update_license_validity(license.id, &LicenseValidity::Until(until)).await?;
        Ok(Outcome::Extended { license_id: license.id, until })
    }

    async fn disable(&self, license_id: LicenseId, valid_duration: &str) -> Result<(), BillingError> {
        let validity = LicenseValidity::Duration(valid_duration.to_owned());
        self.licensespring.update_license_validity(license_id, &validity).await?;
        self.licensespring.disable_license(license_id).await?;
        Ok(())
    }
}

fn store_error(error: impl std::error::Error + Send + Sync + 'static) -> BillingError {
    BillingError::Store(Box::new(error))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn events_of_one_subscription_wait_for_each_other_and_locks_are_dropped_after() {
        let locks = Arc::new(SubscriptionLocks::default());
        let sub = SubscriptionId("sub_1".into());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (locks, sub, in_flight, most) =
                    (locks.clone(), sub.clone(), in_flight.clone(), most.clone());
                tokio::spawn(async move {
                    let _guard = locks.lock(&sub).await;
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        // Another subscription is not held up meanwhile.
        drop(locks.lock(&SubscriptionId("sub_2".into())).await);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");
        assert!(locks.locks.lock().unwrap().is_empty(), "no lock kept once nobody waits");
    }

    #[test]
    fn recent_events_forget_the_oldest_beyond_capacity() {
        let recent = RecentEvents::new(2);
        for id in ["evt_1", "evt_2", "evt_1", "evt_3"] {
            recent.record(id);
        }
        assert!(!recent.contains("evt_1"));
        assert!(recent.contains("evt_2") && recent.contains("evt_3"));
    }
}
