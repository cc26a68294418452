//! Events: emitting them (an envelope around an object `render` made), signing them as Stripe
//! does, and delivering them to the webhook endpoint with retries.

use std::sync::Arc;

use axum::http::header;
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::render::pretty;
use super::state::{Shared, Store, new_id};
use super::{DeliveryAttempt, SimEvent};
use crate::frontdoor::{Frontdoor, lock};

impl Shared {
    /// Wraps `object` in an event envelope (with `data.previous_attributes` when given, as
    /// `*.updated` events have), keeps it, and queues it for delivery.
    pub(super) fn emit(
        &self,
        store: &mut Store,
        event_type: &str,
        subscription: Option<String>,
        created: i64,
        object: Value,
        previous_attributes: Option<Value>,
    ) -> SimEvent {
        let id = new_id("evt");
        let mut data = json!({"object": object});
        if let Some(previous) = previous_attributes {
            data["previous_attributes"] = previous;
        }
        let envelope = json!({
            "api_version": self.config.generation.api_version(),
            "created": created,
            "data": data,
            "id": id,
            "livemode": false,
            "object": "event",
            "pending_webhooks": u8::from(self.config.webhook.is_some()),
            "request": {"id": null, "idempotency_key": null},
            "type": event_type,
        });
        let event = SimEvent { id, event_type: event_type.to_owned(), subscription, body: pretty(&envelope) };
        // A lost event is kept and listed like any other but never delivered: no attempt is
        // made or logged, and it never counts as pending (`resend_event` still delivers it).
        let lost = if store.lose_next > 0 {
            store.lose_next -= 1;
            true
        } else {
            event.subscription.as_ref().is_some_and(|s| store.lose_of.contains(s))
        };
        store.add_event(event.clone(), created);
        if lost {
            store.lost.push(event.id.clone());
        } else if self.config.webhook.is_some() {
            self.enqueue(event.clone());
        }
        event
    }

    pub(super) fn enqueue(&self, event: SimEvent) {
        self.pending.send_modify(|count| *count += 1);
        if self.queue.send(event).is_err() {
            // The dispatcher has stopped (shutdown): nothing will be delivered.
            self.pending.send_modify(|count| *count = count.saturating_sub(1));
        }
    }
}

/// `Stripe-Signature` for `body` signed at `t` with one secret: `t=<t>,v1=<hex>`. The key is the
/// secret string exactly as given, `whsec_` prefix included.
pub fn sign_stripe_payload(body: &[u8], secret: &str, t: i64) -> String {
    format!("t={t},v1={}", v1_signature(body, secret, t))
}

fn v1_signature(body: &[u8], secret: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The header with one `v1` per secret.
fn signature_header(body: &[u8], secrets: &[String], t: i64) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&v1_signature(body, secret, t));
    }
    header
}

/// Starts one delivery task per queued event, until shutdown.
pub(super) async fn dispatch(
    shared: Arc<Shared>,
    frontdoor: Arc<Frontdoor>,
    http: reqwest::Client,
    mut queued: mpsc::UnboundedReceiver<SimEvent>,
) {
    loop {
        tokio::select! {
            event = queued.recv() => match event {
                Some(event) => {
                    tokio::spawn(deliver(shared.clone(), frontdoor.clone(), http.clone(), event));
                }
                None => break,
            },
            _ = frontdoor.stopping() => break,
        }
    }
}

/// Delivers one event: POSTs it, signed afresh each attempt, until a 2xx or the retries run out.
async fn deliver(shared: Arc<Shared>, frontdoor: Arc<Frontdoor>, http: reqwest::Client, event: SimEvent) {
    let Some(target) = &shared.config.webhook else {
        return;
    };
    let mut waits = shared.config.retry_delays.iter();
    let mut attempt = 0;
    loop {
        attempt += 1;
        // Signed with the real time: the receiver checks `t` against its own clock.
        let signature = signature_header(&event.body, &target.secrets, Utc::now().timestamp());
        let sent = http
            .post(target.url.clone())
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .header(header::USER_AGENT, "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
            .header(header::ACCEPT, "*/*; q=0.5, application/xml")
            .header(header::CACHE_CONTROL, "no-cache")
            .header("Stripe-Signature", signature)
            .body(event.body.clone())
            .send()
            .await;
        let (status, error) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the answer so the connection can be reused; its content does not matter.
                let _ = response.bytes().await;
                (Some(status), None)
            }
            Err(error) => (None, Some(error_chain(&error.without_url()))),
        };
        let result = DeliveryAttempt { event_id: event.id.clone(), attempt, status, error };
        let succeeded = result.succeeded();
        tracing::debug!(event = %event.id, attempt, ?status, "stripe simulator: webhook delivery");
        {
            let mut store = lock(&shared.store);
            store.deliveries.push(result);
            if succeeded {
                store.delivered.insert(event.id.clone());
            }
        }
        if succeeded {
            break;
        }
        let Some(wait) = waits.next() else {
            break;
        };
        let stopped = tokio::select! {
            _ = tokio::time::sleep(*wait) => false,
            _ = frontdoor.stopping() => true,
        };
        if stopped {
            break;
        }
    }
    shared.pending.send_modify(|count| *count = count.saturating_sub(1));
}

/// An error and its sources, `outer: inner: innermost`, for the delivery log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let chain = std::iter::successors(Some(error), |error| error.source());
    chain.map(ToString::to_string).collect::<Vec<_>>().join(": ")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use chrono::Utc;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::Sha256;
    use url::Url;

    use super::sign_stripe_payload;
    use crate::frontdoor::lock;
    use crate::stripe::test_support::started;
    use crate::stripe::{DEFAULT_PRICE_ID, DeliveryAttempt, StripeSimConfig, WebhookTarget};

    const SECRET: &str = "whsec_test_secret_abc123";
    const ROLLED: &str = "whsec_rolled_secret_def456";

    #[test]
    fn signatures_match_the_fixture_recipe() {
        let body = br#"{"id": "evt_test"}"#;
        let header = sign_stripe_payload(body, SECRET, 1_767_000_000);
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(b"1767000000.{\"id\": \"evt_test\"}");
        assert_eq!(header, format!("t=1767000000,v1={}", hex::encode(mac.finalize().into_bytes())));
    }

    /// A webhook endpoint that fails the first `failures` deliveries of each event with a 500.
    async fn endpoint(failures: usize) -> (Url, Arc<Mutex<Vec<(HeaderMap, Bytes)>>>) {
        let received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>> = Arc::default();
        let log = received.clone();
        let app = Router::new().route(
            "/webhooks",
            post(move |headers: HeaderMap, body: Bytes| async move {
                let mut log = lock(&log);
                let id = |body: &Bytes| {
                    serde_json::from_slice::<serde_json::Value>(body).ok().map(|v| v["id"].clone())
                };
                let this = id(&body);
                log.push((headers, body));
                let seen = log.iter().filter(|(_, body)| id(body) == this).count();
                if seen <= failures { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url =
            Url::parse(&format!("http://{}/webhooks", listener.local_addr().expect("addr"))).expect("url");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, received)
    }

    #[tokio::test]
    async fn delivers_signed_webhooks_and_retries_failures() {
        let (url, received) = endpoint(2).await;
        let config = StripeSimConfig {
            webhook: Some(WebhookTarget { url, secrets: vec![SECRET.to_owned(), ROLLED.to_owned()] }),
            retry_delays: vec![
                Duration::from_millis(20),
                Duration::from_millis(40),
                Duration::from_millis(80),
            ],
            ..StripeSimConfig::default()
        };
        let sim = started(config).await;
        let id = sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
        assert!(sim.wait_for_deliveries_idle(Duration::from_secs(5)).await);

        let event = sim.events().pop().expect("event");
        assert_eq!(sim.events().len(), 2, "customer.subscription.created, invoice.paid");
        let attempts: Vec<(usize, Option<u16>)> = sim
            .deliveries()
            .iter()
            .filter(|d| d.event_id == event.id)
            .map(|d| (d.attempt, d.status))
            .collect();
        assert_eq!(attempts, vec![(1, Some(500)), (2, Some(500)), (3, Some(200))]);
        let received = lock(&received).clone();
        assert_eq!(received.len(), 6);
        let received: Vec<_> =
            received.into_iter().filter(|(_, body)| body.as_ref() == event.body.as_slice()).collect();
        assert_eq!(received.len(), 3);
        for (headers, body) in &received {
            assert_eq!(body.as_ref(), event.body.as_slice(), "the exact bytes");
            assert_eq!(headers["content-type"], "application/json; charset=utf-8");
            assert_eq!(headers["user-agent"], "Stripe/1.0 (+https://stripe.com/docs/webhooks)");
            let signature = headers["stripe-signature"].to_str().expect("text");
            let items: Vec<(&str, &str)> =
                signature.split(',').filter_map(|item| item.split_once('=')).collect();
            let t: i64 = items.iter().find(|(k, _)| *k == "t").expect("t").1.parse().expect("number");
            assert!((Utc::now().timestamp() - t).abs() < 5, "signed with the real time");
            let v1: Vec<&str> = items.iter().filter(|(k, _)| *k == "v1").map(|(_, v)| *v).collect();
            assert_eq!(v1.len(), 2, "one v1 per secret");
            for (secret, given) in [SECRET, ROLLED].into_iter().zip(v1) {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("key");
                mac.update(format!("{t}.").as_bytes());
                mac.update(body);
                mac.verify_slice(&hex::decode(given).expect("hex")).expect("signature verifies");
            }
        }

        sim.renew(&id).expect("renewed");
        sim.resend_event(&event.id).expect("resent");
        assert!(sim.wait_for_deliveries_idle(Duration::from_secs(5)).await);
        let resent: Vec<DeliveryAttempt> =
            sim.deliveries().into_iter().filter(|d| d.event_id == event.id).skip(3).collect();
        assert_eq!(resent.len(), 1, "a fresh schedule, delivered at once");
        assert!(resent[0].succeeded() && resent[0].attempt == 1);
    }

    #[tokio::test]
    async fn gives_up_after_the_last_retry() {
        let (url, received) = endpoint(usize::MAX).await;
        let config = StripeSimConfig {
            webhook: Some(WebhookTarget { url, secrets: vec![SECRET.to_owned()] }),
            retry_delays: vec![Duration::from_millis(10)],
            ..StripeSimConfig::default()
        };
        let sim = started(config).await;
        sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
        assert!(sim.wait_for_deliveries_idle(Duration::from_secs(5)).await);
        assert_eq!(lock(&received).len(), 4, "two attempts for each of the two events");
        assert!(sim.deliveries().iter().all(|d| d.status == Some(500)));
    }

    #[tokio::test]
    async fn unreachable_endpoints_are_logged_as_errors() {
        let url = Url::parse("http://127.0.0.1:9/webhooks").expect("url");
        let config = StripeSimConfig {
            webhook: Some(WebhookTarget { url, secrets: vec![SECRET.to_owned()] }),
            retry_delays: vec![],
            ..StripeSimConfig::default()
        };
        let sim = started(config).await;
        sim.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
        assert!(sim.wait_for_deliveries_idle(Duration::from_secs(5)).await);
        let attempt = sim.deliveries().pop().expect("an attempt");
        assert_eq!(attempt.status, None);
        assert!(attempt.error.is_some());
    }
}
