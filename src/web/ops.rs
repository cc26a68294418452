//! What operators and their tools ask: `GET /metrics` (Prometheus text format, behind
//! `METRICS_TOKEN` when it is set) and `GET /readyz` (whether the store is usable).

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{AppState, auth, note};
use crate::metrics;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics_page)).route("/readyz", get(readyz))
}

async fn metrics_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let allowed = state
        .metrics_token
        .as_ref()
        .is_none_or(|token| auth::bearer(&headers).is_some_and(|given| auth::is_token(&given, token)));
    if !allowed {
        note("outcome", &"unauthorized");
        return (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
            "unauthorized: /metrics needs Authorization: Bearer <METRICS_TOKEN>\n",
        )
            .into_response();
    }
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE), (CACHE_CONTROL, "no-store")], metrics::render()).into_response()
}

/// 200 `ready` while the store can take a change; 503 with the store's reason otherwise, so that a
/// load balancer sends webhooks elsewhere. (`/healthz` only says the process runs.)
async fn readyz(State(state): State<AppState>) -> Response {
    match state.billing.store().check().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => {
            note("error", &error);
            (StatusCode::SERVICE_UNAVAILABLE, [(CACHE_CONTROL, "no-store")], format!("not ready: {error}\n"))
                .into_response()
        }
    }
}

/// Counts every `/webhooks` delivery answered 5xx, wherever the answer came from (the handler, or
/// the request timeout, which is why this wraps the whole router).
pub(super) async fn count_webhook_5xx(request: Request, next: Next) -> Response {
    let webhook = request.uri().path() == "/webhooks";
    let response = next.run(request).await;
    if webhook && response.status().is_server_error() {
        metrics::webhook_5xx();
    }
    response
}
