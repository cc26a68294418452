//! The customer portal's pages: a portal session's page lists the customer's subscriptions with
//! forms to cancel (at the period's end, or now), to undo a cancel at the period's end, to change
//! the seats and to switch to another recurring price. Each form runs the same code as the
//! controls, so it emits the same events.

use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::DateTime;

use super::state::{Shared, SubscriptionChange};
use super::{SimPortalSession, StripeSimError, SubscriptionStatus};
use crate::frontdoor::lock;

/// One subscription as the portal lists it.
struct PortalRow {
    id: String,
    status: &'static str,
    price: String,
    quantity: u32,
    period_end: String,
    cancel_at_period_end: bool,
    /// Not canceled: the forms apply.
    live: bool,
    /// Other recurring prices to switch to: (id, text).
    other_prices: Vec<(String, String)>,
}

#[derive(Template, WebTemplate)]
#[template(path = "portal.html")]
struct PortalPage {
    session_id: String,
    customer: String,
    email: String,
    return_url: Option<String>,
    subscriptions: Vec<PortalRow>,
}

#[derive(Template, WebTemplate)]
#[template(path = "portal_result.html")]
struct ResultPage {
    title: String,
    message: String,
    /// Back to the portal page; `None` when the session is gone.
    portal: Option<String>,
    return_url: Option<String>,
}

fn date(t: i64) -> String {
    DateTime::from_timestamp(t, 0).map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string())
}

/// `GET /portal/{bps}`.
pub(super) async fn page(State(shared): State<Arc<Shared>>, Path(session_id): Path<String>) -> Response {
    let session = match shared.live_portal_session(&session_id) {
        Ok(session) => session,
        Err(_) => return gone(),
    };
    let store = lock(&shared.store);
    let email = store.customer(&session.customer).map(|c| c.email.clone()).unwrap_or_default();
    let recurring: Vec<_> = shared.config.prices.iter().filter(|p| p.recurring).collect();
    let subscriptions = store
        .subscriptions
        .iter()
        .filter(|s| s.customer == session.customer)
        .map(|s| {
            let price = shared.price_or_placeholder(&s.price_id);
            PortalRow {
                id: s.id.clone(),
                status: s.status.as_str(),
                price: format!("{} every {}", price.amount_text(), price.interval_text()),
                quantity: s.quantity,
                period_end: date(s.current_period_end),
                cancel_at_period_end: s.cancel_at_period_end,
                live: s.status != SubscriptionStatus::Canceled,
                other_prices: recurring
                    .iter()
                    .filter(|p| p.id != s.price_id)
                    .map(|p| (p.id.clone(), format!("{} every {}", p.amount_text(), p.interval_text())))
                    .collect(),
            }
        })
        .collect();
    PortalPage {
        session_id: session.id,
        customer: session.customer,
        email,
        return_url: session.return_url,
        subscriptions,
    }
    .into_response()
}

/// `POST /portal/{bps}/subscriptions/{sub}/{action}`: `cancel` (`when=now` or
/// `at_period_end`), `reactivate`, `quantity` (`quantity=N`), `price` (`price=price_...`).
pub(super) async fn act(
    State(shared): State<Arc<Shared>>,
    Path((session_id, subscription, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let session = match shared.live_portal_session(&session_id) {
        Ok(session) => session,
        Err(_) => return gone(),
    };
    let owned = lock(&shared.store)
        .subscriptions
        .iter()
        .any(|s| s.id == subscription && s.customer == session.customer);
    if !owned {
        return result(
            &session,
            StatusCode::NOT_FOUND,
            "No such subscription",
            "This customer has no such subscription.".to_owned(),
        );
    }
    let field = |name: &str| {
        url::form_urlencoded::parse(&body)
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim().to_owned())
    };
    let done = match (action.as_str(), field("when").as_deref()) {
        ("cancel", Some("now")) => {
            shared.cancel(&subscription).map(|_| "The subscription is canceled now.".to_owned())
        }
        ("cancel", _) => shared
            .update(
                &subscription,
                SubscriptionChange { cancel_at_period_end: Some(true), ..Default::default() },
            )
            .map(|_| "The subscription will be canceled at the end of the period.".to_owned()),
        ("reactivate", _) => shared
            .update(
                &subscription,
                SubscriptionChange { cancel_at_period_end: Some(false), ..Default::default() },
            )
            .map(|_| "The subscription will renew.".to_owned()),
        ("quantity", _) => match field("quantity").map(|q| q.parse::<u32>()) {
            Some(Ok(quantity)) if quantity >= 1 => shared
                .update(&subscription, SubscriptionChange { quantity: Some(quantity), ..Default::default() })
                .map(|_| format!("The subscription now has {quantity} seats.")),
            _ => {
                Err(StripeSimError::NotAllowed("the quantity must be a whole number, at least 1".to_owned()))
            }
        },
        ("price", _) => match field("price") {
            Some(price) => shared
                .update(
                    &subscription,
                    SubscriptionChange { price_id: Some(price.clone()), ..Default::default() },
                )
                .map(|_| format!("The subscription is now on {price}.")),
            None => Err(StripeSimError::NotAllowed("choose a price".to_owned())),
        },
        _ => Err(StripeSimError::NotAllowed(format!("the portal cannot {action}"))),
    };
    match done {
        Ok(message) => result(&session, StatusCode::OK, "Done", message),
        Err(error) => result(&session, StatusCode::BAD_REQUEST, "That did not work", error.to_string()),
    }
}

fn result(session: &SimPortalSession, status: StatusCode, title: &str, message: String) -> Response {
    let page = ResultPage {
        title: title.to_owned(),
        message,
        portal: Some(format!("/portal/{}", session.id)),
        return_url: session.return_url.clone(),
    };
    (status, page).into_response()
}

/// An unknown or expired portal session.
fn gone() -> Response {
    let page = ResultPage {
        title: "This portal link has expired".to_owned(),
        message:
            "The customer portal session is unknown or has expired; open the portal again from the store."
                .to_owned(),
        portal: None,
        return_url: None,
    };
    (StatusCode::NOT_FOUND, page).into_response()
}
