//! Settings: read once at start from the environment and `.env`, validated all together.
//!
//! The tutorial's names are kept (including its spelling `API_MANAGAMENT_KEY`) so that a tutorial
//! user's `.env` works unchanged. Every problem is collected, so one start-up error names them all.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

/// A value that must never be shown: API keys and webhook secrets. `Debug` and `Display` print
/// `[redacted]`; only [`Secret::expose`] gives the value, at the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// LicenseSpring Management API key (`API_MANAGAMENT_KEY` or `API_MANAGEMENT_KEY`).
    pub licensespring_api_key: Secret,
    /// LicenseSpring product short code (`PRODUCT_SHORT_CODE`).
    pub product_short_code: String,
    /// Prefix of the order ids this server creates (`ORDER_BASE_STRING`).
    pub order_base_string: String,
    /// LicenseSpring Management API base (`BASE_URL`).
    pub licensespring_base_url: Url,
    /// LicenseSpring License API base and keys: accepted and validated, unused by the flows.
    pub license_api_url: Option<Url>,
    pub license_api_uuid: Option<Secret>,
    pub license_api_shared_key: Option<Secret>,
    /// Stripe secret key (`STRIPE_PRIVATE_KEY`, `sk_...` or `rk_...`).
    pub stripe_secret_key: Secret,
    /// The recurring Stripe price the payment link sells (`STRIPE_PRODUCT`, `price_...`).
    pub stripe_price_id: String,
    /// Webhook signing secrets (`STRIPE_SECRET`, comma-separated during a secret roll).
    pub webhook_secrets: Vec<Secret>,
    /// Stripe API base (`STRIPE_API_BASE`).
    pub stripe_api_base: Url,
    /// Where to listen (`HOST`, `PORT`; port 0 picks a free one).
    pub host: String,
    pub port: u16,
    /// The subscription cache file and how many subscriptions it holds.
    pub cache_path: PathBuf,
    pub cache_capacity: usize,
    /// How old a signed webhook may be (`WEBHOOK_TOLERANCE_SECS`).
    pub webhook_tolerance: Duration,
    /// Total time one upstream call may take (`UPSTREAM_TIMEOUT_SECS`).
    pub upstream_timeout: Duration,
    /// The tracing filter (`RUST_LOG`), e.g. `info` or `stripe_licensespring=debug`.
    pub log_filter: String,
}

/// Every bad or missing setting, each with what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    pub problems: Vec<String>,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the settings are not usable ({} problem(s)):", self.problems.len())?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        write!(f, "Set them in the environment or in .env (see .env.example).")
    }
}

impl std::error::Error for SettingsError {}

pub const DEFAULT_LICENSESPRING_BASE_URL: &str = "https://saas.licensespring.com";
pub const DEFAULT_STRIPE_API_BASE: &str = "https://api.stripe.com";
pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 5000;
pub const DEFAULT_CACHE_PATH: &str = "cache.json";
pub const DEFAULT_CACHE_CAPACITY: usize = 100;
pub const DEFAULT_WEBHOOK_TOLERANCE_SECS: u64 = 300;
pub const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 10;

impl Settings {
    /// Reads the process environment, then `.env` in the working directory for what the
    /// environment does not set (the real environment wins).
    pub fn from_env() -> Result<Settings, SettingsError> {
        let dotenv = read_dotenv(Path::new(".env"))?;
        Settings::from_lookup(|name| std::env::var(name).ok().or_else(|| dotenv.get(name).cloned()))
    }

    /// Builds settings from any source of named values; all validation lives here.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        let mut reader = Reader { lookup: &lookup, problems: Vec::new() };

        let licensespring_api_key = reader
            .required_any(
                &["API_MANAGAMENT_KEY", "API_MANAGEMENT_KEY"],
                "the LicenseSpring Management API key (Settings -> Keys in LicenseSpring)",
            )
            .map(Secret);
        let product_short_code =
            reader.required("PRODUCT_SHORT_CODE", "the LicenseSpring product short code");
        let order_base_string = reader.required(
            "ORDER_BASE_STRING",
            "the prefix of the LicenseSpring order ids this server creates, e.g. stripe-license",
        );
        let licensespring_base_url = reader.url("BASE_URL", Some(DEFAULT_LICENSESPRING_BASE_URL));
        let license_api_url = reader.optional_url("API_URL");
        let license_api_uuid = reader.optional("UUID").map(Secret);
        let license_api_shared_key = reader.optional("SHARED_KEY").map(Secret);

        let stripe_secret_key = reader
            .required("STRIPE_PRIVATE_KEY", "the Stripe secret key (sk_... or rk_...)")
            .and_then(|key| {
                if key.starts_with("sk_") || key.starts_with("rk_") {
                    Some(Secret(key))
                } else {
                    reader
                        .problem("STRIPE_PRIVATE_KEY: expected a Stripe secret key starting with sk_ or rk_");
                    None
                }
            });
        let stripe_price_id = reader
            .required("STRIPE_PRODUCT", "the Stripe price id (price_...) the payment link sells")
            .and_then(|price| {
                if price.starts_with("price_") {
                    Some(price)
                } else {
                    reader.problem(&format!(
                        "STRIPE_PRODUCT: expected a Stripe price id starting with price_, got {price:?}"
                    ));
                    None
                }
            });
        let webhook_secrets = reader
            .required(
                "STRIPE_SECRET",
                "the webhook signing secret (whsec_...; several comma-separated during a roll)",
            )
            .and_then(|text| {
                let secrets: Vec<Secret> = text
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Secret(s.to_owned()))
                    .collect();
                if secrets.is_empty() || secrets.iter().any(|s| !s.0.starts_with("whsec_")) {
                    reader.problem(
                        "STRIPE_SECRET: expected webhook signing secrets starting with whsec_, comma-separated",
                    );
                    None
                } else {
                    Some(secrets)
                }
            });
        let stripe_api_base = reader.url("STRIPE_API_BASE", Some(DEFAULT_STRIPE_API_BASE));

        let host = reader.optional("HOST").unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let port = reader.number("PORT", DEFAULT_PORT, "a TCP port, 0 to 65535");
        let cache_path =
            PathBuf::from(reader.optional("CACHE_PATH").unwrap_or_else(|| DEFAULT_CACHE_PATH.to_owned()));
        let cache_capacity =
            reader.number("CACHE_CAPACITY", DEFAULT_CACHE_CAPACITY, "a whole number of at least 1");
        if cache_capacity == Some(0) {
            reader.problem("CACHE_CAPACITY: expected a whole number of at least 1, got 0");
        }
        let webhook_tolerance = reader.number(
            "WEBHOOK_TOLERANCE_SECS",
            DEFAULT_WEBHOOK_TOLERANCE_SECS,
            "a whole number of seconds",
        );
        let upstream_timeout = reader.number(
            "UPSTREAM_TIMEOUT_SECS",
            DEFAULT_UPSTREAM_TIMEOUT_SECS,
            "a whole number of seconds, 1 to 30",
        );
        if matches!(upstream_timeout, Some(t) if !(1..=30).contains(&t)) {
            reader.problem("UPSTREAM_TIMEOUT_SECS: expected a whole number of seconds, 1 to 30");
        }

        let log_filter = reader.optional("RUST_LOG").unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            reader.problem(&format!(
                "RUST_LOG: expected a log filter such as info or debug, got {log_filter:?}"
            ));
        }

        if !reader.problems.is_empty() {
            return Err(SettingsError { problems: reader.problems });
        }
        // Every `None` above has recorded a problem, so these cannot fail here.
        let missing = || SettingsError { problems: vec!["internal: a setting was not read".into()] };
        Ok(Settings {
            licensespring_api_key: licensespring_api_key.ok_or_else(missing)?,
            product_short_code: product_short_code.ok_or_else(missing)?,
            order_base_string: order_base_string.ok_or_else(missing)?,
            licensespring_base_url: licensespring_base_url.ok_or_else(missing)?,
            license_api_url,
            license_api_uuid,
            license_api_shared_key,
            stripe_secret_key: stripe_secret_key.ok_or_else(missing)?,
            stripe_price_id: stripe_price_id.ok_or_else(missing)?,
            webhook_secrets: webhook_secrets.ok_or_else(missing)?,
            stripe_api_base: stripe_api_base.ok_or_else(missing)?,
            host,
            port: port.ok_or_else(missing)?,
            cache_path,
            cache_capacity: cache_capacity.ok_or_else(missing)?,
            webhook_tolerance: Duration::from_secs(webhook_tolerance.ok_or_else(missing)?),
            upstream_timeout: Duration::from_secs(upstream_timeout.ok_or_else(missing)?),
            log_filter,
        })
    }
}

/// Reads `.env` into a map without touching the process environment. A missing file is fine; a file
/// that cannot be parsed is a settings problem, reported without its values.
fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, SettingsError> {
    let iter = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter,
        Err(error) if error.not_found() => return Ok(HashMap::new()),
        Err(_) => {
            return Err(SettingsError { problems: vec![format!("{}: cannot be read", path.display())] });
        }
    };
    let mut values = HashMap::new();
    for item in iter {
        match item {
            Ok((name, value)) => {
                values.insert(name, value);
            }
            Err(dotenvy::Error::LineParse(_, index)) => {
                // The parser's message quotes the line, which may hold a secret: give the position only.
                return Err(SettingsError {
                    problems: vec![format!("{}: cannot be parsed near byte {index}", path.display())],
                });
            }
            Err(_) => {
                return Err(SettingsError {
                    problems: vec![format!("{}: cannot be parsed", path.display())],
                });
            }
        }
    }
    Ok(values)
}

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn problem(&mut self, text: &str) {
        self.problems.push(text.to_owned());
    }

    /// A set, non-blank value, trimmed.
    fn optional(&mut self, name: &str) -> Option<String> {
        (self.lookup)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn required(&mut self, name: &str, expected: &str) -> Option<String> {
        self.required_any(&[name], expected)
    }

    fn required_any(&mut self, names: &[&str], expected: &str) -> Option<String> {
        let found = names.iter().find_map(|name| self.optional(name));
        if found.is_none() {
            self.problems.push(format!("{}: missing; expected {expected}", names.join(" or ")));
        }
        found
    }

    fn url(&mut self, name: &str, default: Option<&str>) -> Option<Url> {
        let text = self.optional(name).or_else(|| default.map(str::to_owned))?;
        match Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Some(url),
            _ => {
                self.problems.push(format!(
                    "{name}: expected an http(s) URL such as https://example.com, got {text:?}"
                ));
                None
            }
        }
    }

    fn optional_url(&mut self, name: &str) -> Option<Url> {
        self.optional(name)?;
        self.url(name, None)
    }

    fn number<T: std::str::FromStr>(&mut self, name: &str, default: T, expected: &str) -> Option<T> {
        match self.optional(name) {
            None => Some(default),
            Some(text) => match text.parse() {
                Ok(value) => Some(value),
                Err(_) => {
                    self.problems.push(format!("{name}: expected {expected}, got {text:?}"));
                    None
                }
            },
        }
    }
}
