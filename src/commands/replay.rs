//! `replay --since <date or time>`: handles again the events Stripe may not have delivered. Reads
//! the handled event types from `GET /v1/events` (Stripe keeps 30 days), and hands each, oldest
//! first, to [`Billing::handle_event`] exactly as a delivery would be; prints a summary by outcome.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::billing::Billing;
use crate::stripe::ListedEvent;
use crate::webhook::{HANDLED_EVENT_TYPES, parse_event};

use super::{Progress, exit};

/// How long Stripe keeps events.
pub const EVENTS_KEPT: Duration = Duration::days(30);

/// Reads `--since`: a date (`2026-11-24`, from its midnight UTC) or an RFC 3339 time; refused when
/// older than Stripe keeps events, or in the future.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let since = match NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
        Ok(day) => day.and_hms_opt(0, 0, 0).expect("midnight").and_utc(),
        Err(_) => DateTime::parse_from_rfc3339(text.trim())
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| format!("--since {text:?}: expected a date (2026-11-24) or an RFC 3339 time (2026-11-24T08:00:00Z)"))?,
    };
    if since < now - EVENTS_KEPT {
        return Err(format!(
            "--since {text}: Stripe keeps events for 30 days, so the oldest that can be replayed is from {}; \
             for anything older, run `reconcile --apply`",
            (now - EVENTS_KEPT).format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    if since > now {
        return Err(format!("--since {text}: that is in the future"));
    }
    Ok(since)
}

/// Runs `replay`; the exit status.
pub async fn run(billing: &Billing, since: DateTime<Utc>) -> u8 {
    let progress = Progress::new();
    let work = async {
        let events = match list_events(billing, since, &progress).await {
            Ok(events) => events,
            Err(error) => {
                progress.finish();
                eprintln!("error: replay stopped: {error}");
                return exit::STOPPED;
            }
        };
        let total = events.len();
        let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
        let mut failed = 0;
        for (n, event) in events.iter().enumerate() {
            progress.step(format!("handling event {} of {total}", n + 1));
            let outcome = match parse_event(&event.body) {
                Err(error) => Err(format!("not readable: {error}")),
                Ok(parsed) => billing
                    .handle_event(&parsed)
                    .await
                    .map(|o| o.label().to_owned())
                    .map_err(|e| e.to_string()),
            };
            match outcome {
                Ok(label) => *outcomes.entry(label).or_default() += 1,
                Err(error) => {
                    failed += 1;
                    progress.say(format!("FAILED: {}  {error}", event.id));
                }
            }
        }
        progress.finish();
        let counts: Vec<String> = outcomes.iter().map(|(label, n)| format!("{label} {n}")).collect();
        println!(
            "{total} event(s) since {}: {}{}",
            since.format("%Y-%m-%dT%H:%M:%SZ"),
            if counts.is_empty() { "nothing to do".to_owned() } else { counts.join(", ") },
            if failed > 0 {
                format!(", failed {failed} (run again: replaying is safe)")
            } else {
                String::new()
            }
        );
        if failed == 0 { exit::OK } else { exit::FOUND }
    };
    progress.until_interrupted(work, "interrupted: run again to finish (replaying is safe)").await
}

/// Every handled event since `since`, oldest first.
async fn list_events(
    billing: &Billing,
    since: DateTime<Utc>,
    progress: &Progress,
) -> Result<Vec<ListedEvent>, crate::stripe::StripeError> {
    let mut events: Vec<ListedEvent> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page =
            billing.stripe().list_events(&HANDLED_EVENT_TYPES, since.timestamp(), after.as_deref()).await?;
        after = page.data.last().map(|event| event.id.clone());
        events.extend(page.data);
        progress.step(format!("listed {} events", events.len()));
        if !page.has_more || after.is_none() {
            break;
        }
    }
    // Stripe lists newest first; ties in `created` keep Stripe's order, reversed.
    events.reverse();
    events.sort_by_key(|event| event.created);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_date_or_a_time_within_the_thirty_days() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_since("2026-11-24", now).unwrap().to_rfc3339(), "2026-11-24T00:00:00+00:00");
        assert_eq!(
            parse_since("2026-11-24T08:30:00+01:00", now).unwrap().to_rfc3339(),
            "2026-11-24T07:30:00+00:00"
        );
        let old = parse_since("2026-10-01", now).unwrap_err();
        assert!(
            old.contains("Stripe keeps events for 30 days") && old.contains("reconcile --apply"),
            "{old}"
        );
        assert!(parse_since("2026-12-02", now).unwrap_err().contains("future"));
        assert!(parse_since("last tuesday", now).unwrap_err().contains("expected a date"));
    }
}
