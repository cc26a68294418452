//! What operators and their tools ask: `GET /metrics` (Prometheus text format, behind
//! `METRICS_TOKEN` when it is set) and `GET /readyz` (whether the store is usable).

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::{AppState, note};
use crate::metrics;
use crate::settings::Secret;

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics_page)).route("/readyz", get(readyz))
}

async fn metrics_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let allowed = state.metrics_token.as_ref().is_none_or(|token| bearer_matches(&headers, token));
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

/// Whether `Authorization` is `Bearer <token>` (the scheme in any case). The comparison takes the
/// same time wherever the two differ: both sides are hashed, then every byte of the digests is
/// compared.
fn bearer_matches(headers: &HeaderMap, token: &Secret) -> bool {
    let Some(given) = headers.get(AUTHORIZATION).map(|value| value.as_bytes()) else {
        return false;
    };
    let Some((scheme, credentials)) = given.split_at_checked(7) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let given = Sha256::digest(credentials.trim_ascii());
    let expected = Sha256::digest(token.expose().as_bytes());
    let difference = given.iter().zip(expected.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().expect("a header value"));
        headers
    }

    #[test]
    fn only_the_right_bearer_token_matches() {
        let token = Secret::new("s3cr3t-Token");
        assert!(bearer_matches(&with("Bearer s3cr3t-Token"), &token));
        assert!(bearer_matches(&with("bearer s3cr3t-Token"), &token), "the scheme in any case");
        for wrong in
            ["Bearer s3cr3t-token", "Bearer s3cr3t-Token2", "Bearer ", "Basic s3cr3t-Token", "s3cr3t-Token"]
        {
            assert!(!bearer_matches(&with(wrong), &token), "{wrong:?}");
        }
        assert!(!bearer_matches(&HeaderMap::new(), &token), "no header");
    }
}
