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
///
/// ```
/// use stripe_licensespring::settings::Secret;
///
/// let key = Secret::new("sk_test_abc");
/// assert_eq!(format!("{key} {key:?}"), "[redacted] [redacted]");
/// assert_eq!(key.expose(), "sk_test_abc");
/// ```
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
    /// The recurring Stripe prices sold, of the one LicenseSpring product (`STRIPE_PRODUCT`,
    /// `price_...`, comma-separated; say monthly and yearly). Never empty; the first is the default.
    pub stripe_price_ids: Vec<String>,
    /// Webhook signing secrets (`STRIPE_SECRET`, comma-separated during a secret roll).
    pub webhook_secrets: Vec<Secret>,
    /// Stripe API base (`STRIPE_API_BASE`).
    pub stripe_api_base: Url,
    /// Where to listen (`HOST`, `PORT`; port 0 picks a free one).
    pub host: String,
    pub port: u16,
    /// The address buyers' browsers reach this server at (`PUBLIC_URL`); `None`: `http://HOST:PORT`
    /// with the port actually bound (see [`crate::App::public_url`]).
    pub public_url: Option<Url>,
    /// The subscription cache file and how many subscriptions it holds.
    pub cache_path: PathBuf,
    pub cache_capacity: usize,
    /// How old a signed webhook may be (`WEBHOOK_TOLERANCE_SECS`).
    pub webhook_tolerance: Duration,
    /// Total time one upstream call may take (`UPSTREAM_TIMEOUT_SECS`).
    pub upstream_timeout: Duration,
    /// Days a `past_due` subscription's license stays valid past the paid period (`GRACE_DAYS`).
    pub grace_days: u32,
    /// Activations per seat (`ACTIVATIONS_PER_SEAT`): a license's `max_activations` is the
    /// subscription's quantity times this. `None`: `max_activations` is never touched.
    pub activations_per_seat: Option<u32>,
    /// The tracing filter (`RUST_LOG`), e.g. `info` or `stripe_licensespring=debug`.
    pub log_filter: String,
    /// PostgreSQL instead of the cache file (`DATABASE_URL`).
    pub database_url: Option<DatabaseUrl>,
    /// Enables `/admin` (`ADMIN_TOKEN`).
    pub admin_token: Option<Secret>,
    /// How log lines are written (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// The token `GET /metrics` asks for as `Authorization: Bearer` (`METRICS_TOKEN`); `None`:
    /// `/metrics` is open, as is the custom.
    pub metrics_token: Option<Secret>,
    /// The `.env` file the settings were read from, when there was one.
    pub env_file: Option<PathBuf>,
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

impl LogFormat {
    /// `text` or `json` (any case); `None` for anything else.
    pub fn parse(text: &str) -> Option<LogFormat> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// `DATABASE_URL`, parsed. Holds a password: neither `Debug` nor [`DatabaseUrl::target`] shows it.
#[derive(Clone)]
pub struct DatabaseUrl {
    config: tokio_postgres::Config,
}

impl DatabaseUrl {
    /// Reads a `postgres://` URL or a `host=... dbname=...` string; the error never repeats the
    /// value (it holds a password).
    pub fn parse(text: &str) -> Result<DatabaseUrl, String> {
        let config: tokio_postgres::Config = text
            .parse()
            .map_err(|e| format!("expected postgres://user:password@host:port/database ({e})"))?;
        if config.get_hosts().is_empty() {
            return Err("expected postgres://user:password@host:port/database (no host given)".to_owned());
        }
        if config.get_dbname().is_none() {
            return Err("expected postgres://user:password@host:port/database (no database given)".to_owned());
        }
        Ok(DatabaseUrl { config })
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Where the database is, for messages: `host:port/database` (never the password).
    pub fn target(&self) -> String {
        use tokio_postgres::config::Host;
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|host| match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                Host::Unix(path) => format!("{}", path.display()),
            })
            .collect();
        format!("{}/{}", hosts.join(","), self.config.get_dbname().unwrap_or_default())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&self.target()).finish()
    }
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

impl SettingsError {
    /// Whether none of the required settings was given (a first start with no `.env`).
    pub fn nothing_set(&self) -> bool {
        let required = [
            "API_MANAGAMENT_KEY",
            "PRODUCT_SHORT_CODE",
            "ORDER_BASE_STRING",
            "STRIPE_PRIVATE_KEY",
            "STRIPE_PRODUCT",
        ];
        required.iter().all(|name| self.problems.iter().any(|p| p.starts_with(name) && p.contains("missing")))
    }
}

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
        Settings::from_env_and_file(Path::new(".env"), |name| std::env::var(name).ok())
    }

    /// As [`Settings::from_env`], for the commands that do not receive webhooks (`reconcile`,
    /// `replay`, `check`): `STRIPE_SECRET` may be missing.
    pub fn from_env_for_commands() -> Result<Settings, SettingsError> {
        let path = Path::new(".env");
        let dotenv = read_dotenv(path)?;
        let lookup = |name: &str| {
            std::env::var(name).ok().or_else(|| dotenv.as_ref().and_then(|values| values.get(name).cloned()))
        };
        let mut settings = Settings::read(&lookup, Needs::NoWebhookSecret)?;
        settings.env_file = dotenv.map(|_| path.to_owned());
        Ok(settings)
    }

    /// Reads `env` first, then the dotenv file at `path` (which may be missing; when it exists,
    /// [`Settings::env_file`] names it).
    pub fn from_env_and_file(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        let dotenv = read_dotenv(path)?;
        let mut settings = Settings::from_lookup(|name| {
            env(name).or_else(|| dotenv.as_ref().and_then(|values| values.get(name).cloned()))
        })?;
        settings.env_file = dotenv.map(|_| path.to_owned());
        Ok(settings)
    }

    /// Builds settings from any source of named values; all validation lives here.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, SettingsError> {
        Settings::read(&lookup, Needs::WebhookSecret)
    }

    fn read(lookup: &dyn Fn(&str) -> Option<String>, needs: Needs) -> Result<Settings, SettingsError> {
        let mut reader = Reader { lookup, problems: Vec::new() };
        reader.refuse_placeholders();

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
        let stripe_price_ids = reader
            .required(
                "STRIPE_PRODUCT",
                "the Stripe price ids (price_..., comma-separated) the payment links sell",
            )
            .and_then(|text| {
                let mut prices: Vec<String> = Vec::new();
                for price in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    if !price.starts_with("price_") {
                        reader.problem(&format!(
                            "STRIPE_PRODUCT: expected Stripe price ids starting with price_, got {price:?}"
                        ));
                        return None;
                    }
                    if !prices.iter().any(|known| known == price) {
                        prices.push(price.to_owned());
                    }
                }
                if prices.is_empty() {
                    reader.problem("STRIPE_PRODUCT: expected at least one Stripe price id (price_...)");
                    return None;
                }
                Some(prices)
            });
        let webhook_secret = match needs {
            Needs::WebhookSecret => reader.required(
                "STRIPE_SECRET",
                "the webhook signing secret (whsec_...; several comma-separated during a roll)",
            ),
            Needs::NoWebhookSecret => Some(reader.optional("STRIPE_SECRET").unwrap_or_default()),
        };
        let webhook_secrets = webhook_secret.and_then(|text| {
            let secrets: Vec<Secret> = text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Secret(s.to_owned()))
                .collect();
            let required = needs == Needs::WebhookSecret;
            if (required && secrets.is_empty()) || secrets.iter().any(|s| !s.0.starts_with("whsec_")) {
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
        let public_url = reader.optional_url("PUBLIC_URL").map(|mut url| {
            // Paths are appended to it: `https://example.com/store` + `/thank-you`.
            let path = url.path().trim_end_matches('/').to_owned();
            url.set_path(&path);
            url
        });
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

        let grace_days = reader.number("GRACE_DAYS", 0u32, "a whole number of days, 0 to 365");
        if matches!(grace_days, Some(days) if days > 365) {
            reader.problem("GRACE_DAYS: expected a whole number of days, 0 to 365");
        }
        let activations_per_seat = match reader.optional("ACTIVATIONS_PER_SEAT") {
            None => None,
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=10_000).contains(&n) => Some(n),
                _ => {
                    reader.problem(&format!(
                        "ACTIVATIONS_PER_SEAT: expected a whole number, 1 to 10000, or unset, got {text:?}"
                    ));
                    None
                }
            },
        };

        let log_filter = reader.optional("RUST_LOG").unwrap_or_else(|| "info".to_owned());
        if tracing_subscriber::EnvFilter::try_new(&log_filter).is_err() {
            reader.problem(&format!(
                "RUST_LOG: expected a log filter such as info or debug, got {log_filter:?}"
            ));
        }

        let log_format = match reader.optional("LOG_FORMAT") {
            None => Some(LogFormat::Text),
            Some(text) => LogFormat::parse(&text).or_else(|| {
                reader.problem(&format!("LOG_FORMAT: expected text or json, got {text:?}"));
                None
            }),
        };
        let metrics_token = reader.optional("METRICS_TOKEN").and_then(|token| {
            // Said without quoting it: it is a secret.
            if token.bytes().all(|b| b.is_ascii_graphic()) {
                Some(Secret(token))
            } else {
                reader.problem(
                    "METRICS_TOKEN: expected a token of visible ASCII characters without spaces \
                     (a long random string), or unset",
                );
                None
            }
        });

        let database_url = reader.optional("DATABASE_URL").and_then(|text| match DatabaseUrl::parse(&text) {
            Ok(url) => Some(url),
            Err(expected) => {
                reader.problem(&format!("DATABASE_URL: {expected}"));
                None
            }
        });

        let admin_token = reader.optional("ADMIN_TOKEN").map(Secret);
        if admin_token.as_ref().is_some_and(|token| token.0.len() < 16) {
            reader.problem(
                "ADMIN_TOKEN: expected at least 16 characters (say, openssl rand -hex 24), or unset",
            );
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
            stripe_price_ids: stripe_price_ids.ok_or_else(missing)?,
            webhook_secrets: webhook_secrets.ok_or_else(missing)?,
            stripe_api_base: stripe_api_base.ok_or_else(missing)?,
            host,
            port: port.ok_or_else(missing)?,
            public_url,
            cache_path,
            cache_capacity: cache_capacity.ok_or_else(missing)?,
            webhook_tolerance: Duration::from_secs(webhook_tolerance.ok_or_else(missing)?),
            upstream_timeout: Duration::from_secs(upstream_timeout.ok_or_else(missing)?),
            grace_days: grace_days.ok_or_else(missing)?,
            activations_per_seat,
            log_filter,
            database_url,
            admin_token,
            log_format: log_format.ok_or_else(missing)?,
            metrics_token,
            env_file: None,
        })
    }
}

/// Reads `.env` into a map without touching the process environment. A missing file is fine
/// (`None`); a file that cannot be parsed is a settings problem, reported without its values.
fn read_dotenv(path: &Path) -> Result<Option<HashMap<String, String>>, SettingsError> {
    let iter = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter,
        Err(error) if error.not_found() => return Ok(None),
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
    Ok(Some(values))
}

/// Whether the settings are for the server (which verifies webhooks) or for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    WebhookSecret,
    NoWebhookSecret,
}

/// `.env.example`'s placeholders: a setting still holding one was copied but not filled in.
const PLACEHOLDERS: [(&str, &str); 6] = [
    ("API_MANAGAMENT_KEY", "your_management_api_key"),
    ("API_MANAGEMENT_KEY", "your_management_api_key"),
    ("PRODUCT_SHORT_CODE", "your_product_short_code"),
    ("STRIPE_PRIVATE_KEY", "sk_test_..."),
    ("STRIPE_PRODUCT", "price_..."),
    ("STRIPE_SECRET", "whsec_..."),
];

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn problem(&mut self, text: &str) {
        self.problems.push(text.to_owned());
    }

    /// Names every setting still holding `.env.example`'s placeholder (without quoting it: the
    /// value is no secret, but the rule is simpler without exceptions).
    fn refuse_placeholders(&mut self) {
        for (name, placeholder) in PLACEHOLDERS {
            let value = (self.lookup)(name).unwrap_or_default();
            if value.split(',').any(|item| item.trim() == placeholder) {
                self.problems.push(format!("{name}: still the placeholder from .env.example: fill in .env"));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const STRIPE_KEY: &str = "sk_test_51SecretStripeKey000";
    const LS_KEY: &str = "AbCdEfGh.0123456789abcdefghijklmnopqrstuv";
    const WEBHOOK_SECRET: &str = "whsec_secretWebhook000";

    /// The tutorial's `.env`, with its spelling, quotes, spaces around `=` and trailing blanks.
    fn tutorial_env() -> String {
        format!(
            "API_MANAGAMENT_KEY = \"{LS_KEY}\"   \n\
             UUID = \"c4a9bd13-5b1f-4f2b-8d6e-2f9e0e7d1a11\"  \n\
             SHARED_KEY = \"kw4qSnpSwXzgiv5yxYpZZmFEd9QAeiKTQ6OuyMja\"  \n\
             PRODUCT_SHORT_CODE = \"acme\"  \n\
             ORDER_BASE_STRING = \"stripe-license\"\n\
             BASE_URL = \"https://saas.licensespring.com\"  \n\
             API_URL = \"https://api.licensespring.com\"  \n\
             STRIPE_PRIVATE_KEY = \"{STRIPE_KEY}\"  \n\
             STRIPE_PRODUCT = \"price_1OdJ8cKq3ZtR7pLmAbCdEfGh\"   \n\
             STRIPE_SECRET = \"{WEBHOOK_SECRET}\"    \n\
             PAYMENT_LINK = \"https://buy.stripe.com/test_abc\"  \n"
        )
    }

    fn write_env(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn problems_for(values: &[(&str, &str)]) -> Vec<String> {
        let lookup = |name: &str| values.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        Settings::from_lookup(lookup).expect_err("settings must be refused").problems
    }

    #[test]
    fn the_tutorials_env_file_loads_unchanged() {
        let (_dir, path) = write_env(&tutorial_env());
        let settings = Settings::from_env_and_file(&path, |_| None).expect("tutorial .env loads");
        assert_eq!(settings.licensespring_api_key.expose(), LS_KEY);
        assert_eq!(settings.product_short_code, "acme");
        assert_eq!(settings.stripe_secret_key.expose(), STRIPE_KEY);
        assert_eq!(settings.stripe_price_ids, ["price_1OdJ8cKq3ZtR7pLmAbCdEfGh"]);
        assert_eq!((settings.grace_days, settings.activations_per_seat), (0, None));
        assert_eq!(settings.webhook_secrets, vec![Secret::new(WEBHOOK_SECRET)]);
        assert_eq!(settings.licensespring_base_url.as_str(), "https://saas.licensespring.com/");
        assert_eq!(
            settings.license_api_url.as_ref().map(Url::as_str),
            Some("https://api.licensespring.com/")
        );
        assert_eq!(settings.stripe_api_base.as_str(), "https://api.stripe.com/");
        assert_eq!((settings.host.as_str(), settings.port), ("127.0.0.1", 5000));
        assert_eq!(settings.cache_path, PathBuf::from("cache.json"));
        assert_eq!(settings.cache_capacity, 100);
        assert_eq!(settings.webhook_tolerance, Duration::from_secs(300));
        assert_eq!(settings.log_filter, "info");
        assert_eq!((settings.log_format, settings.metrics_token.is_none()), (LogFormat::Text, true));
        assert_eq!(settings.env_file.as_deref(), Some(path.as_path()), "names the file it read");
    }

    #[test]
    fn the_correct_spelling_of_the_management_key_is_accepted_too() {
        let text = tutorial_env().replace("API_MANAGAMENT_KEY", "API_MANAGEMENT_KEY");
        let (_dir, path) = write_env(&text);
        let settings = Settings::from_env_and_file(&path, |_| None).unwrap();
        assert_eq!(settings.licensespring_api_key.expose(), LS_KEY);
    }

    #[test]
    fn the_real_environment_wins_over_the_file() {
        let (_dir, path) = write_env(&tutorial_env());
        let env = |name: &str| match name {
            "PORT" => Some("6001".to_owned()),
            "STRIPE_SECRET" => Some("whsec_one, whsec_two".to_owned()),
            _ => None,
        };
        let settings = Settings::from_env_and_file(&path, env).unwrap();
        assert_eq!(settings.port, 6001);
        assert_eq!(settings.webhook_secrets, vec![Secret::new("whsec_one"), Secret::new("whsec_two")]);
    }

    #[test]
    fn a_missing_env_file_is_fine_when_the_environment_has_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (_d, full) = write_env(&tutorial_env());
        let from_file = read_dotenv(&full).unwrap().expect("the file exists");
        let settings = Settings::from_env_and_file(&dir.path().join(".env"), |n| from_file.get(n).cloned());
        assert_eq!(settings.expect("valid").env_file, None, "no file was read");
    }

    #[test]
    fn every_missing_setting_is_named_in_one_error() {
        let problems = problems_for(&[]);
        let text = problems.join("\n");
        for name in [
            "API_MANAGAMENT_KEY or API_MANAGEMENT_KEY",
            "PRODUCT_SHORT_CODE",
            "ORDER_BASE_STRING",
            "STRIPE_PRIVATE_KEY",
            "STRIPE_PRODUCT",
            "STRIPE_SECRET",
        ] {
            assert!(text.contains(&format!("{name}: missing")), "{name} not named in:\n{text}");
        }
        assert_eq!(problems.len(), 6, "{text}");
    }

    #[test]
    fn every_malformed_setting_is_named_with_what_is_expected() {
        let problems = problems_for(&[
            ("API_MANAGAMENT_KEY", LS_KEY),
            ("PRODUCT_SHORT_CODE", "acme"),
            ("ORDER_BASE_STRING", "stripe-license"),
            ("STRIPE_PRIVATE_KEY", "pk_test_publishableNotSecret"),
            ("STRIPE_PRODUCT", "prod_NotAPrice"),
            ("STRIPE_SECRET", "whsec_good,notasecret"),
            ("BASE_URL", "saas.licensespring.com"),
            ("STRIPE_API_BASE", "ftp://example.com"),
            ("API_URL", "::"),
            ("PORT", "http"),
            ("CACHE_CAPACITY", "0"),
            ("WEBHOOK_TOLERANCE_SECS", "-5"),
            ("UPSTREAM_TIMEOUT_SECS", "90"),
            ("RUST_LOG", "info,[[["),
            ("GRACE_DAYS", "400"),
            ("ACTIVATIONS_PER_SEAT", "0"),
            ("LOG_FORMAT", "yaml"),
            ("METRICS_TOKEN", "two words"),
        ]);
        let text = problems.join("\n");
        for expected in [
            "STRIPE_PRIVATE_KEY: expected a Stripe secret key starting with sk_ or rk_",
            "STRIPE_PRODUCT: expected Stripe price ids starting with price_, got \"prod_NotAPrice\"",
            "STRIPE_SECRET: expected webhook signing secrets starting with whsec_",
            "BASE_URL: expected an http(s) URL",
            "STRIPE_API_BASE: expected an http(s) URL",
            "API_URL: expected an http(s) URL",
            "PORT: expected a TCP port",
            "CACHE_CAPACITY: expected a whole number of at least 1",
            "WEBHOOK_TOLERANCE_SECS: expected a whole number of seconds",
            "UPSTREAM_TIMEOUT_SECS: expected a whole number of seconds, 1 to 30",
            "RUST_LOG: expected a log filter",
            "GRACE_DAYS: expected a whole number of days, 0 to 365",
            "ACTIVATIONS_PER_SEAT: expected a whole number, 1 to 10000, or unset, got \"0\"",
            "LOG_FORMAT: expected text or json, got \"yaml\"",
            "METRICS_TOKEN: expected a token of visible ASCII characters without spaces",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(!text.contains("two words"), "the token is not quoted: {text}");
        assert_eq!(problems.len(), 15, "{text}");
    }

    #[test]
    fn env_example_placeholders_are_refused_with_fill_in_env() {
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
        let (_dir, path) = write_env(&example);
        let error = Settings::from_env_and_file(&path, |_| None).expect_err("placeholders refused");
        for name in [
            "API_MANAGEMENT_KEY",
            "PRODUCT_SHORT_CODE",
            "STRIPE_PRIVATE_KEY",
            "STRIPE_PRODUCT",
            "STRIPE_SECRET",
        ] {
            let expected = format!("{name}: still the placeholder from .env.example: fill in .env");
            assert!(error.problems.contains(&expected), "{expected:?} in {:?}", error.problems);
        }
    }

    #[test]
    fn the_commands_need_no_webhook_secret_but_refuse_a_bad_one() {
        fn values(secret: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
            let mut values = vec![
                ("API_MANAGAMENT_KEY", LS_KEY),
                ("PRODUCT_SHORT_CODE", "acme"),
                ("ORDER_BASE_STRING", "stripe-license"),
                ("STRIPE_PRIVATE_KEY", STRIPE_KEY),
                ("STRIPE_PRODUCT", "price_monthly"),
            ];
            values.extend(secret.map(|s| ("STRIPE_SECRET", s)));
            values
        }
        let read = |values: Vec<(&str, &str)>| {
            let lookup = |name: &str| values.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
            Settings::read(&lookup, Needs::NoWebhookSecret)
        };
        assert!(read(values(None)).expect("no secret needed").webhook_secrets.is_empty());
        assert!(read(values(Some("nope"))).is_err(), "a malformed one is still refused");
        let mut placeholder = values(None);
        placeholder.retain(|(k, _)| *k != "STRIPE_PRODUCT");
        placeholder.push(("STRIPE_PRODUCT", "price_..."));
        let refused = read(placeholder).expect_err("the commands refuse placeholders too");
        assert!(
            refused.problems.contains(
                &"STRIPE_PRODUCT: still the placeholder from .env.example: fill in .env".to_owned()
            )
        );
        let lookup = |name: &str| values(None).iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        assert!(Settings::from_lookup(lookup).is_err(), "the server needs it");
    }

    #[test]
    fn several_prices_grace_days_and_seats_are_read() {
        let values = [
            ("API_MANAGAMENT_KEY", LS_KEY),
            ("PRODUCT_SHORT_CODE", "acme"),
            ("ORDER_BASE_STRING", "stripe-license"),
            ("STRIPE_PRIVATE_KEY", STRIPE_KEY),
            ("STRIPE_PRODUCT", " price_monthly , price_yearly,price_monthly,"),
            ("STRIPE_SECRET", WEBHOOK_SECRET),
            ("GRACE_DAYS", "3"),
            ("ACTIVATIONS_PER_SEAT", "2"),
            ("LOG_FORMAT", " JSON "),
            ("METRICS_TOKEN", "metricsTokenDoNotShow"),
        ];
        let lookup = |name: &str| values.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        let settings = Settings::from_lookup(lookup).expect("valid");
        assert_eq!(settings.stripe_price_ids, ["price_monthly", "price_yearly"], "in order, once each");
        assert_eq!((settings.grace_days, settings.activations_per_seat), (3, Some(2)));
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.metrics_token.as_ref().map(Secret::expose), Some("metricsTokenDoNotShow"));
        assert!(!format!("{settings:?}").contains("metricsTokenDoNotShow"), "redacted in Debug");
        let problems = problems_for(&[("STRIPE_PRODUCT", " , ")]);
        assert!(
            problems.iter().any(|p| p == "STRIPE_PRODUCT: expected at least one Stripe price id (price_...)")
        );
    }

    #[test]
    fn secrets_never_appear_in_errors_or_debug() {
        let problems = problems_for(&[
            ("API_MANAGAMENT_KEY", LS_KEY),
            ("STRIPE_PRIVATE_KEY", "pk_live_doNotShowThisKey"),
            ("STRIPE_SECRET", "not_whsec_doNotShowThisSecret"),
            ("SHARED_KEY", "sharedDoNotShow"),
        ]);
        let text = problems.join("\n");
        for secret in [LS_KEY, "pk_live_doNotShowThisKey", "doNotShowThisSecret", "sharedDoNotShow"] {
            assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
        }

        let (_dir, path) = write_env(&tutorial_env());
        let settings = Settings::from_env_and_file(&path, |_| None).unwrap();
        let debug = format!("{settings:?} {settings:#?}");
        for secret in
            [LS_KEY, STRIPE_KEY, WEBHOOK_SECRET, "kw4qSnpSwXzgiv5yxYpZZmFEd9QAeiKTQ6OuyMja", "c4a9bd13"]
        {
            assert!(!debug.contains(secret), "{secret} leaked into Debug");
        }
        assert!(debug.contains("[redacted]"));
        assert_eq!(settings.stripe_secret_key.to_string(), "[redacted]");

        let with_database = Settings::from_env_and_file(&path, |name| {
            let values = [
                ("DATABASE_URL", "postgres://billing:dbPasswordDoNotShow@db.internal:6432/billing"),
                ("ADMIN_TOKEN", "adminTokenDoNotShow0123"),
            ];
            values.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
        })
        .unwrap();
        let debug = format!("{with_database:?} {with_database:#?}");
        assert!(
            !debug.contains("dbPasswordDoNotShow") && !debug.contains("adminTokenDoNotShow0123"),
            "{debug}"
        );
        let url = with_database.database_url.as_ref().unwrap();
        assert_eq!(url.target(), "db.internal:6432/billing", "the host, for messages");
        assert!(debug.contains("db.internal:6432/billing"));
    }

    #[test]
    fn a_broken_env_file_is_refused_without_quoting_it() {
        let (_dir, path) = write_env("STRIPE_PRIVATE_KEY=\"sk_test_unterminatedSecret\nPORT=1\n");
        let error = Settings::from_env_and_file(&path, |_| None).expect_err("refused");
        let text = error.to_string();
        assert!(text.contains(".env: cannot be parsed"), "{text}");
        assert!(!text.contains("unterminatedSecret"), "{text}");
    }
}
