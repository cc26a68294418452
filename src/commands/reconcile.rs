//! `reconcile [--apply]`: finds what the webhooks missed. Pages through every Stripe subscription
//! of the configured prices (100 a page, latest invoice expanded) and every LicenseSpring license
//! of this server's order prefix (100 a page), compares each license with the state
//! [`desired_license`] computes for its subscription, and prints one line per difference. With
//! `--apply`, each difference is repaired through [`Billing::sync`], the webhooks' own code.

use std::collections::{HashMap, HashSet};

use crate::billing::{Billing, BillingError, Desired, DesiredValidity, desired_license, plan_changes};
use crate::licensespring::License;
use crate::model::{LicenseId, LicenseKey, SubscriptionId};
use crate::stripe::{StripeError, Subscription};

use super::{Progress, exit};

/// One way a license is not what its subscription says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// `None` for an orphan license.
    pub subscription: Option<SubscriptionId>,
    /// `None` for a missing license.
    pub license: Option<License>,
    /// What differs, and what it should be.
    pub what: String,
}

impl Drift {
    fn line(&self) -> String {
        let subscription =
            self.subscription.as_ref().map_or("(no subscription)".to_owned(), ToString::to_string);
        let license =
            self.license.as_ref().map_or("(no license)".to_owned(), |l| format!("license {}", l.id));
        format!("{subscription}  {license}  {}", self.what)
    }
}

/// What a run looked at and found.
#[derive(Debug, Default)]
pub struct Findings {
    pub subscriptions: usize,
    pub licenses: usize,
    pub drift: Vec<Drift>,
}

/// More orphans than this share of the listed licenses means the keys are of another account or
/// mode (test keys against live licenses): `--apply` then leaves them alone.
const ORPHAN_SHARE_LIMIT: f64 = 0.5;

/// Lists both sides and compares them.
pub async fn find_drift(billing: &Billing, progress: &Progress) -> Result<Findings, BillingError> {
    let subscriptions = list_subscriptions(billing, progress).await?;
    let licenses = list_licenses(billing, progress).await?;
    let mut findings =
        Findings { subscriptions: subscriptions.len(), licenses: licenses.len(), ..Findings::default() };

    let by_order: HashMap<&str, &License> =
        licenses.iter().filter_map(|l| Some((l.order_store_id.as_deref()?, l))).collect();
    let by_key: HashMap<&LicenseKey, &License> = licenses.iter().map(|l| (&l.license_key, l)).collect();
    let mut matched: HashSet<LicenseId> = HashSet::new();
    for subscription in &subscriptions {
        let order_id = billing.order_id(&subscription.id);
        let license = by_order
            .get(order_id.as_str())
            .or_else(|| subscription.license_key.as_ref().and_then(|key| by_key.get(key)))
            .copied();
        if let Some(license) = license {
            matched.insert(license.id);
        }
        if let Some(drift) = compare(billing, subscription, license) {
            findings.drift.push(drift);
        }
    }

    // Enabled licenses of this server's orders that no listed subscription claims: Stripe is asked
    // about each (its subscription may be on a price that is not configured, which is left alone).
    let prefix = billing.order_prefix();
    for license in licenses.iter().filter(|l| l.enabled && !matched.contains(&l.id)) {
        let Some(subscription) =
            license.order_store_id.as_deref().and_then(|order| order.strip_prefix(&prefix))
        else {
            continue;
        };
        progress.step(format!("asking Stripe about {subscription}"));
        match billing.stripe().retrieve_subscription(&SubscriptionId(subscription.to_owned())).await {
            Err(StripeError::Api { status: 404, .. }) | Err(StripeError::InvalidId(_)) => findings.drift.push(Drift {
                subscription: None,
                license: Some(license.clone()),
                what: format!(
                    "enabled, but Stripe has no subscription {subscription} (order {}): should be disabled",
                    license.order_store_id.as_deref().unwrap_or_default()
                ),
            }),
            Ok(_) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(findings)
}

/// Every subscription of the configured prices, each once.
async fn list_subscriptions(
    billing: &Billing,
    progress: &Progress,
) -> Result<Vec<Subscription>, BillingError> {
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    for price in &billing.policy().prices {
        let mut after: Option<String> = None;
        loop {
            let page = billing.stripe().list_subscriptions(price, after.as_deref()).await?;
            after = page.data.last().map(|s| s.id.to_string());
            for subscription in page.data {
                if seen.insert(subscription.id.clone()) {
                    all.push(subscription);
                }
            }
            progress.step(format!("listed {} Stripe subscriptions", all.len()));
            if !page.has_more || after.is_none() {
                break;
            }
        }
    }
    Ok(all)
}

/// Every license of this server's orders.
async fn list_licenses(billing: &Billing, progress: &Progress) -> Result<Vec<License>, BillingError> {
    let prefix = billing.order_prefix();
    let mut all: Vec<License> = Vec::new();
    loop {
        let page = billing.licensespring().list_licenses_of_orders(&prefix, all.len()).await?;
        let got = page.results.len();
        all.extend(page.results);
        progress.step(format!("listed {} of {} LicenseSpring licenses", all.len(), page.count));
        if got == 0 || all.len() >= page.count {
            break;
        }
    }
    Ok(all)
}

/// The difference between a subscription's license and its desired state, if any.
fn compare(billing: &Billing, subscription: &Subscription, license: Option<&License>) -> Option<Drift> {
    let Desired::License(desired) = desired_license(subscription, billing.policy()) else {
        return None;
    };
    let Some(license) = license else {
        // Only a subscription that should have a usable license misses one: an ended one that
        // never had a license has nothing to repair.
        if !desired.enabled {
            return None;
        }
        let until = match desired.validity {
            DesiredValidity::AtLeast(until) => format!(", valid until {until}"),
            _ => String::new(),
        };
        return Some(Drift {
            subscription: Some(subscription.id.clone()),
            license: None,
            what: format!("no license ({}): should have one{until}", subscription.status),
        });
    };
    let plan = plan_changes(license, &desired);
    if plan.changes.is_empty() {
        return None;
    }
    let now = describe(license);
    let should: Vec<String> = plan.changes.iter().map(ToString::to_string).collect();
    Some(Drift {
        subscription: Some(subscription.id.clone()),
        license: Some(license.clone()),
        what: format!("{now} ({}): should be {}", subscription.status, should.join(", ")),
    })
}

/// A license's state in a few words.
fn describe(license: &License) -> String {
    let validity = match (license.validity_period, &license.valid_duration) {
        (Some(day), _) => format!("valid until {day}"),
        (None, Some(duration)) => format!("valid for {duration}"),
        (None, None) => "no validity".to_owned(),
    };
    let enabled = if license.enabled { "enabled" } else { "disabled" };
    let trial = if license.is_trial { ", a trial" } else { "" };
    let seats = license.max_activations.map_or(String::new(), |n| format!(", {n} activations"));
    format!("{validity}, {enabled}{trial}{seats}")
}

/// Runs `reconcile`: prints each difference (and, with `apply`, what repairing it did); the exit
/// status.
pub async fn run(billing: &Billing, apply: bool) -> u8 {
    let progress = Progress::new();
    let work = async {
        let findings = match find_drift(billing, &progress).await {
            Ok(findings) => findings,
            Err(error) => {
                progress.finish();
                eprintln!("error: reconcile stopped: {error}");
                return exit::STOPPED;
            }
        };
        for drift in &findings.drift {
            progress.say(drift.line());
        }
        let found = findings.drift.len();
        let summary = format!(
            "{} subscriptions, {} licenses: {}",
            findings.subscriptions,
            findings.licenses,
            if found == 0 { "all in step".to_owned() } else { format!("{found} difference(s)") }
        );
        if !apply || found == 0 {
            progress.finish();
            println!("{summary}");
            return if found == 0 { exit::OK } else { exit::FOUND };
        }
        let failed = repair(billing, &findings, &progress).await;
        progress.finish();
        println!("{summary}; repaired {}, failed {failed}", found - failed);
        if failed == 0 { exit::OK } else { exit::FOUND }
    };
    progress.until_interrupted(work, "interrupted: stopped before the end (a repair in flight either finished or left nothing half done)").await
}

/// Repairs each difference, going on after a failure; how many failed.
pub async fn repair(billing: &Billing, findings: &Findings, progress: &Progress) -> usize {
    let orphans = findings.drift.iter().filter(|d| d.subscription.is_none()).count();
    let too_many_orphans = orphans > 5 && orphans as f64 > ORPHAN_SHARE_LIMIT * findings.licenses as f64;
    let mut failed = 0;
    for drift in &findings.drift {
        progress.step(format!("repairing: {}", drift.line()));
        let result = match (&drift.subscription, &drift.license) {
            (Some(subscription), _) => billing.sync(subscription).await.map(|outcome| outcome.to_string()),
            (None, Some(_)) if too_many_orphans => {
                progress.say(format!(
                    "left alone: {orphans} of {} licenses have no subscription in this Stripe account; are these the \
                     right keys (test or live mode)?",
                    findings.licenses
                ));
                failed += 1;
                continue;
            }
            (None, Some(license)) => billing
                .licensespring()
                .disable_license(license.id)
                .await
                .map(|()| "disabled".to_owned())
                .map_err(Into::into),
            (None, None) => continue,
        };
        match result {
            Ok(done) => progress.say(format!("repaired: {}  {done}", drift.line())),
            Err(error) => {
                failed += 1;
                progress.say(format!("FAILED: {}  {error}", drift.line()));
            }
        }
    }
    failed
}
