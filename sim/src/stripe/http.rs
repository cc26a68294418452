//! The REST API: routes, API-key auth, Stripe-shaped errors, form parsing with Stripe's bracket
//! nesting, idempotency keys, and the handlers of the calls `stripe-licensespring` makes (the
//! list calls of reconciliation and replay are in `lists`).

mod lists;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::render::{customer_json, payment_link_json, portal_session_json, pretty};
use super::state::{Shared, Store, SubscriptionChange};
use super::{
    ApiGeneration, SimCheckoutSession, SimEvent, SimPaymentLink, SimSubscription, StripeSimError, checkout,
    portal,
};
use crate::frontdoor::{KeyCheck, lock, require_api_key};

/// Stripe's metadata limits.
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_CHARS: usize = 40;
const MAX_METADATA_VALUE_CHARS: usize = 500;
const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

pub(super) fn routes(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/v1/payment_links", post(create_payment_link))
        .route("/v1/subscriptions", get(lists::list_subscriptions))
        .route("/v1/events", get(lists::list_events))
        .route("/v1/subscriptions/{id}", get(retrieve_subscription).post(update_subscription))
        .route("/v1/subscriptions/{id}/pause", post(pause_subscription))
        .route("/v1/subscriptions/{id}/resume", post(resume_subscription))
        .route("/v1/prices/{id}", get(retrieve_price))
        .route("/v1/checkout/sessions", get(list_checkout_sessions))
        .route("/v1/checkout/sessions/{id}", get(retrieve_checkout_session))
        .route("/v1/customers/{id}", get(retrieve_customer))
        .route("/v1/billing_portal/sessions", post(create_portal_session));
    Router::new()
        .merge(require_api_key(api, shared.clone()))
        .route("/checkout/{link}", get(checkout::page).post(checkout::pay))
        .route("/checkout/sessions/{session}", get(checkout::session_page))
        .route("/portal/{session}", get(portal::page))
        .route("/portal/{session}/subscriptions/{subscription}/{action}", post(portal::act))
        .fallback(unrecognized_url)
        .with_state(shared)
}

/// An error in Stripe's shape.
struct ApiError {
    status: StatusCode,
    error_type: &'static str,
    code: Option<&'static str>,
    message: String,
    param: Option<String>,
}

impl ApiError {
    /// An `invalid_request_error` without a code or a parameter.
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error_type: "invalid_request_error",
            code: None,
            message: message.into(),
            param: None,
        }
    }

    /// A 400 about one parameter.
    fn invalid(code: &'static str, param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some(code),
            param: Some(param.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, message)
        }
    }

    /// A 404 for an object that does not exist.
    fn missing(kind: &str, param: &str, id: &str) -> ApiError {
        let message = format!("No such {kind}: '{id}'");
        ApiError { status: StatusCode::NOT_FOUND, ..ApiError::invalid("resource_missing", param, message) }
    }

    fn to_json(&self) -> Value {
        let mut error = serde_json::Map::new();
        if let Some(code) = self.code {
            error.insert("code".into(), json!(code));
            error.insert(
                "doc_url".into(),
                json!(format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-"))),
            );
        }
        error.insert("message".into(), json!(self.message));
        if let Some(param) = &self.param {
            error.insert("param".into(), json!(param));
        }
        error.insert("type".into(), json!(self.error_type));
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        stripe_json(self.status, &self.to_json())
    }
}

fn stripe_json(status: StatusCode, value: &Value) -> Response {
    json_answer(status, pretty(value))
}

fn json_answer(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl KeyCheck for Shared {
    /// Bearer auth (or Basic with the key as user name, which Stripe also accepts).
    fn refusal(&self, authorization: Option<&str>) -> Option<Response> {
        let presented = authorization.and_then(|value| match value.split_once(' ') {
            Some(("Bearer", key)) => Some(key.trim().to_owned()),
            Some(("Basic", encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|decoded| String::from_utf8(decoded).ok())
                .map(|user| user.split(':').next().unwrap_or_default().to_owned()),
            _ => None,
        });
        let message = match presented {
            Some(key) if key == self.config.api_key => return None,
            Some(key) => format!("Invalid API Key provided: {}", redact_key(&key)),
            None => "You did not provide an API key. You need to provide your API key in the Authorization \
                     header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
                .to_owned(),
        };
        Some(ApiError::new(StatusCode::UNAUTHORIZED, message).into_response())
    }
}

/// `sk_test_****abcd`: the key's kind and its last four characters, as Stripe shows it.
fn redact_key(key: &str) -> String {
    let prefix = ["sk_test_", "sk_live_", "rk_test_", "rk_live_"]
        .into_iter()
        .find(|prefix| key.starts_with(prefix))
        .unwrap_or("");
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < prefix.len() + 8 {
        return format!("{prefix}****");
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{prefix}****{tail}")
}

async fn unrecognized_url(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("Unrecognized request URL ({method}: {}).", uri.path()))
}

/// The generation a REST answer is rendered in: `Stripe-Version` when sent, else the account's.
fn answer_generation(shared: &Shared, headers: &HeaderMap) -> Result<ApiGeneration, ApiError> {
    match headers.get("Stripe-Version").map(|v| v.to_str().unwrap_or("")) {
        None => Ok(shared.config.generation),
        Some(version) => ApiGeneration::of_version(version).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid Stripe API version: {version}"))
        }),
    }
}

/// The top-level names of a form body's parameters (`line_items` for `line_items[0][price]`).
fn form_parameter_names(body: &[u8]) -> Vec<String> {
    url::form_urlencoded::parse(body)
        .map(|(name, _)| name.split('[').next().unwrap_or_default().to_owned())
        .collect()
}

/// Refuses a parameter the endpoint does not know, as Stripe does.
fn check_known_parameters(body: &[u8], known: &[&str]) -> Result<(), ApiError> {
    match form_parameter_names(body).into_iter().find(|name| !known.contains(&name.as_str())) {
        None => Ok(()),
        Some(name) => Err(ApiError::invalid(
            "parameter_unknown",
            name.clone(),
            format!("Received unknown parameter: {name}"),
        )),
    }
}

/// Parses a form body with Stripe's bracket nesting; brackets may be percent-encoded.
fn parse_form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_qs::Config::new().use_form_encoding(true).deserialize_bytes(body).map_err(|error| ApiError {
        code: Some("parameter_invalid"),
        ..ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid request parameters: {error}"))
    })
}

/// A saved answer, or the mark of a request still running, under one `Idempotency-Key`.
pub(super) enum IdempotencyEntry {
    InFlight { fingerprint: String },
    Done { fingerprint: String, status: StatusCode, body: Vec<u8> },
}

/// Runs a POST at most once per `Idempotency-Key`: a repeat with the same parameters gets the
/// saved answer (`Idempotent-Replayed: true`), a repeat with other parameters an
/// `idempotency_error`. Answers to requests that fail validation (400) are not saved.
fn idempotent(
    shared: &Shared,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    run: impl FnOnce() -> Result<(StatusCode, Value), ApiError>,
) -> Response {
    let Some(key) = headers.get("Idempotency-Key").map(|v| v.to_str().unwrap_or("").to_owned()) else {
        return match run() {
            Ok((status, value)) => stripe_json(status, &value),
            Err(error) => error.into_response(),
        };
    };
    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
        let message = format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters long.");
        return ApiError::invalid("idempotency_key_invalid", "Idempotency-Key", message).into_response();
    }
    let mut params: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    params.sort();
    let fingerprint = format!("{route}?{params:?}");

    {
        let mut store = lock(&shared.store);
        match store.idempotency.get(&key) {
            Some(IdempotencyEntry::Done { fingerprint: saved, status, body }) if *saved == fingerprint => {
                let mut response = json_answer(*status, body.clone());
                response.headers_mut().insert("Idempotent-Replayed", HeaderValue::from_static("true"));
                return response;
            }
            Some(IdempotencyEntry::InFlight { fingerprint: saved }) if *saved == fingerprint => {
                let message = "There is currently another in-progress request using this Idempotency Key. \
                               Please try again later.";
                let error = ApiError::new(StatusCode::CONFLICT, message);
                return ApiError {
                    error_type: "idempotency_error",
                    code: Some("idempotency_key_in_use"),
                    ..error
                }
                .into_response();
            }
            Some(_) => {
                let message = format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first \
                     used with. Try using a key other than '{key}' if you meant to execute a different request."
                );
                let error = ApiError::new(StatusCode::BAD_REQUEST, message);
                return ApiError { error_type: "idempotency_error", ..error }.into_response();
            }
            None => {
                store
                    .idempotency
                    .insert(key.clone(), IdempotencyEntry::InFlight { fingerprint: fingerprint.clone() });
            }
        }
    }

    let (status, value) = match run() {
        Ok(answer) => answer,
        Err(error) => (error.status, error.to_json()),
    };
    let body = pretty(&value);
    let mut store = lock(&shared.store);
    if status == StatusCode::BAD_REQUEST {
        store.idempotency.remove(&key);
    } else {
        store.idempotency.insert(key, IdempotencyEntry::Done { fingerprint, status, body: body.clone() });
    }
    json_answer(status, body)
}

#[derive(Deserialize)]
struct PaymentLinkParams {
    line_items: Option<Vec<LineItemParams>>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    subscription_data: Option<SubscriptionDataParams>,
    after_completion: Option<AfterCompletionParams>,
}

#[derive(Deserialize)]
struct LineItemParams {
    price: Option<String>,
    quantity: Option<String>,
}

#[derive(Deserialize)]
struct SubscriptionDataParams {
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    trial_period_days: Option<String>,
}

#[derive(Deserialize)]
struct AfterCompletionParams {
    #[serde(rename = "type")]
    kind: Option<String>,
    redirect: Option<RedirectParams>,
    /// `[hosted_confirmation][custom_message]`: accepted; the simulator's page is its own.
    #[allow(dead_code)]
    hosted_confirmation: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct RedirectParams {
    url: Option<String>,
}

/// `POST /v1/payment_links`: one line item of a known price.
async fn create_payment_link(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    idempotent(&shared, &headers, "POST /v1/payment_links", &body, || {
        check_known_parameters(&body, &["line_items", "metadata", "subscription_data", "after_completion"])?;
        let params: PaymentLinkParams = parse_form(&body)?;
        let items = params.line_items.unwrap_or_default();
        let Some(item) = items.first() else {
            return Err(ApiError::invalid(
                "parameter_missing",
                "line_items",
                "Missing required param: line_items.",
            ));
        };
        if items.len() > 1 {
            return Err(ApiError::invalid(
                "parameter_invalid",
                "line_items",
                "The simulator sells one line item per payment link.",
            ));
        }
        let price_id = item.price.clone().ok_or_else(|| {
            ApiError::invalid(
                "parameter_missing",
                "line_items[0][price]",
                "Missing required param: line_items[0][price].",
            )
        })?;
        let quantity = match item.quantity.as_deref().map(str::parse::<u32>) {
            Some(Ok(quantity)) if quantity >= 1 => quantity,
            Some(_) => {
                return Err(ApiError::invalid(
                    "parameter_invalid_integer",
                    "line_items[0][quantity]",
                    "Invalid positive integer",
                ));
            }
            None => {
                return Err(ApiError::invalid(
                    "parameter_missing",
                    "line_items[0][quantity]",
                    "Missing required param: line_items[0][quantity].",
                ));
            }
        };
        if shared.price(&price_id).is_none() {
            return Err(ApiError::invalid(
                "resource_missing",
                "line_items[0][price]",
                format!("No such price: '{price_id}'"),
            ));
        }
        let redirect_url = after_completion(params.after_completion)?;
        let (subscription_metadata, trial) = match params.subscription_data {
            Some(data) => (data.metadata, data.trial_period_days),
            None => (BTreeMap::new(), None),
        };
        // Stripe's limits: at least 1 day, at most 730 (two years).
        let trial_period_days = match trial.as_deref().map(str::parse::<u32>) {
            None => None,
            Some(Ok(days @ 1..=730)) => Some(days),
            Some(Ok(_)) => {
                return Err(ApiError::invalid(
                    "parameter_invalid_integer",
                    "subscription_data[trial_period_days]",
                    "This value must be greater than or equal to 1 and at most 730.",
                ));
            }
            Some(Err(_)) => {
                return Err(ApiError::invalid(
                    "parameter_invalid_integer",
                    "subscription_data[trial_period_days]",
                    "Invalid integer",
                ));
            }
        };
        let link = SimPaymentLink {
            id: String::new(),
            url: String::new(),
            price_id,
            quantity,
            metadata: params.metadata,
            subscription_metadata,
            redirect_url,
            trial_period_days,
        };
        let link = shared.add_link(&mut lock(&shared.store), link);
        Ok((StatusCode::OK, payment_link_json(&link, shared.price(&link.price_id))))
    })
}

/// `after_completion`: `redirect` (with a URL, which may hold `{CHECKOUT_SESSION_ID}`) gives
/// the URL; `hosted_confirmation` or nothing, `None`.
fn after_completion(params: Option<AfterCompletionParams>) -> Result<Option<String>, ApiError> {
    let Some(params) = params else {
        return Ok(None);
    };
    match params.kind.as_deref() {
        Some("redirect") => {
            let url = params.redirect.and_then(|r| r.url).filter(|url| !url.is_empty());
            let url = url.ok_or_else(|| {
                ApiError::invalid(
                    "parameter_missing",
                    "after_completion[redirect][url]",
                    "Missing required param: after_completion[redirect][url].",
                )
            })?;
            // The placeholder's braces are not valid in every part of a URL: check it filled in.
            if Url::parse(&checkout::fill_session_id(&url, "cs_test_x")).is_err() {
                return Err(ApiError::invalid(
                    "url_invalid",
                    "after_completion[redirect][url]",
                    format!("Not a valid URL: {url}"),
                ));
            }
            Ok(Some(url))
        }
        Some("hosted_confirmation") => Ok(None),
        Some(other) => Err(ApiError::invalid(
            "parameter_invalid",
            "after_completion[type]",
            format!(
                "Invalid after_completion[type]: must be one of redirect or hosted_confirmation (got {other})."
            ),
        )),
        None => Err(ApiError::invalid(
            "parameter_missing",
            "after_completion[type]",
            "Missing required param: after_completion[type].",
        )),
    }
}

/// The `expand[]` values of a query string or form body (`expand[]=x`, `expand%5B%5D=x`,
/// `expand[0]=x`).
fn expand_paths(pairs: &[u8]) -> Vec<String> {
    url::form_urlencoded::parse(pairs)
        .filter(|(name, _)| name == "expand" || name.starts_with("expand["))
        .map(|(_, value)| value.into_owned())
        .collect()
}

fn unexpandable(path: &str) -> ApiError {
    ApiError::invalid("parameter_invalid", "expand", format!("This property cannot be expanded ({path})."))
}

/// What a retrieve reads besides the id: the answer's generation and the `expand[]` paths.
fn read_options(
    shared: &Shared,
    query: Option<String>,
    headers: &HeaderMap,
) -> Result<(ApiGeneration, Vec<String>), ApiError> {
    Ok((answer_generation(shared, headers)?, expand_paths(query.unwrap_or_default().as_bytes())))
}

/// The subscription's JSON with the asked-for expansions: `latest_invoice` and `customer`;
/// anything else is Stripe's 400.
fn expanded_subscription(
    shared: &Shared,
    store: &Store,
    subscription: &SimSubscription,
    generation: ApiGeneration,
    expand: &[String],
) -> Result<Value, ApiError> {
    let mut object = shared.subscription_json(subscription, generation);
    for path in expand {
        match path.as_str() {
            "latest_invoice" => {
                let invoice = store.invoice(&subscription.latest_invoice);
                if let Some(invoice) = invoice {
                    object["latest_invoice"] = shared.invoice_json(invoice, subscription, generation);
                }
            }
            "customer" => object["customer"] = customer_object(store, &subscription.customer)?,
            other => return Err(unexpandable(other)),
        }
    }
    Ok(object)
}

async fn retrieve_subscription(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (generation, expand) = read_options(&shared, query, &headers)?;
    let store = lock(&shared.store);
    let subscription = store.subscription(&id).cloned();
    let subscription = subscription.ok_or_else(|| ApiError::missing("subscription", "id", &id))?;
    let object = expanded_subscription(&shared, &store, &subscription, generation, &expand)?;
    Ok(stripe_json(StatusCode::OK, &object))
}

/// A control's refusal as a REST error.
fn control_error(error: StripeSimError) -> ApiError {
    match error {
        StripeSimError::UnknownSubscription(id) => ApiError::missing("subscription", "id", &id),
        StripeSimError::UnknownPrice(id) => {
            ApiError::invalid("resource_missing", "items[0][price]", format!("No such price: '{id}'"))
        }
        StripeSimError::Canceled(id) => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("A canceled subscription can only update its cancellation_details and metadata ({id})."),
        ),
        other => ApiError::new(StatusCode::BAD_REQUEST, other.to_string()),
    }
}

/// `POST /v1/subscriptions/{id}/pause` (`status: paused`).
async fn pause_subscription(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    subscription_control(&shared, &id, "pause", Shared::pause, &headers, &body)
}

/// `POST /v1/subscriptions/{id}/resume` (a new period from now, invoiced and paid).
async fn resume_subscription(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    subscription_control(&shared, &id, "resume", Shared::resume, &headers, &body)
}

/// `POST /v1/subscriptions/{id}/{action}`: runs the control once per idempotency key and
/// answers the subscription.
fn subscription_control(
    shared: &Shared,
    id: &str,
    action: &str,
    control: fn(&Shared, &str) -> Result<Vec<SimEvent>, StripeSimError>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let generation = answer_generation(shared, headers)?;
    Ok(idempotent(shared, headers, &format!("POST /v1/subscriptions/{id}/{action}"), body, || {
        control(shared, id).map_err(control_error)?;
        subscription_answer(shared, id, generation, &expand_paths(body))
    }))
}

fn subscription_answer(
    shared: &Shared,
    id: &str,
    generation: ApiGeneration,
    expand: &[String],
) -> Result<(StatusCode, Value), ApiError> {
    let store = lock(&shared.store);
    let subscription = store.subscription(id).cloned();
    let subscription = subscription.ok_or_else(|| ApiError::missing("subscription", "id", id))?;
    Ok((StatusCode::OK, expanded_subscription(shared, &store, &subscription, generation, expand)?))
}

/// `metadata=` (clear all) or `metadata[key]=value` pairs.
enum MetadataParam {
    Pairs(BTreeMap<String, String>),
    Clear(String),
}

#[derive(Deserialize)]
struct UpdateSubscriptionParams {
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct UpdateItemsParams {
    items: Option<Vec<ItemUpdateParams>>,
    cancel_at_period_end: Option<String>,
    proration_behavior: Option<String>,
}

#[derive(Deserialize)]
struct ItemUpdateParams {
    id: Option<String>,
    price: Option<String>,
    quantity: Option<String>,
}

/// The item, price, seat and cancel changes a form body asks for.
fn item_changes(body: &[u8], subscription: &SimSubscription) -> Result<SubscriptionChange, ApiError> {
    // `metadata` is read separately: a bare `metadata=` is a string where the form wants a map.
    let params: UpdateItemsParams = parse_form(&without(body, &["metadata"]))?;
    let mut change = SubscriptionChange::default();
    if let Some(behavior) = params.proration_behavior {
        // Accepted and ignored: the simulator prorates only switches to another interval.
        if !["create_prorations", "none", "always_invoice"].contains(&behavior.as_str()) {
            return Err(ApiError::invalid(
                "parameter_invalid",
                "proration_behavior",
                format!(
                    "Invalid proration_behavior: must be one of create_prorations, none, or always_invoice (got {behavior})."
                ),
            ));
        }
    }
    change.cancel_at_period_end = match params.cancel_at_period_end.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(ApiError::invalid(
                "parameter_invalid_boolean",
                "cancel_at_period_end",
                "Invalid boolean",
            ));
        }
    };
    let items = params.items.unwrap_or_default();
    if items.len() > 1 {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "items",
            "The simulator's subscriptions have one item.",
        ));
    }
    if let Some(item) = items.into_iter().next() {
        match item.id.as_deref() {
            Some(id) if id == subscription.item_id => {}
            Some(id) => {
                return Err(ApiError::invalid(
                    "resource_missing",
                    "items[0][id]",
                    format!("No such subscription item: '{id}'"),
                ));
            }
            // Without an id Stripe would add an item; the simulator has one.
            None => {
                return Err(ApiError::invalid(
                    "parameter_missing",
                    "items[0][id]",
                    "The simulator's subscriptions have one item: give items[0][id].",
                ));
            }
        }
        change.price_id = item.price;
        change.quantity = match item.quantity.as_deref().map(str::parse::<u32>) {
            None => None,
            Some(Ok(quantity)) if quantity >= 1 => Some(quantity),
            Some(_) => {
                return Err(ApiError::invalid(
                    "parameter_invalid_integer",
                    "items[0][quantity]",
                    "Invalid positive integer",
                ));
            }
        };
    }
    Ok(change)
}

/// The metadata change a form body asks for. A bare `metadata=` is read by hand: it is a string
/// where the typed form expects a map.
fn metadata_param(body: &[u8]) -> Result<Option<MetadataParam>, ApiError> {
    let bare = url::form_urlencoded::parse(body).find(|(name, _)| name == "metadata");
    match bare {
        Some((_, value)) => Ok(Some(MetadataParam::Clear(value.into_owned()))),
        None => Ok(parse_form::<UpdateSubscriptionParams>(body)?.metadata.map(MetadataParam::Pairs)),
    }
}

/// `POST /v1/subscriptions/{id}`: merges metadata (an empty value deletes a key; works on a
/// canceled subscription too, where metadata is still editable), changes the item's price and
/// quantity (`items[0][id]`, `items[0][price]`, `items[0][quantity]`), `cancel_at_period_end`;
/// `proration_behavior` is accepted. Emits `customer.subscription.updated` when anything changed.
async fn update_subscription(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let generation = answer_generation(&shared, &headers)?;
    Ok(idempotent(&shared, &headers, &format!("POST /v1/subscriptions/{id}"), &body, || {
        check_known_parameters(
            &body,
            &["metadata", "expand", "items", "cancel_at_period_end", "proration_behavior"],
        )?;
        let change = metadata_param(&body)?;
        let mut store = lock(&shared.store);
        let subscription =
            store.subscription_mut(&id).ok_or_else(|| ApiError::missing("subscription", "id", &id))?;
        let mut update = item_changes(&body, subscription)?;
        let mut metadata = subscription.metadata.clone();
        match change {
            None => {}
            Some(MetadataParam::Clear(text)) if text.is_empty() => metadata.clear(),
            Some(MetadataParam::Clear(_)) => {
                return Err(ApiError::invalid(
                    "parameter_invalid_string",
                    "metadata",
                    "Invalid metadata: metadata must be an object or an empty string.",
                ));
            }
            Some(MetadataParam::Pairs(pairs)) => {
                for (key, value) in pairs {
                    if value.is_empty() {
                        metadata.remove(&key);
                    } else {
                        check_metadata_entry(&key, &value)?;
                        metadata.insert(key, value);
                    }
                }
            }
        }
        if metadata.len() > MAX_METADATA_KEYS {
            return Err(ApiError::invalid(
                "parameter_invalid",
                "metadata",
                format!("Invalid metadata: at most {MAX_METADATA_KEYS} keys are allowed."),
            ));
        }
        update.metadata = Some(metadata);
        shared.update_in(&mut store, &id, update).map_err(control_error)?;
        let subscription = store.subscription(&id).cloned();
        let subscription = subscription.ok_or_else(|| ApiError::missing("subscription", "id", &id))?;
        let object = expanded_subscription(&shared, &store, &subscription, generation, &expand_paths(&body))?;
        Ok((StatusCode::OK, object))
    }))
}

fn check_metadata_entry(key: &str, value: &str) -> Result<(), ApiError> {
    let param = format!("metadata[{key}]");
    if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_CHARS || key.contains(['[', ']']) {
        let message = format!(
            "Invalid metadata: keys must be 1 to {MAX_METADATA_KEY_CHARS} characters, without brackets."
        );
        return Err(ApiError::invalid("parameter_invalid", param, message));
    }
    if value.chars().count() > MAX_METADATA_VALUE_CHARS {
        let message =
            format!("Invalid metadata: values can be at most {MAX_METADATA_VALUE_CHARS} characters.");
        return Err(ApiError::invalid("parameter_invalid", param, message));
    }
    Ok(())
}

async fn retrieve_price(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let generation = answer_generation(&shared, &headers)?;
    let price = shared.price(&id).ok_or_else(|| ApiError::missing("price", "id", &id))?;
    Ok(stripe_json(StatusCode::OK, &shared.price_json(price, generation)))
}

/// The customer's object (for `expand[]=customer`).
fn customer_object(store: &Store, id: &str) -> Result<Value, ApiError> {
    store.customer(id).map(customer_json).ok_or_else(|| ApiError::missing("customer", "customer", id))
}

async fn retrieve_customer(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = lock(&shared.store);
    let customer = store.customer(&id).ok_or_else(|| ApiError::missing("customer", "id", &id))?;
    Ok(stripe_json(StatusCode::OK, &customer_json(customer)))
}

/// The session's JSON with the asked-for expansions: `subscription`, `customer`, `line_items`,
/// `payment_link`, `invoice` (expansions of an unset id leave `null`); anything else is a 400.
fn expanded_session(
    shared: &Shared,
    store: &Store,
    session: &SimCheckoutSession,
    generation: ApiGeneration,
    expand: &[String],
) -> Result<Value, ApiError> {
    let mut object = shared.checkout_session_json(session);
    let subscription = session.subscription.as_ref().and_then(|id| store.subscription(id));
    for path in expand {
        match path.as_str() {
            "subscription" => {
                if let Some(subscription) = subscription {
                    object["subscription"] =
                        expanded_subscription(shared, store, subscription, generation, &[])?;
                }
            }
            "customer" => {
                if let Some(customer) = &session.customer {
                    object["customer"] = customer_object(store, customer)?;
                }
            }
            "line_items" => object["line_items"] = shared.checkout_line_items_json(session, generation),
            "payment_link" => {
                if let Some(link) = store.links.iter().find(|l| l.id == session.payment_link) {
                    object["payment_link"] = payment_link_json(link, shared.price(&link.price_id));
                }
            }
            "invoice" => {
                let invoice = session.invoice.as_ref().and_then(|id| store.invoice(id));
                if let (Some(invoice), Some(subscription)) = (invoice, subscription) {
                    object["invoice"] = shared.invoice_json(invoice, subscription, generation);
                }
            }
            other => return Err(unexpandable(other)),
        }
    }
    Ok(object)
}

/// `GET /v1/checkout/sessions/{id}`.
async fn retrieve_checkout_session(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (generation, expand) = read_options(&shared, query, &headers)?;
    let store = lock(&shared.store);
    let session = store.checkout_sessions.iter().find(|s| s.id == id);
    let session = session.ok_or_else(|| ApiError::missing("checkout.session", "id", &id))?;
    Ok(stripe_json(StatusCode::OK, &expanded_session(&shared, &store, session, generation, &expand)?))
}

/// `GET /v1/checkout/sessions`: newest first, filtered by `subscription`, `payment_link`,
/// `customer`, `status`; `limit` (1 to 100, default 10), `starting_after`; `expand[]=data.x`.
async fn list_checkout_sessions(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let generation = answer_generation(&shared, &headers)?;
    let query = query.unwrap_or_default();
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let param = |name: &str| params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str());
    let known = ["subscription", "payment_link", "customer", "status", "limit", "starting_after", "expand"];
    if let Some((name, _)) =
        params.iter().find(|(name, _)| !known.contains(&name.split('[').next().unwrap_or_default()))
    {
        return Err(ApiError::invalid(
            "parameter_unknown",
            name.clone(),
            format!("Received unknown parameter: {name}"),
        ));
    }
    let limit = match param("limit").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(limit @ 1..=100)) => limit,
        Some(_) => {
            return Err(ApiError::invalid(
                "parameter_invalid_integer",
                "limit",
                "This value must be greater than or equal to 1 and less than or equal to 100.",
            ));
        }
    };
    let expand: Vec<String> = expand_paths(query.as_bytes())
        .into_iter()
        .map(|path| path.strip_prefix("data.").map(str::to_owned).ok_or(path))
        .collect::<Result<_, _>>()
        .map_err(|path| unexpandable(&path))?;
    let store = lock(&shared.store);
    let matches = |session: &&SimCheckoutSession| {
        param("subscription").is_none_or(|id| session.subscription.as_deref() == Some(id))
            && param("payment_link").is_none_or(|id| session.payment_link == id)
            && param("customer").is_none_or(|id| session.customer.as_deref() == Some(id))
            && param("status").is_none_or(|status| session.status.as_str() == status)
    };
    // Newest first: stored oldest first, so reversed (ties keep creation order).
    let mut newest_first = store.checkout_sessions.iter().rev().filter(matches);
    if let Some(after) = param("starting_after") {
        if !store.checkout_sessions.iter().any(|s| s.id == after) {
            return Err(ApiError::missing("checkout.session", "starting_after", after));
        }
        newest_first.by_ref().find(|s| s.id == after);
    }
    let page: Vec<&SimCheckoutSession> = newest_first.by_ref().take(limit).collect();
    let has_more = newest_first.next().is_some();
    let data = page
        .into_iter()
        .map(|session| expanded_session(&shared, &store, session, generation, &expand))
        .collect::<Result<Vec<Value>, ApiError>>()?;
    let answer =
        json!({"object": "list", "data": data, "has_more": has_more, "url": "/v1/checkout/sessions"});
    Ok(stripe_json(StatusCode::OK, &answer))
}

#[derive(Deserialize)]
struct PortalSessionParams {
    customer: Option<String>,
    return_url: Option<String>,
    configuration: Option<String>,
}

/// `POST /v1/billing_portal/sessions`: `customer` (required, known), `return_url` (a URL);
/// `configuration` must be the default's id; `locale`, `on_behalf_of`, `flow_data` are accepted
/// and ignored.
async fn create_portal_session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    idempotent(&shared, &headers, "POST /v1/billing_portal/sessions", &body, || {
        check_known_parameters(
            &body,
            &["customer", "return_url", "configuration", "locale", "on_behalf_of", "flow_data", "expand"],
        )?;
        let params: PortalSessionParams = parse_form(&without(&body, &["flow_data"]))?;
        let customer = params.customer.filter(|c| !c.is_empty()).ok_or_else(|| {
            ApiError::invalid("parameter_missing", "customer", "Missing required param: customer.")
        })?;
        if let Some(url) = params.return_url.as_deref().filter(|url| Url::parse(url).is_err()) {
            return Err(ApiError::invalid("url_invalid", "return_url", format!("Not a valid URL: {url}")));
        }
        if let Some(configuration) = params.configuration {
            if configuration != super::sessions::PORTAL_CONFIGURATION {
                return Err(ApiError::invalid(
                    "resource_missing",
                    "configuration",
                    format!("No such configuration: '{configuration}'"),
                ));
            }
        }
        let session = shared.create_portal_session(&customer, params.return_url).map_err(|_| {
            // A missing object named by a body parameter is a 400, not a 404.
            ApiError::invalid("resource_missing", "customer", format!("No such customer: '{customer}'"))
        })?;
        Ok((StatusCode::OK, portal_session_json(&session)))
    })
}

/// The form body without these parameters (read separately, or ignored).
fn without(body: &[u8], names: &[&str]) -> Vec<u8> {
    let pairs = url::form_urlencoded::parse(body)
        .filter(|(name, _)| !names.contains(&name.split('[').next().unwrap_or_default()));
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish().into_bytes()
}

#[cfg(test)]
mod tests {
    use axum::http::Method;
    use serde_json::{Value, json};

    use crate::stripe::test_support::{get_json, http, post_form, started};
    use crate::stripe::{DEFAULT_API_KEY, DEFAULT_PRICE_ID, StripeSimConfig};
    use crate::{Fault, FaultKind};

    #[tokio::test]
    async fn refuses_bad_keys_without_echoing_them() {
        let sim = started(StripeSimConfig::default()).await;
        let url = sim.base_url().join("v1/prices/price_x").expect("url");
        let key = "sk_test_51WrongKey0000000000000000000000000abcd";
        let wrong = http().get(url.clone()).bearer_auth(key).send().await.expect("answer");
        assert_eq!(wrong.status(), 401);
        let body: Value = wrong.json().await.expect("json");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.starts_with("Invalid API Key provided: sk_test_"), "{message}");
        assert!(!message.contains(key) && message.ends_with("abcd"), "{message}");
        assert_eq!(http().get(url).send().await.expect("answer").status(), 401);
        assert_eq!(get_json(&sim, "v1/prices/price_x").await.0, 404, "the right key passes");
    }

    #[tokio::test]
    async fn creates_payment_links_from_encoded_forms() {
        let sim = started(StripeSimConfig::default()).await;
        let body =
            format!("line_items%5B0%5D%5Bprice%5D={DEFAULT_PRICE_ID}&line_items%5B0%5D%5Bquantity%5D=1");
        let (status, _, link) = post_form(&sim, "v1/payment_links", &body, None).await;
        assert_eq!(status, 200, "{link}");
        assert_eq!(link["object"], "payment_link");
        assert_eq!(link["active"], true);
        assert_eq!(link["livemode"], false);
        assert_eq!(link["metadata"], json!({}));
        let id = link["id"].as_str().expect("id");
        assert!(id.starts_with("plink_"));
        assert_eq!(link["url"], sim.base_url().join(&format!("checkout/{id}")).expect("url").as_str());

        let page = http().get(link["url"].as_str().expect("url")).send().await.expect("page");
        assert_eq!(page.status(), 200);
        assert!(page.text().await.expect("html").contains("Sandbox: nothing is charged"));

        let (status, _, missing) = post_form(
            &sim,
            "v1/payment_links",
            "line_items[0][price]=price_nope&line_items[0][quantity]=1",
            None,
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(missing["error"]["code"], "resource_missing");
        assert_eq!(missing["error"]["param"], "line_items[0][price]");
        let (status, _, unknown) = post_form(&sim, "v1/payment_links", "mode=payment", None).await;
        assert_eq!((status, &unknown["error"]["code"]), (400, &json!("parameter_unknown")));
        assert_eq!(sim.payment_links().len(), 1);
    }

    #[tokio::test]
    async fn metadata_merges_and_answers_404_for_unknown_subscriptions() {
        let sim = started(StripeSimConfig::default()).await;
        let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
        let path = format!("v1/subscriptions/{id}");
        post_form(&sim, &path, "metadata[a]=1&metadata[b]=2", None).await;
        let (status, _, answer) =
            post_form(&sim, &path, "metadata%5Blicense_key%5D=K&metadata%5Ba%5D=", None).await;
        assert_eq!(status, 200);
        assert_eq!(answer["metadata"], json!({"b": "2", "license_key": "K"}));
        sim.cancel(&id).expect("canceled");
        let (status, _, answer) = post_form(&sim, &path, "metadata[c]=3", None).await;
        assert_eq!(
            (status, &answer["status"]),
            (200, &json!("canceled")),
            "canceled subscriptions take metadata"
        );
        assert_eq!(
            get_json(&sim, &path).await.1["metadata"],
            json!({"b": "2", "c": "3", "license_key": "K"})
        );
        let (_, _, cleared) = post_form(&sim, &path, "metadata=", None).await;
        assert_eq!(cleared["metadata"], json!({}));

        let (status, missing) = get_json(&sim, "v1/subscriptions/sub_nope").await;
        assert_eq!(status, 404);
        assert_eq!(missing["error"]["code"], "resource_missing");
        assert_eq!(missing["error"]["type"], "invalid_request_error");
        assert_eq!(post_form(&sim, "v1/subscriptions/sub_nope", "metadata[a]=1", None).await.0, 404);
    }

    #[tokio::test]
    async fn idempotency_keys_replay_and_refuse_other_parameters() {
        let sim = started(StripeSimConfig::default()).await;
        let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
        let path = format!("v1/subscriptions/{id}");
        let (status, headers, first) = post_form(&sim, &path, "metadata[k]=one", Some("key-1")).await;
        assert_eq!(status, 200);
        assert!(headers.get("Idempotent-Replayed").is_none());
        post_form(&sim, &path, "metadata[k]=two", None).await;
        let (status, headers, replayed) = post_form(&sim, &path, "metadata%5Bk%5D=one", Some("key-1")).await;
        assert_eq!((status, &replayed), (200, &first), "the saved answer, not the current state");
        assert_eq!(headers["Idempotent-Replayed"], "true");
        assert_eq!(sim.subscription(&id).expect("sub").metadata["k"], "two", "a replay changes nothing");
        let (status, _, refused) = post_form(&sim, &path, "metadata[k]=three", Some("key-1")).await;
        assert_eq!((status, &refused["error"]["type"]), (400, &json!("idempotency_error")));
    }

    #[tokio::test]
    async fn faults_apply_before_or_after_the_change() {
        let sim = started(StripeSimConfig::default()).await;
        let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
        let path = format!("v1/subscriptions/{id}");
        let error = r#"{"error": {"type": "api_error", "message": "boom"}}"#;
        sim.add_fault(Fault::new("/v1/subscriptions/", FaultKind::json(500, error)).method(Method::POST));
        assert_eq!(post_form(&sim, &path, "metadata[k]=v", None).await.0, 500);
        assert!(
            sim.subscription(&id).expect("sub").metadata.is_empty(),
            "a 500 before the effect changes nothing"
        );
        sim.add_fault(Fault::new("/v1/subscriptions/", FaultKind::json(500, error)).after_effect());
        assert_eq!(post_form(&sim, &path, "metadata[k]=v", None).await.0, 500);
        assert_eq!(sim.subscription(&id).expect("sub").metadata["k"], "v", "a 500 after the effect keeps it");
        sim.add_fault(Fault::new("/v1/", FaultKind::Close).times(2));
        let closed =
            http().get(sim.base_url().join(&path).expect("url")).bearer_auth(DEFAULT_API_KEY).send().await;
        assert!(closed.is_err());
        assert_eq!(sim.request_count(), 3);
    }
}
