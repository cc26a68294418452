//! `POST /webhooks`: verify the signature on the raw body, then parse and handle the event.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::{AppState, MAX_BODY_BYTES};
use crate::webhook::{self, Event, EventError, EventKind, SignatureError};

pub fn router() -> Router<AppState> {
    Router::new().route("/webhooks", post(receive).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
}

/// What `/webhooks` answers; also the `outcome` of the webhook's log line.
enum Answer {
    /// 200 `{"success": true}`: handled, or deliberately ignored (the reason is logged).
    Success(&'static str),
    /// 400: the signature or the payload was refused.
    Rejected(Refused),
    /// 503: verified, but its flow is not built yet, so Stripe keeps the event and retries it.
    NotYetHandled,
}

impl Answer {
    fn outcome(&self) -> &str {
        match self {
            Answer::Success(reason) => reason,
            Answer::Rejected(_) => "rejected",
            Answer::NotYetHandled => "not handled yet, Stripe will retry",
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Success(_) => Json(json!({ "success": true })).into_response(),
            Answer::Rejected(error) => {
                (StatusCode::BAD_REQUEST, Json(json!({ "error": error.to_string() }))).into_response()
            }
            Answer::NotYetHandled => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "this event is not handled yet; deliver it again later" })),
            )
                .into_response(),
        }
    }
}

async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // Over MAX_BODY_BYTES (413) or a broken upload: answered before anything looks at it.
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            tracing::warn!(outcome = "rejected", error = %rejection.body_text(), "webhook");
            return (rejection.status(), Json(json!({ "error": rejection.body_text() }))).into_response();
        }
    };
    let event = match verified_event(&state, &headers, &body) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(outcome = "rejected", %error, "webhook");
            return Answer::Rejected(error).into_response();
        }
    };
    let answer = handle(&event);
    tracing::info!(
        event_id = %event.id,
        event_type = %event.event_type,
        subscription = subscription_of(&event).unwrap_or("-"),
        outcome = answer.outcome(),
        "webhook"
    );
    answer.into_response()
}

/// Why a delivery was refused (400). The messages name the failed check, never a secret.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Event(#[from] EventError),
}

/// The signature first, over the raw bytes; only an authentic body is parsed.
fn verified_event(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Event, Refused> {
    let header = match headers.get("stripe-signature").map(|value| value.to_str()) {
        None => None,
        Some(Ok(text)) => Some(text),
        Some(Err(_)) => return Err(SignatureError::MalformedHeader("not visible ASCII").into()),
    };
    let now = chrono::Utc::now().timestamp();
    webhook::verify(header, body, &state.webhook_secrets, state.webhook_tolerance, now)?;
    Ok(webhook::parse_event(body)?)
}

/// Routes a verified event to its flow.
fn handle(event: &Event) -> Answer {
    match &event.kind {
        EventKind::InvoicePaid(invoice) if invoice.subscription.is_none() => {
            Answer::Success("ignored: the invoice belongs to no subscription")
        }
        // The billing flows (issue 4) go here: create or extend on `invoice.paid`, disable on
        // `customer.subscription.deleted`. Until then Stripe is told to deliver again later.
        EventKind::InvoicePaid(_) | EventKind::SubscriptionDeleted(_) => Answer::NotYetHandled,
        EventKind::Ignored => Answer::Success("ignored: event type not handled"),
    }
}

fn subscription_of(event: &Event) -> Option<&str> {
    match &event.kind {
        EventKind::InvoicePaid(invoice) => invoice.subscription.as_ref().map(|s| s.id.as_str()),
        EventKind::SubscriptionDeleted(deleted) => Some(deleted.id.as_str()),
        EventKind::Ignored => None,
    }
}
