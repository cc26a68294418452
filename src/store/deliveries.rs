//! Webhook deliveries as the stores record them, and the file store's record of them in memory.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::model::SubscriptionId;

/// One delivery of a webhook event, as it is recorded after its flow ran.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub subscription: Option<&'a SubscriptionId>,
    /// What the flow did (`Outcome::label`), or `failed`.
    pub outcome: &'a str,
    pub error: Option<String>,
}

impl Delivery<'_> {
    /// Done: a later delivery of the same event is answered without running its flow again.
    pub fn handled(&self) -> bool {
        self.error.is_none()
    }
}

/// A recorded delivery, as `/admin` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub event_type: String,
    pub subscription: Option<String>,
    pub outcome: String,
    pub error: Option<String>,
    pub handled: bool,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub attempts: u32,
}

/// How many deliveries the file store remembers for `/admin`.
const DELIVERIES_SHOWN: usize = 500;
/// How many handled event ids it remembers to answer repeats at once.
const HANDLED_REMEMBERED: usize = 10_000;

/// Deliveries in memory (the file store's): the latest [`DELIVERIES_SHOWN`] records, and the ids
/// of the latest [`HANDLED_REMEMBERED`] handled events. Lost on restart: only a shortcut, since
/// every flow is safe to repeat.
#[derive(Default)]
pub struct DeliveryLog {
    inner: Mutex<LogInner>,
}

#[derive(Default)]
struct LogInner {
    records: VecDeque<DeliveryRecord>,
    handled_order: VecDeque<String>,
    handled: HashSet<String>,
}

impl DeliveryLog {
    pub(super) fn repeat_if_handled(&self, event_id: &str, now: DateTime<Utc>) -> bool {
        let mut inner = self.inner.lock().expect("delivery log poisoned");
        if !inner.handled.contains(event_id) {
            return false;
        }
        if let Some(record) = inner.records.iter_mut().rev().find(|r| r.event_id == event_id) {
            record.attempts += 1;
            record.last_seen = now;
        }
        true
    }

    pub(super) fn record(&self, delivery: &Delivery<'_>, now: DateTime<Utc>) {
        let mut guard = self.inner.lock().expect("delivery log poisoned");
        let inner = &mut *guard;
        let handled = delivery.handled();
        if handled && inner.handled.insert(delivery.event_id.to_owned()) {
            inner.handled_order.push_back(delivery.event_id.to_owned());
            if inner.handled_order.len() > HANDLED_REMEMBERED {
                if let Some(oldest) = inner.handled_order.pop_front() {
                    inner.handled.remove(&oldest);
                }
            }
        }
        let earlier = inner.records.iter().rposition(|r| r.event_id == delivery.event_id);
        let (first_seen, attempts) = match earlier.and_then(|n| inner.records.remove(n)) {
            Some(earlier) => (earlier.first_seen, earlier.attempts + 1),
            None => (now, 1),
        };
        inner.records.push_back(DeliveryRecord {
            event_id: delivery.event_id.to_owned(),
            event_type: delivery.event_type.to_owned(),
            subscription: delivery.subscription.map(|s| s.0.clone()),
            outcome: delivery.outcome.to_owned(),
            error: delivery.error.clone(),
            handled,
            first_seen,
            last_seen: now,
            attempts,
        });
        if inner.records.len() > DELIVERIES_SHOWN {
            inner.records.pop_front();
        }
    }

    pub(super) fn recent(&self, limit: usize, failed_only: bool) -> Vec<DeliveryRecord> {
        let inner = self.inner.lock().expect("delivery log poisoned");
        let mut records: Vec<DeliveryRecord> =
            inner.records.iter().filter(|r| !failed_only || !r.handled).cloned().collect();
        records.sort_by_key(|record| std::cmp::Reverse(record.last_seen));
        records.truncate(limit);
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery<'a>(event_id: &'a str, error: Option<&str>) -> Delivery<'a> {
        Delivery {
            event_id,
            event_type: "invoice.paid",
            subscription: None,
            outcome: if error.is_some() { "failed" } else { "extended" },
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn a_failed_delivery_is_not_handled_until_a_retry_succeeds_and_repeats_are_counted() {
        let log = DeliveryLog::default();
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        log.record(&delivery("evt_1", Some("Stripe: 500")), t(0));
        assert!(!log.repeat_if_handled("evt_1", t(1)));
        assert_eq!(log.recent(10, true).len(), 1, "shown among the failed");
        log.record(&delivery("evt_1", None), t(2));
        assert!(log.repeat_if_handled("evt_1", t(3)));
        let records = log.recent(10, false);
        assert_eq!(records.len(), 1, "one record per event");
        let record = &records[0];
        assert!(record.handled && record.error.is_none());
        assert_eq!((record.attempts, record.first_seen, record.last_seen), (3, t(0), t(3)));
        assert!(log.recent(10, true).is_empty());
    }

    #[test]
    fn the_log_keeps_the_latest_records_newest_first() {
        let log = DeliveryLog::default();
        for n in 0..DELIVERIES_SHOWN + 5 {
            let id = format!("evt_{n}");
            log.record(&delivery(&id, None), DateTime::from_timestamp(1_800_000_000 + n as i64, 0).unwrap());
        }
        let recent = log.recent(3, false);
        let ids: Vec<&str> = recent.iter().map(|r| r.event_id.as_str()).collect();
        let newest = DELIVERIES_SHOWN + 4;
        assert_eq!(ids, [newest, newest - 1, newest - 2].map(|n| format!("evt_{n}")));
        assert_eq!(log.recent(usize::MAX, false).len(), DELIVERIES_SHOWN);
    }
}
