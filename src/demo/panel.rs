//! What the sandbox adds to the store page: a table of the simulators' subscriptions and
//! licenses, read straight from their state (never through the billing code), and the buttons
//! that move a subscription on.

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use sim::licensespring::LicenseSpringSim;
use sim::stripe::{StripeSim, StripeSimError, SubscriptionStatus};

use super::simulators::Simulators;
use crate::web::{ErrorPage, PanelHtml, StorePanel};

/// How long a renew or cancel button waits for the app to have handled the simulator's webhook,
/// so that the page it returns to already shows the result. Bounded: a failing app must not hang
/// the button.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(5);

/// Shown above the store in the sandbox.
const NOTICE: &str = "<p class=\"banner\"><strong>Sandbox.</strong> Stripe and LicenseSpring are simulated \
                      inside this process:\nnothing is charged, no account is used, and nothing leaves this \
                      machine.</p>";

/// The simulators behind the sandbox's table and buttons.
pub struct DemoPanel {
    simulators: Simulators,
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
    /// Stripe's status: `active` or `canceled`.
    pub status: &'static str,
    /// One billing cycle: `month`, `3 months`.
    pub interval: String,
    /// The key in the subscription's metadata; `None` until the app has written it.
    pub license_key: Option<String>,
    /// The license's `validity_period` (`YYYY-MM-DD`); `None` while there is no license.
    pub valid_until: Option<String>,
    /// Whether the license is enabled; `None` while there is no license.
    pub enabled: Option<bool>,
    /// Whether the subscription can still be renewed or canceled.
    pub active: bool,
}

impl DemoPanel {
    pub(super) fn new(simulators: Simulators) -> DemoPanel {
        DemoPanel { simulators }
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
                SandboxRow {
                    status: subscription.status.as_str(),
                    active: subscription.status == SubscriptionStatus::Active,
                    subscription: subscription.id,
                    interval,
                    license_key,
                    valid_until: license.as_ref().and_then(|l| l.validity_period).map(|d| d.to_string()),
                    enabled: license.as_ref().map(|l| l.enabled),
                }
            })
            .collect();
        SandboxView { rows, deliveries_pending: self.stripe().deliveries_pending() }
    }

    /// Bills the subscription's next period (the simulator emits the renewal `invoice.paid`) and
    /// waits, at most [`DELIVERY_WAIT`], for the app to have handled it.
    pub async fn renew(&self, subscription: &str) -> Result<(), StripeSimError> {
        self.stripe().renew(subscription)?;
        self.stripe().wait_for_deliveries_idle(DELIVERY_WAIT).await;
        Ok(())
    }

    /// Cancels the subscription (the simulator emits `customer.subscription.deleted`) and waits,
    /// at most [`DELIVERY_WAIT`], for the app to have handled it.
    pub async fn cancel(&self, subscription: &str) -> Result<(), StripeSimError> {
        self.stripe().cancel(subscription)?;
        self.stripe().wait_for_deliveries_idle(DELIVERY_WAIT).await;
        Ok(())
    }
}

impl StorePanel for DemoPanel {
    fn render(&self) -> PanelHtml {
        let view = self.view();
        let section = view.render().unwrap_or_else(|error| {
            tracing::warn!(%error, "the sandbox panel could not be rendered");
            String::new()
        });
        PanelHtml { notice: NOTICE.to_owned(), section, refresh_soon: view.deliveries_pending }
    }
}

/// The buttons' routes: each acts, waits (bounded) until the simulator's webhooks are handled,
/// then sends the browser back to `/`, so the page shows the result.
pub fn routes(panel: Arc<DemoPanel>) -> Router {
    Router::new()
        .route("/sandbox/subscriptions/{id}/renew", post(renew))
        .route("/sandbox/subscriptions/{id}/cancel", post(cancel))
        .with_state(panel)
}

async fn renew(State(panel): State<Arc<DemoPanel>>, Path(id): Path<String>) -> Response {
    back_home(panel.renew(&id).await)
}

async fn cancel(State(panel): State<Arc<DemoPanel>>, Path(id): Path<String>) -> Response {
    back_home(panel.cancel(&id).await)
}

/// 303 to the home page, or a page saying why the simulator refused.
fn back_home(result: Result<(), StripeSimError>) -> Response {
    let error = match result {
        Ok(()) => return Redirect::to("/").into_response(),
        Err(error) => error,
    };
    let status = match error {
        StripeSimError::UnknownSubscription(_) => StatusCode::NOT_FOUND,
        StripeSimError::Canceled(_) => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let page = ErrorPage { title: "The sandbox could not do that".to_owned(), message: error.to_string() };
    (status, page).into_response()
}
