//! The checkout pages: a payment link's page (which opens a Checkout Session), and its Pay
//! button, which completes that session (a customer, a subscription, its first invoice paid,
//! `checkout.session.completed`) and sends the buyer back to the store.

use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use url::Url;

use super::state::{DEFAULT_BUYER_EMAIL, Shared};
use super::{CheckoutPayment, SimCheckoutSession, StripeSimError};
use crate::frontdoor::lock;

/// The placeholder Stripe fills in a redirect URL with the session's id.
const PLACEHOLDER: &str = "{CHECKOUT_SESSION_ID}";

#[derive(Template, WebTemplate)]
#[template(path = "sandbox_checkout.html")]
struct CheckoutPage {
    link_id: String,
    session_id: String,
    amount: String,
    interval: String,
    quantity: u32,
}

#[derive(Template, WebTemplate)]
#[template(path = "sandbox_message.html")]
pub(super) struct MessagePage {
    pub(super) title: String,
    pub(super) message: String,
}

/// `url` with `{CHECKOUT_SESSION_ID}` replaced by the id, also when its braces are
/// percent-encoded (`%7BCHECKOUT_SESSION_ID%7D`, either case) [unverified that Stripe fills the
/// encoded spelling; the simulator does, since form encoders send it].
pub(super) fn fill_session_id(url: &str, session_id: &str) -> String {
    let mut filled = url.replace(PLACEHOLDER, session_id);
    for open in ["%7B", "%7b"] {
        for close in ["%7D", "%7d"] {
            filled = filled.replace(&format!("{open}CHECKOUT_SESSION_ID{close}"), session_id);
        }
    }
    filled
}

/// `GET /checkout/{plink}`: opens a Checkout Session and shows its page.
pub(super) async fn page(State(shared): State<Arc<Shared>>, Path(link_id): Path<String>) -> Response {
    match shared.open_checkout(&link_id) {
        Ok(session) => session_page_of(&shared, &session),
        Err(_) => unknown_link_page(),
    }
}

/// `GET /checkout/sessions/{cs}`: the page of an open session (its `url`).
pub(super) async fn session_page(State(shared): State<Arc<Shared>>, Path(session): Path<String>) -> Response {
    session_page_of(&shared, &session)
}

fn session_page_of(shared: &Shared, session_id: &str) -> Response {
    let session = match shared.open_session(session_id) {
        Ok(session) => session,
        Err(error) => return refusal(error),
    };
    let Some(price) = shared.price(&session.price_id) else {
        return unknown_link_page();
    };
    CheckoutPage {
        link_id: session.payment_link,
        session_id: session.id,
        amount: price.amount_text(),
        interval: price.interval_text(),
        quantity: session.quantity,
    }
    .into_response()
}

/// The Pay button: completes the page's session (or, for a bare POST to the link, a new one),
/// then sends the buyer to the link's redirect URL, or thanks them.
pub(super) async fn pay(
    State(shared): State<Arc<Shared>>,
    Path(link_id): Path<String>,
    body: Bytes,
) -> Response {
    let field = |field: &str| {
        url::form_urlencoded::parse(&body)
            .find(|(name, _)| name == field)
            .map(|(_, value)| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    let session_id = match field("session") {
        Some(session) => session,
        None => match shared.open_checkout(&link_id) {
            Ok(session) => session,
            Err(_) => return unknown_link_page(),
        },
    };
    let belongs =
        lock(&shared.store).checkout_sessions.iter().any(|s| s.id == session_id && s.payment_link == link_id);
    if !belongs {
        return refusal(StripeSimError::UnknownCheckoutSession(session_id));
    }
    // The page requires an email; a bare POST (a script, an old test) gets the default.
    let payment = CheckoutPayment {
        email: field("email").unwrap_or_else(|| DEFAULT_BUYER_EMAIL.to_owned()),
        name: field("name"),
        processing: false,
    };
    if let Err(error) = shared.complete_checkout(&session_id, payment) {
        return refusal(error);
    }
    let session = lock(&shared.store).checkout_sessions.iter().find(|s| s.id == session_id).cloned();
    let Some(session) = session else {
        return unknown_link_page();
    };
    let fallback = || shared.config.after_payment_url.as_ref().map(Url::to_string);
    match session.success_url.clone().or_else(fallback) {
        Some(url) => Redirect::to(&fill_session_id(&url, &session.id)).into_response(),
        None => thank_you_page(&session),
    }
}

fn thank_you_page(session: &SimCheckoutSession) -> Response {
    let subscription = session.subscription.as_deref().unwrap_or_default();
    MessagePage {
        title: "Thank you".to_owned(),
        message: format!(
            "Subscription {subscription} is created; its first invoice is paid (checkout session {}).",
            session.id
        ),
    }
    .into_response()
}

/// A page for a session that cannot be paid: 404 for an unknown one, 410 for an expired one,
/// 400 otherwise.
fn refusal(error: StripeSimError) -> Response {
    let status = match &error {
        StripeSimError::UnknownCheckoutSession(_) | StripeSimError::UnknownPaymentLink(_) => {
            StatusCode::NOT_FOUND
        }
        StripeSimError::NotAllowed(message) if message.ends_with("expired") => StatusCode::GONE,
        _ => StatusCode::BAD_REQUEST,
    };
    let page = MessagePage { title: "Cannot pay this checkout".to_owned(), message: error.to_string() };
    (status, page).into_response()
}

fn unknown_link_page() -> Response {
    let page = MessagePage {
        title: "No such payment link".to_owned(),
        message: "This payment link does not exist in the simulator.".to_owned(),
    };
    (StatusCode::NOT_FOUND, page).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use url::Url;

    use crate::stripe::test_support::{at, http, post_form, started};
    use crate::stripe::{BASIL_API_VERSION, DEFAULT_PRICE_ID, StripeSimConfig, SubscriptionStatus};

    #[tokio::test]
    async fn checkout_pays_and_emits_a_basil_invoice_paid() {
        let home = Url::parse("http://127.0.0.1:9/").expect("url");
        let sim =
            started(StripeSimConfig { after_payment_url: Some(home.clone()), ..StripeSimConfig::default() })
                .await;
        let body = format!("line_items[0][price]={DEFAULT_PRICE_ID}&line_items[0][quantity]=1");
        let (_, _, link) = post_form(&sim, "v1/payment_links", &body, None).await;
        let paid = http()
            .post(link["url"].as_str().expect("url"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("email=a%40example.com")
            .send()
            .await;
        let paid = paid.expect("answer");
        assert_eq!(paid.status(), 303);
        assert_eq!(paid.headers()["location"], home.as_str());

        let subscription = sim.subscriptions().pop().expect("a subscription");
        assert_eq!(subscription.status, SubscriptionStatus::Active);
        let events = sim.events();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["customer.subscription.created", "invoice.paid", "checkout.session.completed"]);
        assert_eq!(events[0].object()["status"], "active");
        let event = events[1].json();
        assert_eq!(events[1].subscription.as_ref(), Some(&subscription.id));
        assert!(String::from_utf8_lossy(&events[1].body).starts_with("{\n  \""), "pretty, two-space indent");
        assert_eq!(at(&event, "/object"), "event");
        assert_eq!(at(&event, "/type"), "invoice.paid");
        assert_eq!(at(&event, "/api_version"), BASIL_API_VERSION);
        assert_eq!(at(&event, "/livemode"), false);
        assert!(at(&event, "/id").as_str().is_some_and(|id| id.starts_with("evt_")));
        let invoice = at(&event, "/data/object");
        assert_eq!(at(&invoice, "/billing_reason"), "subscription_create");
        assert_eq!(at(&invoice, "/status"), "paid");
        assert_eq!(at(&invoice, "/customer_email"), "a@example.com");
        assert_eq!(at(&invoice, "/parent/type"), "subscription_details");
        assert_eq!(at(&invoice, "/parent/subscription_details/subscription"), subscription.id.as_str());
        assert_eq!(
            at(&invoice, "/parent/subscription_details/metadata"),
            json!({}),
            "the first snapshot is empty"
        );
        assert!(invoice.get("subscription").is_none() && invoice.get("subscription_details").is_none());
        assert!(invoice.get("paid").is_none());
        assert_eq!(at(&invoice, "/lines/data/0/parent/type"), "subscription_item_details");
        assert_eq!(at(&invoice, "/lines/data/0/parent/subscription_item_details/proration"), false);
        assert_eq!(at(&invoice, "/lines/data/0/pricing/price_details/price"), DEFAULT_PRICE_ID);
        assert!(invoice.pointer("/lines/data/0/price").is_none());
        assert_eq!(at(&invoice, "/lines/data/0/period/start"), subscription.current_period_start);
        assert_eq!(at(&invoice, "/lines/data/0/period/end"), subscription.current_period_end);
        assert_eq!(at(&invoice, "/period_end"), subscription.current_period_start);
    }

    #[tokio::test]
    async fn without_a_redirect_the_buyer_is_thanked_and_unknown_links_are_404() {
        let sim = started(StripeSimConfig::default()).await;
        let body = format!("line_items[0][price]={DEFAULT_PRICE_ID}&line_items[0][quantity]=2");
        let (_, _, link) = post_form(&sim, "v1/payment_links", &body, None).await;
        let url = link["url"].as_str().expect("url");
        let page = http().get(url).send().await.expect("page").text().await.expect("html");
        assert!(page.contains("2 × License") && page.contains("USD 5.00 every month"), "{page}");
        let paid = http().post(url).send().await.expect("answer");
        assert_eq!(paid.status(), 200);
        let subscription = sim.subscriptions().pop().expect("a subscription");
        let page = paid.text().await.expect("html");
        assert!(page.contains("Thank you") && page.contains(&subscription.id), "{page}");

        let missing = sim.base_url().join("checkout/plink_nope").expect("url");
        for answer in [http().get(missing.clone()).send().await, http().post(missing).send().await] {
            let answer = answer.expect("answer");
            assert_eq!(answer.status(), 404);
            assert!(answer.text().await.expect("html").contains("No such payment link"));
        }
        assert_eq!(sim.subscriptions().len(), 1);
    }
}
