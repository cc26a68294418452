//! A LicenseSpring Management API simulator: the calls `stripe-licensespring` makes (generate keys,
//! create order with its buyer, list/retrieve/update licenses, disable and enable), with the
//! documented rules enforced (`Api-Key` auth, trailing slashes, unique order ids and keys, the PATCH
//! validity rules, `max_activations` ≥ 1) and the two undocumented answer shapes selectable by
//! configuration.
//!
//! Errors are `{"detail": "..."}`, as LicenseSpring's (Django REST framework) answers are; the exact
//! text of validation errors is not documented, so clients must not depend on it.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rand::Rng;
use serde_json::{Map, Value, json};
use url::Url;

use crate::Redacted;
use crate::frontdoor::{
    BoundListener, Frontdoor, KeyCheck, SimServer, handle_methods, lock, require_api_key,
};

/// The key the default configuration accepts (LicenseSpring's shape: 8 characters, a dot, 32).
pub const DEFAULT_API_KEY: &str = "SimKey01.0123456789abcdefghijklmnopqrstuv";
/// The product short code the default configuration knows.
pub const DEFAULT_PRODUCT: &str = "DEMO";
/// LicenseSpring's default key alphabet (no 0, 1, I, O).
pub const KEY_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

const LICENSE_TYPES: [&str; 4] = ["perpetual", "time-limited", "subscription", "consumption"];
const PAGE_SIZE: usize = 20;
const MAX_PAGE_SIZE: usize = 100;
/// First ids handed out; orders and licenses get disjoint 16-digit ranges, so code that mixes
/// an order id up with a license id finds nothing.
const FIRST_ORDER_ID: i64 = 1_764_000_000_000_001;
const FIRST_LICENSE_ID: i64 = 1_764_000_000_500_001;
const FIRST_CUSTOMER_ID: i64 = 620;

#[derive(Clone)]
pub struct LicenseSpringSimConfig {
    /// The Management API key requests must carry as `Authorization: Api-Key <key>`.
    pub api_key: String,
    /// The product short codes that exist.
    pub products: Vec<String>,
    /// Render `validity_period` as `2025-12-24T00:00:00Z` instead of `2025-12-24` (the read
    /// format is undocumented).
    pub validity_period_as_datetime: bool,
    /// Answer create order with `{"order_id": .., "new_passwords": []}` (the Go SDK's model)
    /// instead of the `order_items[].licenses[].id` shape (the response body is undocumented).
    pub order_answer_without_license_ids: bool,
}

impl Default for LicenseSpringSimConfig {
    fn default() -> Self {
        LicenseSpringSimConfig {
            api_key: DEFAULT_API_KEY.to_owned(),
            products: vec![DEFAULT_PRODUCT.to_owned()],
            validity_period_as_datetime: false,
            order_answer_without_license_ids: false,
        }
    }
}

/// Prints `[redacted]` for the API key.
impl fmt::Debug for LicenseSpringSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let LicenseSpringSimConfig {
            api_key: _,
            products,
            validity_period_as_datetime,
            order_answer_without_license_ids,
        } = self;
        f.debug_struct("LicenseSpringSimConfig")
            .field("api_key", &Redacted)
            .field("products", products)
            .field("validity_period_as_datetime", validity_period_as_datetime)
            .field("order_answer_without_license_ids", order_answer_without_license_ids)
            .finish()
    }
}

/// A license as the simulator holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimLicense {
    pub id: i64,
    pub license_key: String,
    pub product_code: String,
    pub license_type: String,
    pub enabled: bool,
    pub is_trial: bool,
    /// Seats: how many devices may activate it (1 when create order did not say).
    pub max_activations: u32,
    pub valid_duration: Option<String>,
    pub validity_period: Option<NaiveDate>,
    /// The create-order `id` of the order holding the license.
    pub order_store_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SimLicense {
    /// LicenseSpring's display status.
    pub fn status(&self) -> &'static str {
        if self.enabled { "Active" } else { "Disabled" }
    }
}

/// An order as the simulator holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOrder {
    pub id: i64,
    /// The `id` the client sent to create order.
    pub store_id: String,
    pub license_ids: Vec<i64>,
    pub created_at: DateTime<Utc>,
    /// The buyer create order sent (`customer`), if any.
    pub customer: Option<SimCustomer>,
}

impl SimOrder {
    pub fn customer_email(&self) -> Option<&str> {
        self.customer.as_ref().and_then(|c| c.email.as_deref())
    }
}

/// A customer as create order sent it. LicenseSpring matches customers by email: a later order
/// with the same email gets the same `id` (and its details overwrite the customer's, which the
/// simulator does not propagate to earlier orders' copies).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SimCustomer {
    pub id: i64,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// `company_name` (also accepted as `company`: which one LicenseSpring takes is undocumented).
    pub company_name: Option<String>,
    pub phone: Option<String>,
    /// The buyer's id in the caller's system (e.g. a Stripe `cus_...`).
    pub reference: Option<String>,
}

/// A running LicenseSpring simulator. Dropping it stops the server.
pub struct LicenseSpringSim {
    server: SimServer,
    shared: Arc<Shared>,
}

/// Starts a simulator on a free loopback port.
pub async fn start(config: LicenseSpringSimConfig) -> io::Result<LicenseSpringSim> {
    let bound = BoundListener::bind().await?;
    let shared =
        Arc::new(Shared { config, base_url: bound.base_url.clone(), state: Mutex::new(Store::default()) });
    let server = bound.serve(routes(shared.clone()), Frontdoor::new("/api/"));
    Ok(LicenseSpringSim { server, shared })
}

impl LicenseSpringSim {
    /// `http://127.0.0.1:<port>/`: what `stripe-licensespring`'s `BASE_URL` is set to.
    pub fn base_url(&self) -> Url {
        self.server.base_url.clone()
    }

    pub fn licenses(&self) -> Vec<SimLicense> {
        lock(&self.shared.state).licenses.clone()
    }

    pub fn orders(&self) -> Vec<SimOrder> {
        lock(&self.shared.state).orders.clone()
    }

    pub fn license_by_key(&self, key: &str) -> Option<SimLicense> {
        let state = lock(&self.shared.state);
        state.license_by_key.get(key).map(|&position| state.licenses[position].clone())
    }

    pub fn license(&self, id: i64) -> Option<SimLicense> {
        let state = lock(&self.shared.state);
        state.license_position(id).map(|position| state.licenses[position].clone())
    }

    /// What a create order of one license does, without HTTP (for tests and sandboxes that need
    /// many licenses, or a license no Stripe subscription knows): an enabled `subscription`
    /// license of the product with a fresh key and one seat, in the order `order_store_id` (made
    /// if it does not exist, appended to if it does). The error is create order's `detail`.
    pub fn create_license(&self, order_store_id: &str, product_code: &str) -> Result<SimLicense, String> {
        if !self.shared.config.products.iter().any(|p| p == product_code) {
            return Err(format!("items[0].product_code: Product {product_code:?} does not exist."));
        }
        let mut state = lock(&self.shared.state);
        let key = loop {
            let key = random_license_key();
            if !state.key_taken(&key) {
                break key;
            }
        };
        let order = NewOrder {
            store_id: order_store_id.to_owned(),
            append: true,
            licenses: vec![NewLicense {
                product_code: product_code.to_owned(),
                key,
                license_type: "subscription".to_owned(),
                is_trial: false,
                validity_period: None,
                valid_duration: None,
                max_activations: None,
            }],
            customer: None,
        };
        let (_, mut created) = state.insert_order(order, now_seconds())?;
        created.pop().ok_or_else(|| "no license was created".to_owned())
    }

    handle_methods!("/api/");

    /// Stops the server and waits for it to finish (dropping the handle only signals it).
    pub async fn shutdown(&self) {
        self.server.shutdown().await;
    }
}

struct Shared {
    config: LicenseSpringSimConfig,
    base_url: Url,
    state: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    orders: Vec<SimOrder>,
    licenses: Vec<SimLicense>,
    /// Positions by key, order id and customer email, so that creating and finding one costs the
    /// same with 10,000 of them as with one. (Licenses are never removed, and their ids are
    /// handed out in order: a license's position is its id less [`FIRST_LICENSE_ID`].)
    license_by_key: HashMap<String, usize>,
    order_by_store_id: HashMap<String, usize>,
    customer_by_email: HashMap<String, i64>,
    last_customer_id: Option<i64>,
}

impl Store {
    fn next_order_id(&self) -> i64 {
        FIRST_ORDER_ID + self.orders.len() as i64
    }

    fn next_license_id(&self) -> i64 {
        FIRST_LICENSE_ID + self.licenses.len() as i64
    }

    fn license_mut(&mut self, id: &str) -> Option<&mut SimLicense> {
        let position = self.license_position(id.parse().ok()?)?;
        self.licenses.get_mut(position)
    }

    fn license_position(&self, id: i64) -> Option<usize> {
        let position = usize::try_from(id.checked_sub(FIRST_LICENSE_ID)?).ok()?;
        (self.licenses.get(position)?.id == id).then_some(position)
    }

    fn key_taken(&self, key: &str) -> bool {
        self.license_by_key.contains_key(key)
    }

    /// Creates the order (or, with `append`, adds to it) and its licenses, all or nothing.
    /// Returns the order's position and the new licenses.
    fn insert_order(
        &mut self,
        order: NewOrder,
        now: DateTime<Utc>,
    ) -> Result<(usize, Vec<SimLicense>), String> {
        let existing = self.order_by_store_id.get(&order.store_id).copied();
        if existing.is_some() && !order.append {
            return Err("Order with this id already exists.".into());
        }
        let mut keys = std::collections::HashSet::new();
        for license in &order.licenses {
            if self.key_taken(&license.key) || !keys.insert(license.key.as_str()) {
                return Err(format!("License with key {} already exists.", license.key));
            }
        }
        let customer = order.customer.map(|mut customer| {
            // Matched by email; a new email (or none) is a new customer.
            let known = customer.email.as_ref().and_then(|email| self.customer_by_email.get(email)).copied();
            customer.id = known.unwrap_or_else(|| {
                let id = self.last_customer_id.map_or(FIRST_CUSTOMER_ID, |id| id + 1);
                self.last_customer_id = Some(id);
                id
            });
            if let Some(email) = &customer.email {
                self.customer_by_email.insert(email.clone(), customer.id);
            }
            customer
        });
        let order_index = match existing {
            Some(index) => {
                if customer.is_some() {
                    self.orders[index].customer = customer;
                }
                index
            }
            None => {
                let id = self.next_order_id();
                self.order_by_store_id.insert(order.store_id.clone(), self.orders.len());
                self.orders.push(SimOrder {
                    id,
                    store_id: order.store_id.clone(),
                    license_ids: Vec::new(),
                    created_at: now,
                    customer,
                });
                self.orders.len() - 1
            }
        };
        let mut created = Vec::new();
        for new in order.licenses {
            let license = SimLicense {
                id: self.next_license_id(),
                license_key: new.key,
                product_code: new.product_code,
                license_type: new.license_type,
                enabled: true,
                is_trial: new.is_trial,
                max_activations: new.max_activations.unwrap_or(1),
                valid_duration: new.valid_duration,
                validity_period: new.validity_period,
                order_store_id: order.store_id.clone(),
                created_at: now,
                updated_at: now,
            };
            self.orders[order_index].license_ids.push(license.id);
            self.license_by_key.insert(license.license_key.clone(), self.licenses.len());
            created.push(license.clone());
            self.licenses.push(license);
        }
        Ok((order_index, created))
    }
}

fn routes(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/api/v1/orders/generate_license/", get(generate_license))
        .route("/api/v1/orders/create_order/", post(create_order))
        .route("/api/v1/licenses/", get(list_licenses))
        .route("/api/v1/licenses/{id}/", get(retrieve_license).patch(update_license))
        .route("/api/v1/licenses/{id}/disable/", post(disable_license))
        .route("/api/v1/licenses/{id}/enable/", post(enable_license));
    require_api_key(api, shared.clone())
        // Paths without their trailing slash land here too: LicenseSpring's paths all end in one.
        .fallback(|| async { not_found() })
        .method_not_allowed_fallback(|method: Method| async move {
            detail(StatusCode::METHOD_NOT_ALLOWED, &format!("Method \"{method}\" not allowed."))
        })
        .with_state(shared)
}

impl KeyCheck for Shared {
    fn refusal(&self, authorization: Option<&str>) -> Option<Response> {
        match authorization.and_then(|value| value.strip_prefix("Api-Key ")) {
            None => Some(detail(StatusCode::FORBIDDEN, "Authentication credentials were not provided.")),
            Some(key) if key == self.config.api_key => None,
            Some(_) => Some(detail(StatusCode::FORBIDDEN, "Invalid API key.")),
        }
    }
}

/// `GET /api/v1/orders/generate_license/?product=..&quantity=N`: a bare array of fresh keys.
async fn generate_license(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let params = query_params(query.as_deref());
    let Some(product) = params.get("product") else {
        return detail(StatusCode::BAD_REQUEST, "product: This field is required.");
    };
    if !shared.config.products.contains(product) {
        return not_found();
    }
    let quantity = match params.get("quantity").map(|q| q.parse::<usize>()) {
        None => 1,
        Some(Ok(quantity @ 1..=1000)) => quantity,
        Some(_) => return detail(StatusCode::BAD_REQUEST, "quantity: expected a whole number, 1 to 1000."),
    };
    let state = lock(&shared.state);
    let mut keys: Vec<String> = Vec::with_capacity(quantity);
    while keys.len() < quantity {
        let key = random_license_key();
        let taken = keys.contains(&key) || state.key_taken(&key);
        if !taken {
            keys.push(key);
        }
    }
    (StatusCode::OK, axum::Json(keys)).into_response()
}

/// Sixteen characters of [`KEY_ALPHABET`] in four dash-separated groups.
fn random_license_key() -> String {
    let mut rng = rand::rng();
    let groups: Vec<String> = (0..4)
        .map(|_| (0..4).map(|_| char::from(KEY_ALPHABET[rng.random_range(0..KEY_ALPHABET.len())])).collect())
        .collect();
    groups.join("-")
}

/// A create-order request, validated.
struct NewOrder {
    store_id: String,
    append: bool,
    licenses: Vec<NewLicense>,
    customer: Option<SimCustomer>,
}

struct NewLicense {
    product_code: String,
    key: String,
    license_type: String,
    is_trial: bool,
    validity_period: Option<NaiveDate>,
    valid_duration: Option<String>,
    max_activations: Option<u32>,
}

/// `POST /api/v1/orders/create_order/`: creates the order and its licenses, all or nothing.
async fn create_order(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = match json_body(&headers, &body) {
        Ok(body) => body,
        Err((status, message)) => return detail(status, &message),
    };
    let order = match parse_order(&body, &shared.config.products) {
        Ok(order) => order,
        Err(message) => return detail(StatusCode::BAD_REQUEST, &message),
    };
    let mut state = lock(&shared.state);
    let (order_index, created) = match state.insert_order(order, now_seconds()) {
        Ok(inserted) => inserted,
        Err(message) => return detail(StatusCode::BAD_REQUEST, &message),
    };

    let order_id = state.orders[order_index].id;
    let answer = if shared.config.order_answer_without_license_ids {
        json!({"order_id": order_id, "new_passwords": []})
    } else {
        // One order item per product, as the request grouped them.
        let mut items: Vec<(String, Vec<Value>)> = Vec::new();
        for license in &created {
            let summary = json!({
                "id": license.id,
                "license_key": license.license_key,
                "license_type": license.license_type,
            });
            match items.iter_mut().find(|(code, _)| *code == license.product_code) {
                Some((_, licenses)) => licenses.push(summary),
                None => items.push((license.product_code.clone(), vec![summary])),
            }
        }
        let items: Vec<Value> = items
            .into_iter()
            .map(|(code, licenses)| json!({"product_code": code, "licenses": licenses}))
            .collect();
        json!({"id": order_id, "order_items": items})
    };
    (StatusCode::OK, axum::Json(answer)).into_response()
}

fn parse_order(body: &Value, products: &[String]) -> Result<NewOrder, String> {
    let body = body.as_object().ok_or("Expected a JSON object.")?;
    let store_id = match body.get("id") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => return Err("id: This field is required.".into()),
        Some(_) => return Err("id: Expected a string.".into()),
    };
    let append = optional_bool(body, "append")?.unwrap_or(false);
    let customer = match body.get("customer") {
        None | Some(Value::Null) => None,
        Some(Value::Object(fields)) => Some(parse_customer(fields)?),
        Some(_) => return Err("customer: Expected an object.".into()),
    };
    let items = match body.get("items") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => return Err("items: Expected a non-empty list of items.".into()),
    };
    let mut licenses = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item = item.as_object().ok_or_else(|| format!("items[{i}]: Expected an object."))?;
        let product_code = match item.get("product_code") {
            Some(Value::String(code)) if products.contains(code) => code.clone(),
            Some(Value::String(code)) => {
                return Err(format!("items[{i}].product_code: Product {code:?} does not exist."));
            }
            _ => return Err(format!("items[{i}].product_code: This field is required.")),
        };
        let entries = match item.get("licenses") {
            Some(Value::Array(entries)) if !entries.is_empty() => entries,
            _ => return Err(format!("items[{i}].licenses: Expected a non-empty list of licenses.")),
        };
        for (j, entry) in entries.iter().enumerate() {
            let at = format!("items[{i}].licenses[{j}]");
            let entry = entry.as_object().ok_or_else(|| format!("{at}: Expected an object."))?;
            let key = match entry.get("key") {
                Some(Value::String(key)) if !key.trim().is_empty() => key.clone(),
                _ => return Err(format!("{at}.key: This field is required.")),
            };
            let license_type = match entry.get("license_type") {
                Some(Value::String(kind)) if LICENSE_TYPES.contains(&kind.as_str()) => kind.clone(),
                _ => return Err(format!("{at}.license_type: Expected one of {}.", LICENSE_TYPES.join(", "))),
            };
            let is_trial =
                optional_bool(entry, "is_trial").map_err(|e| format!("{at}.{e}"))?.unwrap_or(false);
            let validity_period = optional_date(entry, "validity_period").map_err(|e| format!("{at}.{e}"))?;
            let valid_duration =
                optional_duration(entry, "valid_duration").map_err(|e| format!("{at}.{e}"))?;
            let max_activations = optional_max_activations(entry).map_err(|e| format!("{at}.{e}"))?;
            licenses.push(NewLicense {
                product_code: product_code.clone(),
                key,
                license_type,
                is_trial,
                validity_period,
                valid_duration,
                max_activations,
            });
        }
    }
    Ok(NewOrder { store_id, append, licenses, customer })
}

/// The buyer: string fields, all optional; unknown fields are ignored [UNVERIFIED: whether
/// LicenseSpring ignores or refuses them is undocumented].
fn parse_customer(fields: &Map<String, Value>) -> Result<SimCustomer, String> {
    let text = |name: &str| match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone()).filter(|t| !t.is_empty())),
        Some(_) => Err(format!("customer.{name}: Not a valid string.")),
    };
    let email = text("email")?;
    if email.as_ref().is_some_and(|e| !e.contains('@')) {
        return Err("customer.email: Enter a valid email address.".into());
    }
    Ok(SimCustomer {
        id: 0,
        email,
        first_name: text("first_name")?,
        last_name: text("last_name")?,
        company_name: text("company_name")?.or(text("company")?),
        phone: text("phone")?,
        reference: text("reference")?,
    })
}

/// `max_activations`: a whole number, at least 1.
fn optional_max_activations(object: &Map<String, Value>) -> Result<Option<u32>, String> {
    match object.get("max_activations") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => {
                Err("max_activations: Ensure this value is a whole number greater than or equal to 1.".into())
            }
        },
    }
}

/// `GET /api/v1/licenses/`: filters `license_key`, `order__store_id`, `product_short_code`
/// (exact), `order__store_id__startswith`, `enabled` (`true`/`false`; other values: 400, where
/// django-filter would answer `{"enabled": [...]}` [unverified]); `order_by` one of
/// `created_at`, `-created_at`, `id`, `-id` (an unknown field is a 400 `{"detail": ...}`, as
/// django-filter's ordering refuses an invalid choice [unverified: LicenseSpring's answer is
/// undocumented]); without it, id order (creation order). Paginated with `limit` (20 by
/// default; above 100 silently capped) and `offset`: `{count, next, previous, results}`.
/// Filters that are not modelled are ignored, as Django's filters ignore unknown parameters.
///
/// `next` and `previous` are full URLs carrying the same query with `limit` and `offset`
/// replaced, as Django REST framework's `LimitOffsetPagination` builds them (its `previous` of
/// the second page drops `offset` altogether) [unverified: LicenseSpring's links are not
/// documented as full URLs or paths].
async fn list_licenses(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()).into_owned().collect();
    let params = query_params(query.as_deref());
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => PAGE_SIZE,
        Some(Ok(limit)) if limit > 0 => limit.min(MAX_PAGE_SIZE),
        Some(_) => return detail(StatusCode::BAD_REQUEST, "limit: expected a positive whole number."),
    };
    let offset = match params.get("offset").map(|o| o.parse::<usize>()) {
        None => 0,
        Some(Ok(offset)) => offset,
        Some(_) => return detail(StatusCode::BAD_REQUEST, "offset: expected a whole number."),
    };
    let enabled = match params.get("enabled").map(String::as_str) {
        None => None,
        Some("true" | "True" | "1") => Some(true),
        Some("false" | "False" | "0") => Some(false),
        Some(_) => return detail(StatusCode::BAD_REQUEST, "enabled: Select a valid choice: true or false."),
    };
    let order_by = params.get("order_by").map(String::as_str);
    if let Some(field) = order_by.filter(|f| !["created_at", "-created_at", "id", "-id"].contains(f)) {
        return detail(
            StatusCode::BAD_REQUEST,
            &format!("order_by: Select a valid choice. {field} is not one of the available choices."),
        );
    }
    let state = lock(&shared.state);
    let key = params.get("license_key");
    let store_id = params.get("order__store_id");
    let prefix = params.get("order__store_id__startswith");
    let product = params.get("product_short_code");
    let matches = |l: &SimLicense| {
        key.is_none_or(|key| l.license_key == *key)
            && store_id.is_none_or(|id| l.order_store_id == *id)
            && prefix.is_none_or(|prefix| l.order_store_id.starts_with(prefix.as_str()))
            && product.is_none_or(|code| l.product_code == *code)
            && enabled.is_none_or(|enabled| l.enabled == enabled)
    };
    // The exact filters go through the indexes; the rest is one scan (in id order).
    let mut matching: Vec<&SimLicense> = if let Some(key) = key {
        state
            .license_by_key
            .get(key)
            .map(|&at| &state.licenses[at])
            .filter(|l| matches(l))
            .into_iter()
            .collect()
    } else if let Some(id) = store_id {
        let order = state.order_by_store_id.get(id).map(|&at| &state.orders[at]);
        let ids = order.map(|o| o.license_ids.as_slice()).unwrap_or_default();
        let mut found: Vec<&SimLicense> = ids
            .iter()
            .filter_map(|&id| state.license_position(id).map(|at| &state.licenses[at]))
            .filter(|l| matches(l))
            .collect();
        found.sort_by_key(|l| l.id);
        found
    } else {
        state.licenses.iter().filter(|l| matches(l)).collect()
    };
    // Stable sorts of an almost sorted list: ties keep id order.
    match order_by {
        Some("created_at") => matching.sort_by_key(|l| (l.created_at, l.id)),
        Some("-created_at") => matching.sort_by_key(|l| std::cmp::Reverse((l.created_at, l.id))),
        Some("-id") => matching.reverse(),
        _ => {}
    }
    let count = matching.len();
    let results: Vec<Value> = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|l| license_json(l, shared.config.validity_period_as_datetime))
        .collect();
    let page_url = |offset: Option<usize>| {
        let mut url = shared.base_url.join("api/v1/licenses/").ok()?;
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in pairs.iter().filter(|(name, _)| !matches!(name.as_str(), "limit" | "offset"))
            {
                query.append_pair(name, value);
            }
            query.append_pair("limit", &limit.to_string());
            if let Some(offset) = offset {
                query.append_pair("offset", &offset.to_string());
            }
        }
        Some(url.to_string())
    };
    let next = (offset + limit < count).then(|| page_url(Some(offset + limit))).flatten();
    let previous =
        (offset > 0).then(|| page_url(offset.checked_sub(limit).filter(|&previous| previous > 0))).flatten();
    let answer = json!({"count": count, "next": next, "previous": previous, "results": results});
    (StatusCode::OK, axum::Json(answer)).into_response()
}

async fn retrieve_license(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut state = lock(&shared.state);
    match state.license_mut(&id) {
        Some(license) => license_answer(license, &shared.config),
        None => not_found(),
    }
}

/// `PATCH /api/v1/licenses/{id}/` with the documented rules: `is_trial` must come with any
/// validity field, and `valid_duration` and `validity_period` never together.
async fn update_license(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = match json_body(&headers, &body) {
        Ok(body) => body,
        Err((status, message)) => return detail(status, &message),
    };
    let mut state = lock(&shared.state);
    let Some(license) = state.license_mut(&id) else {
        return not_found();
    };
    let Some(changes) = body.as_object() else {
        return detail(StatusCode::BAD_REQUEST, "Expected a JSON object.");
    };
    let mut updated = license.clone();
    if let Err(message) = apply_update(&mut updated, changes) {
        return detail(StatusCode::BAD_REQUEST, &message);
    }
    updated.updated_at = now_seconds();
    *license = updated;
    license_answer(license, &shared.config)
}

fn apply_update(license: &mut SimLicense, changes: &Map<String, Value>) -> Result<(), String> {
    let validity_fields = ["validity_period", "valid_duration", "trial_days"];
    if validity_fields.iter().any(|f| changes.contains_key(*f)) && !changes.contains_key("is_trial") {
        return Err("is_trial is required when validity_period, valid_duration or trial_days is set.".into());
    }
    if changes.contains_key("validity_period") && changes.contains_key("valid_duration") {
        return Err("valid_duration and validity_period cannot be set in the same request.".into());
    }
    if let Some(kind) = changes.get("license_type") {
        if kind.as_str() != Some(license.license_type.as_str()) {
            return Err("license_type: The license type cannot be changed.".into());
        }
    }
    if let Some(is_trial) = optional_bool(changes, "is_trial")? {
        license.is_trial = is_trial;
    }
    if let Some(enabled) = optional_bool(changes, "enabled")? {
        license.enabled = enabled;
    }
    if let Some(max_activations) = optional_max_activations(changes)? {
        license.max_activations = max_activations;
    }
    if changes.contains_key("validity_period") {
        license.validity_period = optional_date(changes, "validity_period")?;
    }
    if changes.contains_key("valid_duration") {
        license.valid_duration = optional_duration(changes, "valid_duration")?;
    }
    // Trial days are accepted for the rule above but not modelled: `stripe-licensespring` never
    // sends them.
    match changes.get("trial_days") {
        None | Some(Value::Null) => {}
        Some(days) if days.as_u64().is_some() => {}
        Some(_) => return Err("trial_days: Expected a whole number.".into()),
    }
    Ok(())
}

/// `POST /api/v1/licenses/{id}/disable/`: idempotent, a disabled license stays disabled.
async fn disable_license(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut state = lock(&shared.state);
    let Some(license) = state.license_mut(&id) else {
        return not_found();
    };
    if license.enabled {
        license.enabled = false;
        license.updated_at = now_seconds();
    }
    (StatusCode::OK, axum::Json(json!({"message": "License disabled."}))).into_response()
}

/// `POST /api/v1/licenses/{id}/enable/` (no body): idempotent, as disable is [UNVERIFIED: the
/// answer for an already enabled license is undocumented; success is the likely one].
async fn enable_license(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut state = lock(&shared.state);
    let Some(license) = state.license_mut(&id) else {
        return not_found();
    };
    if !license.enabled {
        license.enabled = true;
        license.updated_at = now_seconds();
    }
    (StatusCode::OK, axum::Json(json!({"message": "License enabled."}))).into_response()
}

/// The full license object, as retrieve, list and update answer it.
fn license_json(license: &SimLicense, validity_as_datetime: bool) -> Value {
    let validity_period = license.validity_period.map(|date| {
        if validity_as_datetime {
            format!("{}T00:00:00Z", date.format("%Y-%m-%d"))
        } else {
            date.format("%Y-%m-%d").to_string()
        }
    });
    json!({
        "id": license.id,
        "license_key": license.license_key,
        "license_type": license.license_type,
        "enabled": license.enabled,
        "status": license.status(),
        "is_trial": license.is_trial,
        "max_activations": license.max_activations,
        "times_activated": 0,
        "allow_unlimited_activations": false,
        "valid_duration": license.valid_duration,
        "validity_period": validity_period,
        "order_store_id": license.order_store_id,
        "product_short_code": license.product_code,
        "created_at": license.created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "updated_at": license.updated_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

fn license_answer(license: &SimLicense, config: &LicenseSpringSimConfig) -> Response {
    (StatusCode::OK, axum::Json(license_json(license, config.validity_period_as_datetime))).into_response()
}

/// Reads a JSON request body as Django REST framework does: JSON content type required when
/// there is a body; an empty body is an empty object. A refusal is the status and its `detail`.
fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, (StatusCode, String)> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.trim_start().to_ascii_lowercase().starts_with("application/json") {
        let message = format!("Unsupported media type \"{content_type}\" in request.");
        return Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, message));
    }
    serde_json::from_slice(body)
        .map_err(|error| (StatusCode::BAD_REQUEST, format!("JSON parse error - {error}")))
}

fn query_params(query: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect()
}

fn optional_bool(object: &Map<String, Value>, field: &str) -> Result<Option<bool>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        Some(_) => Err(format!("{field}: Must be a valid boolean.")),
    }
}

/// A `YYYY-MM-DD` date; `null` clears it.
fn optional_date(object: &Map<String, Value>, field: &str) -> Result<Option<NaiveDate>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.len() == 10 => {
            NaiveDate::parse_from_str(text, "%Y-%m-%d").map(Some).map_err(|_| {
                format!("{field}: Date has wrong format. Use one of these formats instead: YYYY-MM-DD.")
            })
        }
        Some(_) => {
            Err(format!("{field}: Date has wrong format. Use one of these formats instead: YYYY-MM-DD."))
        }
    }
}

/// A count and a unit, `35d`, `4m` or `2y`; `null` clears it.
fn optional_duration(object: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    let malformed = || format!("{field}: Expected a number followed by d, m or y, e.g. 35d, 4m, 2y.");
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_ascii() => {
            let (count, unit) = text.split_at(text.len().saturating_sub(1));
            let count_ok =
                !count.is_empty() && !count.starts_with('0') && count.bytes().all(|b| b.is_ascii_digit());
            if count_ok && matches!(unit, "d" | "m" | "y") {
                Ok(Some(text.clone()))
            } else {
                Err(malformed())
            }
        }
        Some(_) => Err(malformed()),
    }
}

fn detail(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"detail": message}))).into_response()
}

fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not found.")
}

/// Now, to the second, as LicenseSpring's timestamps are.
fn now_seconds() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::{Fault, FaultKind};

    struct Client {
        http: reqwest::Client,
        base: Url,
    }

    impl Client {
        fn new(sim: &LicenseSpringSim) -> Client {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            Client { http, base: sim.base_url() }
        }

        async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
            let mut request = self
                .http
                .request(method, self.base.join(path).expect("path"))
                .header("Authorization", format!("Api-Key {DEFAULT_API_KEY}"));
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.expect("simulator answers");
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }

        async fn get(&self, path: &str) -> (u16, Value) {
            self.send(Method::GET, path, None).await
        }

        async fn create_order(&self, id: &str, key: &str) -> (u16, Value) {
            let order = json!({"id": id, "items": [{"product_code": DEFAULT_PRODUCT, "licenses": [
                {"key": key, "license_type": "subscription", "is_trial": false, "validity_period": "2025-12-24"}
            ]}]});
            self.send(Method::POST, "api/v1/orders/create_order/", Some(order)).await
        }

        /// Creates order `o-1` with license `AAAA-BBBB-CCCC-DDDD`; the license's id.
        async fn create_license(&self) -> i64 {
            let (_, order) = self.create_order("o-1", "AAAA-BBBB-CCCC-DDDD").await;
            order["order_items"][0]["licenses"][0]["id"].as_i64().expect("id")
        }
    }

    async fn started() -> (LicenseSpringSim, Client) {
        let sim = start(LicenseSpringSimConfig::default()).await.expect("simulator starts");
        let client = Client::new(&sim);
        (sim, client)
    }

    #[test]
    fn debug_output_hides_the_key() {
        let shown = format!("{:?}", LicenseSpringSimConfig::default());
        assert!(!shown.contains(DEFAULT_API_KEY) && shown.contains("api_key: [redacted]"), "{shown}");
        assert!(shown.contains(DEFAULT_PRODUCT), "the rest is shown: {shown}");
    }

    #[tokio::test]
    async fn refuses_missing_and_wrong_keys() {
        let (sim, client) = started().await;
        let url = sim.base_url().join("api/v1/licenses/").expect("url");
        let missing = client.http.get(url.clone()).send().await.expect("answer");
        assert_eq!(missing.status(), 403);
        let body: Value = missing.json().await.expect("json");
        assert_eq!(body, json!({"detail": "Authentication credentials were not provided."}));

        let wrong = client.http.get(url.clone()).header("Authorization", "Api-Key nope.nope").send().await;
        let wrong = wrong.expect("answer");
        assert_eq!(wrong.status(), 403);
        let body: Value = wrong.json().await.expect("json");
        assert_eq!(body["detail"], "Invalid API key.");

        let bearer = client.http.get(url).bearer_auth(DEFAULT_API_KEY).send().await.expect("answer");
        assert_eq!(bearer.status(), 403, "only the Api-Key scheme is accepted");
        assert_eq!(client.get("api/v1/licenses/").await.0, 200);
        assert!(!format!("{:?}", sim.requests()).contains(DEFAULT_API_KEY), "the log redacts keys");
    }

    #[tokio::test]
    async fn paths_need_their_trailing_slash() {
        let (_sim, client) = started().await;
        assert_eq!(client.get("api/v1/licenses").await, (404, json!({"detail": "Not found."})));
        let (status, _) = client.send(Method::POST, "api/v1/orders/create_order", Some(json!({}))).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn generates_keys_in_licensespring_shape() {
        let (_sim, client) = started().await;
        let (status, keys) = client.get("api/v1/orders/generate_license/?product=DEMO&quantity=3").await;
        assert_eq!(status, 200);
        let keys = keys.as_array().expect("a bare array");
        assert_eq!(keys.len(), 3);
        for key in keys {
            let key = key.as_str().expect("string");
            let groups: Vec<&str> = key.split('-').collect();
            assert_eq!(groups.len(), 4, "{key}");
            assert!(
                groups.iter().all(|g| g.len() == 4 && g.bytes().all(|b| KEY_ALPHABET.contains(&b))),
                "{key}"
            );
        }
        let unknown = client.get("api/v1/orders/generate_license/?product=NOPE&quantity=1").await;
        assert_eq!(unknown, (404, json!({"detail": "Not found."})));
    }

    #[tokio::test]
    async fn creates_an_order_once_and_finds_its_license() {
        let (sim, client) = started().await;
        let (status, answer) = client.create_order("stripe-license-sub_1", "AAAA-BBBB-CCCC-DDDD").await;
        assert_eq!(status, 200, "{answer}");
        let license_id = answer["order_items"][0]["licenses"][0]["id"].as_i64().expect("license id");
        assert_eq!(answer["order_items"][0]["licenses"][0]["license_key"], "AAAA-BBBB-CCCC-DDDD");
        assert_eq!(answer["id"].as_i64(), Some(sim.orders()[0].id));
        assert!(
            (1_000_000_000_000_000..9_007_199_254_740_992).contains(&license_id),
            "16 digits, below 2^53"
        );

        let (status, again) = client.create_order("stripe-license-sub_1", "EEEE-FFFF-GGGG-HHHH").await;
        assert_eq!((status, again), (400, json!({"detail": "Order with this id already exists."})));
        let (status, reused) = client.create_order("stripe-license-sub_2", "AAAA-BBBB-CCCC-DDDD").await;
        assert_eq!(status, 400, "{reused}");
        assert_eq!(sim.licenses().len(), 1, "no second license");
        assert_eq!(sim.orders().len(), 1);

        let (status, list) = client.get("api/v1/licenses/?license_key=AAAA-BBBB-CCCC-DDDD").await;
        assert_eq!(status, 200);
        assert_eq!(list["count"], 1);
        assert_eq!(list["next"], Value::Null);
        let license = &list["results"][0];
        assert_eq!(license["id"].as_i64(), Some(license_id));
        assert_eq!(license["validity_period"], "2025-12-24");
        assert_eq!(license["order_store_id"], "stripe-license-sub_1");
        assert_eq!(license["status"], "Active");
        assert_eq!(license["valid_duration"], Value::Null);
        let (_, by_order) = client.get("api/v1/licenses/?order__store_id=stripe-license-sub_1").await;
        assert_eq!(by_order["count"], 1);
        let (_, none) = client.get("api/v1/licenses/?license_key=ZZZZ-ZZZZ-ZZZZ-ZZZZ").await;
        assert_eq!(none, json!({"count": 0, "next": null, "previous": null, "results": []}));

        let (status, retrieved) = client.get(&format!("api/v1/licenses/{license_id}/")).await;
        assert_eq!((status, &retrieved), (200, license));
        assert_eq!(client.get("api/v1/licenses/42/").await, (404, json!({"detail": "Not found."})));
    }

    #[tokio::test]
    async fn refuses_malformed_orders() {
        let (sim, client) = started().await;
        let license = |is_trial: Value, validity: &str| {
            json!({"id": "o-1", "items": [{"product_code": DEFAULT_PRODUCT, "licenses": [
                {"key": "AAAA-BBBB-CCCC-DDDD", "license_type": "subscription", "is_trial": is_trial,
                 "validity_period": validity}]}]})
        };
        let path = "api/v1/orders/create_order/";
        for body in [
            license(json!("false"), "2025-12-24"),
            license(json!(false), "24/12/2025"),
            license(json!(false), "2025-12-24T00:00:00Z"),
            json!({"items": []}),
            json!({"id": "o-1", "items": [{"product_code": "NOPE", "licenses": []}]}),
        ] {
            let (status, answer) = client.send(Method::POST, path, Some(body.clone())).await;
            assert_eq!(status, 400, "{body} -> {answer}");
            assert!(answer["detail"].is_string(), "{answer}");
        }
        let text = client
            .http
            .post(sim.base_url().join(path).expect("url"))
            .header("Authorization", format!("Api-Key {DEFAULT_API_KEY}"))
            .body(license(json!(false), "2025-12-24").to_string())
            .send()
            .await
            .expect("answer");
        assert_eq!(text.status(), 415, "a JSON body needs a JSON content type");
        assert!(sim.licenses().is_empty());
    }

    #[tokio::test]
    async fn patch_enforces_the_documented_rules() {
        let (_sim, client) = started().await;
        let id = client.create_license().await;
        let path = format!("api/v1/licenses/{id}/");
        for refused in [
            json!({"validity_period": "2026-01-24"}),
            json!({"valid_duration": "1m"}),
            json!({"is_trial": false, "validity_period": "2026-01-24", "valid_duration": "1m"}),
            json!({"is_trial": false, "valid_duration": "1w"}),
            json!({"is_trial": false, "valid_duration": "m"}),
            json!({"is_trial": "false", "validity_period": "2026-01-24"}),
            json!({"license_type": "perpetual"}),
        ] {
            let (status, answer) = client.send(Method::PATCH, &path, Some(refused.clone())).await;
            assert_eq!(status, 400, "{refused} -> {answer}");
            assert!(answer["detail"].is_string());
        }
        let (_, unchanged) = client.get(&path).await;
        assert_eq!(unchanged["validity_period"], "2025-12-24", "refused updates change nothing");

        let body = json!({"is_trial": false, "validity_period": "2026-01-24"});
        let (status, extended) = client.send(Method::PATCH, &path, Some(body)).await;
        assert_eq!(status, 200);
        assert_eq!(extended["validity_period"], "2026-01-24");
        let body = json!({"is_trial": false, "valid_duration": "35d"});
        let (status, shortened) = client.send(Method::PATCH, &path, Some(body)).await;
        assert_eq!((status, &shortened["valid_duration"]), (200, &json!("35d")));
        assert_eq!(shortened["license_key"], "AAAA-BBBB-CCCC-DDDD", "the full license comes back");
    }

    #[tokio::test]
    async fn disable_is_repeatable() {
        let (sim, client) = started().await;
        let id = client.create_license().await;
        let path = format!("api/v1/licenses/{id}/disable/");
        for _ in 0..2 {
            let answer = client.send(Method::POST, &path, None).await;
            assert_eq!(answer, (200, json!({"message": "License disabled."})));
        }
        let license = sim.license(id).expect("license");
        assert!(!license.enabled);
        assert_eq!(license.status(), "Disabled");
        assert_eq!(client.get(&format!("api/v1/licenses/{id}/")).await.1["status"], "Disabled");
    }

    #[tokio::test]
    async fn orders_carry_seats_trials_and_the_buyer() {
        let (sim, client) = started().await;
        let order = |id: &str, key: &str, email: &str| {
            json!({"id": id,
                   "customer": {"email": email, "first_name": "Jane", "last_name": "Doe",
                                "reference": "cus_1", "is_manager": false, "unknown_field": 1},
                   "items": [{"product_code": DEFAULT_PRODUCT, "licenses": [
                       {"key": key, "license_type": "subscription", "is_trial": true,
                        "validity_period": "2026-01-14", "max_activations": 3}]}]})
        };
        let path = "api/v1/orders/create_order/";
        let (status, answer) = client
            .send(Method::POST, path, Some(order("o-1", "AAAA-BBBB-CCCC-DDDD", "jane@example.com")))
            .await;
        assert_eq!(status, 200, "{answer}");
        let license = sim.license_by_key("AAAA-BBBB-CCCC-DDDD").expect("license");
        assert_eq!((license.max_activations, license.is_trial), (3, true));
        let (_, shown) = client.get(&format!("api/v1/licenses/{}/", license.id)).await;
        assert_eq!(shown["max_activations"], 3);
        assert_eq!(shown["times_activated"], 0);
        assert_eq!(shown["allow_unlimited_activations"], false);
        assert_eq!(shown["is_trial"], true);
        let first = sim.orders()[0].clone();
        assert_eq!(first.customer_email(), Some("jane@example.com"));
        let customer = first.customer.expect("customer");
        assert_eq!(customer.first_name.as_deref(), Some("Jane"));
        assert_eq!(customer.reference.as_deref(), Some("cus_1"));

        // The same email is the same customer; another is a new one.
        client.send(Method::POST, path, Some(order("o-2", "EEEE-FFFF-GGGG-HHHH", "jane@example.com"))).await;
        client.send(Method::POST, path, Some(order("o-3", "JJJJ-KKKK-LLLL-MMMM", "max@example.com"))).await;
        let ids: Vec<i64> = sim.orders().iter().map(|o| o.customer.as_ref().expect("customer").id).collect();
        assert_eq!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);

        // Without max_activations: 1.
        client.create_order("o-4", "NNNN-PPPP-QQQQ-RRRR").await;
        assert_eq!(sim.license_by_key("NNNN-PPPP-QQQQ-RRRR").expect("license").max_activations, 1);
        assert_eq!(sim.orders()[3].customer, None);
        for refused in [json!(0), json!(-1), json!("3"), json!(1.5)] {
            let mut body = order("o-5", "SSSS-TTTT-UUUU-VVVV", "x@example.com");
            body["items"][0]["licenses"][0]["max_activations"] = refused.clone();
            let (status, answer) = client.send(Method::POST, path, Some(body)).await;
            assert_eq!(status, 400, "{refused} -> {answer}");
        }
        let mut body = order("o-5", "SSSS-TTTT-UUUU-VVVV", "x@example.com");
        body["customer"] = json!("jane@example.com");
        assert_eq!(client.send(Method::POST, path, Some(body)).await.0, 400);
        assert_eq!(sim.orders().len(), 4);
    }

    #[tokio::test]
    async fn patch_changes_seats_and_the_trial_flag() {
        let (sim, client) = started().await;
        let id = client.create_license().await;
        let path = format!("api/v1/licenses/{id}/");
        let (status, answer) = client.send(Method::PATCH, &path, Some(json!({"max_activations": 5}))).await;
        assert_eq!((status, &answer["max_activations"]), (200, &json!(5)));
        let (status, answer) = client.send(Method::PATCH, &path, Some(json!({"is_trial": true}))).await;
        assert_eq!((status, &answer["is_trial"]), (200, &json!(true)), "is_trial alone");
        let body = json!({"is_trial": false, "validity_period": "2026-02-01", "max_activations": 2});
        let (status, answer) = client.send(Method::PATCH, &path, Some(body)).await;
        assert_eq!(status, 200);
        assert_eq!((&answer["is_trial"], &answer["max_activations"]), (&json!(false), &json!(2)));
        for refused in [json!({"max_activations": 0}), json!({"max_activations": "4"})] {
            let (status, _) = client.send(Method::PATCH, &path, Some(refused.clone())).await;
            assert_eq!(status, 400, "{refused}");
        }
        assert_eq!(sim.license(id).expect("license").max_activations, 2, "refusals change nothing");
    }

    #[tokio::test]
    async fn enable_undoes_disable_and_is_repeatable() {
        let (sim, client) = started().await;
        let id = client.create_license().await;
        let enable = format!("api/v1/licenses/{id}/enable/");
        let enabled = (200, json!({"message": "License enabled."}));
        assert_eq!(client.send(Method::POST, &enable, None).await, enabled, "an enabled license: success");
        client.send(Method::POST, &format!("api/v1/licenses/{id}/disable/"), None).await;
        assert!(!sim.license(id).expect("license").enabled);
        assert_eq!(client.send(Method::POST, &enable, Some(json!({}))).await, enabled);
        let license = sim.license(id).expect("license");
        assert!(license.enabled);
        assert_eq!(license.status(), "Active");
        let missing = client.send(Method::POST, "api/v1/licenses/42/enable/", None).await;
        assert_eq!(missing, (404, json!({"detail": "Not found."})));
    }

    #[tokio::test]
    async fn undocumented_shapes_are_selectable() {
        let config = LicenseSpringSimConfig {
            validity_period_as_datetime: true,
            order_answer_without_license_ids: true,
            ..LicenseSpringSimConfig::default()
        };
        let sim = start(config).await.expect("starts");
        let client = Client::new(&sim);
        let (status, answer) = client.create_order("o-1", "AAAA-BBBB-CCCC-DDDD").await;
        assert_eq!(status, 200);
        assert_eq!(answer, json!({"order_id": sim.orders()[0].id, "new_passwords": []}));
        let (_, list) = client.get("api/v1/licenses/?license_key=AAAA-BBBB-CCCC-DDDD").await;
        assert_eq!(list["results"][0]["validity_period"], "2025-12-24T00:00:00Z");
    }

    #[tokio::test]
    async fn faults_before_the_effect_change_nothing() {
        let (sim, client) = started().await;
        sim.add_fault(
            Fault::new("create_order", FaultKind::json(500, r#"{"detail": "boom"}"#)).method(Method::POST),
        );
        let (status, answer) = client.create_order("o-1", "AAAA-BBBB-CCCC-DDDD").await;
        assert_eq!((status, answer), (500, json!({"detail": "boom"})));
        assert!(sim.orders().is_empty());

        sim.add_fault(
            Fault::new("create_order", FaultKind::html(502, "<html>Bad gateway</html>")).after_effect(),
        );
        assert_eq!(client.create_order("o-1", "AAAA-BBBB-CCCC-DDDD").await.0, 502);
        assert_eq!(sim.orders().len(), 1, "an after-effect fault keeps the change");
        let (status, _) = client.create_order("o-1", "AAAA-BBBB-CCCC-DDDD").await;
        assert_eq!(status, 400, "the retry meets the duplicate-order rule");
        assert_eq!(sim.request_count(), 3);
    }

    #[tokio::test]
    async fn close_and_hang_faults() {
        let (sim, client) = started().await;
        sim.add_fault(Fault::new("/licenses/", FaultKind::Close));
        let url = sim.base_url().join("api/v1/licenses/").expect("url");
        let auth = format!("Api-Key {DEFAULT_API_KEY}");
        let closed = client.http.get(url.clone()).header("Authorization", &auth).send().await;
        assert!(closed.is_err(), "the connection is dropped without an answer: {closed:?}");

        sim.add_fault(Fault::new("/licenses/", FaultKind::Hang(Duration::MAX)));
        let hung = client
            .http
            .get(url.clone())
            .header("Authorization", &auth)
            .timeout(Duration::from_millis(200))
            .send()
            .await;
        assert!(hung.is_err_and(|e| e.is_timeout()));

        sim.add_fault(Fault::new("/licenses/", FaultKind::Hang(Duration::from_millis(50))));
        assert_eq!(client.get("api/v1/licenses/").await.0, 200, "a short hang then answers");
        assert_eq!(client.get("api/v1/licenses/").await.0, 200, "faults are used up");
        sim.shutdown().await;
    }

    #[tokio::test]
    async fn random_failures_hit_only_api_requests() {
        let (sim, client) = started().await;
        sim.set_random_failures(1.0, vec![FaultKind::json(503, "{}")], 7);
        assert_eq!(client.create_order("o-1", "AAAA-BBBB-CCCC-DDDD").await.0, 503);
        assert_eq!(client.get("not-api").await.0, 404, "outside /api/ nothing is failed");
        sim.set_random_failures(0.5, vec![FaultKind::json(503, "{}")], 7);
        let mut failures = 0;
        for _ in 0..40 {
            if client.get("api/v1/licenses/").await.0 == 503 {
                failures += 1;
            }
        }
        assert!((8..=32).contains(&failures), "{failures} of 40");
        sim.clear_faults();
        assert_eq!(client.get("api/v1/licenses/").await.0, 200);
        assert!(sim.orders().is_empty());
    }

    /// The list at `path`, which must answer 200.
    async fn page(client: &Client, path: &str) -> Value {
        let (status, answer) = client.get(path).await;
        assert_eq!(status, 200, "{path}: {answer}");
        answer
    }

    fn keys(page: &Value) -> Vec<String> {
        let results = page["results"].as_array().expect("results");
        results.iter().map(|l| l["order_store_id"].as_str().expect("store id").to_owned()).collect()
    }

    /// `next` or `previous` as a path below the base URL, checked to be a full URL on it.
    fn link(client: &Client, page: &Value, name: &str) -> Option<String> {
        let url = page[name].as_str()?;
        Some(url.strip_prefix(client.base.as_str()).unwrap_or_else(|| panic!("a full URL: {url}")).to_owned())
    }

    #[tokio::test]
    async fn lists_licenses_in_pages_with_filters_and_order() {
        let config = LicenseSpringSimConfig {
            products: vec![DEFAULT_PRODUCT.to_owned(), "OTHER".to_owned()],
            ..LicenseSpringSimConfig::default()
        };
        let sim = start(config).await.expect("starts");
        let client = Client::new(&sim);
        for i in 0..250 {
            sim.create_license(&format!("stripe-license-sub_{i}"), DEFAULT_PRODUCT).expect("created");
        }
        for i in 0..5 {
            sim.create_license(&format!("other-{i}"), "OTHER").expect("created");
        }

        let all = page(&client, "api/v1/licenses/").await;
        assert_eq!((all["count"].as_u64(), keys(&all).len()), (Some(255), 20), "20 a page by default");
        let base = "api/v1/licenses/?order__store_id__startswith=stripe-license-&order_by=created_at";
        let first = page(&client, &format!("{base}&limit=100&offset=0")).await;
        assert_eq!(first["count"], 250);
        assert_eq!(first["previous"], Value::Null);
        assert_eq!(keys(&first)[..2], ["stripe-license-sub_0", "stripe-license-sub_1"]);
        let next = link(&client, &first, "next").expect("a next page");
        assert!(
            next.contains("order__store_id__startswith=stripe-license-")
                && next.contains("order_by=created_at")
        );
        assert!(next.contains("limit=100") && next.contains("offset=100"), "{next}");
        let second = page(&client, &next).await;
        assert_eq!(keys(&second)[0], "stripe-license-sub_100");
        let previous = link(&client, &second, "previous").expect("a previous page");
        assert!(!previous.contains("offset"), "the first page's link has no offset: {previous}");
        assert_eq!(keys(&page(&client, &previous).await), keys(&first));
        let last = page(&client, &link(&client, &second, "next").expect("a third page")).await;
        assert_eq!((keys(&last).len(), &last["next"]), (50, &Value::Null));
        assert!(link(&client, &last, "previous").expect("previous").contains("offset=100"));
        let beyond = page(&client, &format!("{base}&offset=300")).await;
        assert!(keys(&beyond).is_empty() && beyond["count"] == 250);

        let capped = page(&client, &format!("{base}&limit=500")).await;
        assert_eq!(keys(&capped).len(), 100, "silently capped at 100");
        assert!(link(&client, &capped, "next").expect("next").contains("limit=100"));
        let newest = page(&client, "api/v1/licenses/?order_by=-id&limit=1").await;
        assert_eq!(keys(&newest), ["other-4"]);
        let newest = page(&client, &format!("{base}&order_by=-created_at&limit=1")).await;
        assert_eq!(newest["count"], 250);
        let (status, refused) = client.get("api/v1/licenses/?order_by=colour").await;
        assert_eq!(status, 400);
        assert!(refused["detail"].as_str().is_some_and(|d| d.contains("colour")), "{refused}");

        // Exact filters stay exact.
        let exact = page(&client, "api/v1/licenses/?order__store_id=stripe-license-sub_1").await;
        assert_eq!(keys(&exact), ["stripe-license-sub_1"]);
        let license = sim.licenses()[7].clone();
        let by_key = page(&client, &format!("api/v1/licenses/?license_key={}", license.license_key)).await;
        assert_eq!(keys(&by_key), [license.order_store_id.as_str()]);
        let product = page(&client, "api/v1/licenses/?product_short_code=OTHER&limit=100").await;
        assert_eq!(product["count"], 5);

        let (status, _) =
            client.send(Method::POST, &format!("api/v1/licenses/{}/disable/", license.id), None).await;
        assert_eq!(status, 200);
        let disabled = page(&client, "api/v1/licenses/?enabled=false").await;
        assert_eq!(keys(&disabled), [license.order_store_id.as_str()]);
        let enabled = page(&client, &format!("{base}&enabled=true")).await;
        assert_eq!(enabled["count"], 249);
        assert_eq!(client.get("api/v1/licenses/?enabled=maybe").await.0, 400);
    }

    #[tokio::test]
    async fn orders_can_gain_licenses_and_keep_their_rules() {
        let (sim, client) = started().await;
        let first = sim.create_license("o-many", DEFAULT_PRODUCT).expect("created");
        let second = sim.create_license("o-many", DEFAULT_PRODUCT).expect("appended");
        assert_ne!(first.license_key, second.license_key);
        assert_eq!(sim.orders().len(), 1);
        assert_eq!(sim.orders()[0].license_ids, vec![first.id, second.id]);
        assert_eq!(sim.license(second.id), Some(second.clone()));
        assert_eq!(sim.license_by_key(&first.license_key), Some(first.clone()));
        assert!(sim.create_license("o-x", "NOPE").is_err());
        let (status, _) = client.create_order("o-many", "AAAA-BBBB-CCCC-DDDD").await;
        assert_eq!(status, 400, "the order exists");
        let (status, _) = client.create_order("o-new", &first.license_key).await;
        assert_eq!(status, 400, "the key is taken");
    }

    #[tokio::test]
    async fn pages_through_many_licenses() {
        // Ten pages; `cargo bench --bench reconcile` pages through 10,000.
        const COUNT: usize = 1_000;
        let (sim, client) = started().await;
        for i in 0..COUNT {
            sim.create_license(&format!("stripe-license-sub_{i:05}"), DEFAULT_PRODUCT).expect("created");
        }
        let mut seen = Vec::new();
        let mut next = Some(
            "api/v1/licenses/?order__store_id__startswith=stripe-license-&order_by=created_at&limit=100"
                .to_owned(),
        );
        while let Some(path) = next {
            let answer = page(&client, &path).await;
            seen.extend(keys(&answer));
            next = link(&client, &answer, "next");
        }
        let expected: Vec<String> = (0..COUNT).map(|i| format!("stripe-license-sub_{i:05}")).collect();
        assert!(seen == expected, "every license once, in creation order");
    }
}
