//! `POST /webhooks`: verify the signature on the raw body, parse the event, hand it to
//! [`Billing::handle_event`](crate::billing::Billing::handle_event), and answer what it did.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;

use super::{AppState, BODY_READ_TIMEOUT, MAX_BODY_BYTES, SMALL_BODY_BYTES, note};
use crate::billing::BillingError;
use crate::metrics;
use crate::store::StoreError;
use crate::webhook::{self, Event, EventError, HANDLED_EVENT_TYPES, SignatureError};

pub fn router() -> Router<AppState> {
    Router::new().route("/webhooks", post(receive).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
}

/// What `/webhooks` answers for a verified event: 200 when handled or deliberately ignored, 5xx
/// when an upstream or the store failed (so that Stripe delivers again and the retry completes the
/// work). A refused delivery is answered by [`refuse`].
enum Answer {
    Handled,
    Failed(BillingError),
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self {
            Answer::Handled => Json(json!({ "success": true })).into_response(),
            Answer::Failed(error) => {
                let status = match &error {
                    BillingError::NotYet(_) => StatusCode::SERVICE_UNAVAILABLE,
                    // The database is away or busy: a later delivery will find it back.
                    BillingError::Store(StoreError::Database(_)) => StatusCode::SERVICE_UNAVAILABLE,
                    BillingError::Store(StoreError::Cache(_)) => StatusCode::INTERNAL_SERVER_ERROR,
                    BillingError::Stripe(_) | BillingError::LicenseSpring(_) => StatusCode::BAD_GATEWAY,
                };
                (status, Json(json!({ "error": error.to_string() }))).into_response()
            }
        }
    }
}

async fn receive(State(state): State<AppState>, request: Request) -> Response {
    // Reading the body consumes the request: keep the one header needed after that.
    let signature = request.headers().get("stripe-signature").cloned();
    // A large body is held (with a permit) only while it is read, verified and parsed.
    let declared_small = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|length| length <= SMALL_BODY_BYTES);
    let body_permit = if declared_small {
        None
    } else {
        match state.body_permits.acquire().await {
            Ok(permit) => Some(permit),
            Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    };
    // A client that trickles its body in is cut off (408) long before the request timeout.
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(request, &())).await {
        Ok(Ok(body)) => body,
        // Over MAX_BODY_BYTES (413) or a broken upload: answered before anything looks at it.
        Ok(Err(rejection)) => return refuse(rejection.status(), &rejection.body_text()),
        Err(_) => {
            let error = format!("the body was not received within {} s", BODY_READ_TIMEOUT.as_secs());
            return refuse(StatusCode::REQUEST_TIMEOUT, &error);
        }
    };
    let event = match verified_event(&state, signature.as_ref(), &body) {
        Ok(event) => event,
        Err(error) => return refuse(StatusCode::BAD_REQUEST, &error.to_string()),
    };
    drop((body, body_permit));
    note("event_id", &event.id);
    note("event_type", &event.event_type);
    if let Some(subscription) = event.subscription() {
        note("subscription", subscription);
    }
    let event_type = event_type_label(&event.event_type);
    let answer = match state.billing.handle_event(&event).await {
        Ok(outcome) => {
            metrics::webhook(event_type, outcome.label());
            note("outcome", &outcome.label());
            note("detail", &outcome);
            Answer::Handled
        }
        Err(error) => {
            metrics::webhook(event_type, "failed");
            note("outcome", &"failed");
            note("error", &error);
            Answer::Failed(error)
        }
    };
    answer.into_response()
}

/// A delivery refused before any flow (400 for a bad signature or payload, 408, 413): counted,
/// logged and answered with the reason.
fn refuse(status: StatusCode, error: &str) -> Response {
    metrics::webhook(OTHER, "rejected");
    note("outcome", &"rejected");
    note("error", &error);
    (status, Json(json!({ "error": error }))).into_response()
}

/// The metrics' name for deliveries of a type this server does not handle, or refused before
/// their type was known.
const OTHER: &str = "other";

/// An event type as a metrics label: one of the handled types, else [`OTHER`], so that whatever
/// types Stripe sends, the number of series stays fixed.
fn event_type_label(event_type: &str) -> &'static str {
    HANDLED_EVENT_TYPES.iter().find(|handled| **handled == event_type).copied().unwrap_or(OTHER)
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
fn verified_event(state: &AppState, signature: Option<&HeaderValue>, body: &[u8]) -> Result<Event, Refused> {
    let header = match signature.map(|value| value.to_str()) {
        None => None,
        Some(Ok(text)) => Some(text),
        Some(Err(_)) => return Err(SignatureError::MalformedHeader("not visible ASCII").into()),
    };
    let now = chrono::Utc::now().timestamp();
    webhook::verify(header, body, &state.webhook_secrets, state.webhook_tolerance, now)?;
    Ok(webhook::parse_event(body)?)
}
