//! What the two upstream clients ([`crate::stripe`], [`crate::licensespring`]) share: one HTTP
//! client setup, one way to send a request (timed and counted in [`crate::metrics`]), URLs under a
//! configurable base, and the wording of transport failures and of answers that are not what was
//! expected.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use url::Url;

use crate::metrics;
use crate::model::error_chain;

/// The one HTTP client setup every upstream client uses: bounded connect and total time, no
/// redirects (an upstream redirect is an error to see, not to follow with a changed method).
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .expect("the TLS backend is compiled in")
}

/// A whole upstream answer: its status, headers and body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Sends `request` and reads its whole answer: the one place every upstream call goes through, so
/// each is counted, by `upstream` (`stripe`, `licensespring`), `operation` (a fixed name, never an
/// id) and status (the HTTP status, `timeout` or `error`), with the time it took.
pub(crate) async fn exchange(
    upstream: &'static str,
    operation: &'static str,
    request: RequestBuilder,
) -> Result<Answer, reqwest::Error> {
    let started = Instant::now();
    let answer: Result<Answer, reqwest::Error> = async {
        let response = request.send().await?;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.bytes().await?.to_vec();
        Ok(Answer { status, headers, body })
    }
    .await;
    let status = match &answer {
        Ok(answer) => answer.status.as_str(),
        Err(error) if error.is_timeout() => "timeout",
        Err(_) => "error",
    };
    metrics::upstream_call(upstream, operation, status, started.elapsed());
    answer
}

/// `path` under `base`, keeping any path the base has (`http://host/stripe` + `/v1/x`). The
/// callers build `path` from fixed segments and ids checked to be one segment each.
pub(crate) fn url_under(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let base_path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base_path}{path}"));
    url
}

/// Why no answer came back.
pub(crate) enum TransportFailure {
    /// The call's time ran out.
    Timeout,
    /// Anything else (refused, reset, DNS), as `a: b: c`, without the URL.
    Failed(String),
}

impl From<reqwest::Error> for TransportFailure {
    fn from(error: reqwest::Error) -> TransportFailure {
        if error.is_timeout() {
            TransportFailure::Timeout
        } else {
            TransportFailure::Failed(error_chain(&error.without_url()))
        }
    }
}

/// The start of an upstream's raw answer, for an error message: at most 200 characters.
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None if text.is_empty() => "(empty answer)".to_owned(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_go_under_the_base_path() {
        let under = |base: &str, path| url_under(&Url::parse(base).expect("url"), path).to_string();
        assert_eq!(under("https://api.stripe.com", "/v1/prices/p"), "https://api.stripe.com/v1/prices/p");
        assert_eq!(under("http://127.0.0.1:9/stripe/", "/v1/x"), "http://127.0.0.1:9/stripe/v1/x");
    }

    #[test]
    fn excerpts_are_short_and_never_empty() {
        assert_eq!(excerpt(b"  <html>Bad Gateway</html>\n"), "<html>Bad Gateway</html>");
        assert_eq!(excerpt(b""), "(empty answer)");
        let long = "é".repeat(300);
        assert_eq!(excerpt(long.as_bytes()), format!("{}...", "é".repeat(200)));
    }
}
