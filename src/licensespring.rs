//! LicenseSpring Management API client: the six calls the billing flows make (generate a key,
//! create an order, find, retrieve, update and disable a license), JSON in and out, with
//! LicenseSpring's error answers turned into a typed error that never carries the API key.
//!
//! The API facts it relies on, and which of them are unverified, are written into the LicenseSpring
//! simulator it is tested against (the `sim` crate). Where an answer's shape is unverified (create
//! order, `validity_period`), this client reads leniently instead of failing.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use url::Url;

use crate::model::{LicenseId, LicenseKey};
use crate::settings::Secret;
use crate::upstream::{self, TransportFailure};

/// Which call failed, so an error message (and the caller) can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenseSpringCall {
    GenerateKey,
    CreateOrder,
    FindLicense,
    RetrieveLicense,
    UpdateLicense,
    DisableLicense,
    EnableLicense,
}

impl LicenseSpringCall {
    /// The call's name in the metrics (`operation` label).
    pub fn operation(self) -> &'static str {
        match self {
            LicenseSpringCall::GenerateKey => "generate_license_key",
            LicenseSpringCall::CreateOrder => "create_order",
            LicenseSpringCall::FindLicense => "find_license",
            LicenseSpringCall::RetrieveLicense => "retrieve_license",
            LicenseSpringCall::UpdateLicense => "update_license",
            LicenseSpringCall::DisableLicense => "disable_license",
            LicenseSpringCall::EnableLicense => "enable_license",
        }
    }
}

impl fmt::Display for LicenseSpringCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LicenseSpringCall::GenerateKey => "generate a license key",
            LicenseSpringCall::CreateOrder => "create an order",
            LicenseSpringCall::FindLicense => "find a license",
            LicenseSpringCall::RetrieveLicense => "retrieve a license",
            LicenseSpringCall::UpdateLicense => "update a license",
            LicenseSpringCall::DisableLicense => "disable a license",
            LicenseSpringCall::EnableLicense => "enable a license",
        })
    }
}

/// Why a LicenseSpring call failed. Never carries the API key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LicenseSpringError {
    /// LicenseSpring answered with an error status; `message` is its `detail`, else its `message`,
    /// else the start of the raw answer.
    #[error("LicenseSpring answered {status} when asked to {call}: {message}")]
    Api { call: LicenseSpringCall, status: u16, message: String },
    #[error("LicenseSpring did not answer in time when asked to {call}")]
    Timeout { call: LicenseSpringCall },
    #[error("could not reach LicenseSpring to {call}: {reason}")]
    Transport { call: LicenseSpringCall, reason: String },
    #[error("LicenseSpring's answer when asked to {call} could not be read: {reason}")]
    Unreadable { call: LicenseSpringCall, reason: String },
    /// The order was accepted, but no license with its key can be found (yet).
    #[error("LicenseSpring accepted the order but lists no license with key {key}")]
    LicenseNotListed { key: LicenseKey },
}

impl LicenseSpringError {
    /// The call that failed.
    pub fn call(&self) -> LicenseSpringCall {
        match self {
            LicenseSpringError::Api { call, .. }
            | LicenseSpringError::Timeout { call }
            | LicenseSpringError::Transport { call, .. }
            | LicenseSpringError::Unreadable { call, .. } => *call,
            LicenseSpringError::LicenseNotListed { .. } => LicenseSpringCall::CreateOrder,
        }
    }

    /// The HTTP status LicenseSpring answered, if it answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            LicenseSpringError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the same call may succeed later: network faults, timeouts, 5xx, and the "try later"
    /// statuses 408 and 429 (neither is documented, both mean "not processed").
    pub fn is_retryable(&self) -> bool {
        match self {
            LicenseSpringError::Api { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            LicenseSpringError::Timeout { .. }
            | LicenseSpringError::Transport { .. }
            | LicenseSpringError::LicenseNotListed { .. } => true,
            LicenseSpringError::Unreadable { .. } => false,
        }
    }

    /// LicenseSpring looked at the request and said no (a 4xx that is not "try later").
    pub fn is_refusal(&self) -> bool {
        matches!(self.status(), Some(400..=499)) && !self.is_retryable()
    }

    /// Create order refused the request. Its status and body for "this order id exists" are
    /// unverified, so with this server's deterministic order ids any refusal may mean "already
    /// done": look the license up by key before reporting a failure.
    pub fn is_order_refusal(&self) -> bool {
        self.call() == LicenseSpringCall::CreateOrder && self.is_refusal()
    }

    /// LicenseSpring answered 404 (e.g. no license with that id).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// A license, as retrieve, list and update answer it: only what the flows use. Optional fields
/// may be missing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct License {
    pub id: LicenseId,
    pub license_key: LicenseKey,
    #[serde(default)]
    pub license_type: Option<String>,
    /// `false` after disable. A missing field is read as enabled: disabling again is harmless.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// The last valid day (UTC), read from a date, a datetime or null.
    #[serde(default, deserialize_with = "lenient_date")]
    pub validity_period: Option<NaiveDate>,
    #[serde(default)]
    pub valid_duration: Option<String>,
    #[serde(default)]
    pub is_trial: bool,
    /// How many devices may activate it.
    #[serde(default)]
    pub max_activations: Option<u32>,
    /// The create-order `id` of the order holding the license.
    #[serde(default)]
    pub order_store_id: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

/// How long a license is valid. LicenseSpring refuses `validity_period` and `valid_duration` in
/// one update, so an update carries exactly one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum LicenseValidity {
    /// Valid until this day (`validity_period`, `YYYY-MM-DD`).
    #[serde(rename = "validity_period")]
    Until(NaiveDate),
    /// Valid for this long from now (`valid_duration`, e.g. `1m`, `14d`, `1y`): see
    /// [`crate::model::BillingInterval::valid_duration`].
    #[serde(rename = "valid_duration")]
    Duration(String),
}

/// One `PATCH /api/v1/licenses/{id}/`: what to change, the rest left as it is. LicenseSpring's
/// rule: `is_trial` goes with every validity change, so a change with a validity must say it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LicenseChange {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_trial: Option<bool>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub validity: Option<LicenseValidity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_activations: Option<u32>,
}

impl LicenseChange {
    pub fn is_empty(&self) -> bool {
        *self == LicenseChange::default()
    }
}

/// What a new license is made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLicenseTerms {
    pub valid_until: NaiveDate,
    pub is_trial: bool,
    /// `None`: LicenseSpring's default (the product's).
    pub max_activations: Option<u32>,
}

#[derive(Serialize)]
struct NewOrder<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer: Option<&'a Buyer>,
    items: [OrderItem<'a>; 1],
}

/// The buyer on an order, so that LicenseSpring's records and order emails reach them.
/// LicenseSpring matches customers by email, so an order names one only when there is an email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Buyer {
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
}

impl Buyer {
    /// From an email and a full name (`Jane Q. Doe`: first name `Jane Q.`, last name `Doe`); `None`
    /// without an email.
    pub fn new(email: Option<&str>, name: Option<&str>) -> Option<Buyer> {
        let email = email.map(str::trim).filter(|email| !email.is_empty())?;
        let name = name.map(str::trim).filter(|name| !name.is_empty());
        let (first_name, last_name) = match name.map(|name| name.rsplit_once(' ')) {
            None => (None, None),
            Some(None) => (name.map(str::to_owned), None),
            Some(Some((first, last))) => (Some(first.trim().to_owned()), Some(last.to_owned())),
        };
        Some(Buyer { email: email.to_owned(), first_name, last_name })
    }
}

#[derive(Serialize)]
struct OrderItem<'a> {
    product_code: &'a str,
    licenses: [NewLicense<'a>; 1],
}

#[derive(Serialize)]
struct NewLicense<'a> {
    key: &'a LicenseKey,
    license_type: &'static str,
    is_trial: bool,
    validity_period: NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_activations: Option<u32>,
}

#[derive(Deserialize)]
struct LicenseList {
    results: Vec<License>,
}

/// One page of licenses, and how many there are in all.
#[derive(Debug, Clone, Deserialize)]
pub struct LicensePage {
    #[serde(default)]
    pub count: usize,
    pub results: Vec<License>,
}

/// LicenseSpring's largest page.
pub const LICENSE_PAGE: usize = 100;

/// One LicenseSpring company's Management API, reached through one pooled HTTP client.
#[derive(Clone)]
pub struct LicenseSpringClient {
    http: reqwest::Client,
    base: Url,
    api_key: Secret,
}

impl fmt::Debug for LicenseSpringClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LicenseSpringClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl LicenseSpringClient {
    pub fn new(base: Url, api_key: Secret, timeout: Duration) -> LicenseSpringClient {
        LicenseSpringClient { http: upstream::http_client(timeout), base, api_key }
    }

    /// `GET /api/v1/orders/generate_license/?product=..&quantity=1`: a fresh key. Reserves
    /// nothing; the license exists only once an order holds the key.
    pub async fn generate_license_key(&self, product_code: &str) -> Result<LicenseKey, LicenseSpringError> {
        let call = LicenseSpringCall::GenerateKey;
        let request = self
            .request(call, Method::GET, "/api/v1/orders/generate_license/")?
            .query(&[("product", product_code), ("quantity", "1")]);
        let keys: Vec<String> = self.parse(call, &self.send(call, request).await?)?;
        keys.into_iter().find(|key| !key.trim().is_empty()).map(LicenseKey).ok_or_else(|| {
            LicenseSpringError::Unreadable { call, reason: "the answer holds no license key".to_owned() }
        })
    }

    /// `POST /api/v1/orders/create_order/` holding one subscription license with `key` on `terms`;
    /// answers the new license's id.
    ///
    /// The answer's shape is unverified, so any 2xx counts as created: the id is read from
    /// `order_items[0].licenses[0].id` when present, else the license is looked up by key.
    /// `append` is never sent, so a second call with the same `order_id` is refused instead of
    /// adding a second license (see [`LicenseSpringError::is_order_refusal`]).
    pub async fn create_order(
        &self,
        order_id: &str,
        product_code: &str,
        key: &LicenseKey,
        terms: &NewLicenseTerms,
        buyer: Option<&Buyer>,
    ) -> Result<LicenseId, LicenseSpringError> {
        let call = LicenseSpringCall::CreateOrder;
        let order = NewOrder {
            id: order_id,
            customer: buyer,
            items: [OrderItem {
                product_code,
                licenses: [NewLicense {
                    key,
                    license_type: "subscription",
                    is_trial: terms.is_trial,
                    validity_period: terms.valid_until,
                    max_activations: terms.max_activations,
                }],
            }],
        };
        let request = self.request(call, Method::POST, "/api/v1/orders/create_order/")?.json(&order);
        let answer = self.send(call, request).await?;
        if let Some(id) = license_id_in_order(&answer, key) {
            return Ok(id);
        }
        match self.find_license_by_key(key).await? {
            Some(license) => Ok(license.id),
            None => Err(LicenseSpringError::LicenseNotListed { key: key.clone() }),
        }
    }

    /// `GET /api/v1/licenses/?license_key=..`: the license with exactly this key, or `None`.
    pub async fn find_license_by_key(&self, key: &LicenseKey) -> Result<Option<License>, LicenseSpringError> {
        let found = self.list_licenses("license_key", key.as_str()).await?;
        // Only an exact match counts, in case the filter ever matches loosely.
        Ok(found.into_iter().find(|license| license.license_key == *key))
    }

    /// `GET /api/v1/licenses/?order__store_id=..`: the license of the order this server created with
    /// that id, if any.
    pub async fn find_license_by_order(&self, order_id: &str) -> Result<Option<License>, LicenseSpringError> {
        let found = self.list_licenses("order__store_id", order_id).await?;
        Ok(found.into_iter().find(|license| license.order_store_id.as_deref() == Some(order_id)))
    }

    /// The first page of `GET /api/v1/licenses/` filtered by one field: a subscription's license is
    /// one, so the first page always holds it.
    async fn list_licenses(&self, filter: &str, value: &str) -> Result<Vec<License>, LicenseSpringError> {
        let call = LicenseSpringCall::FindLicense;
        let request = self.request(call, Method::GET, "/api/v1/licenses/")?.query(&[(filter, value)]);
        let list: LicenseList = self.parse(call, &self.send(call, request).await?)?;
        Ok(list.results)
    }

    /// One page (100, oldest first) of `GET /api/v1/licenses/?order__store_id__startswith=..`:
    /// the licenses of the orders whose id starts with `order_prefix`, from `offset` on.
    pub async fn list_licenses_of_orders(
        &self,
        order_prefix: &str,
        offset: usize,
    ) -> Result<LicensePage, LicenseSpringError> {
        let call = LicenseSpringCall::FindLicense;
        let (offset, limit) = (offset.to_string(), LICENSE_PAGE.to_string());
        let query = [
            ("order__store_id__startswith", order_prefix),
            ("order_by", "created_at"),
            ("limit", limit.as_str()),
            ("offset", offset.as_str()),
        ];
        let request = self.request(call, Method::GET, "/api/v1/licenses/")?.query(&query);
        self.parse(call, &self.send(call, request).await?)
    }

    /// `GET /api/v1/licenses/{id}/`.
    pub async fn retrieve_license(&self, id: LicenseId) -> Result<License, LicenseSpringError> {
        let call = LicenseSpringCall::RetrieveLicense;
        let request = self.request(call, Method::GET, &format!("/api/v1/licenses/{id}/"))?;
        self.parse(call, &self.send(call, request).await?)
    }

    /// `PATCH /api/v1/licenses/{id}/` with the fields of `change`. Any 2xx is success: the
    /// change is made whatever the answer's body says.
    pub async fn update_license(
        &self,
        id: LicenseId,
        change: &LicenseChange,
    ) -> Result<(), LicenseSpringError> {
        let call = LicenseSpringCall::UpdateLicense;
        let request = self.request(call, Method::PATCH, &format!("/api/v1/licenses/{id}/"))?.json(change);
        self.send(call, request).await.map(drop)
    }

    /// `POST /api/v1/licenses/{id}/enable/` with no body. Whether enabling an enabled license is
    /// refused is unverified; callers check [`License::enabled`] first.
    pub async fn enable_license(&self, id: LicenseId) -> Result<(), LicenseSpringError> {
        let call = LicenseSpringCall::EnableLicense;
        let request = self.request(call, Method::POST, &format!("/api/v1/licenses/{id}/enable/"))?;
        self.send(call, request).await.map(drop)
    }

    /// `POST /api/v1/licenses/{id}/disable/` with `{}`. Whether disabling a disabled license is
    /// refused is unverified; callers that care can check [`License::enabled`] first.
    pub async fn disable_license(&self, id: LicenseId) -> Result<(), LicenseSpringError> {
        let call = LicenseSpringCall::DisableLicense;
        let request =
            self.request(call, Method::POST, &format!("/api/v1/licenses/{id}/disable/"))?.json(&json!({}));
        self.send(call, request).await.map(drop)
    }

    fn request(
        &self,
        call: LicenseSpringCall,
        method: Method,
        path: &str,
    ) -> Result<RequestBuilder, LicenseSpringError> {
        let mut authorization = HeaderValue::from_str(&format!("Api-Key {}", self.api_key.expose()))
            .map_err(|_| LicenseSpringError::Transport {
                call,
                reason: "the API key holds characters an HTTP header cannot carry".to_owned(),
            })?;
        authorization.set_sensitive(true);
        // `path` is built by this module from fixed segments and integer ids.
        Ok(self
            .http
            .request(method, upstream::url_under(&self.base, path))
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, "application/json"))
    }

    /// Sends and answers the body of a 2xx; any other status becomes [`LicenseSpringError::Api`].
    async fn send(
        &self,
        call: LicenseSpringCall,
        request: RequestBuilder,
    ) -> Result<Vec<u8>, LicenseSpringError> {
        let failed = |error: reqwest::Error| match TransportFailure::from(error) {
            TransportFailure::Timeout => LicenseSpringError::Timeout { call },
            TransportFailure::Failed(reason) => {
                LicenseSpringError::Transport { call, reason: self.redact(reason) }
            }
        };
        let upstream::Answer { status, body, .. } =
            upstream::exchange("licensespring", call.operation(), request).await.map_err(failed)?;
        if status.is_success() {
            return Ok(body);
        }
        let message = self.redact(error_message(&body));
        Err(LicenseSpringError::Api { call, status: status.as_u16(), message })
    }

    fn parse<T: DeserializeOwned>(
        &self,
        call: LicenseSpringCall,
        body: &[u8],
    ) -> Result<T, LicenseSpringError> {
        serde_json::from_slice(body).map_err(|error| LicenseSpringError::Unreadable {
            call,
            reason: format!("{error} in {}", self.redact(upstream::excerpt(body))),
        })
    }

    /// Upstream text may echo the request (a proxy's error page, say): never let the key through.
    fn redact(&self, text: String) -> String {
        let key = self.api_key.expose();
        if key.is_empty() { text } else { text.replace(key, "[redacted]") }
    }
}

/// LicenseSpring's error text: `detail`, else `message`, else the start of the raw answer.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| match parsed.as_ref().and_then(|value| value.get(name)) {
        Some(Value::String(text)) => Some(text.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    field("detail").or_else(|| field("message")).unwrap_or_else(|| upstream::excerpt(body))
}

/// `order_items[0].licenses[0].id` of a create-order answer, if it is there and (when the answer
/// names the key) belongs to `key`.
fn license_id_in_order(answer: &[u8], key: &LicenseKey) -> Option<LicenseId> {
    let answer: Value = serde_json::from_slice(answer).ok()?;
    let license = answer.pointer("/order_items/0/licenses/0")?;
    match license.get("license_key").and_then(Value::as_str) {
        Some(listed) if listed != key.as_str() => None,
        _ => license.get("id")?.as_i64().map(LicenseId),
    }
}

/// Reads `validity_period` from a date (`2025-12-24`), an RFC 3339 datetime (`2025-12-24T00:00:00Z`,
/// `2019-06-15T00:00:00.000Z`; taken as its UTC date), a datetime without zone (read as UTC), or
/// null. Anything else is an error rather than a guess: a misread date could shorten a license.
fn lenient_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<NaiveDate>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .or_else(|| DateTime::parse_from_rfc3339(text).ok().map(|at| at.with_timezone(&Utc).date_naive()))
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
                .map(|at| at.date())
        })
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("validity_period {text:?} is not a date")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn license(validity_period: Value) -> Result<License, serde_json::Error> {
        serde_json::from_value(json!({
            "id": 1764000000123456_i64, "license_key": "G8HA-SRRZ-A6WK-TJWB",
            "validity_period": validity_period,
        }))
    }

    fn day(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(y, m, d)
    }

    #[test]
    fn validity_period_reads_dates_datetimes_and_null() {
        let read = |value| license(value).map(|l| l.validity_period).ok();
        assert_eq!(read(json!("2025-12-24")), Some(day(2025, 12, 24)));
        assert_eq!(read(json!("2025-12-24T00:00:00Z")), Some(day(2025, 12, 24)));
        assert_eq!(read(json!("2019-06-15T00:00:00.000Z")), Some(day(2019, 6, 15)));
        assert_eq!(read(json!("2025-12-24T23:30:00-02:00")), Some(day(2025, 12, 25)), "UTC date");
        assert_eq!(read(json!("2025-12-24T10:00:00")), Some(day(2025, 12, 24)));
        assert_eq!(read(json!(null)), Some(None));
        assert!(license(json!("next tuesday")).is_err());
    }

    #[test]
    fn a_license_with_only_id_and_key_reads_with_defaults() {
        let license: License =
            serde_json::from_value(json!({"id": 1, "license_key": "K"})).expect("minimal license");
        assert!(license.enabled);
        assert!(!license.is_trial);
        assert_eq!(
            (license.validity_period, license.valid_duration, license.order_store_id),
            (None, None, None)
        );
    }

    #[test]
    fn a_buyer_needs_an_email_and_splits_a_full_name() {
        let buyer = Buyer::new(Some(" jane@example.com "), Some("Jane Q. Doe")).expect("a buyer");
        assert_eq!(
            serde_json::to_value(&buyer).unwrap(),
            json!({"email": "jane@example.com", "first_name": "Jane Q.", "last_name": "Doe"})
        );
        let single = Buyer::new(Some("cher@example.com"), Some("Cher")).expect("a buyer");
        assert_eq!(
            serde_json::to_value(&single).unwrap(),
            json!({"email": "cher@example.com", "first_name": "Cher"})
        );
        assert_eq!(Buyer::new(Some("x@example.com"), None).map(|b| b.first_name), Some(None));
        assert_eq!(Buyer::new(None, Some("Jane Doe")), None, "no email: no customer on the order");
        assert_eq!(Buyer::new(Some("  "), None), None);
    }

    #[test]
    fn a_change_sends_only_its_fields_and_at_most_one_validity() {
        let body = |change: LicenseChange| serde_json::to_value(change).expect("serializes");
        let until = LicenseValidity::Until(NaiveDate::from_ymd_opt(2026, 1, 24).expect("date"));
        let change =
            LicenseChange { is_trial: Some(false), validity: Some(until), ..LicenseChange::default() };
        assert_eq!(body(change), json!({"is_trial": false, "validity_period": "2026-01-24"}));
        let duration = LicenseValidity::Duration("1m".to_owned());
        let change =
            LicenseChange { is_trial: Some(true), validity: Some(duration), ..LicenseChange::default() };
        assert_eq!(body(change), json!({"is_trial": true, "valid_duration": "1m"}));
        let seats = LicenseChange { max_activations: Some(6), ..LicenseChange::default() };
        assert_eq!(body(seats), json!({"max_activations": 6}));
        assert!(LicenseChange::default().is_empty());
    }

    #[test]
    fn error_message_prefers_detail_then_message_then_raw_text() {
        assert_eq!(error_message(br#"{"detail": "no", "message": "other"}"#), "no");
        assert_eq!(error_message(br#"{"message": "License not found."}"#), "License not found.");
        assert_eq!(error_message(br#"{"items": ["bad"]}"#), r#"{"items": ["bad"]}"#);
        assert_eq!(error_message(b"<html>Bad Gateway</html>"), "<html>Bad Gateway</html>");
    }

    #[test]
    fn license_id_is_read_from_the_order_only_when_it_is_there_and_matches() {
        let key = LicenseKey("G8HA-SRRZ-A6WK-TJWB".to_owned());
        let with_id = br#"{"id": 1, "order_items": [{"licenses": [{"id": 42, "license_key": "G8HA-SRRZ-A6WK-TJWB"}]}]}"#;
        assert_eq!(license_id_in_order(with_id, &key), Some(LicenseId(42)));
        let other_key = br#"{"order_items": [{"licenses": [{"id": 42, "license_key": "OTHER"}]}]}"#;
        assert_eq!(license_id_in_order(other_key, &key), None);
        assert_eq!(license_id_in_order(br#"{"order_id": 7, "new_passwords": []}"#, &key), None);
        assert_eq!(license_id_in_order(b"", &key), None);
    }

    #[test]
    fn refusals_and_retryable_errors_are_told_apart() {
        let api = |call, status| LicenseSpringError::Api { call, status, message: String::new() };
        assert!(api(LicenseSpringCall::CreateOrder, 400).is_order_refusal());
        assert!(!api(LicenseSpringCall::CreateOrder, 429).is_order_refusal());
        assert!(!api(LicenseSpringCall::CreateOrder, 500).is_order_refusal());
        assert!(!api(LicenseSpringCall::FindLicense, 400).is_order_refusal());
        assert!(api(LicenseSpringCall::CreateOrder, 503).is_retryable());
        assert!(!api(LicenseSpringCall::RetrieveLicense, 403).is_retryable());
        assert!(api(LicenseSpringCall::RetrieveLicense, 404).is_not_found());
        assert!(LicenseSpringError::Timeout { call: LicenseSpringCall::UpdateLicense }.is_retryable());
    }
}
