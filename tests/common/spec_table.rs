//! The tests' own reading of SPEC's table "The license follows the subscription": what a license
//! must be, given the Stripe simulator's final subscription and its invoices. Written apart from
//! the server's `billing::desired`, so that the two readings check each other. Shared by the
//! suites (each includes this file with `#[path]`).
#![allow(dead_code)] // each includer uses a different part

use chrono::{DateTime, Days, NaiveDate, Utc};
use sim::licensespring::SimLicense;
use sim::stripe::{Interval, InvoiceStatus, SimSubscription, StripeSim, SubscriptionStatus};

/// The settings the table depends on: `GRACE_DAYS` and `ACTIVATIONS_PER_SEAT`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub grace_days: u32,
    pub activations_per_seat: Option<u32>,
}

/// What the license must be.
#[derive(Debug, PartialEq, Eq)]
pub struct Expected {
    pub enabled: bool,
    pub validity: Validity,
    pub is_trial: bool,
    /// `None`: not the server's to set (no `ACTIVATIONS_PER_SEAT`).
    pub max_activations: Option<u32>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Validity {
    Until(NaiveDate),
    /// Kept as it was: at least the last paid period.
    AtLeast(NaiveDate),
    /// `valid_duration`.
    For(String),
}

pub fn date(unix: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp(unix, 0).expect("in range").date_naive()
}

/// SPEC's table for Stripe's final subscription (which has a paid invoice) and its invoices.
pub fn expected(stripe: &StripeSim, subscription: &SimSubscription, policy: Policy) -> Expected {
    let invoices = stripe.invoices();
    let paid: Vec<_> = invoices
        .iter()
        .filter(|invoice| invoice.subscription == subscription.id && invoice.status == InvoiceStatus::Paid)
        .collect();
    let paid_through =
        paid.iter().map(|invoice| date(invoice.line_period_end)).max().expect("a paid invoice");
    let charged = paid.iter().any(|invoice| invoice.amount_paid > 0);
    let (enabled, validity) = match subscription.status {
        SubscriptionStatus::Trialing => {
            (true, Validity::Until(date(subscription.trial_end.expect("a trial end"))))
        }
        SubscriptionStatus::Active => (true, Validity::Until(paid_through)),
        SubscriptionStatus::PastDue => {
            let grace =
                date(subscription.current_period_start).checked_add_days(Days::new(policy.grace_days.into()));
            (true, Validity::Until(paid_through.max(grace.expect("a date"))))
        }
        SubscriptionStatus::Unpaid | SubscriptionStatus::Paused => (false, Validity::AtLeast(paid_through)),
        SubscriptionStatus::Canceled => (false, Validity::For(one_cycle(stripe, subscription))),
    };
    // A trial until an invoice is charged; an ended one keeps whatever it had.
    let is_trial = subscription.status == SubscriptionStatus::Trialing || (enabled && !charged);
    Expected {
        enabled,
        validity,
        is_trial,
        max_activations: policy.activations_per_seat.map(|per_seat| subscription.quantity * per_seat),
    }
}

/// One billing cycle of the subscription's price as LicenseSpring's `valid_duration`.
pub fn one_cycle(stripe: &StripeSim, subscription: &SimSubscription) -> String {
    let price = stripe.prices().into_iter().find(|p| p.id == subscription.price_id).expect("its price");
    let n = price.interval_count;
    match price.interval {
        Interval::Day => format!("{n}d"),
        Interval::Week => format!("{}d", 7 * n),
        Interval::Month => format!("{n}m"),
        Interval::Year => format!("{n}y"),
    }
}

/// Panics, naming `context`, unless `license` is what the table says for the subscription.
pub fn assert_license_follows(
    stripe: &StripeSim,
    subscription: &str,
    license: &SimLicense,
    policy: Policy,
    context: &str,
) {
    let final_state = stripe.subscription(subscription).expect("known to Stripe");
    let expected = expected(stripe, &final_state, policy);
    let validity = match &expected.validity {
        Validity::Until(_) => Validity::Until(license.validity_period.expect("a validity period")),
        Validity::AtLeast(least) => {
            let actual = license.validity_period.expect("a validity period");
            assert!(actual >= *least, "{context}: {subscription}: validity {actual} kept, at least {least}");
            Validity::AtLeast(*least)
        }
        Validity::For(_) => Validity::For(license.valid_duration.clone().unwrap_or_default()),
    };
    let actual = Expected {
        enabled: license.enabled,
        validity,
        is_trial: license.is_trial,
        max_activations: expected.max_activations.map(|_| license.max_activations),
    };
    assert_eq!(actual, expected, "{context}: {subscription} is {}", final_state.status.as_str());
    let key = final_state.metadata.get("license_key");
    assert_eq!(key.map(String::as_str), Some(license.license_key.as_str()), "{context}: the key in Stripe");
}
