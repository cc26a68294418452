//! The small typed facts the whole server speaks: subscription ids, license keys, billing intervals.
//! Stripe's and LicenseSpring's JSON is turned into these at the edge (the clients and the event model),
//! so the billing flows never see raw JSON.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A Stripe subscription id (`sub_...`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubscriptionId(pub String);

impl SubscriptionId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A LicenseSpring license key (`H5KP-Y2ML-LQWJ-WGC3`). Not a secret: it is what the customer types in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LicenseKey(pub String);

impl LicenseKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LicenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A LicenseSpring license id (a 16-digit integer, below 2^53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LicenseId(pub i64);

impl fmt::Display for LicenseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A Stripe subscription's `status`. Stripe may add values: those are kept as [`Other`](Self::Other).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
    Other(String),
}

impl SubscriptionStatus {
    pub fn parse(text: &str) -> SubscriptionStatus {
        match text {
            "incomplete" => SubscriptionStatus::Incomplete,
            "incomplete_expired" => SubscriptionStatus::IncompleteExpired,
            "trialing" => SubscriptionStatus::Trialing,
            "active" => SubscriptionStatus::Active,
            "past_due" => SubscriptionStatus::PastDue,
            "canceled" => SubscriptionStatus::Canceled,
            "unpaid" => SubscriptionStatus::Unpaid,
            "paused" => SubscriptionStatus::Paused,
            other => SubscriptionStatus::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            SubscriptionStatus::Incomplete => "incomplete",
            SubscriptionStatus::IncompleteExpired => "incomplete_expired",
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Canceled => "canceled",
            SubscriptionStatus::Unpaid => "unpaid",
            SubscriptionStatus::Paused => "paused",
            SubscriptionStatus::Other(other) => other,
        }
    }
}

impl<'de> Deserialize<'de> for SubscriptionStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(SubscriptionStatus::parse(&text))
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The unit of a Stripe price's `recurring.interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntervalUnit {
    Day,
    Week,
    Month,
    Year,
}

impl IntervalUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            IntervalUnit::Day => "day",
            IntervalUnit::Week => "week",
            IntervalUnit::Month => "month",
            IntervalUnit::Year => "year",
        }
    }

    pub fn parse(text: &str) -> Option<IntervalUnit> {
        match text {
            "day" => Some(IntervalUnit::Day),
            "week" => Some(IntervalUnit::Week),
            "month" => Some(IntervalUnit::Month),
            "year" => Some(IntervalUnit::Year),
            _ => None,
        }
    }
}

impl fmt::Display for IntervalUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One billing cycle: `interval` x `interval_count` (3 months is quarterly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BillingInterval {
    pub unit: IntervalUnit,
    pub count: u32,
}

impl BillingInterval {
    /// LicenseSpring's `valid_duration` for one cycle. LicenseSpring documents only the units `d`, `m`
    /// and `y`, so weeks become days.
    ///
    /// ```
    /// use stripe_licensespring::model::{BillingInterval, IntervalUnit};
    ///
    /// let quarterly = BillingInterval { unit: IntervalUnit::Month, count: 3 };
    /// assert_eq!(quarterly.valid_duration(), "3m");
    /// let fortnightly = BillingInterval { unit: IntervalUnit::Week, count: 2 };
    /// assert_eq!(fortnightly.valid_duration(), "14d");
    /// ```
    pub fn valid_duration(&self) -> String {
        let n = u64::from(self.count.max(1));
        match self.unit {
            IntervalUnit::Day => format!("{n}d"),
            IntervalUnit::Week => format!("{}d", 7 * n),
            IntervalUnit::Month => format!("{n}m"),
            IntervalUnit::Year => format!("{n}y"),
        }
    }
}

/// An id field that Stripe may expand into the object: `"sub_..."` or `{"id": "sub_...", ...}`.
/// Read without buffering: the object's other fields are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandableId(pub String);

impl<'de> Deserialize<'de> for ExpandableId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;

        impl<'de> Visitor<'de> for IdVisitor {
            type Value = ExpandableId;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an id string or an object with an `id`")
            }

            fn visit_str<E: de::Error>(self, id: &str) -> Result<ExpandableId, E> {
                Ok(ExpandableId(id.to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ExpandableId, A::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "id" && id.is_none() {
                        id = Some(map.next_value::<String>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                id.map(ExpandableId).ok_or_else(|| de::Error::missing_field("id"))
            }
        }

        deserializer.deserialize_any(IdVisitor)
    }
}

/// An error with its causes, `a: b: c`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let chain = std::iter::successors(Some(error), |error| error.source());
    chain.map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_duration_for_each_unit() {
        let cycle = |unit, count| BillingInterval { unit, count }.valid_duration();
        assert_eq!(cycle(IntervalUnit::Day, 1), "1d");
        assert_eq!(cycle(IntervalUnit::Week, 1), "7d");
        assert_eq!(cycle(IntervalUnit::Week, 2), "14d");
        assert_eq!(cycle(IntervalUnit::Month, 1), "1m");
        assert_eq!(cycle(IntervalUnit::Month, 3), "3m");
        assert_eq!(cycle(IntervalUnit::Year, 1), "1y");
    }

    #[test]
    fn subscription_statuses_round_trip_and_new_ones_are_kept() {
        for text in [
            "incomplete",
            "incomplete_expired",
            "trialing",
            "active",
            "past_due",
            "canceled",
            "unpaid",
            "paused",
        ] {
            let status = SubscriptionStatus::parse(text);
            assert!(!matches!(status, SubscriptionStatus::Other(_)), "{text} is known");
            assert_eq!(status.as_str(), text);
        }
        let added: SubscriptionStatus = serde_json::from_str(r#""on_hold""#).expect("any string reads");
        assert_eq!(added, SubscriptionStatus::Other("on_hold".to_owned()));
        assert_eq!(added.to_string(), "on_hold");
    }

    #[test]
    fn interval_unit_round_trips() {
        for unit in [IntervalUnit::Day, IntervalUnit::Week, IntervalUnit::Month, IntervalUnit::Year] {
            assert_eq!(IntervalUnit::parse(unit.as_str()), Some(unit));
        }
        assert_eq!(IntervalUnit::parse("fortnight"), None);
    }
}
