//! `/admin` (with `ADMIN_TOKEN`): the subscriptions this server knows with their licenses, the
//! latest webhook deliveries, and a Sync button per subscription that converges it now through
//! the webhooks' own code.
//!
//! - Auth: HTTP Basic (any user name, the token as password) or `Authorization: Bearer`, compared
//!   in constant time; `401` with `WWW-Authenticate` otherwise; `404` without `ADMIN_TOKEN`.
//! - Sync is a `POST` carrying a token derived from `ADMIN_TOKEN` (which a cross-site page cannot
//!   know, although the browser would send the Basic credentials), and a cross-site `Origin` or
//!   `Sec-Fetch-Site` is refused as well.

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::NaiveDate;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{AppState, auth};
use crate::model::SubscriptionId;
use crate::settings::Secret;
use crate::store::DeliveryRecord;

/// How many subscriptions (newest first) and deliveries the page shows.
const SUBSCRIPTIONS_SHOWN: usize = 50;
const DELIVERIES_SHOWN: usize = 50;

#[derive(Deserialize)]
pub struct AdminQuery {
    /// `1`: only the deliveries not handled (yet).
    #[serde(default)]
    failed: Option<String>,
    /// What the last Sync did, shown once.
    #[serde(default)]
    notice: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin.html")]
struct AdminPage {
    store: String,
    total_subscriptions: usize,
    subscriptions: Vec<SubscriptionRow>,
    deliveries: Vec<DeliveryRecord>,
    failed_only: bool,
    notice: Option<String>,
    csrf: String,
    problems: Vec<String>,
}

struct SubscriptionRow {
    subscription: String,
    license_key: String,
    /// From LicenseSpring: `active`, `trial`, `disabled`, or why it could not be read.
    status: String,
    valid_until: Option<NaiveDate>,
    enabled: Option<bool>,
}

impl SubscriptionRow {
    fn valid_until_text(&self) -> String {
        self.valid_until.map_or_else(|| "-".to_owned(), |day| day.to_string())
    }

    fn enabled_text(&self) -> &'static str {
        match self.enabled {
            Some(true) => "yes",
            Some(false) => "no",
            None => "-",
        }
    }
}

/// `GET /admin`.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<AdminQuery>,
) -> Response {
    let token = match check_access(&state, &headers) {
        Ok(token) => token,
        Err(refusal) => return refusal.into_response(),
    };
    let failed_only = query.failed.as_deref() == Some("1");
    let store = state.billing.store();
    let mut problems = Vec::new();
    let (entries, total_subscriptions) = store.newest(SUBSCRIPTIONS_SHOWN).await.unwrap_or_else(|error| {
        problems.push(format!("the subscriptions could not be read: {error}"));
        (Vec::new(), 0)
    });
    // Each license is read from LicenseSpring, all at once.
    let mut reads = tokio::task::JoinSet::new();
    for (position, entry) in entries.into_iter().enumerate() {
        let state = state.clone();
        reads.spawn(async move {
            let license = state.billing.licensespring().retrieve_license(entry.license_id).await;
            (position, entry, license)
        });
    }
    let mut rows = Vec::new();
    while let Some(read) = reads.join_next().await {
        let Ok((position, entry, license)) = read else { continue };
        let row = match license {
            Ok(license) => SubscriptionRow {
                subscription: entry.sub_id.0,
                license_key: license.license_key.0,
                status: match (license.enabled, license.is_trial) {
                    (false, _) => "disabled",
                    (true, true) => "trial",
                    (true, false) => "active",
                }
                .to_owned(),
                valid_until: license.validity_period,
                enabled: Some(license.enabled),
            },
            Err(error) => SubscriptionRow {
                subscription: entry.sub_id.0,
                license_key: entry.license_key.0,
                status: format!("not read: {error}"),
                valid_until: None,
                enabled: None,
            },
        };
        rows.push((position, row));
    }
    rows.sort_by_key(|(position, _)| *position);
    let deliveries = store.recent_deliveries(DELIVERIES_SHOWN, failed_only).await.unwrap_or_else(|error| {
        problems.push(format!("the deliveries could not be read: {error}"));
        Vec::new()
    });
    let page = AdminPage {
        store: store.describe(),
        total_subscriptions,
        subscriptions: rows.into_iter().map(|(_, row)| row).collect(),
        deliveries,
        failed_only,
        notice: query.notice,
        csrf: csrf_token(token),
        problems,
    };
    // Never cached: it shows the state now, and it is behind a password.
    ([(header::CACHE_CONTROL, "no-store")], page).into_response()
}

#[derive(Deserialize)]
pub struct SyncForm {
    subscription: String,
    csrf: String,
}

/// `POST /admin/sync`: converges one subscription now, then back to the page with what it did.
pub async fn sync(State(state): State<AppState>, headers: HeaderMap, Form(form): Form<SyncForm>) -> Response {
    let token = match check_access(&state, &headers) {
        Ok(token) => token,
        Err(refusal) => return refusal.into_response(),
    };
    if cross_site(&headers) || !auth::same_secret(form.csrf.as_bytes(), csrf_token(token).as_bytes()) {
        return (StatusCode::FORBIDDEN, "refused: this form must be sent from the admin page itself")
            .into_response();
    }
    if !is_subscription_id(&form.subscription) {
        return (StatusCode::BAD_REQUEST, "expected a Stripe subscription id (sub_...)").into_response();
    }
    let subscription = SubscriptionId(form.subscription);
    super::note("subscription", &subscription);
    let notice = match state.billing.sync(&subscription).await {
        Ok(outcome) => {
            super::note("outcome", &outcome.label());
            format!("{subscription}: {outcome}")
        }
        Err(error) => {
            super::note("error", &error);
            format!("{subscription}: not synced: {error}")
        }
    };
    let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("notice", &notice).finish();
    Redirect::to(&format!("/admin?{query}")).into_response()
}

/// Why a request may not see the admin page.
enum Refusal {
    /// No `ADMIN_TOKEN`: there is no admin page (404).
    Disabled,
    /// No token, or the wrong one (401, asking for it).
    Unauthorized,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Disabled => (StatusCode::NOT_FOUND, "not found").into_response(),
            Refusal::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, r#"Basic realm="stripe-licensespring admin", charset="UTF-8""#)],
                "the admin page needs ADMIN_TOKEN: as the password (any user name), or as a Bearer token",
            )
                .into_response(),
        }
    }
}

/// The admin token, when the request carries it.
fn check_access<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a Secret, Refusal> {
    let Some(token) = &state.admin_token else { return Err(Refusal::Disabled) };
    match auth::bearer(headers).or_else(|| auth::basic_password(headers)) {
        Some(presented) if auth::is_token(&presented, token) => Ok(token),
        _ => Err(Refusal::Unauthorized),
    }
}

/// The Sync form's token: derived from `ADMIN_TOKEN`, so only someone who has it can make one.
fn csrf_token(admin_token: &Secret) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(admin_token.expose().as_bytes()).expect("any key length");
    mac.update(b"admin sync form");
    hex::encode(mac.finalize().into_bytes())
}

/// A request a browser marks as coming from another site.
fn cross_site(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return true;
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            origin_host != host
        }
        _ => false,
    }
}

fn is_subscription_id(text: &str) -> bool {
    text.len() <= 255
        && text.strip_prefix("sub_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}
