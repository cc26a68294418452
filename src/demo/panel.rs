//! What the sandbox adds to the store page: a table of the simulators' subscriptions and
//! licenses, read straight from their state (never through the billing code), and the buttons
//! that move a subscription on.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use sim::licensespring::LicenseSpringSim;
use sim::stripe::{StripeSim, StripeSimError, SubscribeOptions};

use super::simulators::Simulators;
use crate::billing::{Billing, BillingError};
use crate::commands::{Progress, reconcile};
use crate::web::{MessagePage, PanelHtml, StorePanel};

/// How long a renew or cancel button waits for the app to have handled the simulator's webhook,
/// so that the page it returns to already shows the result. Bounded: a failing app must not hang
/// the button.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(5);

/// Shown above the store in the sandbox: what it is, and what the last button did.
#[derive(Template)]
#[template(path = "sandbox_notice.html")]
struct SandboxNotice<'a> {
    happened: Option<String>,
    admin_link: &'a str,
}

/// The simulators behind the sandbox's table and buttons.
pub struct DemoPanel {
    simulators: Simulators,
    /// What the Reconcile button repairs with: the billing code over a snapshot of the app's cache.
    billing: Billing,
    /// The admin page, with the sandbox's generated token in it.
    admin_link: String,
    /// The webhooks of the next action are to be lost.
    lose_next: std::sync::atomic::AtomicBool,
    /// What the last button did, shown on the page it lands on (until the next one).
    happened: std::sync::Mutex<Option<String>>,
}

/// The table below the store.
#[derive(Debug, Clone, PartialEq, Eq, Template)]
#[template(path = "sandbox_panel.html")]
pub struct SandboxView {
    /// Newest subscription first.
    pub rows: Vec<SandboxRow>,
    /// Webhooks are still being delivered (or retried): the page should look again shortly.
    pub deliveries_pending: bool,
}

/// One subscription and its license, as text ready for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRow {
    pub subscription: String,
    /// Stripe's status: `trialing`, `active`, `past_due`, `unpaid`, `paused` or `canceled`.
    pub status: &'static str,
    /// One billing cycle: `month`, `3 months`.
    pub interval: String,
    pub quantity: u32,
    /// The other prices the subscription can switch to.
    pub other_prices: Vec<SandboxPrice>,
    /// Stripe's simulated date (`YYYY-MM-DD`): the clock moves with each renewal.
    pub simulated_date: String,
    /// The license's `is_trial`.
    pub trial: bool,
    /// The license's `max_activations`.
    pub max_activations: Option<u32>,
    /// The key in the subscription's metadata; `None` until the app has written it.
    pub license_key: Option<String>,
    /// The license's `validity_period` (`YYYY-MM-DD`); `None` while there is no license.
    pub valid_until: Option<String>,
    /// Whether the license is enabled; `None` while there is no license.
    pub enabled: Option<bool>,
}

/// A price a subscription can switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPrice {
    pub id: String,
    /// `month`, `year`.
    pub interval: String,
}

impl DemoPanel {
    pub(super) fn new(simulators: Simulators, billing: Billing, admin_link: String) -> DemoPanel {
        DemoPanel {
            simulators,
            billing,
            admin_link,
            lose_next: false.into(),
            happened: std::sync::Mutex::new(None),
        }
    }

    pub fn stripe(&self) -> &StripeSim {
        &self.simulators.stripe
    }

    pub fn licensespring(&self) -> &LicenseSpringSim {
        &self.simulators.licensespring
    }

    pub(super) async fn shutdown(&self) {
        self.simulators.shutdown().await;
    }

    /// The table: Stripe's subscriptions, each joined through its metadata `license_key` to the
    /// LicenseSpring license with that key.
    pub fn view(&self) -> SandboxView {
        let prices = self.stripe().prices();
        let simulated_date = self.stripe().now().date_naive().to_string();
        let rows = self
            .stripe()
            .subscriptions()
            .into_iter()
            .rev()
            .map(|subscription| {
                let license_key = subscription.metadata.get("license_key").cloned();
                let license = license_key.as_deref().and_then(|key| self.licensespring().license_by_key(key));
                let interval = prices
                    .iter()
                    .find(|p| p.id == subscription.price_id)
                    .map_or_else(|| "unknown".to_owned(), |price| price.interval_text());
                let other_prices = prices
                    .iter()
                    .filter(|price| price.recurring && price.id != subscription.price_id)
                    .map(|price| SandboxPrice { id: price.id.clone(), interval: price.interval_text() })
                    .collect();
                SandboxRow {
                    status: subscription.status.as_str(),
                    subscription: subscription.id,
                    interval,
                    quantity: subscription.quantity,
                    other_prices,
                    simulated_date: simulated_date.clone(),
                    trial: license.as_ref().is_some_and(|l| l.is_trial),
                    max_activations: license.as_ref().map(|l| l.max_activations),
                    license_key,
                    valid_until: license.as_ref().and_then(|l| l.validity_period).map(|d| d.to_string()),
                    enabled: license.as_ref().map(|l| l.enabled),
                }
            })
            .collect();
        SandboxView { rows, deliveries_pending: self.stripe().deliveries_pending() }
    }

    /// Does `action` to the subscription in the Stripe simulator, then waits, at most
    /// [`DELIVERY_WAIT`], for the app to have handled the webhooks it sent.
    pub async fn act(&self, subscription: &str, action: Action) -> Result<(), StripeSimError> {
        let stripe = self.stripe();
        let lose = self.lose_next.swap(false, std::sync::atomic::Ordering::SeqCst);
        if lose {
            stripe.lose_deliveries_of(subscription);
        }
        let done = self.act_in_stripe(subscription, &action);
        if lose {
            stripe.stop_losing_deliveries();
        }
        done?;
        stripe.wait_for_deliveries_idle(DELIVERY_WAIT).await;
        let lost =
            if lose { " Its webhooks were lost: the license is out of step until Reconcile." } else { "" };
        self.tell(format!("{subscription}: {}{lost}", action.what_happened()));
        Ok(())
    }

    fn act_in_stripe(&self, subscription: &str, action: &Action) -> Result<(), StripeSimError> {
        let stripe = self.stripe();
        match action {
            Action::Renew => stripe.renew(subscription).map(drop)?,
            Action::DeclineRenewal => stripe.renew_declined(subscription).map(drop)?,
            Action::RetryPayment { succeeds } => stripe.retry_payment(subscription, *succeeds).map(drop)?,
            Action::Pause => stripe.pause(subscription).map(drop)?,
            Action::Resume => stripe.resume(subscription).map(drop)?,
            Action::SetSeats(quantity) => stripe.set_quantity(subscription, *quantity).map(drop)?,
            Action::SwitchPrice(price) => stripe.switch_price(subscription, price).map(drop)?,
            Action::Cancel => stripe.cancel(subscription).map(drop)?,
        }
        Ok(())
    }

    fn tell(&self, what: String) {
        *self.happened.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(what);
    }

    /// Makes the webhooks of the next button's action get lost (as when an endpoint is down for
    /// longer than Stripe retries), so the drift shows in the table.
    pub fn lose_next_webhooks(&self) {
        self.lose_next.store(true, std::sync::atomic::Ordering::SeqCst);
        self.tell(
            "The webhooks of the next action will be lost. Press a button, see the license fall out of \
                   step, then press Reconcile."
                .to_owned(),
        );
    }

    /// `reconcile --apply`, as the command does it; says what it found and repaired.
    pub async fn reconcile(&self) -> Result<(), BillingError> {
        let progress = Progress::silent();
        let findings = reconcile::find_drift(&self.billing, &progress).await?;
        let found = findings.drift.len();
        let failed = reconcile::repair(&self.billing, &findings, &progress).await;
        self.tell(match found {
            0 => format!("Reconcile: {} subscription(s), all in step.", findings.subscriptions),
            _ => format!(
                "Reconcile found {found} difference(s) and repaired {} ({failed} failed): {}",
                found - failed,
                findings.drift.iter().map(|d| d.what.clone()).collect::<Vec<_>>().join("; ")
            ),
        });
        Ok(())
    }

    /// A new subscription of the first price with a 14-day trial, as if bought through a payment
    /// link with `subscription_data[trial_period_days]=14`.
    pub async fn start_trial(&self) -> Result<(), StripeSimError> {
        let price = self.stripe().prices().into_iter().find(|price| price.recurring).map(|price| price.id);
        let price = price.ok_or_else(|| StripeSimError::UnknownPrice("a recurring price".to_owned()))?;
        let options = SubscribeOptions { trial_days: Some(14), ..SubscribeOptions::default() };
        let subscription = self.stripe().create_subscription_with(&price, options)?;
        self.stripe().wait_for_deliveries_idle(DELIVERY_WAIT).await;
        self.tell(format!(
            "{subscription}: a 14-day trial started. Stripe sent invoice.paid for its $0 first invoice; \
             the license is a trial until the trial ends."
        ));
        Ok(())
    }
}

impl Action {
    /// One sentence for the page the button lands on: what Stripe did and sent.
    fn what_happened(&self) -> String {
        match self {
            Action::Renew => {
                "the next period was billed and paid (invoice.paid): the license is extended.".into()
            }
            Action::DeclineRenewal => "the renewal's card was declined: past_due (invoice.payment_failed); \
                 the license stays enabled while Stripe retries."
                .into(),
            Action::RetryPayment { succeeds: true } => {
                "the retry was paid (invoice.paid): active again, the license is extended.".into()
            }
            Action::RetryPayment { succeeds: false } => {
                "the retry was declined too (invoice.payment_failed); after the \
                 last retry the subscription is unpaid and the license disabled."
                    .into()
            }
            Action::Pause => "paused (customer.subscription.paused): the license is disabled.".into(),
            Action::Resume => {
                "resumed and billed (customer.subscription.resumed, invoice.paid): the license is \
                 enabled again."
                    .into()
            }
            Action::SetSeats(n) => format!("now {n} seat(s) (customer.subscription.updated)."),
            Action::SwitchPrice(price) => format!("switched to {price} (customer.subscription.updated)."),
            Action::Cancel => "canceled (customer.subscription.deleted): the license is disabled.".into(),
        }
    }
}

/// What a sandbox button does to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Renew,
    DeclineRenewal,
    RetryPayment { succeeds: bool },
    Pause,
    Resume,
    SetSeats(u32),
    SwitchPrice(String),
    Cancel,
}

impl StorePanel for DemoPanel {
    fn render(&self) -> PanelHtml {
        let view = self.view();
        let section = view.render().unwrap_or_else(|error| {
            tracing::warn!(%error, "the sandbox panel could not be rendered");
            String::new()
        });
        let happened = self.happened.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let notice =
            SandboxNotice { happened, admin_link: &self.admin_link }.render().unwrap_or_else(|error| {
                tracing::warn!(%error, "the sandbox notice could not be rendered");
                String::new()
            });
        PanelHtml { notice, section, refresh_soon: view.deliveries_pending }
    }
}

/// The buttons' routes: each acts, waits (bounded) until the simulator's webhooks are handled,
/// then sends the browser back to `/`, so the page shows the result.
pub fn routes(panel: Arc<DemoPanel>) -> Router {
    Router::new()
        .route("/sandbox/trial", post(trial))
        .route("/sandbox/lose-next-webhooks", post(lose_next_webhook))
        .route("/sandbox/reconcile", post(reconcile_now))
        .route("/sandbox/subscriptions/{id}/{action}", post(act))
        .with_state(panel)
}

async fn trial(State(panel): State<Arc<DemoPanel>>) -> Response {
    back_home(panel.start_trial().await)
}

async fn lose_next_webhook(State(panel): State<Arc<DemoPanel>>) -> Response {
    panel.lose_next_webhooks();
    Redirect::to("/").into_response()
}

async fn reconcile_now(State(panel): State<Arc<DemoPanel>>) -> Response {
    match panel.reconcile().await {
        Ok(()) => Redirect::to("/").into_response(),
        Err(error) => sandbox_refusal(StatusCode::BAD_GATEWAY, format!("reconcile stopped: {error}")),
    }
}

async fn act(
    State(panel): State<Arc<DemoPanel>>,
    Path((id, action)): Path<(String, String)>,
    form: Bytes,
) -> Response {
    let field = |name: &str| {
        url::form_urlencoded::parse(&form).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
    };
    let action = match action.as_str() {
        "renew" => Action::Renew,
        "decline" => Action::DeclineRenewal,
        "retry-paid" => Action::RetryPayment { succeeds: true },
        "retry-declined" => Action::RetryPayment { succeeds: false },
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "cancel" => Action::Cancel,
        "seats" => match field("quantity")
            .and_then(|q| q.trim().parse::<u32>().ok())
            .filter(|q| (1..=99).contains(q))
        {
            Some(quantity) => Action::SetSeats(quantity),
            None => {
                return sandbox_refusal(
                    StatusCode::BAD_REQUEST,
                    "seats: a whole number from 1 to 99".to_owned(),
                );
            }
        },
        "price" => match field("price") {
            Some(price) => Action::SwitchPrice(price),
            None => {
                return sandbox_refusal(
                    StatusCode::BAD_REQUEST,
                    "price: which price to switch to".to_owned(),
                );
            }
        },
        _ => return sandbox_refusal(StatusCode::NOT_FOUND, format!("no such sandbox action: {action}")),
    };
    back_home(panel.act(&id, action).await)
}

/// 303 to the home page, or a page saying why the simulator refused.
fn back_home(result: Result<(), StripeSimError>) -> Response {
    let error = match result {
        Ok(()) => return Redirect::to("/").into_response(),
        Err(error) => error,
    };
    let status = match error {
        StripeSimError::UnknownSubscription(_) => StatusCode::NOT_FOUND,
        StripeSimError::Canceled(_) | StripeSimError::NotAllowed(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    sandbox_refusal(status, error.to_string())
}

fn sandbox_refusal(status: StatusCode, message: String) -> Response {
    (status, MessagePage::error("The sandbox could not do that", message)).into_response()
}
