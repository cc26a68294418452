//! Stripe API client: the few REST calls this server makes, form-encoded as Stripe expects, with
//! Stripe's error JSON turned into a typed error. The base URL is configurable so tests and the
//! sandbox point it at a local simulator.

use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::settings::Secret;

/// Why a Stripe call failed. Never carries the API key.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with an error status; `message` is Stripe's own.
    #[error("Stripe answered {status}: {message}")]
    Api {
        status: u16,
        error_type: Option<String>,
        code: Option<String>,
        message: String,
        /// What `Stripe-Should-Retry` said, when present.
        should_retry: Option<bool>,
    },
    #[error("Stripe did not answer in time")]
    Timeout,
    #[error("could not reach Stripe: {0}")]
    Transport(String),
    #[error("Stripe's answer could not be read: {0}")]
    Unreadable(String),
}

impl StripeError {
    /// Whether trying the same request again may succeed (Stripe's own retry rules: the
    /// `Stripe-Should-Retry` header wins; then network faults, 409, 429 and 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            StripeError::Api { status, should_retry, .. } => {
                should_retry.unwrap_or(*status == 409 || *status == 429 || *status >= 500)
            }
            StripeError::Timeout | StripeError::Transport(_) => true,
            StripeError::Unreadable(_) => false,
        }
    }

    /// The HTTP status Stripe answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            StripeError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A created Payment Link; the server needs only its URL.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentLink {
    pub id: String,
    pub url: String,
}

#[derive(Serialize)]
struct LineItem<'a> {
    price: &'a str,
    quantity: u32,
}

#[derive(Serialize)]
struct CreatePaymentLink<'a> {
    line_items: [LineItem<'a>; 1],
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    error_type: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

/// One Stripe account's API, reached through one pooled HTTP client.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: Url,
    secret_key: Secret,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl StripeClient {
    pub fn new(base: Url, secret_key: Secret, timeout: Duration) -> StripeClient {
        StripeClient { http: crate::http_client(timeout), base, secret_key }
    }

    /// `POST /v1/payment_links` selling one unit of a recurring price.
    pub async fn create_payment_link(&self, price_id: &str) -> Result<PaymentLink, StripeError> {
        let form = CreatePaymentLink { line_items: [LineItem { price: price_id, quantity: 1 }] };
        self.post_form("/v1/payment_links", &form, None).await
    }

    fn url(&self, path: &str) -> Url {
        // `path` is built by this module from fixed segments and Stripe ids.
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}{path}"));
        url
    }

    /// POSTs a form body with Stripe's nested-bracket encoding (`a[0][b]=c`).
    pub(crate) async fn post_form<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &impl Serialize,
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let body = serde_qs::to_string(form)
            .map_err(|e| StripeError::Unreadable(format!("cannot encode form: {e}")))?;
        let mut request = self
            .http
            .post(self.url(path))
            .bearer_auth(self.secret_key.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        Self::read(request.send().await).await
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, StripeError> {
        let request = self.http.get(self.url(path)).bearer_auth(self.secret_key.expose());
        Self::read(request.send().await).await
    }

    async fn read<T: DeserializeOwned>(sent: reqwest::Result<reqwest::Response>) -> Result<T, StripeError> {
        let response = sent.map_err(transport_error)?;
        let status = response.status();
        let should_retry = response
            .headers()
            .get("Stripe-Should-Retry")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<bool>().ok());
        let bytes = response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| StripeError::Unreadable(e.to_string()));
        }
        let (error_type, code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody { error }) => (error.error_type, error.code, error.message),
            Err(_) => (None, None, None),
        };
        Err(StripeError::Api {
            status: status.as_u16(),
            error_type,
            code,
            message: message.unwrap_or_else(|| crate::excerpt(&bytes)),
            should_retry,
        })
    }
}

fn transport_error(error: reqwest::Error) -> StripeError {
    if error.is_timeout() {
        StripeError::Timeout
    } else {
        StripeError::Transport(crate::error_chain(&error.without_url()))
    }
}
