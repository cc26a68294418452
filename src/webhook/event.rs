//! The typed event model: the few facts the billing flows need, read from either Stripe payload
//! generation (before `2025-03-31.basil` and from it on) into our own types.
//!
//! Only the fields a flow uses are deserialized, and only those a flow cannot do without are
//! required: a field nothing reads must never turn a genuine delivery into a 400. Everything else is
//! skipped unread. The envelope is read
//! first and `data.object` only for the two handled event types, in a second pass with the struct
//! for that object: Stripe puts `type` after `data`, so the object's shape is not known while it is
//! read, and a `serde_json::Value` tree would cost far more than reading the bytes twice.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

use crate::model::{BillingInterval, ExpandableId, IntervalUnit, LicenseKey, SubscriptionId};

/// The `type` of a paid invoice event.
pub const INVOICE_PAID: &str = "invoice.paid";
/// The `type` of an ended subscription event.
pub const SUBSCRIPTION_DELETED: &str = "customer.subscription.deleted";
/// Any change of a subscription: status, items, trial, cancellation, metadata, period.
pub const SUBSCRIPTION_UPDATED: &str = "customer.subscription.updated";
/// The subscription entered `status=paused`.
pub const SUBSCRIPTION_PAUSED: &str = "customer.subscription.paused";
/// The subscription left `status=paused`.
pub const SUBSCRIPTION_RESUMED: &str = "customer.subscription.resumed";
/// A payment attempt of an invoice failed (Stripe retries; the status change comes as an update).
pub const INVOICE_PAYMENT_FAILED: &str = "invoice.payment_failed";

/// Every event type the server handles: what to subscribe the webhook endpoint to.
pub const HANDLED_EVENT_TYPES: [&str; 6] = [
    INVOICE_PAID,
    INVOICE_PAYMENT_FAILED,
    SUBSCRIPTION_UPDATED,
    SUBSCRIPTION_PAUSED,
    SUBSCRIPTION_RESUMED,
    SUBSCRIPTION_DELETED,
];

/// A verified Stripe event, reduced to what the server needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `evt_...`: the same on every delivery of this event.
    pub id: String,
    /// `type`, e.g. `invoice.paid`.
    pub event_type: String,
    pub kind: EventKind,
}

/// What the event means to this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    InvoicePaid(InvoicePaid),
    InvoicePaymentFailed(InvoicePaymentFailed),
    /// `customer.subscription.updated`, `.paused` or `.resumed`.
    SubscriptionChanged(SubscriptionChanged),
    SubscriptionDeleted(SubscriptionDeleted),
    /// Any other event type: answered 200 and otherwise left alone.
    Ignored,
}

impl Event {
    /// The subscription the event is about, if it is about one this server handles.
    pub fn subscription(&self) -> Option<&SubscriptionId> {
        match &self.kind {
            EventKind::InvoicePaid(invoice) => invoice.subscription.as_ref().map(|s| &s.id),
            EventKind::InvoicePaymentFailed(failed) => failed.subscription.as_ref(),
            EventKind::SubscriptionChanged(changed) => Some(&changed.id),
            EventKind::SubscriptionDeleted(deleted) => Some(&deleted.id),
            EventKind::Ignored => None,
        }
    }
}

/// An `invoice.paid` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePaid {
    /// Why the invoice was billed; null on some old or one-off invoices.
    pub billing_reason: Option<BillingReason>,
    /// `None` for an invoice that belongs to no subscription (a one-off invoice): nothing to do.
    pub subscription: Option<InvoiceSubscription>,
    /// What was charged, in the currency's smallest unit: 0 for a trial's first invoice.
    pub amount_paid: Option<i64>,
    /// The buyer, as the invoice froze them at finalization.
    pub customer_email: Option<String>,
    pub customer_name: Option<String>,
}

/// An `invoice.payment_failed` event: logged; the license follows the status change that Stripe
/// sends as `customer.subscription.updated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePaymentFailed {
    pub subscription: Option<SubscriptionId>,
    /// How many attempts have failed so far.
    pub attempt_count: Option<u32>,
}

/// A `customer.subscription.updated`, `.paused` or `.resumed` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionChanged {
    pub id: SubscriptionId,
    pub change: SubscriptionChange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionChange {
    /// The names in `data.previous_attributes`: what changed (`None` when Stripe sent none).
    Updated {
        changed: Option<Vec<String>>,
    },
    Paused,
    Resumed,
}

impl SubscriptionChange {
    /// Whether the license may depend on what changed: anything but the subscription's metadata
    /// (which changes when this server writes the key).
    pub fn may_affect_the_license(&self) -> bool {
        match self {
            SubscriptionChange::Updated { changed: Some(changed) } => {
                changed.iter().any(|name| name != "metadata")
            }
            SubscriptionChange::Updated { changed: None }
            | SubscriptionChange::Paused
            | SubscriptionChange::Resumed => true,
        }
    }
}

/// What a paid invoice says about its subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceSubscription {
    pub id: SubscriptionId,
    /// The latest `period.end` of the invoice's non-proration subscription lines: the end of the
    /// service period just paid for. `None` when the invoice has no such line (only prorations, after
    /// a plan change), so it paid for no new period.
    pub paid_until: Option<DateTime<Utc>>,
    /// `license_key` in the invoice's snapshot of the subscription's metadata. Frozen when the invoice
    /// was finalized, so the first invoice never carries it; the subscription itself is authoritative.
    pub license_key: Option<LicenseKey>,
}

/// A `customer.subscription.deleted` event: the subscription has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionDeleted {
    pub id: SubscriptionId,
    /// `metadata.license_key`: the subscription's live metadata, once the server wrote the key.
    pub license_key: Option<LicenseKey>,
    /// One billing cycle, from the first item's price (or plan).
    pub interval: BillingInterval,
}

/// An invoice's `billing_reason`; the flows tell the first invoice from every later one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingReason {
    /// The subscription's first invoice.
    SubscriptionCreate,
    /// A renewal.
    SubscriptionCycle,
    /// A plan or quantity change.
    SubscriptionUpdate,
    /// Any other value, e.g. `manual` or `subscription_threshold`, kept as Stripe sent it.
    Other(String),
}

impl BillingReason {
    pub fn parse(text: &str) -> BillingReason {
        match text {
            "subscription_create" => BillingReason::SubscriptionCreate,
            "subscription_cycle" => BillingReason::SubscriptionCycle,
            "subscription_update" => BillingReason::SubscriptionUpdate,
            other => BillingReason::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            BillingReason::SubscriptionCreate => "subscription_create",
            BillingReason::SubscriptionCycle => "subscription_cycle",
            BillingReason::SubscriptionUpdate => "subscription_update",
            BillingReason::Other(other) => other,
        }
    }
}

/// Why a verified body is not an event this server can act on. Never carries the body.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the body is not a Stripe event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the event has no `{0}`")]
    MissingField(&'static str),
    #[error("the event's `{field}` is not valid: {value}")]
    InvalidField { field: &'static str, value: String },
}

/// Reads a verified webhook body. Other event types than the handled ones need only the envelope
/// (`id`, `type`); their `data` is not looked at.
pub fn parse_event(body: &[u8]) -> Result<Event, EventError> {
    let envelope: RawEnvelope = serde_json::from_slice(body)?;
    let id = required(envelope.id, "id")?;
    let event_type = required(envelope.event_type, "type")?;
    let kind = match event_type.as_str() {
        INVOICE_PAID => EventKind::InvoicePaid(data_object::<RawInvoice>(body)?.into_event()?),
        INVOICE_PAYMENT_FAILED => {
            EventKind::InvoicePaymentFailed(data_object::<RawInvoice>(body)?.into_payment_failed())
        }
        SUBSCRIPTION_DELETED => {
            EventKind::SubscriptionDeleted(data_object::<RawSubscription>(body)?.into_event()?)
        }
        SUBSCRIPTION_UPDATED => {
            let raw: RawData<RawSubscriptionId> = serde_json::from_slice(body)?;
            let data = raw.data.ok_or(EventError::MissingField("data.object"))?;
            let changed = data.previous_attributes.map(|attributes| attributes.into_keys().collect());
            let object = data.object.ok_or(EventError::MissingField("data.object"))?;
            subscription_changed(object, SubscriptionChange::Updated { changed })?
        }
        SUBSCRIPTION_PAUSED => subscription_changed(data_object(body)?, SubscriptionChange::Paused)?,
        SUBSCRIPTION_RESUMED => subscription_changed(data_object(body)?, SubscriptionChange::Resumed)?,
        _ => EventKind::Ignored,
    };
    Ok(Event { id, event_type, kind })
}

/// The second pass: `data.object` as `T`, every other field skipped.
fn data_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, EventError> {
    let raw: RawData<T> = serde_json::from_slice(body)?;
    raw.data.and_then(|data| data.object).ok_or(EventError::MissingField("data.object"))
}

fn subscription_changed(
    object: RawSubscriptionId,
    change: SubscriptionChange,
) -> Result<EventKind, EventError> {
    let id = SubscriptionId(required(object.id, "data.object.id")?);
    Ok(EventKind::SubscriptionChanged(SubscriptionChanged { id, change }))
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, EventError> {
    value.ok_or(EventError::MissingField(field))
}

fn timestamp(unix: i64, field: &'static str) -> Result<DateTime<Utc>, EventError> {
    DateTime::from_timestamp(unix, 0).ok_or(EventError::InvalidField { field, value: unix.to_string() })
}

// The raw shapes: only the needed fields, all optional, so that a missing one is reported by its
// path rather than by serde's position in the body.

#[derive(Deserialize)]
struct RawEnvelope {
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

#[derive(Deserialize)]
struct RawData<T> {
    data: Option<RawDataObject<T>>,
}

#[derive(Deserialize)]
struct RawDataObject<T> {
    object: Option<T>,
    /// Only the names are read.
    previous_attributes: Option<std::collections::BTreeMap<String, IgnoredAny>>,
}

#[derive(Deserialize)]
struct RawSubscriptionId {
    id: Option<String>,
}

#[derive(Deserialize)]
struct RawInvoice {
    billing_reason: Option<String>,
    amount_paid: Option<i64>,
    attempt_count: Option<u32>,
    customer_email: Option<String>,
    customer_name: Option<String>,
    /// Pre-basil: the subscription id, or the subscription itself when expanded.
    subscription: Option<ExpandableId>,
    /// Pre-basil: the metadata snapshot.
    subscription_details: Option<RawSubscriptionDetails>,
    /// Basil: `parent.subscription_details.{subscription, metadata}`.
    parent: Option<RawInvoiceParent>,
    lines: Option<RawList<RawLine>>,
}

#[derive(Deserialize)]
struct RawInvoiceParent {
    subscription_details: Option<RawSubscriptionDetails>,
}

#[derive(Deserialize)]
struct RawSubscriptionDetails {
    subscription: Option<ExpandableId>,
    metadata: Option<RawMetadata>,
}

#[derive(Deserialize)]
struct RawMetadata {
    license_key: Option<String>,
}

#[derive(Deserialize)]
struct RawList<T> {
    data: Option<Vec<T>>,
}

#[derive(Deserialize)]
struct RawLine {
    /// Pre-basil: `subscription` or `invoiceitem`.
    #[serde(rename = "type")]
    line_type: Option<String>,
    /// Pre-basil.
    proration: Option<bool>,
    /// Basil: `parent.type` and `parent.subscription_item_details.proration`.
    parent: Option<RawLineParent>,
    period: Option<RawPeriod>,
}

#[derive(Deserialize)]
struct RawLineParent {
    #[serde(rename = "type")]
    parent_type: Option<String>,
    subscription_item_details: Option<RawSubscriptionItemDetails>,
}

#[derive(Deserialize)]
struct RawSubscriptionItemDetails {
    proration: Option<bool>,
}

#[derive(Deserialize)]
struct RawPeriod {
    end: Option<i64>,
}

#[derive(Deserialize)]
struct RawPrice {
    recurring: Option<RawRecurring>,
}

/// `price.recurring`, or a `plan`, which has the same two fields.
#[derive(Deserialize)]
struct RawRecurring {
    interval: Option<String>,
    interval_count: Option<u32>,
}

#[derive(Deserialize)]
struct RawSubscription {
    id: Option<String>,
    metadata: Option<RawMetadata>,
    items: Option<RawList<RawSubscriptionItem>>,
}

#[derive(Deserialize)]
struct RawSubscriptionItem {
    price: Option<RawPrice>,
    plan: Option<RawRecurring>,
}

impl RawInvoice {
    fn into_event(self) -> Result<InvoicePaid, EventError> {
        let billing_reason = self.billing_reason.as_deref().map(BillingReason::parse);
        // Basil moved both to `parent.subscription_details`; older versions have them at the top.
        let details =
            self.parent.and_then(|parent| parent.subscription_details).or(self.subscription_details);
        let (details_subscription, snapshot) = match details {
            Some(details) => (details.subscription, details.metadata),
            None => (None, None),
        };
        let Some(ExpandableId(subscription_id)) = details_subscription.or(self.subscription) else {
            return Ok(InvoicePaid {
                billing_reason,
                subscription: None,
                amount_paid: self.amount_paid,
                customer_email: self.customer_email,
                customer_name: self.customer_name,
            });
        };
        let license_key = snapshot.and_then(RawMetadata::license_key);
        let lines = required(self.lines.and_then(|lines| lines.data), "data.object.lines.data")?;
        let paid_until = paid_until(&lines)?;
        Ok(InvoicePaid {
            billing_reason,
            amount_paid: self.amount_paid,
            customer_email: self.customer_email,
            customer_name: self.customer_name,
            subscription: Some(InvoiceSubscription {
                id: SubscriptionId(subscription_id),
                paid_until,
                license_key,
            }),
        })
    }
}

impl RawInvoice {
    fn into_payment_failed(self) -> InvoicePaymentFailed {
        let details =
            self.parent.and_then(|parent| parent.subscription_details).or(self.subscription_details);
        let subscription = details.and_then(|details| details.subscription).or(self.subscription);
        InvoicePaymentFailed {
            subscription: subscription.map(|ExpandableId(id)| SubscriptionId(id)),
            attempt_count: self.attempt_count,
        }
    }
}

/// The latest end among the non-proration subscription lines.
fn paid_until(lines: &[RawLine]) -> Result<Option<DateTime<Utc>>, EventError> {
    const END: &str = "data.object.lines.data[].period.end";
    let mut latest: Option<i64> = None;
    for line in lines.iter().filter(|line| line.is_subscription() && !line.is_proration()) {
        let end = required(line.period.as_ref().and_then(|period| period.end), END)?;
        latest = latest.max(Some(end));
    }
    latest.map(|end| timestamp(end, END)).transpose()
}

impl RawLine {
    fn is_subscription(&self) -> bool {
        self.line_type.as_deref() == Some("subscription")
            || self.parent.as_ref().and_then(|parent| parent.parent_type.as_deref())
                == Some("subscription_item_details")
    }

    fn is_proration(&self) -> bool {
        self.proration == Some(true)
            || self
                .parent
                .as_ref()
                .and_then(|parent| parent.subscription_item_details.as_ref())
                .and_then(|details| details.proration)
                == Some(true)
    }
}

impl RawMetadata {
    /// An empty value means "no key": Stripe treats an empty metadata value as deleted.
    fn license_key(self) -> Option<LicenseKey> {
        self.license_key.filter(|key| !key.is_empty()).map(LicenseKey)
    }
}

impl RawRecurring {
    /// `None` when either field is absent; an interval Stripe does not define is an error.
    fn interval(&self) -> Result<Option<BillingInterval>, EventError> {
        let (Some(unit), Some(count)) = (&self.interval, self.interval_count) else {
            return Ok(None);
        };
        let unit = IntervalUnit::parse(unit)
            .ok_or_else(|| EventError::InvalidField { field: "interval", value: unit.clone() })?;
        Ok(Some(BillingInterval { unit, count }))
    }
}

impl RawSubscription {
    fn into_event(self) -> Result<SubscriptionDeleted, EventError> {
        const FIRST_ITEM: &str = "data.object.items.data[0]";
        const INTERVAL: &str = "data.object.items.data[0].price.recurring";
        let id = SubscriptionId(required(self.id, "data.object.id")?);
        let items = self.items.and_then(|items| items.data).unwrap_or_default();
        let first = required(items.first(), FIRST_ITEM)?;
        let recurring =
            first.price.as_ref().and_then(|price| price.recurring.as_ref()).or(first.plan.as_ref());
        let interval = required(recurring.map(RawRecurring::interval).transpose()?.flatten(), INTERVAL)?;
        Ok(SubscriptionDeleted {
            id,
            license_key: self.metadata.and_then(RawMetadata::license_key),
            interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stripe/events");
    const SUBSCRIPTION: &str = "sub_1TestLicense0000000001";
    const KEY: &str = "TEST-7KQM-4XRW-9BNC";

    fn fixture(generation: &str, name: &str) -> Vec<u8> {
        std::fs::read(format!("{EVENTS}/{generation}/{name}.json")).expect("fixture file")
    }

    fn fixture_json(generation: &str, name: &str) -> Value {
        serde_json::from_slice(&fixture(generation, name)).expect("fixture is JSON")
    }

    fn parse_json(value: &Value) -> Result<Event, EventError> {
        parse_event(value.to_string().as_bytes())
    }

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).expect("in range")
    }

    fn invoice_paid(event: Event) -> InvoicePaid {
        match event.kind {
            EventKind::InvoicePaid(invoice) => invoice,
            other => panic!("expected invoice.paid, got {other:?}"),
        }
    }

    fn subscription_deleted(event: Event) -> SubscriptionDeleted {
        match event.kind {
            EventKind::SubscriptionDeleted(deleted) => deleted,
            other => panic!("expected customer.subscription.deleted, got {other:?}"),
        }
    }

    fn missing_field(result: Result<Event, EventError>) -> &'static str {
        match result {
            Err(EventError::MissingField(field)) => field,
            other => panic!("expected a missing field, got {other:?}"),
        }
    }

    #[test]
    fn both_generations_read_the_same_first_invoice() {
        for generation in ["acacia", "basil"] {
            let event =
                parse_event(&fixture(generation, "invoice.paid.subscription_create")).expect(generation);
            assert_eq!(event.event_type, "invoice.paid");
            let invoice = invoice_paid(event);
            assert_eq!(invoice.billing_reason, Some(BillingReason::SubscriptionCreate), "{generation}");
            let subscription = invoice.subscription.expect("a subscription invoice");
            assert_eq!(subscription.id, SubscriptionId(SUBSCRIPTION.to_owned()), "{generation}");
            assert_eq!(subscription.paid_until, Some(at(1766592000)), "{generation}: 2025-12-24T16:00Z");
            assert_eq!(subscription.license_key, None, "{generation}: the first snapshot is empty");
        }
    }

    #[test]
    fn both_generations_read_the_same_renewal() {
        for generation in ["acacia", "basil"] {
            let event =
                parse_event(&fixture(generation, "invoice.paid.subscription_cycle")).expect(generation);
            let invoice = invoice_paid(event);
            assert_eq!(invoice.billing_reason, Some(BillingReason::SubscriptionCycle), "{generation}");
            let subscription = invoice.subscription.expect("a subscription invoice");
            assert_eq!(subscription.id, SubscriptionId(SUBSCRIPTION.to_owned()), "{generation}");
            assert_eq!(subscription.paid_until, Some(at(1769270400)), "{generation}: 2026-01-24T16:00Z");
            assert_eq!(subscription.license_key, Some(LicenseKey(KEY.to_owned())), "{generation}");
        }
    }

    #[test]
    fn both_generations_read_the_same_deletion() {
        for generation in ["acacia", "basil"] {
            let event = parse_event(&fixture(generation, "customer.subscription.deleted")).expect(generation);
            let deleted = subscription_deleted(event);
            assert_eq!(
                deleted,
                SubscriptionDeleted {
                    id: SubscriptionId(SUBSCRIPTION.to_owned()),
                    license_key: Some(LicenseKey(KEY.to_owned())),
                    interval: BillingInterval { unit: IntervalUnit::Month, count: 1 },
                },
                "{generation}"
            );
        }
    }

    #[test]
    fn the_event_id_is_kept() {
        let event = parse_event(&fixture("basil", "invoice.paid.subscription_create")).unwrap();
        assert_eq!(event.id, "evt_1TestInvPaidCreate00001");
        let event = parse_event(&fixture("acacia", "invoice.paid.subscription_create")).unwrap();
        assert_eq!(event.id, "evt_1TestInvPaidCreateAcacia");
    }

    #[test]
    fn fields_no_flow_reads_may_be_missing() {
        // (fixture, envelope fields, `data.object` fields) that no flow reads.
        let unread: [(&str, &[&str], &[&str]); 3] = [
            ("invoice.paid.subscription_create", &["created", "api_version", "livemode"], &["id", "status"]),
            ("invoice.paid.subscription_cycle", &["request"], &["id", "customer", "total", "period_end"]),
            ("customer.subscription.deleted", &["created"], &["status", "ended_at", "canceled_at"]),
        ];
        for generation in ["acacia", "basil"] {
            for (name, envelope_fields, object_fields) in unread {
                let mut event = fixture_json(generation, name);
                let expected = parse_json(&event).expect("the fixture parses");
                for field in envelope_fields {
                    event.as_object_mut().unwrap().remove(*field);
                }
                let object = &mut event["data"]["object"];
                for field in object_fields.iter().chain(&["current_period_end"]) {
                    object.as_object_mut().unwrap().remove(*field);
                }
                for item in object["items"]["data"].as_array_mut().into_iter().flatten() {
                    item.as_object_mut().unwrap().remove("current_period_end");
                }
                assert_eq!(parse_json(&event).expect(name), expected, "{generation} {name}");
            }
        }
    }

    #[test]
    fn an_invoice_without_a_subscription_is_not_a_subscription_invoice() {
        let body = json!({
            "id": "evt_1", "object": "event", "type": "invoice.paid", "created": 1767000000,
            "data": {"object": {"id": "in_1", "object": "invoice", "billing_reason": "manual",
                                "subscription": null, "parent": null, "metadata": {"license_key": "NOPE"},
                                "lines": {"data": [{"type": "invoiceitem", "period": {"start": 1, "end": 2}}]}}}
        });
        let invoice = invoice_paid(parse_json(&body).unwrap());
        assert_eq!(invoice.billing_reason, Some(BillingReason::Other("manual".to_owned())));
        assert_eq!(invoice.subscription, None);
        // The smallest invoice: nothing but its id.
        let bare =
            json!({"id": "evt_2", "type": "invoice.paid", "created": 1, "data": {"object": {"id": "in_2"}}});
        assert_eq!(invoice_paid(parse_json(&bare).unwrap()).subscription, None);
    }

    #[test]
    fn lifecycle_events_name_their_subscription_and_what_changed() {
        let updated = |previous: Option<Value>| {
            let mut data = json!({"object": {"id": "sub_1", "object": "subscription", "status": "past_due"}});
            if let Some(previous) = previous {
                data["previous_attributes"] = previous;
            }
            let body = json!({"id": "evt_1", "type": "customer.subscription.updated", "data": data});
            match parse_json(&body).unwrap().kind {
                EventKind::SubscriptionChanged(changed) => changed,
                other => panic!("expected a subscription change, got {other:?}"),
            }
        };
        let metadata_only = updated(Some(json!({"metadata": {"license_key": null}})));
        assert_eq!(metadata_only.id.as_str(), "sub_1");
        assert!(!metadata_only.change.may_affect_the_license(), "the key this server wrote");
        let status = updated(Some(json!({"status": "active", "metadata": {}})));
        assert_eq!(
            status.change,
            SubscriptionChange::Updated { changed: Some(vec!["metadata".into(), "status".into()]) }
        );
        assert!(status.change.may_affect_the_license());
        assert!(updated(None).change.may_affect_the_license(), "nothing said: look");

        for (event_type, change) in [
            ("customer.subscription.paused", SubscriptionChange::Paused),
            ("customer.subscription.resumed", SubscriptionChange::Resumed),
        ] {
            let body = json!({"id": "evt_2", "type": event_type, "data": {"object": {"id": "sub_2"}}});
            let event = parse_json(&body).unwrap();
            assert_eq!(event.subscription().map(SubscriptionId::as_str), Some("sub_2"));
            assert_eq!(
                event.kind,
                EventKind::SubscriptionChanged(SubscriptionChanged {
                    id: SubscriptionId("sub_2".into()),
                    change
                })
            );
        }
        let no_id = json!({"id": "evt_3", "type": "customer.subscription.paused", "data": {"object": {}}});
        assert_eq!(missing_field(parse_json(&no_id)), "data.object.id");
    }

    #[test]
    fn a_failed_payment_names_its_subscription_and_attempt_in_both_generations() {
        for (object, generation) in [
            (json!({"id": "in_1", "subscription": "sub_1", "attempt_count": 2}), "acacia"),
            (
                json!({"id": "in_1", "attempt_count": 2,
                       "parent": {"subscription_details": {"subscription": "sub_1"}}}),
                "basil",
            ),
        ] {
            let body = json!({"id": "evt_1", "type": "invoice.payment_failed", "data": {"object": object}});
            let expected = InvoicePaymentFailed {
                subscription: Some(SubscriptionId("sub_1".into())),
                attempt_count: Some(2),
            };
            assert_eq!(
                parse_json(&body).unwrap().kind,
                EventKind::InvoicePaymentFailed(expected),
                "{generation}"
            );
        }
    }

    #[test]
    fn a_paid_invoice_says_what_was_charged() {
        let first = invoice_paid(parse_event(&fixture("basil", "invoice.paid.subscription_create")).unwrap());
        assert!(first.amount_paid.is_some(), "the fixture's amount_paid is read");
        let mut trial = fixture_json("basil", "invoice.paid.subscription_create");
        trial["data"]["object"]["amount_paid"] = json!(0);
        assert_eq!(invoice_paid(parse_json(&trial).unwrap()).amount_paid, Some(0));
    }

    #[test]
    fn other_event_types_are_ignored_whatever_their_data() {
        for data in [json!({"object": {"id": "sub_1", "items": 5}}), json!(null), json!("?")] {
            let body = json!({"id": "evt_1", "type": "customer.subscription.trial_will_end", "created": 1, "data": data});
            let event = parse_json(&body).unwrap();
            assert_eq!(event.kind, EventKind::Ignored);
        }
    }

    #[test]
    fn a_body_that_is_not_an_event_is_an_error() {
        for body in [&b"{}"[..], b"[1]", b"null", b"", b"not json", b"{\"id\": 5}"] {
            let error = parse_event(body).expect_err("not an event");
            assert!(!error.to_string().is_empty());
        }
        assert_eq!(missing_field(parse_event(b"{}")), "id");
    }

    #[test]
    fn missing_envelope_fields_are_named() {
        let event = fixture_json("basil", "invoice.paid.subscription_create");
        for (field, expected) in [("id", "id"), ("type", "type"), ("data", "data.object")] {
            let mut broken = event.clone();
            broken.as_object_mut().unwrap().remove(field);
            assert_eq!(missing_field(parse_json(&broken)), expected);
        }
        let mut broken = event;
        broken["data"]["object"] = Value::Null;
        assert_eq!(missing_field(parse_json(&broken)), "data.object");
    }

    #[test]
    fn missing_invoice_fields_are_named() {
        for generation in ["acacia", "basil"] {
            let event = fixture_json(generation, "invoice.paid.subscription_cycle");
            let mut broken = event.clone();
            broken["data"]["object"].as_object_mut().unwrap().remove("lines");
            assert_eq!(missing_field(parse_json(&broken)), "data.object.lines.data", "{generation}");

            let mut broken = event;
            broken["data"]["object"]["lines"]["data"][0].as_object_mut().unwrap().remove("period");
            assert_eq!(
                missing_field(parse_json(&broken)),
                "data.object.lines.data[].period.end",
                "{generation}"
            );
        }
    }

    #[test]
    fn missing_subscription_fields_are_named() {
        for generation in ["acacia", "basil"] {
            let event = fixture_json(generation, "customer.subscription.deleted");
            for (field, expected) in [("id", "data.object.id"), ("items", "data.object.items.data[0]")] {
                let mut broken = event.clone();
                broken["data"]["object"].as_object_mut().unwrap().remove(field);
                assert_eq!(missing_field(parse_json(&broken)), expected, "{generation}");
            }
            let mut broken = event;
            let item = broken["data"]["object"]["items"]["data"][0].as_object_mut().unwrap();
            item.remove("price");
            item.remove("plan");
            assert_eq!(missing_field(parse_json(&broken)), "data.object.items.data[0].price.recurring");
        }
    }

    #[test]
    fn the_interval_falls_back_to_the_plan_and_must_be_known() {
        let mut event = fixture_json("basil", "customer.subscription.deleted");
        let item = &mut event["data"]["object"]["items"]["data"][0];
        item.as_object_mut().unwrap().remove("price");
        item["plan"]["interval"] = json!("year");
        item["plan"]["interval_count"] = json!(2);
        let deleted = subscription_deleted(parse_json(&event).unwrap());
        assert_eq!(deleted.interval, BillingInterval { unit: IntervalUnit::Year, count: 2 });

        event["data"]["object"]["items"]["data"][0]["plan"]["interval"] = json!("fortnight");
        match parse_json(&event) {
            Err(EventError::InvalidField { field: "interval", value }) => assert_eq!(value, "fortnight"),
            other => panic!("expected an invalid interval, got {other:?}"),
        }
    }

    #[test]
    fn paid_until_is_the_latest_non_proration_subscription_line() {
        let line = |kind: &str, proration: bool, end: i64| {
            json!({"period": {"start": 0, "end": end},
                   "parent": {"type": kind, "subscription_item_details": {"proration": proration}}})
        };
        let body = json!({
            "id": "evt_1", "type": "invoice.paid", "created": 1,
            "data": {"object": {
                "id": "in_1", "billing_reason": "subscription_update",
                "parent": {"type": "subscription_details",
                           "subscription_details": {"subscription": "sub_1", "metadata": null}},
                "lines": {"data": [
                    line("subscription_item_details", false, 2000),
                    line("subscription_item_details", true, 9000),
                    line("invoice_item_details", false, 8000),
                    line("subscription_item_details", false, 3000),
                    line("subscription_item_details", false, 2500),
                ]}}}
        });
        let subscription = invoice_paid(parse_json(&body).unwrap()).subscription.unwrap();
        assert_eq!(subscription.paid_until, Some(at(3000)));
        assert_eq!(subscription.license_key, None);

        let prorations_only = json!({
            "id": "evt_1", "type": "invoice.paid", "created": 1,
            "data": {"object": {"id": "in_1", "subscription": "sub_1",
                                "lines": {"data": [{"type": "subscription", "proration": true,
                                                    "period": {"start": 0, "end": 5}}]}}}
        });
        let subscription = invoice_paid(parse_json(&prorations_only).unwrap()).subscription.unwrap();
        assert_eq!(subscription.paid_until, None, "a proration pays for no new period");
    }

    #[test]
    fn an_expanded_subscription_gives_its_id() {
        let mut event = fixture_json("acacia", "invoice.paid.subscription_cycle");
        event["data"]["object"]["subscription"] = json!({"object": "subscription", "metadata": {"license_key": "X"}, "id": SUBSCRIPTION, "items": {}});
        let subscription = invoice_paid(parse_json(&event).unwrap()).subscription.unwrap();
        assert_eq!(subscription.id.as_str(), SUBSCRIPTION);
        assert_eq!(subscription.license_key, Some(LicenseKey(KEY.to_owned())), "still the snapshot's");
    }

    #[test]
    fn invoice_metadata_is_not_the_subscription_metadata() {
        let mut event = fixture_json("basil", "invoice.paid.subscription_create");
        event["data"]["object"]["metadata"] = json!({"license_key": "FROM-THE-INVOICE"});
        let subscription = invoice_paid(parse_json(&event).unwrap()).subscription.unwrap();
        assert_eq!(subscription.license_key, None);
    }

    #[test]
    fn billing_reasons_round_trip() {
        for text in ["subscription_create", "subscription_cycle", "subscription_update", "manual"] {
            assert_eq!(BillingReason::parse(text).as_str(), text);
        }
    }
}
