//! Fault injection shared by both simulators: make chosen requests fail the way a real upstream
//! can (an error status, a slow or missing answer, a dropped connection), either before the
//! request changes anything or, with `after_effect`, after the change was applied.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::frontdoor::{Frontdoor, Severance};

/// One fault rule: the next `times` requests that match get `kind` instead of a normal answer.
#[derive(Debug, Clone)]
pub struct Fault {
    /// Only requests with this method match; `None` matches every method.
    pub method: Option<Method>,
    /// Only requests whose path contains this text match (`""` matches every path).
    pub path_contains: String,
    /// How many matching requests this rule hits before it is used up.
    pub times: usize,
    pub kind: FaultKind,
    /// `false`: the fault answers before the handler runs, so the request changes nothing.
    /// `true`: the handler runs and its change is kept, then the fault replaces (`Status`,
    /// `Close`) or delays (`Hang`) its answer: Stripe's "the outcome of a 500 is unknown".
    pub after_effect: bool,
}

impl Fault {
    /// A rule hitting the next request (any method) whose path contains `path_contains`, before
    /// it changes anything.
    pub fn new(path_contains: impl Into<String>, kind: FaultKind) -> Fault {
        Fault { method: None, path_contains: path_contains.into(), times: 1, kind, after_effect: false }
    }

    pub fn method(mut self, method: Method) -> Fault {
        self.method = Some(method);
        self
    }

    pub fn times(mut self, times: usize) -> Fault {
        self.times = times;
        self
    }

    pub fn after_effect(mut self) -> Fault {
        self.after_effect = true;
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.times > 0
            && self.method.as_ref().is_none_or(|wanted| wanted == method)
            && path.contains(&self.path_contains)
    }
}

/// How a faulted request is answered.
#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Answer this status and body.
    Status { status: u16, body: String, content_type: String },
    /// Wait this long, then answer normally. `Duration::MAX` never answers (until the simulator
    /// shuts down), which is how a client's timeout is tested.
    Hang(Duration),
    /// Drop the connection without sending any answer.
    Close,
}

impl FaultKind {
    /// A status with a JSON body, e.g. `FaultKind::json(500, r#"{"error": {...}}"#)`.
    pub fn json(status: u16, body: impl Into<String>) -> FaultKind {
        FaultKind::Status { status, body: body.into(), content_type: "application/json".to_owned() }
    }

    /// A status with an HTML body, as a proxy or load balancer in front of an API answers.
    pub fn html(status: u16, body: impl Into<String>) -> FaultKind {
        FaultKind::Status { status, body: body.into(), content_type: "text/html; charset=utf-8".to_owned() }
    }
}

/// The fault rules of one simulator, plus the optional random failures for soak tests.
#[derive(Default)]
pub(crate) struct FaultPlan {
    rules: Vec<Fault>,
    random: Option<RandomFailures>,
}

struct RandomFailures {
    rate: f64,
    kinds: Vec<FaultKind>,
    rng: StdRng,
}

impl FaultPlan {
    pub(crate) fn add(&mut self, fault: Fault) {
        self.rules.push(fault);
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
        self.random = None;
    }

    /// Fails `rate` (0.0 to 1.0) of all API requests with one of `kinds`, chosen at random; the
    /// seed makes a failing soak test repeatable. A rate of 0 or no kinds turns it off.
    pub(crate) fn set_random(&mut self, rate: f64, kinds: Vec<FaultKind>, seed: u64) {
        self.random = (rate > 0.0 && !kinds.is_empty()).then(|| RandomFailures {
            rate: rate.min(1.0),
            kinds,
            rng: StdRng::seed_from_u64(seed),
        });
    }

    /// The fault this request gets, if any: the first matching rule (used up by one hit), else
    /// perhaps a random failure. Random failures always strike before the effect.
    pub(crate) fn take_matching(&mut self, method: &Method, path: &str, is_api: bool) -> Option<Fault> {
        if let Some(index) = self.rules.iter().position(|rule| rule.matches(method, path)) {
            let rule = &mut self.rules[index];
            rule.times -= 1;
            let hit = rule.clone();
            if rule.times == 0 {
                self.rules.remove(index);
            }
            return Some(hit);
        }
        let random = self.random.as_mut().filter(|_| is_api)?;
        if !random.rng.random_bool(random.rate) {
            return None;
        }
        let kind = random.kinds[random.rng.random_range(0..random.kinds.len())].clone();
        Some(Fault { method: None, path_contains: String::new(), times: 1, kind, after_effect: false })
    }
}

/// Answers a faulted request (see [`Fault::after_effect`]).
pub(crate) async fn apply(
    fault: Fault,
    frontdoor: &Frontdoor,
    severance: &Severance,
    request: Request,
    next: Next,
) -> Response {
    match fault.kind {
        FaultKind::Status { status, body, content_type } => {
            if fault.after_effect {
                next.run(request).await;
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let content_type = HeaderValue::from_str(&content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        FaultKind::Hang(delay) => {
            if fault.after_effect {
                let answer = next.run(request).await;
                if wait_unless_stopping(delay, frontdoor).await { answer } else { shutting_down() }
            } else if wait_unless_stopping(delay, frontdoor).await {
                next.run(request).await
            } else {
                shutting_down()
            }
        }
        FaultKind::Close => {
            if fault.after_effect {
                next.run(request).await;
            }
            severance.sever();
            // Never reaches the client: writing it fails on the severed connection.
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Sleeps for `delay`; `false` when the simulator began shutting down first.
async fn wait_unless_stopping(delay: Duration, frontdoor: &Frontdoor) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = frontdoor.stopping() => false,
    }
}

fn shutting_down() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "simulator shutting down").into_response()
}
