//! The store: the page with one subscribe button per configured price, and the payment links
//! those buttons (and scripts, through `GET`) ask for.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, MessagePage, PanelHtml, note};
use crate::StartError;
use crate::stripe::{Price, StripeClient, StripeError};

/// How long to wait before reading prices again when Stripe could not be asked at start.
const PRICE_RETRY: Duration = Duration::from_secs(30);

/// One configured price, as its subscribe button shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceOption {
    pub id: String,
    /// `USD 5.00 / month`, `EUR 50.00 / year`, `USD 12.00 every 3 months`; just the id until the
    /// price could be read.
    pub label: String,
}

/// The configured prices, read from Stripe once at start (see [`PriceCatalog::load`]).
pub struct PriceCatalog {
    options: RwLock<Vec<PriceOption>>,
}

impl PriceCatalog {
    /// The prices as ids only, until [`PriceCatalog::load`] has read them.
    pub fn new(ids: &[String]) -> PriceCatalog {
        let options = ids.iter().map(|id| PriceOption { id: id.clone(), label: id.clone() }).collect();
        PriceCatalog { options: RwLock::new(options) }
    }

    pub fn options(&self) -> Vec<PriceOption> {
        self.options.read().expect("price catalog poisoned").clone()
    }

    /// What the store's button for `id` says (`USD 5.00 / month`), if `id` is configured.
    pub fn label_of(&self, id: &str) -> Option<String> {
        let options = self.options.read().expect("price catalog poisoned");
        options.iter().find(|option| option.id == id).map(|option| option.label.clone())
    }

    /// Whether `id` is one of the configured prices.
    pub fn sells(&self, id: &str) -> bool {
        self.options.read().expect("price catalog poisoned").iter().any(|option| option.id == id)
    }

    /// The first configured price: what a button without a price sells.
    pub fn default_price(&self) -> String {
        self.options.read().expect("price catalog poisoned")[0].id.clone()
    }

    /// Reads every price from Stripe. A price Stripe does not have, or one that is not recurring
    /// or archived, stops the start with a message naming it. Stripe not answering does not: the
    /// buttons show the price ids, and the prices are read again in the background.
    pub async fn load(self: &Arc<Self>, stripe: &StripeClient) -> Result<(), StartError> {
        match self.read_all(stripe).await {
            Ok(()) => Ok(()),
            Err(PriceProblem::Unusable { id, reason }) => Err(StartError::Price { id, reason }),
            Err(PriceProblem::Unreachable(error)) => {
                tracing::warn!(%error, "the prices could not be read from Stripe; trying again in the background");
                let catalog = self.clone();
                let stripe = stripe.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(PRICE_RETRY).await;
                        match catalog.read_all(&stripe).await {
                            Ok(()) => break,
                            Err(PriceProblem::Unusable { id, reason }) => {
                                tracing::error!(price = %id, "STRIPE_PRODUCT: {reason}");
                                break;
                            }
                            Err(PriceProblem::Unreachable(_)) => {}
                        }
                    }
                });
                Ok(())
            }
        }
    }

    async fn read_all(&self, stripe: &StripeClient) -> Result<(), PriceProblem> {
        let ids: Vec<String> = self.options().into_iter().map(|option| option.id).collect();
        let mut options = Vec::with_capacity(ids.len());
        for id in ids {
            let label = check_price(stripe, &id).await?;
            options.push(PriceOption { id, label });
        }
        *self.options.write().expect("price catalog poisoned") = options;
        Ok(())
    }
}

/// Whether Stripe has the price and a subscription can be sold with it; its button's label.
pub async fn check_price(stripe: &StripeClient, id: &str) -> Result<String, PriceProblem> {
    let unusable = |reason: String| PriceProblem::Unusable { id: id.to_owned(), reason };
    match stripe.retrieve_price(id).await {
        Err(StripeError::Api { status: 404, .. }) => Err(unusable(format!(
            "the price {id} does not exist in this Stripe account (test keys see only test-mode prices)"
        ))),
        Err(error) => Err(PriceProblem::Unreachable(error)),
        Ok(price) if price.interval.is_none() => {
            Err(unusable(format!("the price {id} is a one-time price; a subscription needs a recurring one")))
        }
        Ok(price) if !price.active => Err(unusable(format!("the price {id} is archived in Stripe"))),
        Ok(price) => Ok(label(&price)),
    }
}

/// Why a configured price cannot be sold.
#[derive(Debug)]
pub enum PriceProblem {
    Unusable { id: String, reason: String },
    Unreachable(StripeError),
}

/// `USD 5.00 / month`, `USD 12.00 every 3 months`.
fn label(price: &Price) -> String {
    let amount = match price.unit_amount {
        Some(cents) => {
            let sign = if cents < 0 { "-" } else { "" };
            let cents = cents.unsigned_abs();
            format!("{} {sign}{}.{:02}", price.currency.to_uppercase(), cents / 100, cents % 100)
        }
        None => price.id.clone(),
    };
    match price.interval {
        Some(interval) if interval.count <= 1 => format!("{amount} / {}", interval.unit),
        Some(interval) => format!("{amount} every {} {}s", interval.count, interval.unit),
        None => amount,
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
pub(super) struct HomePage {
    prices: Vec<PriceOption>,
    panel: PanelHtml,
}

pub(super) async fn home(State(state): State<AppState>) -> HomePage {
    HomePage {
        prices: state.prices.options(),
        panel: state.panel.as_ref().map(|panel| panel.render()).unwrap_or_default(),
    }
}

/// The `price` a subscribe button or a script asks for; the first configured price without one.
#[derive(Debug, Deserialize)]
pub(super) struct PriceChoice {
    #[serde(default)]
    price: Option<String>,
}

impl PriceChoice {
    fn resolve(self, state: &AppState) -> Result<String, String> {
        match self.price.filter(|price| !price.is_empty()) {
            None => Ok(state.prices.default_price()),
            Some(price) if state.prices.sells(&price) => Ok(price),
            Some(price) => Err(format!("{price:?} is not a price this store sells")),
        }
    }
}

pub(super) async fn create_payment_link_json(
    State(state): State<AppState>,
    Query(choice): Query<PriceChoice>,
) -> Response {
    let price = match choice.resolve(&state) {
        Ok(price) => price,
        Err(error) => return (StatusCode::BAD_REQUEST, Json(json!({ "error": error }))).into_response(),
    };
    let after_payment = state.public_link("/thank-you?session_id={CHECKOUT_SESSION_ID}");
    match state.billing.stripe().create_payment_link(&price, &after_payment).await {
        Ok(link) => Json(json!({ "url": link.url })).into_response(),
        Err(error) => {
            note("error", &error);
            (StatusCode::BAD_GATEWAY, Json(json!({ "error": error.to_string() }))).into_response()
        }
    }
}

pub(super) async fn create_payment_link_redirect(State(state): State<AppState>, form: Bytes) -> Response {
    // A form body (`price=price_...`), or none at all: the tutorial's button posts nothing.
    let price = url::form_urlencoded::parse(&form)
        .find(|(name, _)| name == "price")
        .map(|(_, value)| value.into_owned());
    let choice = PriceChoice { price };
    let price = match choice.resolve(&state) {
        Ok(price) => price,
        Err(error) => {
            note("error", &error);
            let page = MessagePage::error(
                "That plan is not sold here",
                "Please pick one of the plans on the store page.",
            );
            return (StatusCode::BAD_REQUEST, page).into_response();
        }
    };
    let after_payment = state.public_link("/thank-you?session_id={CHECKOUT_SESSION_ID}");
    match state.billing.stripe().create_payment_link(&price, &after_payment).await {
        Ok(link) => Redirect::to(&link.url).into_response(),
        Err(error) => {
            note("error", &error);
            let page = MessagePage::error(
                "The checkout could not be opened",
                "Our payment provider did not answer. Please try again in a minute.",
            );
            (StatusCode::BAD_GATEWAY, page).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BillingInterval, IntervalUnit};

    #[test]
    fn labels_say_amount_and_interval() {
        let price = |cents, unit, count| Price {
            id: "price_1".into(),
            interval: Some(BillingInterval { unit, count }),
            unit_amount: Some(cents),
            currency: "usd".into(),
            active: true,
        };
        assert_eq!(label(&price(500, IntervalUnit::Month, 1)), "USD 5.00 / month");
        assert_eq!(label(&price(5000, IntervalUnit::Year, 1)), "USD 50.00 / year");
        assert_eq!(label(&price(1205, IntervalUnit::Month, 3)), "USD 12.05 every 3 months");
    }
}
