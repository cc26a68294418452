//! What the Stripe simulator's tests share: a client, a started simulator, and form posts and
//! JSON reads with the default key.

use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::Value;

use super::{DEFAULT_API_KEY, StripeSim, StripeSimConfig, start};

pub(super) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

pub(super) async fn started(config: StripeSimConfig) -> StripeSim {
    start(config).await.expect("simulator starts")
}

pub(super) async fn post_form(
    sim: &StripeSim,
    path: &str,
    body: &str,
    idempotency_key: Option<&str>,
) -> (u16, HeaderMap, Value) {
    let mut request = http()
        .post(sim.base_url().join(path).expect("url"))
        .bearer_auth(DEFAULT_API_KEY)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_owned());
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

pub(super) async fn get_json(sim: &StripeSim, path: &str) -> (u16, Value) {
    let response =
        http().get(sim.base_url().join(path).expect("url")).bearer_auth(DEFAULT_API_KEY).send().await;
    let response = response.expect("answer");
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

pub(super) fn at(value: &Value, pointer: &str) -> Value {
    value.pointer(pointer).cloned().unwrap_or_else(|| panic!("{pointer} missing in {value:#}"))
}
