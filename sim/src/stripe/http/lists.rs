//! The list calls reconciliation and replay make: `GET /v1/subscriptions` and `GET /v1/events`,
//! with Stripe's cursor pagination (newest first; `starting_after` walks to older objects,
//! `ending_before` to newer ones), filters and `data.`-prefixed expansions.
//!
//! Bracketed query keys (`created[gte]`, `expand[]`, `types[]`) are read after percent-decoding,
//! so `created%5Bgte%5D=...` and `created[gte]=...` are the same parameter.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{ApiError, answer_generation, expanded_subscription, stripe_json, unexpandable};
use crate::frontdoor::lock;
use crate::stripe::state::Shared;
use crate::stripe::{SimSubscription, SubscriptionStatus};

/// How far back `GET /v1/events` sees: Stripe returns only events of the last 30 days.
const EVENT_RETENTION_SECONDS: i64 = 30 * 86_400;
const MAX_LIMIT: usize = 100;
const DEFAULT_LIMIT: usize = 10;
/// Stripe's cap on `types[]`.
const MAX_TYPES: usize = 20;

/// A list call's query string, decoded.
struct ListQuery {
    params: Vec<(String, String)>,
}

impl ListQuery {
    fn parse(query: Option<String>) -> ListQuery {
        let query = query.unwrap_or_default();
        ListQuery { params: url::form_urlencoded::parse(query.as_bytes()).into_owned().collect() }
    }

    /// The first value of a plain parameter.
    fn get(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// Every value of an array parameter: `name[]=a`, `name[0]=a`, `name=a`.
    fn all(&self, name: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(key, _)| {
                key == name
                    || key.strip_prefix(name).is_some_and(|rest| {
                        rest.starts_with('[')
                            && rest.ends_with(']')
                            && rest[1..rest.len() - 1].bytes().all(|b| b.is_ascii_digit())
                    })
            })
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// Refuses a parameter whose top-level name is not known, as Stripe does.
    fn check_known(&self, known: &[&str]) -> Result<(), ApiError> {
        match self
            .params
            .iter()
            .find(|(name, _)| !known.contains(&name.split('[').next().unwrap_or_default()))
        {
            None => Ok(()),
            Some((name, _)) => Err(ApiError::invalid(
                "parameter_unknown",
                name.clone(),
                format!("Received unknown parameter: {name}"),
            )),
        }
    }

    /// `limit`: 1 to 100, 10 when not given.
    fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit").map(str::parse::<usize>) {
            None => Ok(DEFAULT_LIMIT),
            Some(Ok(limit @ 1..=MAX_LIMIT)) => Ok(limit),
            Some(_) => Err(ApiError::invalid(
                "parameter_invalid_integer",
                "limit",
                "This value must be greater than or equal to 1 and less than or equal to 100.",
            )),
        }
    }

    /// `starting_after` or `ending_before` (not both).
    fn cursor(&self) -> Result<Option<(Direction, &str)>, ApiError> {
        match (self.get("starting_after"), self.get("ending_before")) {
            (Some(_), Some(_)) => {
                // [unverified: the exact text of Stripe's refusal]
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "You may only specify one of these parameters: ending_before, starting_after.",
                ))
            }
            (Some(id), None) => Ok(Some((Direction::Older, id))),
            (None, Some(id)) => Ok(Some((Direction::Newer, id))),
            (None, None) => Ok(None),
        }
    }

    /// `created[gt|gte|lt|lte]=<unix seconds>`, or `created=<unix seconds>` for one second.
    fn created(&self) -> Result<TimeRange, ApiError> {
        let mut range = TimeRange::default();
        for (name, value) in &self.params {
            let Some(rest) = name.strip_prefix("created") else { continue };
            let bad_integer = || {
                ApiError::invalid(
                    "parameter_invalid_integer",
                    name.clone(),
                    format!("Invalid integer: {value}"),
                )
            };
            let t: i64 = value.parse().map_err(|_| bad_integer())?;
            match rest {
                "" => {
                    range.gte = Some(t);
                    range.lte = Some(t);
                }
                "[gt]" => range.gt = Some(t),
                "[gte]" => range.gte = Some(t),
                "[lt]" => range.lt = Some(t),
                "[lte]" => range.lte = Some(t),
                _ => {
                    return Err(ApiError::invalid(
                        "parameter_unknown",
                        name.clone(),
                        format!("Received unknown parameter: {name}"),
                    ));
                }
            }
        }
        Ok(range)
    }

    /// A `true`/`false` parameter.
    fn boolean(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(ApiError::invalid("parameter_invalid_boolean", name, "Invalid boolean")),
        }
    }
}

/// Which way a cursor pages.
#[derive(Clone, Copy)]
enum Direction {
    /// `starting_after`: the objects just older than the cursor.
    Older,
    /// `ending_before`: the objects just newer than the cursor.
    Newer,
}

#[derive(Default)]
struct TimeRange {
    gt: Option<i64>,
    gte: Option<i64>,
    lt: Option<i64>,
    lte: Option<i64>,
}

impl TimeRange {
    fn contains(&self, t: i64) -> bool {
        self.gt.is_none_or(|gt| t > gt)
            && self.gte.is_none_or(|gte| t >= gte)
            && self.lt.is_none_or(|lt| t < lt)
            && self.lte.is_none_or(|lte| t <= lte)
    }
}

/// One page of `items` (stored oldest first; answered newest first) from the cursor's position:
/// the `limit` matching items just older (or, `ending_before`, just newer) than it, and whether
/// more match beyond them in that direction (`has_more`). Costs what the page's scan costs, not
/// the whole list's.
fn page<T>(
    items: &[T],
    cursor: Option<(Direction, usize)>,
    limit: usize,
    matches: impl Fn(&T) -> bool,
) -> (Vec<&T>, bool) {
    match cursor {
        Some((Direction::Newer, at)) => {
            let mut page: Vec<&T> =
                items.iter().skip(at + 1).filter(|item| matches(item)).take(limit + 1).collect();
            let has_more = page.len() > limit;
            page.truncate(limit);
            page.reverse();
            (page, has_more)
        }
        older => {
            let end = older.map_or(items.len(), |(_, at)| at);
            let mut page: Vec<&T> =
                items[..end].iter().rev().filter(|item| matches(item)).take(limit + 1).collect();
            let has_more = page.len() > limit;
            page.truncate(limit);
            (page, has_more)
        }
    }
}

/// Whether a subscription is listed under a `status` filter; `None` is Stripe's default, every
/// status but `canceled`. `ended` is `canceled` and `incomplete_expired`; the simulator has no
/// `incomplete` or `incomplete_expired` subscriptions, so those list nothing.
fn status_matches(filter: Option<&str>, status: SubscriptionStatus) -> bool {
    match filter {
        None => status != SubscriptionStatus::Canceled,
        Some("all") => true,
        Some("ended") => status == SubscriptionStatus::Canceled,
        Some(other) => status.as_str() == other,
    }
}

const SUBSCRIPTION_STATUSES: [&str; 10] = [
    "active",
    "all",
    "canceled",
    "ended",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
    "unpaid",
];

/// `GET /v1/subscriptions`: `status` (default: all but canceled), `price` (or `plan`: the
/// simulator's plans are its prices), `customer`, `collection_method` (always
/// `charge_automatically` here), `created[...]`, `limit`, `starting_after` / `ending_before`,
/// `expand[]=data.latest_invoice` / `data.customer`. Newest first by `created` (subscriptions
/// are stored in creation order and the simulated clock never goes back, so storage order
/// reversed is that order, ties included). Each subscription is rendered as
/// `GET /v1/subscriptions/{id}` renders it, in the answer's generation. Not modelled (refused as
/// unknown): `current_period_end[...]`, `current_period_start[...]`, `test_clock`,
/// `automatic_tax`.
pub(super) async fn list_subscriptions(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let generation = answer_generation(&shared, &headers)?;
    let query = ListQuery::parse(query);
    query.check_known(&[
        "status",
        "price",
        "plan",
        "customer",
        "collection_method",
        "created",
        "limit",
        "starting_after",
        "ending_before",
        "expand",
    ])?;
    let status = query.get("status");
    if let Some(status) = status.filter(|s| !SUBSCRIPTION_STATUSES.contains(s)) {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "status",
            format!("Invalid status: must be one of {} (got {status}).", SUBSCRIPTION_STATUSES.join(", ")),
        ));
    }
    let limit = query.limit()?;
    let cursor = query.cursor()?;
    let created = query.created()?;
    let price = query.get("price").or(query.get("plan"));
    let customer = query.get("customer");
    let collection_method = query.get("collection_method");
    let expand = list_expansions(&query, &["latest_invoice", "customer"])?;
    let store = lock(&shared.store);
    let cursor = match cursor {
        None => None,
        Some((direction, id)) => match store.subscription_position(id) {
            Some(at) => Some((direction, at)),
            // [unverified: Stripe's answer to a cursor that names no object; a 400
            // `resource_missing` on the cursor parameter is the documented-most-likely one]
            None => return Err(missing_cursor("subscription", direction, id)),
        },
    };
    let matches = |s: &SimSubscription| {
        status_matches(status, s.status)
            && price.is_none_or(|price| s.price_id == price)
            && customer.is_none_or(|customer| s.customer == customer)
            && collection_method.is_none_or(|method| method == "charge_automatically")
            && created.contains(s.created)
    };
    let (page, has_more) = page(&store.subscriptions, cursor, limit, matches);
    let data = page
        .into_iter()
        .map(|subscription| expanded_subscription(&shared, &store, subscription, generation, &expand))
        .collect::<Result<Vec<Value>, ApiError>>()?;
    let answer = json!({"object": "list", "data": data, "has_more": has_more, "url": "/v1/subscriptions"});
    Ok(stripe_json(StatusCode::OK, &answer))
}

/// The `expand[]` paths of a list call, without their `data.` prefix; a path without it, or
/// past what the list's objects can expand, is Stripe's 400.
fn list_expansions(query: &ListQuery, expandable: &[&str]) -> Result<Vec<String>, ApiError> {
    query
        .all("expand")
        .into_iter()
        .map(|path| match path.strip_prefix("data.") {
            Some(inner) if expandable.contains(&inner) => Ok(inner.to_owned()),
            _ => Err(unexpandable(path)),
        })
        .collect()
}

fn missing_cursor(kind: &str, direction: Direction, id: &str) -> ApiError {
    let param = match direction {
        Direction::Older => "starting_after",
        Direction::Newer => "ending_before",
    };
    ApiError::invalid("resource_missing", param, format!("No such {kind}: '{id}'"))
}

/// Whether an event type matches a `type` filter, where `*` stands for any run of characters
/// (`customer.subscription.*`).
fn type_matches(pattern: &str, event_type: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = event_type.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// `GET /v1/events`: `type` (one name, `*` as a wildcard) or `types[]` (up to 20 exact names,
/// not with `type`), `created[...]`, `delivery_success`, `limit`, `starting_after` /
/// `ending_before`; newest first by `created` (ties: the later emitted first). Only events of
/// the last 30 days of the simulated clock are listed (a cursor may still name an older one).
/// Each event is its JSON exactly as delivered (rendered once, in its own `api_version`; a
/// `Stripe-Version` header does not change it).
///
/// `delivery_success=true`: a delivery attempt to the webhook endpoint succeeded;
/// `false`: none has (still pending, failed every attempt, or lost). Without a webhook endpoint
/// every event counts as undelivered [the simulator's choice: such an account has no endpoint
/// to succeed].
pub(super) async fn list_events(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    answer_generation(&shared, &headers)?;
    let query = ListQuery::parse(query);
    query.check_known(&[
        "type",
        "types",
        "created",
        "delivery_success",
        "limit",
        "starting_after",
        "ending_before",
        "expand",
    ])?;
    let limit = query.limit()?;
    let cursor = query.cursor()?;
    let created = query.created()?;
    let delivery_success = query.boolean("delivery_success")?;
    let one_type = query.get("type");
    let types = query.all("types");
    if one_type.is_some() && !types.is_empty() {
        // [unverified: the exact text]
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "You may only specify one of these parameters: type, types.",
        ));
    }
    if types.len() > MAX_TYPES {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "types",
            format!("Invalid array: must have at most {MAX_TYPES} elements."),
        ));
    }
    let expand = query.all("expand");
    if let Some(path) = expand.first() {
        return Err(unexpandable(path));
    }
    let store = lock(&shared.store);
    let cursor = match cursor {
        None => None,
        Some((direction, id)) => match store.event_order_position(id) {
            Some(at) => Some((direction, at)),
            // [unverified: as for subscriptions, a 400 `resource_missing`]
            None => return Err(missing_cursor("event", direction, id)),
        },
    };
    let oldest = store.now() - EVENT_RETENTION_SECONDS;
    let matches = |position: &usize| {
        let event = &store.events[*position];
        let t = store.event_created[*position];
        t >= oldest
            && created.contains(t)
            && one_type.is_none_or(|pattern| type_matches(pattern, &event.event_type))
            && (types.is_empty() || types.contains(&event.event_type.as_str()))
            && delivery_success.is_none_or(|wanted| store.delivered.contains(&event.id) == wanted)
    };
    let (page, has_more) = page(&store.event_order, cursor, limit, matches);
    let data: Vec<Value> = page.into_iter().map(|position| store.events[*position].json()).collect();
    let answer = json!({"object": "list", "data": data, "has_more": has_more, "url": "/v1/events"});
    Ok(stripe_json(StatusCode::OK, &answer))
}

#[cfg(test)]
mod tests {
    use super::type_matches;

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(type_matches("customer.subscription.*", "customer.subscription.updated"));
        assert!(!type_matches("customer.subscription.*", "customer.created"));
        assert!(type_matches("invoice.paid", "invoice.paid"));
        assert!(!type_matches("invoice.paid", "invoice.paid_out"));
        assert!(type_matches("*", "invoice.paid"));
        assert!(type_matches("*.paid", "invoice.paid"));
        assert!(type_matches("invoice.*_failed", "invoice.payment_failed"));
        assert!(!type_matches("invoice.*_failed", "invoice.paid"));
    }
}
