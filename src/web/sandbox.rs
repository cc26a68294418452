//! Demo mode only: the home page's buttons that move a simulated subscription on. Each waits
//! (bounded) until the simulator's webhooks are handled, then sends the browser back to `/`, so
//! the page shows the result.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;

use super::{AppState, ErrorPage};
use crate::model::SubscriptionId;
use crate::sandbox::demo::DemoPanel;
use crate::sandbox::stripe_sim::StripeSimError;

pub fn router(panel: Arc<DemoPanel>) -> Router<AppState> {
    Router::new()
        .route("/sandbox/subscriptions/{id}/renew", post(renew))
        .route("/sandbox/subscriptions/{id}/cancel", post(cancel))
        .with_state(panel)
}

async fn renew(State(panel): State<Arc<DemoPanel>>, Path(id): Path<String>) -> Response {
    back_home(panel.renew(&SubscriptionId(id)).await)
}

async fn cancel(State(panel): State<Arc<DemoPanel>>, Path(id): Path<String>) -> Response {
    back_home(panel.cancel(&SubscriptionId(id)).await)
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
