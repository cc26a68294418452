//! The license a subscription should have: a pure function of Stripe's current subscription (with
//! its latest invoice) and the settings. SPEC's table "The license follows the subscription",
//! row by row; the unit tests below read the same way.

use chrono::{DateTime, Days, NaiveDate, Utc};

use crate::model::SubscriptionStatus;
use crate::stripe::Subscription;

/// What the settings say about licenses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicensePolicy {
    /// The price ids this server sells (`STRIPE_PRODUCT`).
    pub prices: Vec<String>,
    /// Days a `past_due` license stays valid past the paid period (`GRACE_DAYS`).
    pub grace_days: u32,
    /// `max_activations` per seat (`ACTIVATIONS_PER_SEAT`); `None`: never touched.
    pub activations_per_seat: Option<u32>,
}

/// The license's desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    /// No license yet: the first invoice is not paid (`incomplete`).
    NoLicense,
    /// The subscription is on a price this server does not sell: its license is left as it is.
    LeaveAlone(String),
    License(DesiredLicense),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredLicense {
    pub enabled: bool,
    pub validity: DesiredValidity,
    /// `None`: whatever the license says.
    pub is_trial: Option<bool>,
    /// `None`: not touched.
    pub max_activations: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DesiredValidity {
    /// Valid until at least this day (UTC); a license valid longer is never shortened.
    AtLeast(NaiveDate),
    /// Valid for one billing cycle from when it is set (`valid_duration`), as the tutorial does
    /// for an ended subscription.
    OneCycle(String),
    /// Whatever it is now.
    Keep,
}

/// The desired license of `subscription`, SPEC's table row by row.
pub fn desired_license(subscription: &Subscription, policy: &LicensePolicy) -> Desired {
    if let Some(price) = &subscription.price_id
        && !policy.prices.iter().any(|sold| sold == price)
    {
        return Desired::LeaveAlone(format!("price {price} is not one this server sells (STRIPE_PRODUCT)"));
    }
    let max_activations =
        policy.activations_per_seat.map(|per_seat| subscription.quantity.saturating_mul(per_seat));
    let license = |enabled, validity, is_trial| {
        Desired::License(DesiredLicense { enabled, validity, is_trial, max_activations })
    };
    let latest_paid = subscription.latest_invoice.as_ref().is_some_and(|invoice| invoice.is_paid());
    match &subscription.status {
        SubscriptionStatus::Incomplete => Desired::NoLicense,
        // The trial's ($0) first invoice is paid: valid until the trial ends.
        SubscriptionStatus::Trialing => {
            let until = subscription.trial_end.or(subscription.current_period_end);
            license(true, at_least(until, 0), Some(true))
        }
        // Paid through the current period once its invoice is paid; until then (the hour between
        // a renewal's invoice and its payment) through the previous one. A charged, paid invoice
        // ends a trial.
        SubscriptionStatus::Active => {
            let paid_through =
                if latest_paid { subscription.current_period_end } else { subscription.current_period_start };
            let charged =
                subscription.latest_invoice.as_ref().is_some_and(|i| i.is_paid() && i.amount_paid > Some(0));
            license(true, at_least(paid_through, 0), charged.then_some(false))
        }
        // A renewal payment failed and Stripe retries: the last paid period plus the grace days.
        SubscriptionStatus::PastDue => {
            let paid_through =
                if latest_paid { subscription.current_period_end } else { subscription.current_period_start };
            license(true, at_least(paid_through, policy.grace_days), None)
        }
        SubscriptionStatus::Unpaid | SubscriptionStatus::Paused | SubscriptionStatus::IncompleteExpired => {
            license(false, DesiredValidity::Keep, None)
        }
        SubscriptionStatus::Canceled => {
            license(false, DesiredValidity::OneCycle(subscription.interval.valid_duration()), None)
        }
        SubscriptionStatus::Other(status) => {
            Desired::LeaveAlone(format!("status {status:?} is not one this server knows"))
        }
    }
}

fn at_least(until: Option<DateTime<Utc>>, extra_days: u32) -> DesiredValidity {
    match until {
        Some(until) => {
            let day = until.date_naive();
            DesiredValidity::AtLeast(day.checked_add_days(Days::new(extra_days.into())).unwrap_or(day))
        }
        None => DesiredValidity::Keep,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{BillingInterval, IntervalUnit, SubscriptionId};
    use crate::stripe::InvoiceSummary;

    const MONTHLY: &str = "price_monthly";
    const YEARLY: &str = "price_yearly";

    fn day(text: &str) -> NaiveDate {
        text.parse().expect("a date")
    }

    fn at(text: &str) -> Option<DateTime<Utc>> {
        Some(day(text).and_hms_opt(16, 0, 0).expect("time").and_utc())
    }

    fn policy() -> LicensePolicy {
        LicensePolicy {
            prices: vec![MONTHLY.into(), YEARLY.into()],
            grace_days: 3,
            activations_per_seat: None,
        }
    }

    /// A monthly subscription in its period 2026-01-24 .. 2026-02-24, latest invoice paid ($5).
    fn subscription(status: SubscriptionStatus) -> Subscription {
        Subscription {
            id: SubscriptionId("sub_1".into()),
            status,
            license_key: None,
            metadata: BTreeMap::new(),
            customer: Some("cus_1".into()),
            price_id: Some(MONTHLY.into()),
            quantity: 1,
            interval: BillingInterval { unit: IntervalUnit::Month, count: 1 },
            current_period_start: at("2026-01-24"),
            current_period_end: at("2026-02-24"),
            trial_end: None,
            cancel_at_period_end: false,
            latest_invoice: Some(invoice("paid", 500)),
            canceled_at: None,
            ended_at: None,
        }
    }

    fn invoice(status: &str, amount_paid: i64) -> InvoiceSummary {
        InvoiceSummary { id: "in_1".into(), status: Some(status.into()), amount_paid: Some(amount_paid) }
    }

    fn license(enabled: bool, validity: DesiredValidity, is_trial: Option<bool>) -> Desired {
        Desired::License(DesiredLicense { enabled, validity, is_trial, max_activations: None })
    }

    fn until(text: &str) -> DesiredValidity {
        DesiredValidity::AtLeast(day(text))
    }

    #[test]
    fn first_invoice_paid_while_trialing_is_a_trial_license_until_the_trial_ends() {
        let mut trial = subscription(SubscriptionStatus::Trialing);
        trial.trial_end = at("2026-02-07");
        trial.current_period_end = at("2026-02-07");
        trial.latest_invoice = Some(invoice("paid", 0));
        assert_eq!(desired_license(&trial, &policy()), license(true, until("2026-02-07"), Some(true)));
    }

    #[test]
    fn first_invoice_paid_and_active_is_the_tutorials_license() {
        let active = subscription(SubscriptionStatus::Active);
        assert_eq!(desired_license(&active, &policy()), license(true, until("2026-02-24"), Some(false)));
    }

    #[test]
    fn a_later_invoice_paid_ends_the_trial_and_covers_its_period() {
        // The period rolled over and its (charged) invoice is paid.
        let renewed = subscription(SubscriptionStatus::Active);
        assert_eq!(desired_license(&renewed, &policy()), license(true, until("2026-02-24"), Some(false)));
        // Rolled over, invoice not paid yet: still the previous period, the trial flag untouched.
        let mut awaiting = subscription(SubscriptionStatus::Active);
        awaiting.latest_invoice = Some(invoice("open", 0));
        assert_eq!(desired_license(&awaiting, &policy()), license(true, until("2026-01-24"), None));
    }

    #[test]
    fn past_due_stays_enabled_until_the_paid_period_plus_grace_days() {
        let mut past_due = subscription(SubscriptionStatus::PastDue);
        past_due.latest_invoice = Some(invoice("open", 0));
        assert_eq!(desired_license(&past_due, &policy()), license(true, until("2026-01-27"), None));
        let no_grace = LicensePolicy { grace_days: 0, ..policy() };
        assert_eq!(desired_license(&past_due, &no_grace), license(true, until("2026-01-24"), None));
    }

    #[test]
    fn unpaid_or_paused_is_disabled_with_its_validity_kept() {
        for status in
            [SubscriptionStatus::Unpaid, SubscriptionStatus::Paused, SubscriptionStatus::IncompleteExpired]
        {
            let subscription = subscription(status.clone());
            assert_eq!(
                desired_license(&subscription, &policy()),
                license(false, DesiredValidity::Keep, None),
                "{status}"
            );
        }
    }

    #[test]
    fn active_or_trialing_again_is_enabled_again() {
        for status in [SubscriptionStatus::Active, SubscriptionStatus::Trialing] {
            let Desired::License(desired) = desired_license(&subscription(status.clone()), &policy()) else {
                panic!("{status}: a license");
            };
            assert!(desired.enabled, "{status}");
        }
    }

    #[test]
    fn cancel_at_period_end_changes_nothing() {
        let mut ending = subscription(SubscriptionStatus::Active);
        ending.cancel_at_period_end = true;
        assert_eq!(
            desired_license(&ending, &policy()),
            desired_license(&subscription(SubscriptionStatus::Active), &policy())
        );
    }

    #[test]
    fn canceled_is_the_tutorials_one_cycle_and_disabled() {
        let mut canceled = subscription(SubscriptionStatus::Canceled);
        canceled.interval = BillingInterval { unit: IntervalUnit::Month, count: 3 };
        assert_eq!(
            desired_license(&canceled, &policy()),
            license(false, DesiredValidity::OneCycle("3m".into()), None)
        );
    }

    #[test]
    fn seats_set_max_activations_when_configured() {
        let mut seats = subscription(SubscriptionStatus::Active);
        seats.quantity = 4;
        let per_seat = LicensePolicy { activations_per_seat: Some(3), ..policy() };
        let Desired::License(desired) = desired_license(&seats, &per_seat) else { panic!("a license") };
        assert_eq!(desired.max_activations, Some(12));
        let Desired::License(untouched) = desired_license(&seats, &policy()) else { panic!("a license") };
        assert_eq!(untouched.max_activations, None);
    }

    #[test]
    fn another_configured_price_keeps_the_license() {
        let mut yearly = subscription(SubscriptionStatus::Active);
        yearly.price_id = Some(YEARLY.into());
        yearly.interval = BillingInterval { unit: IntervalUnit::Year, count: 1 };
        yearly.current_period_end = at("2027-01-24");
        assert_eq!(desired_license(&yearly, &policy()), license(true, until("2027-01-24"), Some(false)));
    }

    #[test]
    fn a_price_that_is_not_configured_leaves_the_license_alone() {
        let mut other = subscription(SubscriptionStatus::Active);
        other.price_id = Some("price_other".into());
        assert!(
            matches!(desired_license(&other, &policy()), Desired::LeaveAlone(reason) if reason.contains("price_other"))
        );
    }

    #[test]
    fn no_license_before_the_first_payment_and_unknown_statuses_are_left_alone() {
        assert_eq!(
            desired_license(&subscription(SubscriptionStatus::Incomplete), &policy()),
            Desired::NoLicense
        );
        let other = subscription(SubscriptionStatus::Other("on_hold".into()));
        assert!(matches!(desired_license(&other, &policy()), Desired::LeaveAlone(_)));
    }
}
