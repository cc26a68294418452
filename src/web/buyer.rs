//! What the buyer sees after paying: `GET /thank-you?session_id=cs_...` shows the license key
//! (making the license now if the webhook has not yet), and `POST /billing-portal` sends them to
//! Stripe's customer portal. Every page says in a sentence what happened and what to do; an
//! upstream's own error goes to the log, never to the buyer.

use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{AppState, MessagePage, note};
use crate::billing::BillingError;
use crate::model::SubscriptionId;
use crate::stripe::{CheckoutSession, StripeError};

#[derive(Deserialize)]
pub(super) struct SessionQuery {
    session_id: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "thank_you.html")]
pub(super) struct ThankYouPage {
    license_key: String,
    product: String,
    plan: Option<String>,
    valid_until: String,
    trial: bool,
    session_id: String,
}

/// A Checkout Session id as Stripe makes them (`cs_test_...`, `cs_live_...`); anything else is
/// refused before Stripe is asked.
fn is_checkout_session_id(id: &str) -> bool {
    id.len() <= 255
        && id.strip_prefix("cs_").is_some_and(|rest| !rest.is_empty())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    (status, MessagePage::notice(title, message)).into_response()
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    (status, MessagePage::error(title, message)).into_response()
}

fn not_a_session() -> Response {
    error_page(
        StatusCode::BAD_REQUEST,
        "This is not an order confirmation link",
        "Open the link Stripe's checkout sent you to, or go back to the store to subscribe.",
    )
}

fn unreachable(error: &dyn std::fmt::Display) -> Response {
    note("error", error);
    error_page(
        StatusCode::BAD_GATEWAY,
        "We could not look up your order just now",
        "Please reload this page in a minute; your payment is safe either way.",
    )
}

/// The session, or the page to answer instead.
async fn checkout_session(state: &AppState, id: Option<String>) -> Result<CheckoutSession, Response> {
    let Some(id) = id.filter(|id| is_checkout_session_id(id)) else {
        return Err(not_a_session());
    };
    match state.billing.stripe().retrieve_checkout_session(&id).await {
        Ok(session) => Ok(session),
        Err(StripeError::Api { status: 404, .. }) => Err(error_page(
            StatusCode::NOT_FOUND,
            "We cannot find this order",
            "Check that the link is complete, or go back to the store to subscribe.",
        )),
        Err(error) => Err(unreachable(&error)),
    }
}

pub(super) async fn thank_you(State(state): State<AppState>, Query(query): Query<SessionQuery>) -> Response {
    let session = match checkout_session(&state, query.session_id).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    match (session.status.as_deref(), session.payment_status.as_deref()) {
        (Some("complete"), Some("paid" | "no_payment_required")) => {}
        (Some("complete"), _) => {
            return page(
                StatusCode::OK,
                "Your payment is being processed",
                "Your license key appears here as soon as the payment clears: reload this page in a few minutes.",
            );
        }
        (Some("expired"), _) => {
            return page(
                StatusCode::OK,
                "This checkout has expired",
                "Nothing was charged. Go back to the store to start again.",
            );
        }
        _ => {
            return page(
                StatusCode::OK,
                "Your payment is not finished yet",
                "Complete it on the checkout page, or go back to the store to start again.",
            );
        }
    }
    let Some(subscription) = session.subscription.map(|id| SubscriptionId(id.0)) else {
        return unreachable(&"the completed session names no subscription");
    };
    note("subscription", &subscription);
    match state.billing.ensure_license(&subscription).await {
        Ok(Some((subscription, license))) => {
            let plan = subscription.price_id.as_deref().and_then(|price| state.prices.label_of(price));
            ThankYouPage {
                license_key: license.license_key.to_string(),
                product: state.product_name.clone(),
                plan,
                valid_until: license.validity_period.map_or_else(|| "—".to_owned(), |day| day.to_string()),
                trial: license.is_trial,
                session_id: session.id,
            }
            .into_response()
        }
        Ok(None) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Your license is being issued",
            "Reload this page in a moment to see your license key.",
        ),
        Err(BillingError::NotYet(reason)) => {
            note("error", &reason);
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Your license is being issued",
                "Reload this page in a moment.",
            )
        }
        Err(error) => unreachable(&error),
    }
}

/// `POST /billing-portal` with the form field `session_id`: 303 to a customer portal session of
/// that checkout's customer, whose back link returns to the store.
pub(super) async fn billing_portal(State(state): State<AppState>, form: Bytes) -> Response {
    let id = url::form_urlencoded::parse(&form)
        .find(|(name, _)| name == "session_id")
        .map(|(_, value)| value.into_owned());
    let session = match checkout_session(&state, id).await {
        Ok(session) => session,
        Err(page) => return page,
    };
    let Some(customer) = session.customer.filter(|_| session.status.as_deref() == Some("complete")) else {
        return error_page(
            StatusCode::CONFLICT,
            "This order is not complete",
            "Billing can be managed once the payment is done. Go back to the store to subscribe.",
        );
    };
    let return_url = state.public_link("/");
    match state.billing.stripe().create_portal_session(&customer.0, &return_url).await {
        Ok(portal) => Redirect::to(&portal.url).into_response(),
        Err(error) => {
            note("error", &error);
            error_page(
                StatusCode::BAD_GATEWAY,
                "Billing cannot be opened just now",
                "Please try again in a minute.",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_checkout_session_ids_are_looked_up() {
        assert!(is_checkout_session_id("cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY"));
        assert!(is_checkout_session_id("cs_live_abc"));
        for bad in [
            "",
            "cs_",
            "sub_1",
            "cs_test_a/../b",
            "cs_test_a?b=1",
            "cs test",
            &format!("cs_{}", "a".repeat(300)),
        ] {
            assert!(!is_checkout_session_id(bad), "{bad:?}");
        }
    }
}
