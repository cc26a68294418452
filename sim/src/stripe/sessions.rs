//! Checkout Sessions (opened from a payment link, completed by paying, settled or expired),
//! the customers they make, and customer portal sessions.

use std::collections::BTreeMap;

use rand::Rng;
use rand::distr::Alphanumeric;

use super::state::{Buyer, Shared, Store, new_id};
use super::{
    CheckoutPayment, CheckoutPaymentStatus, CheckoutStatus, SimCheckoutSession, SimCustomerDetails, SimEvent,
    SimPaymentLink, SimPortalSession, StripeSimError, SubscribeOptions,
};
use crate::frontdoor::lock;

/// How long an open Checkout Session lasts (Stripe's default `expires_at`).
const CHECKOUT_LIFETIME: i64 = 24 * 3600;
/// How long a portal session's page works [unverified: "short-lived"].
const PORTAL_LIFETIME: i64 = 3600;
/// The one portal configuration (the account's default).
pub(super) const PORTAL_CONFIGURATION: &str = "bpc_1SimDefaultPortalConfig";

/// `cs_test_a1...`: 58 characters after the prefix, as in Stripe's fixtures.
fn checkout_session_id() -> String {
    let random: String = rand::rng().sample_iter(Alphanumeric).take(56).map(char::from).collect();
    format!("cs_test_a1{random}")
}

impl Store {
    /// The session, if it is open and not past its `expires_at`.
    fn open_session(&mut self, id: &str) -> Result<SimCheckoutSession, StripeSimError> {
        let now = self.now();
        let session = self.checkout_session_mut(id)?;
        match session.status {
            CheckoutStatus::Open if now < session.expires_at => Ok(session.clone()),
            CheckoutStatus::Open | CheckoutStatus::Expired => {
                Err(StripeSimError::NotAllowed(format!("checkout session {id} has expired")))
            }
            CheckoutStatus::Complete => {
                Err(StripeSimError::NotAllowed(format!("checkout session {id} is already complete")))
            }
        }
    }

    fn checkout_session_mut(&mut self, id: &str) -> Result<&mut SimCheckoutSession, StripeSimError> {
        self.checkout_sessions
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or_else(|| StripeSimError::UnknownCheckoutSession(id.to_owned()))
    }
}

impl Shared {
    /// A stored payment link of one line item (the REST call and [`buy`](Self::buy)).
    pub(super) fn add_link(&self, store: &mut Store, mut link: SimPaymentLink) -> SimPaymentLink {
        link.id = new_id("plink");
        link.url = self.base_url.join(&format!("checkout/{}", link.id)).map(String::from).unwrap_or_default();
        store.links.push(link.clone());
        link
    }

    pub(super) fn open_checkout(&self, link_id: &str) -> Result<String, StripeSimError> {
        let mut store = lock(&self.store);
        self.open_checkout_in(&mut store, link_id)
    }

    fn open_checkout_in(&self, store: &mut Store, link_id: &str) -> Result<String, StripeSimError> {
        let link = store.links.iter().find(|l| l.id == link_id).cloned();
        let link = link.ok_or_else(|| StripeSimError::UnknownPaymentLink(link_id.to_owned()))?;
        let unit_amount = self.price(&link.price_id).map_or(0, |p| p.unit_amount);
        let now = store.now();
        let id = checkout_session_id();
        let url =
            self.base_url.join(&format!("checkout/sessions/{id}")).map(String::from).unwrap_or_default();
        let trial = link.trial_period_days.is_some_and(|days| days > 0);
        store.checkout_sessions.push(SimCheckoutSession {
            id: id.clone(),
            payment_link: link.id,
            price_id: link.price_id,
            quantity: link.quantity,
            status: CheckoutStatus::Open,
            payment_status: CheckoutPaymentStatus::Unpaid,
            created: now,
            expires_at: now + CHECKOUT_LIFETIME,
            url,
            success_url: link.redirect_url,
            customer: None,
            customer_details: None,
            subscription: None,
            invoice: None,
            metadata: link.metadata,
            amount_total: if trial { 0 } else { unit_amount * i64::from(link.quantity) },
            line_item_id: new_id("li"),
        });
        Ok(id)
    }

    /// The session, if it is open and not past its `expires_at`.
    pub(super) fn open_session(&self, id: &str) -> Result<SimCheckoutSession, StripeSimError> {
        lock(&self.store).open_session(id)
    }

    pub(super) fn complete_checkout(
        &self,
        id: &str,
        payment: CheckoutPayment,
    ) -> Result<Vec<SimEvent>, StripeSimError> {
        let email = payment.email.trim().to_owned();
        let name = payment.name.map(|name| name.trim().to_owned()).filter(|name| !name.is_empty());
        let mut store = lock(&self.store);
        store.open_session(id)?;
        if email.is_empty() {
            return Err(StripeSimError::NotAllowed("an email is required to pay".to_owned()));
        }
        let customer = store.new_customer(email.clone(), name.clone());
        let session = store.checkout_session_mut(id)?;
        session.status = CheckoutStatus::Complete;
        session.customer = Some(customer.id);
        session.customer_details = Some(SimCustomerDetails { email, name });
        let mut events = Vec::new();
        if !payment.processing {
            events = self.fulfil(&mut store, id)?;
        }
        // Stripe does not order events; the simulator sends the session's after the
        // subscription's and the first invoice's, as is commonly seen.
        events.push(self.emit_session(&mut store, "checkout.session.completed", id)?);
        Ok(events)
    }

    pub(super) fn settle_checkout(&self, id: &str) -> Result<Vec<SimEvent>, StripeSimError> {
        let mut store = lock(&self.store);
        let session = store.checkout_session_mut(id)?;
        if session.status != CheckoutStatus::Complete
            || session.payment_status != CheckoutPaymentStatus::Unpaid
        {
            return Err(StripeSimError::NotAllowed(format!(
                "checkout session {id} is {} and {}: no processing payment to settle",
                session.status.as_str(),
                session.payment_status.as_str()
            )));
        }
        let mut events = self.fulfil(&mut store, id)?;
        events.push(self.emit_session(&mut store, "checkout.session.async_payment_succeeded", id)?);
        Ok(events)
    }

    pub(super) fn expire_checkout(&self, id: &str) -> Result<SimEvent, StripeSimError> {
        let mut store = lock(&self.store);
        let session = store.checkout_session_mut(id)?;
        if session.status != CheckoutStatus::Open {
            return Err(StripeSimError::NotAllowed(format!(
                "checkout session {id} is {}, not open",
                session.status.as_str()
            )));
        }
        session.status = CheckoutStatus::Expired;
        self.emit_session(&mut store, "checkout.session.expired", id)
    }

    /// Subscribes the session's customer to the link's price, with the link's trial and
    /// subscription metadata, and marks the session paid.
    fn fulfil(&self, store: &mut Store, id: &str) -> Result<Vec<SimEvent>, StripeSimError> {
        let session = store.checkout_session_mut(id)?.clone();
        let link = store.links.iter().find(|l| l.id == session.payment_link).cloned();
        let link = link.ok_or_else(|| StripeSimError::UnknownPaymentLink(session.payment_link.clone()))?;
        let options = SubscribeOptions { quantity: link.quantity, trial_days: link.trial_period_days };
        let buyer = Buyer { customer: session.customer.clone(), ..Buyer::default() };
        let (subscription, events) =
            self.subscribe_in(store, &link.price_id, options, link.subscription_metadata, buyer)?;
        let invoice = store.subscription_mut(&subscription).map(|s| s.latest_invoice.clone());
        let free =
            invoice.as_ref().and_then(|id| store.invoice(id)).is_some_and(|invoice| invoice.amount_due == 0);
        let session = store.checkout_session_mut(id)?;
        session.subscription = Some(subscription);
        session.invoice = invoice;
        session.payment_status =
            if free { CheckoutPaymentStatus::NoPaymentRequired } else { CheckoutPaymentStatus::Paid };
        Ok(events)
    }

    fn emit_session(
        &self,
        store: &mut Store,
        event_type: &str,
        id: &str,
    ) -> Result<SimEvent, StripeSimError> {
        let session = store.checkout_session_mut(id)?.clone();
        let object = self.checkout_session_json(&session);
        let now = store.now();
        Ok(self.emit(store, event_type, session.subscription.clone(), now, object, None))
    }

    pub(super) fn buy(
        &self,
        price_id: &str,
        email: &str,
        name: Option<&str>,
    ) -> Result<(String, String), StripeSimError> {
        self.recurring_price(price_id)?;
        let session = {
            let mut store = lock(&self.store);
            let link = SimPaymentLink {
                id: String::new(),
                url: String::new(),
                price_id: price_id.to_owned(),
                quantity: 1,
                metadata: BTreeMap::new(),
                subscription_metadata: BTreeMap::new(),
                redirect_url: None,
                trial_period_days: None,
            };
            let link = self.add_link(&mut store, link);
            self.open_checkout_in(&mut store, &link.id)?
        };
        let payment =
            CheckoutPayment { email: email.to_owned(), name: name.map(str::to_owned), processing: false };
        self.complete_checkout(&session, payment)?;
        let subscription = lock(&self.store).checkout_session_mut(&session)?.subscription.clone();
        let subscription =
            subscription.ok_or_else(|| StripeSimError::NotAllowed("nothing was subscribed".to_owned()))?;
        Ok((session, subscription))
    }

    /// A portal session for a known customer; emits `billing_portal.session.created`.
    pub(super) fn create_portal_session(
        &self,
        customer: &str,
        return_url: Option<String>,
    ) -> Result<SimPortalSession, StripeSimError> {
        let mut store = lock(&self.store);
        if store.customer(customer).is_none() {
            return Err(StripeSimError::UnknownCustomer(customer.to_owned()));
        }
        let now = store.now();
        let id = new_id("bps");
        let session = SimPortalSession {
            url: self.base_url.join(&format!("portal/{id}")).map(String::from).unwrap_or_default(),
            id,
            customer: customer.to_owned(),
            return_url,
            configuration: PORTAL_CONFIGURATION.to_owned(),
            created: now,
            expires_at: now + PORTAL_LIFETIME,
        };
        store.portal_sessions.push(session.clone());
        let object = super::render::portal_session_json(&session);
        self.emit(&mut store, "billing_portal.session.created", None, now, object, None);
        Ok(session)
    }

    /// The portal session, unless it is unknown or expired.
    pub(super) fn live_portal_session(&self, id: &str) -> Result<SimPortalSession, StripeSimError> {
        let store = lock(&self.store);
        let now = store.now();
        store
            .portal_sessions
            .iter()
            .find(|s| s.id == id && now < s.expires_at)
            .cloned()
            .ok_or_else(|| StripeSimError::UnknownPortalSession(id.to_owned()))
    }

    pub(super) fn expire_portal_session(&self, id: &str) -> Result<(), StripeSimError> {
        let mut store = lock(&self.store);
        let now = store.now();
        let session = store.portal_sessions.iter_mut().find(|s| s.id == id);
        let session = session.ok_or_else(|| StripeSimError::UnknownPortalSession(id.to_owned()))?;
        session.expires_at = session.expires_at.min(now);
        Ok(())
    }
}
