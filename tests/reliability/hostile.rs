//! Hostile input over HTTP: forged, replayed, truncated, oversized and malformed deliveries, wrong
//! methods and content types, and clients that send a byte a second. Each is refused with a 4xx
//! (or, for a client too slow to send its headers, a closed connection), nothing changes upstream
//! or in the cache, the server keeps serving others, and its memory stays bounded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::server_process::ServerProcess;
use sim::stripe::DEFAULT_PRICE_ID;
use stripe_licensespring::server::HEADER_READ_TIMEOUT;
use stripe_licensespring::web::{BODY_READ_TIMEOUT, MAX_BODIES_IN_MEMORY, MAX_BODY_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A guard, not a benchmark: the server idles at a few MiB.
const MAX_PEAK_RSS_KIB: u64 = 64 * 1024;
/// Slack on top of the server's own timeouts before the test calls it unbounded.
const SLACK: Duration = Duration::from_secs(5);

fn signed(body: &[u8], secret: &str, t: i64) -> String {
    sim::sign_stripe_payload(body, secret, t)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An event envelope of `event_type` around `object` (raw JSON text, so it can hold anything).
fn event_with(event_type: &str, object: &str) -> Vec<u8> {
    let envelope = format!(r#"{{"id":"evt_hostile","type":"{event_type}","created":{}"#, now());
    format!(r#"{envelope},"data":{{"object":{object}}}}}"#).into_bytes()
}

fn invoice_paid_with(object: &str) -> Vec<u8> {
    event_with("invoice.paid", object)
}

struct Case {
    what: &'static str,
    method: reqwest::Method,
    content_type: &'static str,
    body: Vec<u8>,
    signature: Option<String>,
    expected: u16,
}

impl Case {
    fn post(what: &'static str, body: Vec<u8>, signature: Option<String>, expected: u16) -> Case {
        Case {
            what,
            method: reqwest::Method::POST,
            content_type: "application/json",
            body,
            signature,
            expected,
        }
    }

    /// Authentic (signed with the real secret) but not an event the server can read.
    fn authentic(what: &'static str, body: Vec<u8>) -> Case {
        let signature = signed(&body, WEBHOOK_SECRET, now());
        Case::post(what, body, Some(signature), 400)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_and_change_nothing() {
    let upstreams = upstreams().await;
    let home = ServerHome::new();
    let server = home.spawn(&upstreams, &[]);
    let started_at = server.peak_rss_kib().expect("peak RSS readable");
    let http = http_client();

    // A real event the forgeries and replays try to get handled.
    upstreams.stripe.create_subscription(DEFAULT_PRICE_ID).expect("subscribed");
    let real = upstreams.stripe.events().pop().expect("its invoice.paid").body;
    let cache_before = std::fs::read(home.cache_path()).expect("cache file");
    let calls_before = (upstreams.stripe.request_count(), upstreams.licensespring.request_count());

    let stale = now() - 301;
    let mut truncated = real.clone();
    truncated.truncate(real.len() / 2);
    let mut not_utf8 = real.clone();
    not_utf8[real.len() / 3] = 0xFF;
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000)).into_bytes();
    let mut over_limit = b"{}".to_vec();
    over_limit.resize(MAX_BODY_BYTES + 1, b' ');
    let cases = vec![
        Case::post(
            "forged with another secret",
            real.clone(),
            Some(signed(&real, "whsec_guess", now())),
            400,
        ),
        Case::post("no signature", real.clone(), None, 400),
        Case::post("garbage signature", real.clone(), Some("t=1,v1=zz".to_owned()), 400),
        Case::post(
            "replayed after the tolerance",
            real.clone(),
            Some(signed(&real, WEBHOOK_SECRET, stale)),
            400,
        ),
        Case::post(
            "truncated, signed whole",
            truncated.clone(),
            Some(signed(&real, WEBHOOK_SECRET, now())),
            400,
        ),
        Case::authentic("truncated, signed as sent", truncated),
        Case::authentic("not UTF-8", not_utf8),
        Case::authentic("not JSON", b"<xml>invoice.paid</xml>".to_vec()),
        Case::authentic("empty", Vec::new()),
        Case::authentic("deeply nested", deep.clone()),
        Case::authentic(
            "deeply nested object",
            // Nested where the parser must read through it: a subscription invoice's `lines`.
            invoice_paid_with(&format!(
                "{{\"subscription\":\"sub_h\",\"lines\":{}1{}}}",
                "{\"a\":".repeat(50_000),
                "}".repeat(50_000)
            )),
        ),
        Case::authentic(
            "huge created",
            br#"{"id":"evt_h","type":"invoice.paid","created":1e999,"data":{}}"#.to_vec(),
        ),
        Case::authentic(
            "created past i64",
            br#"{"id":"evt_h","type":"invoice.paid","created":99999999999999999999999,"data":{}}"#.to_vec(),
        ),
        Case::authentic(
            "period end out of range",
            invoice_paid_with(
                r#"{"id":"in_h","billing_reason":"subscription_cycle","subscription":"sub_h",
                    "lines":{"data":[{"type":"subscription","period":{"end":9223372036854775807}}]}}"#,
            ),
        ),
        Case::authentic(
            "interval count past u32",
            event_with(
                "customer.subscription.deleted",
                r#"{"id":"sub_h","status":"canceled",
                    "items":{"data":[{"price":{"recurring":{"interval":"month","interval_count":4294967296}}}]}}"#,
            ),
        ),
        Case::authentic(
            "ids of the wrong type",
            invoice_paid_with(r#"{"id":["in_h"],"subscription":{"id":7}}"#),
        ),
        Case::post(
            "one byte over the limit",
            over_limit.clone(),
            Some(signed(&over_limit, WEBHOOK_SECRET, now())),
            413,
        ),
        Case { method: reqwest::Method::GET, ..Case::post("GET", Vec::new(), None, 405) },
        Case {
            method: reqwest::Method::PUT,
            ..Case::post("PUT", real.clone(), Some(signed(&real, WEBHOOK_SECRET, now())), 405)
        },
        Case { method: reqwest::Method::DELETE, ..Case::post("DELETE", Vec::new(), None, 405) },
        Case {
            content_type: "text/plain",
            ..Case::post("text/plain, forged", real.clone(), Some(signed(&real, "whsec_x", now())), 400)
        },
        Case {
            content_type: "multipart/form-data; boundary=x",
            ..Case::post(
                "multipart",
                b"--x\r\ncontent-disposition: form-data; name=a\r\n\r\n1\r\n--x--".to_vec(),
                None,
                400,
            )
        },
        Case {
            content_type: "application/x-www-form-urlencoded",
            ..Case::post("form", b"type=invoice.paid&id=evt_1".to_vec(), Some("t=1,v1=00".to_owned()), 400)
        },
    ];
    for case in &cases {
        let mut request = http
            .request(case.method.clone(), server.url("/webhooks"))
            .header("content-type", case.content_type);
        if let Some(signature) = &case.signature {
            request = request.header("stripe-signature", signature);
        }
        let response =
            request.body(case.body.clone()).send().await.unwrap_or_else(|e| panic!("{}: {e}", case.what));
        assert_eq!(response.status().as_u16(), case.expected, "{}", case.what);
    }

    // (what, request, status, whether the server may instead cut the connection)
    let raw_cases: [(&str, Vec<u8>, u16, bool); 4] = [
        // Just over the limit: what is past it is already sent when the server answers.
        ("chunked, over the limit", chunked_request(&vec![b' '; MAX_BODY_BYTES + 1024]), 413, false),
        // Far over: the server reads 1 MiB, answers 413 and closes while the client still sends,
        // which may reset the connection before the client reads the answer.
        ("chunked, eight MiB", chunked_request(&vec![b' '; 8 * MAX_BODY_BYTES]), 413, true),
        (
            "signature header not ASCII",
            [request_head("content-length: 2\r\nstripe-signature: t=1,v1=\u{fffd}"), b"{}".to_vec()].concat(),
            400,
            false,
        ),
        ("a 1 MiB header", request_head(&format!("x-pad: {}", "a".repeat(MAX_BODY_BYTES))), 431, false),
    ];
    for (what, request, expected, may_cut) in raw_cases {
        let (answer, _) = raw_exchange(server.address, request, Duration::ZERO).await;
        if !(may_cut && answer.is_empty()) {
            assert_eq!(status_of(&answer), Some(expected), "{what}: {:?}", answer.lines().next());
        }
    }

    // A burst of large refused bodies at once, eight times as many as the server holds in memory:
    // memory must not grow with them.
    let burst: Vec<_> = (0..8 * MAX_BODIES_IN_MEMORY)
        .map(|i| {
            let (http, url) = (http.clone(), server.url("/webhooks"));
            let body = if i % 2 == 0 { deep.clone() } else { over_limit.clone() };
            tokio::spawn(async move {
                let signature = signed(&body, WEBHOOK_SECRET, now());
                http.post(url)
                    .header("stripe-signature", signature)
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    for request in burst {
        let status = request.await.expect("task").expect("answered");
        assert!(status == 400 || status == 413, "{status}");
    }

    assert_eq!(
        (upstreams.stripe.request_count(), upstreams.licensespring.request_count()),
        calls_before,
        "no refused request reached an upstream"
    );
    assert_eq!(std::fs::read(home.cache_path()).expect("cache file"), cache_before, "the cache is unchanged");
    assert!(upstreams.licensespring.licenses().is_empty(), "no license from a forgery or replay");

    // Still serving: the real event, properly delivered, is handled.
    let event = upstreams.stripe.events().pop().expect("event");
    assert_eq!(deliver(&http, &server.url(""), &event).await.expect("answered"), 200);
    let peak = assert_memory_bounded(&server);
    eprintln!(
        "hostile input: {} HTTP cases + 4 raw, a burst of {} large bodies; peak RSS {started_at} KiB \
         after start, {peak} KiB after all",
        cases.len(),
        8 * MAX_BODIES_IN_MEMORY
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sending_a_byte_a_second_are_cut_off_while_others_are_served() {
    let upstreams = upstreams().await;
    let home = ServerHome::new();
    let server = home.spawn(&upstreams, &[]);
    let address = server.address;
    // The start reads the configured prices; nothing after that may call Stripe.
    let stripe_calls_at_start = upstreams.stripe.request_count();

    // Headers a byte a second: hyper's header read timeout closes the connection.
    let slow_headers: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(raw_exchange(
                address,
                b"POST /webhooks HTTP/1.1\r\nhost: x\r\n".to_vec(),
                Duration::from_secs(1),
            ))
        })
        .collect();
    // Full headers, then the body a byte a second: the webhook's body timeout answers 408.
    let body_head = b"POST /webhooks HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                      stripe-signature: t=1,v1=00\r\ncontent-length: 1000\r\n\r\n";
    let slow_bodies: Vec<_> = (0..20)
        .map(|_| {
            let mut request = body_head.to_vec();
            request.extend_from_slice(&[b' '; 1000]);
            tokio::spawn(raw_exchange_after(address, request, body_head.len(), Duration::from_secs(1)))
        })
        .collect();

    // Meanwhile everybody else is served promptly: pages, and genuine webhooks.
    let http = http_client();
    let genuine = serde_json::to_vec(&serde_json::json!({"id": "evt_1Genuine", "object": "event",
        "type": "customer.subscription.trial_will_end", "created": now(), "data": {"object": {"id": "sub_1"}}}))
    .expect("JSON");
    let watch_until = Instant::now() + HEADER_READ_TIMEOUT.max(BODY_READ_TIMEOUT);
    let mut slowest = Duration::ZERO;
    while Instant::now() < watch_until {
        let asked = Instant::now();
        let health = http.get(server.url("/healthz")).send().await.expect("served during the slow clients");
        assert_eq!(health.status(), 200);
        let webhook = http
            .post(server.url("/webhooks"))
            .header("stripe-signature", signed(&genuine, WEBHOOK_SECRET, now()))
            .body(genuine.clone())
            .send()
            .await
            .expect("a genuine webhook is answered during the slow clients");
        assert_eq!(webhook.status(), 200);
        slowest = slowest.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(slowest < Duration::from_secs(2), "health checks and webhooks took up to {slowest:?}");

    let mut header_cutoffs = Vec::new();
    for client in slow_headers {
        let (answer, elapsed) = client.await.expect("slow client");
        assert!(elapsed < HEADER_READ_TIMEOUT + SLACK, "a slow header sender was held {elapsed:?}");
        assert!(answer.is_empty() || status_of(&answer) == Some(408), "after {elapsed:?}: {answer:?}");
        header_cutoffs.push(elapsed);
    }
    let mut body_cutoffs = Vec::new();
    for client in slow_bodies {
        let (answer, elapsed) = client.await.expect("slow client");
        assert!(elapsed < BODY_READ_TIMEOUT + SLACK, "a slow body sender was held {elapsed:?}");
        assert_eq!(status_of(&answer), Some(408), "{answer:?}");
        body_cutoffs.push(elapsed);
    }
    assert!(upstreams.licensespring.licenses().is_empty());
    assert_eq!(upstreams.stripe.request_count(), stripe_calls_at_start, "no Stripe call after the start");
    let peak = assert_memory_bounded(&server);
    eprintln!(
        "slow clients: 20 header and 20 body tricklers cut off after at most {:.1} s and {:.1} s (408); \
         health checks and genuine webhooks meanwhile at most {} ms; peak RSS {peak} KiB",
        header_cutoffs.iter().max().expect("some").as_secs_f64(),
        body_cutoffs.iter().max().expect("some").as_secs_f64(),
        slowest.as_millis(),
    );
}

fn assert_memory_bounded(server: &ServerProcess) -> u64 {
    let peak = server.peak_rss_kib().expect("peak RSS readable");
    assert!(peak < MAX_PEAK_RSS_KIB, "peak RSS {peak} KiB");
    peak
}

fn status_of(answer: &str) -> Option<u16> {
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// A `POST /webhooks` head with these extra header lines, asking the server to close afterwards.
fn request_head(headers: &str) -> Vec<u8> {
    format!("POST /webhooks HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{headers}\r\n\r\n").into_bytes()
}

fn chunked_request(body: &[u8]) -> Vec<u8> {
    let mut request = request_head("transfer-encoding: chunked");
    for chunk in body.chunks(64 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

/// Sends `request` over a fresh connection, `pace` between bytes (all at once when zero), while
/// reading the answer until the server closes; the answer and how long until the close.
async fn raw_exchange(address: SocketAddr, request: Vec<u8>, pace: Duration) -> (String, Duration) {
    raw_exchange_after(address, request, 0, pace).await
}

/// As [`raw_exchange`], the first `at_once` bytes sent at once and the rest at `pace`.
async fn raw_exchange_after(
    address: SocketAddr,
    request: Vec<u8>,
    at_once: usize,
    pace: Duration,
) -> (String, Duration) {
    let started = Instant::now();
    let (mut reader, mut writer) = TcpStream::connect(address).await.expect("connects").into_split();
    let sender = tokio::spawn(async move {
        let (head, rest) = request.split_at(if pace.is_zero() { request.len() } else { at_once });
        // The server may answer and close before everything is sent: a failed write ends it.
        if writer.write_all(head).await.is_err() {
            return;
        }
        for byte in rest {
            tokio::time::sleep(pace).await;
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
        // Holds the connection open until the answer is read: a half-close would make the server
        // drop the request unanswered.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    // Bounded, so a server that never closes fails the test rather than hanging it.
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buffer = [0u8; 8192];
        while let Ok(n @ 1..) = reader.read(&mut buffer).await {
            answer.extend_from_slice(&buffer[..n]);
        }
    });
    read.await.expect("the server closes the connection");
    sender.abort();
    (String::from_utf8_lossy(&answer).into_owned(), started.elapsed())
}
