//! The billing flows: verified Stripe events in, LicenseSpring licenses kept in step.
//!
//! [`Billing::handle_event`] is the one entry point for an event: it answers a repeated delivery
//! from the store's record of deliveries, picks the flow for the event's type and runs it.
//! [`Billing::sync`] converges one subscription's license to the state
//! [`desired::desired_license`] computes from Stripe's current objects; every path that is not
//! itself the proof of what to do (a paid invoice proves its period is paid; a deletion is final)
//! goes through it, so late, repeated or reordered events cannot leave a wrong state. The flows
//! are plain async functions over typed inputs, the two clients and the subscription store; no
//! HTTP request or response types here. Every flow is safe to repeat: each step either finds its
//! work already done or does it again with the same result.
//!
//! What makes "exactly one license per subscription" hold:
//! - events of one subscription run one at a time: in this process ([`SubscriptionLocks`]), and
//!   across processes sharing PostgreSQL (the store's lock);
//! - the license key is written to the Stripe subscription's metadata *before* the order is
//!   created, and a key found there is reused, so a retry continues with the same key;
//! - the order id is derived from the subscription (`{ORDER_BASE_STRING}_{sub id}`), so a second
//!   create is refused by LicenseSpring and recognised as "already done" (the license is found by
//!   its key, else by that order id; if the order holds another key, Stripe's metadata is set to it);
//! - "extend" sets an absolute date (the paid period's end) and never shortens.

pub mod desired;
mod locks;

use chrono::{DateTime, NaiveDate, Utc};

pub use desired::{Desired, DesiredLicense, DesiredValidity, LicensePolicy, desired_license};
pub use locks::{SubscriptionGuard, SubscriptionLocks};

use crate::cache::CacheEntry;
use crate::licensespring::{
    Buyer, License, LicenseChange, LicenseSpringClient, LicenseSpringError, LicenseValidity, NewLicenseTerms,
};
use crate::model::{LicenseId, LicenseKey, SubscriptionId};
use crate::settings::Settings;
use crate::store::{Delivery, Store, StoreError, StoreLock};
use crate::stripe::{Customer, StripeClient, StripeError, Subscription};
use crate::webhook::{
    BillingReason, Event, EventKind, InvoicePaid, InvoicePaymentFailed, SubscriptionChanged,
    SubscriptionDeleted,
};

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
    /// The license was brought in step with the subscription: what changed.
    Converged { license_id: LicenseId, changes: Vec<Change> },
    /// A renewal payment failed; Stripe retries (logged only: the license follows the status
    /// change, which comes as `customer.subscription.updated`).
    PaymentFailed { attempt: Option<u32> },
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
            Outcome::Converged { license_id, changes } => {
                write!(f, "license {license_id}:")?;
                for (n, change) in changes.iter().enumerate() {
                    write!(f, "{} {change}", if n == 0 { "" } else { "," })?;
                }
                Ok(())
            }
            Outcome::PaymentFailed { attempt: Some(attempt) } => {
                write!(f, "payment attempt {attempt} failed; Stripe retries")
            }
            Outcome::PaymentFailed { attempt: None } => {
                f.write_str("a payment attempt failed; Stripe retries")
            }
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
            Outcome::Converged { changes, .. } => {
                if changes.contains(&Change::Disabled) {
                    "disabled"
                } else if changes.contains(&Change::Enabled) {
                    "enabled"
                } else if changes.iter().any(|change| matches!(change, Change::ValidUntil(_))) {
                    "extended"
                } else {
                    "updated"
                }
            }
            Outcome::PaymentFailed { .. } => "payment_failed",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored(_) => "ignored",
        }
    }
}

/// One change made to a license to bring it in step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    ValidUntil(NaiveDate),
    ValidFor(String),
    Trial(bool),
    MaxActivations(u32),
    Enabled,
    Disabled,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::ValidUntil(day) => write!(f, "valid until {day}"),
            Change::ValidFor(duration) => write!(f, "valid for {duration}"),
            Change::Trial(true) => f.write_str("a trial"),
            Change::Trial(false) => f.write_str("no longer a trial"),
            Change::MaxActivations(n) => write!(f, "{n} activations"),
            Change::Enabled => f.write_str("enabled"),
            Change::Disabled => f.write_str("disabled"),
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
    /// The subscription store could not answer or record the change.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event cannot be handled yet (for example a renewal whose first invoice has not been
    /// processed); a later delivery will.
    #[error("not yet: {0}")]
    NotYet(String),
}

/// Everything the flows use.
pub struct Billing {
    stripe: StripeClient,
    licensespring: LicenseSpringClient,
    store: Store,
    product_short_code: String,
    order_base_string: String,
    policy: LicensePolicy,
    /// Serialises a subscription's flows in this process (before the store's lock, which
    /// serialises them across processes), so waiting flows do not each hold a database connection.
    locks: SubscriptionLocks,
}

/// Both locks of one subscription, held while its flow runs.
pub struct FlowLock<'a> {
    _store: StoreLock,
    _local: SubscriptionGuard<'a>,
}

/// What the flows are configured with.
#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// The LicenseSpring product every license is of.
    pub product_short_code: String,
    /// Prefixes the order ids this server creates.
    pub order_base_string: String,
    pub policy: LicensePolicy,
}

/// The two upstream clients, as the settings say.
pub fn upstream_clients(settings: &Settings) -> (StripeClient, LicenseSpringClient) {
    let stripe = StripeClient::new(
        settings.stripe_api_base.clone(),
        settings.stripe_secret_key.clone(),
        settings.upstream_timeout,
    );
    let licensespring = LicenseSpringClient::new(
        settings.licensespring_base_url.clone(),
        settings.licensespring_api_key.clone(),
        settings.upstream_timeout,
    );
    (stripe, licensespring)
}

impl BillingConfig {
    /// What the flows take from the settings.
    pub fn from_settings(settings: &Settings) -> BillingConfig {
        BillingConfig {
            product_short_code: settings.product_short_code.clone(),
            order_base_string: settings.order_base_string.clone(),
            policy: LicensePolicy {
                prices: settings.stripe_price_ids.clone(),
                grace_days: settings.grace_days,
                activations_per_seat: settings.activations_per_seat,
            },
        }
    }
}

impl Billing {
    /// The flows as the settings configure them, over `store`.
    pub fn from_settings(settings: &Settings, store: Store) -> Billing {
        let (stripe, licensespring) = upstream_clients(settings);
        Billing::new(stripe, licensespring, store, BillingConfig::from_settings(settings))
    }

    pub fn new(
        stripe: StripeClient,
        licensespring: LicenseSpringClient,
        store: Store,
        config: BillingConfig,
    ) -> Billing {
        Billing {
            stripe,
            licensespring,
            store,
            product_short_code: config.product_short_code,
            order_base_string: config.order_base_string,
            policy: config.policy,
            locks: SubscriptionLocks::default(),
        }
    }

    /// The Stripe client the flows use, for the routes that call Stripe themselves (payment links).
    pub fn stripe(&self) -> &StripeClient {
        &self.stripe
    }

    /// The store the flows keep their state in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles a verified event under its subscription's lock: a repeat of one handled before
    /// is answered without any upstream call; otherwise the event's flow runs, and what it did
    /// is recorded as a delivery.
    pub async fn handle_event(&self, event: &Event) -> Result<Outcome, BillingError> {
        let subscription = event.subscription();
        let (_local_lock, store_lock, handled) = match subscription {
            Some(subscription) => {
                let local = self.locks.lock(subscription).await;
                let (store_lock, handled) = self.store.lock_for_event(subscription, &event.id).await?;
                (Some(local), Some(store_lock), handled)
            }
            None => (None, None, self.store.delivery_handled(&event.id).await?),
        };
        if handled {
            return Ok(Outcome::Duplicate);
        }
        let result = match &event.kind {
            EventKind::InvoicePaid(invoice) => self.invoice_paid(invoice).await,
            EventKind::InvoicePaymentFailed(failed) => Ok(payment_failed(failed)),
            EventKind::SubscriptionChanged(changed) => self.subscription_changed(changed).await,
            EventKind::SubscriptionDeleted(deleted) => self.subscription_deleted(deleted).await,
            EventKind::Ignored => Ok(Outcome::Ignored("event type not handled")),
        };
        let delivery = Delivery {
            event_id: &event.id,
            event_type: &event.event_type,
            subscription,
            outcome: result.as_ref().map_or("failed", Outcome::label),
            error: result.as_ref().err().map(ToString::to_string),
        };
        match self.store.record_delivery(&delivery, store_lock).await {
            Ok(()) => result,
            // The flow's own failure is what to answer; a record that could not be written after
            // a success is answered 5xx, and the redelivery finds the work done.
            Err(error) if result.is_ok() => Err(error.into()),
            Err(error) => {
                tracing::warn!(%error, "the failed delivery could not be recorded");
                result
            }
        }
    }

    /// Waits until no other flow of `subscription` runs, here or in another process.
    async fn lock(&self, subscription: &SubscriptionId) -> Result<FlowLock<'_>, BillingError> {
        let local = self.locks.lock(subscription).await;
        let store = self.store.lock(subscription).await?;
        Ok(FlowLock { _store: store, _local: local })
    }

    /// The LicenseSpring order id for a subscription: deterministic, so a second create is refused.
    pub fn order_id(&self, subscription: &SubscriptionId) -> String {
        format!("{}_{}", self.order_base_string, subscription)
    }

    /// `invoice.paid`: create the license on the first invoice, extend it on any later one. The
    /// invoice is the proof that its period is paid, so an enabled license is extended without
    /// asking Stripe; a disabled one is brought in step with the subscription as Stripe has it now.
    async fn invoice_paid(&self, invoice: &InvoicePaid) -> Result<Outcome, BillingError> {
        let Some(paid) = &invoice.subscription else {
            return Ok(Outcome::Ignored("the invoice belongs to no subscription"));
        };
        let Some(paid_until) = paid.paid_until else {
            return Ok(Outcome::Ignored("the invoice holds only prorations"));
        };
        let subscription = &paid.id;
        // A charged invoice ends a trial; a $0 one (the trial's first) says nothing about it.
        let ends_trial = invoice.amount_paid.is_some_and(|amount| amount > 0);

        let license = match self.store.get(subscription).await? {
            Some(entry) => self.licensespring.retrieve_license(entry.license_id).await?,
            None if invoice.billing_reason == Some(BillingReason::SubscriptionCreate) => {
                let current = self.stripe.retrieve_subscription(subscription).await?;
                let buyer = Buyer::new(invoice.customer_email.as_deref(), invoice.customer_name.as_deref());
                return self.converge(&current, None, Some(paid_until), buyer).await;
            }
            // Not in the cache (evicted or lost): find the license through the key in Stripe's metadata.
            None => match self.find_license(subscription, paid.license_key.as_ref()).await? {
                Some(license) => license,
                None => {
                    return Err(BillingError::NotYet(format!(
                        "{subscription} has no license yet: its first invoice has not been processed"
                    )));
                }
            },
        };
        if !license.enabled {
            // Disabled: re-enabled only if Stripe says the subscription is active now (a late
            // invoice of an ended subscription never re-enables it).
            let current = self.stripe.retrieve_subscription(subscription).await?;
            return self.converge(&current, Some(license), Some(paid_until), None).await;
        }
        self.extend(&license, paid_until, ends_trial).await
    }

    /// `customer.subscription.updated`, `.paused`, `.resumed`: the license follows the subscription
    /// as Stripe has it now (not as the event says: events come late and out of order). An update
    /// of nothing the license depends on (the key this server wrote into the metadata) calls nobody.
    async fn subscription_changed(&self, changed: &SubscriptionChanged) -> Result<Outcome, BillingError> {
        if !changed.change.may_affect_the_license() {
            return Ok(Outcome::Ignored("only the metadata changed"));
        }
        self.sync_locked(&changed.id).await
    }

    /// Brings the subscription's license in step with the subscription as Stripe has it now,
    /// creating it if the subscription has paid and it does not exist yet. Safe to repeat.
    pub async fn sync(&self, subscription: &SubscriptionId) -> Result<Outcome, BillingError> {
        let _lock = self.lock(subscription).await?;
        self.sync_locked(subscription).await
    }

    async fn sync_locked(&self, subscription: &SubscriptionId) -> Result<Outcome, BillingError> {
        let current = self.stripe.retrieve_subscription(subscription).await?;
        let license = self.license_of(&current).await?;
        self.converge(&current, license, None, None).await
    }

    /// The subscription (as Stripe has it now) and its license, made now if the subscription has
    /// paid and has none yet: what the thank-you page shows. The same idempotent creation as the
    /// webhook's, so the buyer never waits for the webhook, and the webhook finds the work done.
    pub async fn ensure_license(
        &self,
        subscription: &SubscriptionId,
    ) -> Result<Option<(Subscription, License)>, BillingError> {
        let _lock = self.lock(subscription).await?;
        let current = self.stripe.retrieve_subscription(subscription).await?;
        let license = self.license_of(&current).await?;
        let outcome = self.converge(&current, license.clone(), None, None).await?;
        // Read again when the sync made or changed it.
        let license = match (license, outcome) {
            (Some(license), Outcome::Duplicate | Outcome::Ignored(_)) => Some(license),
            _ => self.license_of(&current).await?,
        };
        Ok(license.map(|license| (current, license)))
    }

    /// The license of `subscription`: through the cache, else through its key or its order.
    async fn license_of(&self, subscription: &Subscription) -> Result<Option<License>, BillingError> {
        match self.store.get(&subscription.id).await? {
            Some(entry) => Ok(Some(self.licensespring.retrieve_license(entry.license_id).await?)),
            // The subscription at hand is Stripe's own: its key needs no second look.
            None => {
                Ok(self.license_by_key_or_order(&subscription.id, subscription.license_key.as_ref()).await?)
            }
        }
    }

    /// `customer.subscription.deleted`: one cycle's valid duration, disabled, dropped from the cache.
    async fn subscription_deleted(&self, deleted: &SubscriptionDeleted) -> Result<Outcome, BillingError> {
        let subscription = &deleted.id;

        let license = match self.store.get(subscription).await? {
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
            self.disable(&license, &duration).await?;
            Outcome::Disabled { license_id: license.id }
        };
        self.store.remove(subscription).await?;
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
        Ok(self.license_by_key_or_order(subscription, key.as_ref()).await?)
    }

    /// The license with `key`, else the one in the order this server created for `subscription`.
    async fn license_by_key_or_order(
        &self,
        subscription: &SubscriptionId,
        key: Option<&LicenseKey>,
    ) -> Result<Option<License>, LicenseSpringError> {
        if let Some(key) = key
            && let Some(license) = self.licensespring.find_license_by_key(key).await?
        {
            return Ok(Some(license));
        }
        self.licensespring.find_license_by_order(&self.order_id(subscription)).await
    }

    /// Makes `license` (or, when there is none, a new one) what [`desired_license`] says for
    /// `subscription`. `paid_until` is the end of a period an invoice just proved paid.
    async fn converge(
        &self,
        subscription: &Subscription,
        license: Option<License>,
        paid_until: Option<DateTime<Utc>>,
        buyer: Option<Buyer>,
    ) -> Result<Outcome, BillingError> {
        let mut desired = match desired_license(subscription, &self.policy) {
            Desired::License(desired) => desired,
            Desired::NoLicense => return Ok(Outcome::Ignored("no license until the first invoice is paid")),
            Desired::LeaveAlone(reason) => {
                tracing::warn!(subscription = %subscription.id, "the license is left as it is: {reason}");
                return Ok(Outcome::Ignored("the subscription is on a price this server does not sell"));
            }
        };
        // The invoice at hand is proof of its period even if Stripe's latest invoice has moved on,
        // or the subscription is paused or unpaid by now (whose license keeps at least what was paid).
        match (paid_until, &mut desired.validity) {
            (Some(paid_until), DesiredValidity::AtLeast(until)) => {
                *until = (*until).max(paid_until.date_naive())
            }
            (Some(paid_until), validity @ DesiredValidity::Keep) => {
                *validity = DesiredValidity::AtLeast(paid_until.date_naive());
            }
            _ => {}
        }
        let Some(license) = license else {
            return self.create(subscription, &desired, paid_until, buyer).await;
        };
        let changes = self.apply(&license, &desired).await?;
        self.keep_interval_in_step(subscription, &license).await?;
        Ok(if changes.is_empty() {
            Outcome::Duplicate
        } else {
            Outcome::Converged { license_id: license.id, changes }
        })
    }

    /// Makes the changes that bring `license` to `desired` ([`plan_changes`]); what it changed.
    async fn apply(&self, license: &License, desired: &DesiredLicense) -> Result<Vec<Change>, BillingError> {
        let plan = plan_changes(license, desired);
        // Enabling first and disabling last keeps a license that is coming back from being
        // unusable with old terms, and one that is being ended from being usable with new ones.
        if plan.enable {
            self.licensespring.enable_license(license.id).await?;
        }
        if !plan.update.is_empty() {
            self.licensespring.update_license(license.id, &plan.update).await?;
        }
        if plan.disable {
            self.licensespring.disable_license(license.id).await?;
        }
        Ok(plan.changes)
    }

    /// What the flows are configured with: the prices sold, grace days and seats.
    pub fn policy(&self) -> &LicensePolicy {
        &self.policy
    }

    /// The LicenseSpring client the flows use, for the commands that read licenses themselves.
    pub fn licensespring(&self) -> &LicenseSpringClient {
        &self.licensespring
    }

    /// The prefix of every order id this server creates (`{ORDER_BASE_STRING}_`).
    pub fn order_prefix(&self) -> String {
        format!("{}_", self.order_base_string)
    }

    /// The cache's `interval` follows a switch to another configured price.
    async fn keep_interval_in_step(
        &self,
        subscription: &Subscription,
        license: &License,
    ) -> Result<(), BillingError> {
        let Some(mut entry) = self.store.get(&subscription.id).await? else {
            return Ok(());
        };
        if entry.interval_unit() != Some(subscription.interval.unit) {
            entry = CacheEntry::new(
                subscription.id.clone(),
                license.license_key.clone(),
                subscription.interval.unit,
                license.id,
            );
            self.store.insert(entry).await?;
        }
        Ok(())
    }

    /// A new license for a subscription that has none: the tutorial's create flow, with the terms
    /// `desired` says. `paid_until`: the period an invoice at hand proved paid.
    async fn create(
        &self,
        subscription: &Subscription,
        desired: &DesiredLicense,
        paid_until: Option<DateTime<Utc>>,
        buyer: Option<Buyer>,
    ) -> Result<Outcome, BillingError> {
        // Ended, paused or unpaid by the time its first invoice is handled: the license is made
        // (the invoice was paid) but disabled. Without an invoice at hand there is nothing to make:
        // such a subscription never gets a license from a sync.
        let (valid_until, ended) = match (&desired.validity, paid_until) {
            (DesiredValidity::AtLeast(until), _) if desired.enabled => (*until, None),
            (DesiredValidity::AtLeast(until), Some(_)) => (*until, Some(None)),
            (DesiredValidity::OneCycle(duration), Some(paid)) => (paid.date_naive(), Some(Some(duration))),
            _ => return Ok(Outcome::Ignored("no license for this subscription in its state")),
        };
        let terms = NewLicenseTerms {
            valid_until,
            is_trial: desired.is_trial.unwrap_or(false),
            max_activations: desired.max_activations,
        };
        let buyer = match buyer {
            Some(buyer) => Some(buyer),
            None => self.buyer_of(subscription).await?,
        };
        let (license_id, key, is_new) = self.create_order(subscription, &terms, buyer.as_ref()).await?;
        match ended {
            // Canceled: as the tutorial's deletion leaves it, and not cached.
            Some(Some(duration)) => {
                let license = self.licensespring.retrieve_license(license_id).await?;
                if license.enabled || license.valid_duration.as_deref() != Some(duration.as_str()) {
                    self.disable(&license, duration).await?;
                }
                self.store.remove(&subscription.id).await?;
                return Ok(Outcome::CreatedDisabled { license_id });
            }
            Some(None) => {
                let license = self.licensespring.retrieve_license(license_id).await?;
                if license.enabled {
                    self.licensespring.disable_license(license_id).await?;
                }
            }
            None => {}
        }
        let entry = CacheEntry::new(subscription.id.clone(), key, subscription.interval.unit, license_id);
        self.store.insert(entry).await?;
        Ok(match (ended, is_new) {
            (Some(_), _) => Outcome::CreatedDisabled { license_id },
            (None, true) => Outcome::Created { license_id },
            (None, false) => Outcome::Duplicate,
        })
    }

    /// Writes the key to Stripe (first), then creates the order; an order that exists already
    /// (an earlier attempt) is found instead. The license's id and key, and whether it is new.
    async fn create_order(
        &self,
        subscription: &Subscription,
        terms: &NewLicenseTerms,
        buyer: Option<&Buyer>,
    ) -> Result<(LicenseId, LicenseKey, bool), BillingError> {
        let subscription_id = &subscription.id;
        // The subscription's own metadata is authoritative (the invoice's snapshot never has the key
        // on a first invoice).
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
        match self.licensespring.create_order(&order_id, &self.product_short_code, &key, terms, buyer).await {
            Ok(license_id) => Ok((license_id, key, true)),
            // The order id is ours and unique: a refusal may mean an earlier attempt created it.
            Err(error) if error.is_order_refusal() => {
                let Some(license) = self.license_by_key_or_order(subscription_id, Some(&key)).await? else {
                    return Err(error.into());
                };
                if license.license_key != key {
                    // The order holds another key: an earlier attempt's metadata write was overtaken
                    // (Stripe applied it late). The license is what the customer has; Stripe follows.
                    self.stripe.set_subscription_license_key(subscription_id, &license.license_key).await?;
                }
                Ok((license.id, license.license_key, false))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The buyer as the Stripe customer has them, when no invoice at hand said. A customer Stripe
    /// no longer has (deleted) leaves the order without one; the license is made all the same.
    async fn buyer_of(&self, subscription: &Subscription) -> Result<Option<Buyer>, BillingError> {
        let Some(customer) = &subscription.customer else { return Ok(None) };
        match self.stripe.retrieve_customer(customer).await {
            Ok(Customer { details, .. }) => Ok(Buyer::new(details.email.as_deref(), details.name.as_deref())),
            Err(StripeError::Api { status: 404, .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Makes the license valid until `paid_until`'s UTC date, unless it already is valid longer;
    /// a charged invoice also ends a trial.
    async fn extend(
        &self,
        license: &License,
        paid_until: DateTime<Utc>,
        ends_trial: bool,
    ) -> Result<Outcome, BillingError> {
        let until = paid_until.date_naive();
        let is_trial = license.is_trial && !ends_trial;
        if license.validity_period.is_some_and(|current| current >= until) {
            if is_trial == license.is_trial {
                return Ok(Outcome::Duplicate);
            }
            let change = LicenseChange { is_trial: Some(false), ..LicenseChange::default() };
            self.licensespring.update_license(license.id, &change).await?;
            return Ok(Outcome::Converged { license_id: license.id, changes: vec![Change::Trial(false)] });
        }
        let change = LicenseChange {
            is_trial: Some(is_trial),
            validity: Some(LicenseValidity::Until(until)),
            ..LicenseChange::default()
        };
        self.licensespring.update_license(license.id, &change).await?;
        Ok(Outcome::Extended { license_id: license.id, until })
    }

    /// The tutorial's end of a license: one cycle's `valid_duration`, then disabled.
    async fn disable(&self, license: &License, valid_duration: &str) -> Result<(), BillingError> {
        let change = LicenseChange {
            is_trial: Some(license.is_trial),
            validity: Some(LicenseValidity::Duration(valid_duration.to_owned())),
            ..LicenseChange::default()
        };
        self.licensespring.update_license(license.id, &change).await?;
        self.licensespring.disable_license(license.id).await?;
        Ok(())
    }
}

/// What bringing a license to its desired state takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangePlan {
    /// One `PATCH` (empty: none).
    pub update: LicenseChange,
    pub enable: bool,
    pub disable: bool,
    /// The same, as a person reads it.
    pub changes: Vec<Change>,
}

/// The changes that bring `license` to `desired`: none when it is in step. Pure, so `reconcile`
/// reports exactly what a sync would do.
pub fn plan_changes(license: &License, desired: &DesiredLicense) -> ChangePlan {
    let mut plan = ChangePlan::default();
    match &desired.validity {
        DesiredValidity::AtLeast(until) if license.validity_period.is_none_or(|current| current < *until) => {
            plan.update.validity = Some(LicenseValidity::Until(*until));
            plan.changes.push(Change::ValidUntil(*until));
        }
        DesiredValidity::OneCycle(duration)
            if license.valid_duration.as_deref() != Some(duration.as_str()) =>
        {
            plan.update.validity = Some(LicenseValidity::Duration(duration.clone()));
            plan.changes.push(Change::ValidFor(duration.clone()));
        }
        _ => {}
    }
    let is_trial = desired.is_trial.unwrap_or(license.is_trial);
    if is_trial != license.is_trial {
        plan.changes.push(Change::Trial(is_trial));
    }
    if plan.update.validity.is_some() || is_trial != license.is_trial {
        // LicenseSpring's rule: `is_trial` goes with every validity change.
        plan.update.is_trial = Some(is_trial);
    }
    if let Some(max) = desired.max_activations
        && license.max_activations != Some(max)
    {
        plan.update.max_activations = Some(max);
        plan.changes.push(Change::MaxActivations(max));
    }
    plan.enable = desired.enabled && !license.enabled;
    plan.disable = !desired.enabled && license.enabled;
    if plan.enable {
        plan.changes.push(Change::Enabled);
    }
    if plan.disable {
        plan.changes.push(Change::Disabled);
    }
    plan
}

/// `invoice.payment_failed`: logged. The license follows the status change (`past_due`, then
/// `unpaid` or canceled), which Stripe sends as `customer.subscription.updated`.
fn payment_failed(failed: &InvoicePaymentFailed) -> Outcome {
    Outcome::PaymentFailed { attempt: failed.attempt_count }
}
