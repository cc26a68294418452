//! Both simulators of the `sim` crate, and the one table of settings that points this server at
//! them: what the sandbox, the tests and the load benchmark start the server against.

use std::io;

use sim::licensespring::{self, LicenseSpringSim, LicenseSpringSimConfig};
use sim::stripe::{self, StripeSim, StripeSimConfig};

/// The order id prefix of the licenses a server against the simulators creates.
pub const ORDER_BASE_STRING: &str = "sandbox";

/// A running Stripe simulator and LicenseSpring simulator; dropping it stops both.
pub struct Simulators {
    pub stripe: StripeSim,
    pub licensespring: LicenseSpringSim,
    /// Every required setting, from the configurations the simulators were started with.
    settings: Vec<(&'static str, String)>,
}

impl Simulators {
    /// Starts both. A server using them sells every configured price, of the first product,
    /// and checks webhooks against `webhook_secret` (what the Stripe simulator's
    /// [`WebhookTarget`](sim::stripe::WebhookTarget), if any, signs with).
    pub async fn start(
        stripe: StripeSimConfig,
        licensespring: LicenseSpringSimConfig,
        webhook_secret: &str,
    ) -> io::Result<Simulators> {
        let prices: Vec<&str> = stripe.prices.iter().filter(|p| p.recurring).map(|p| p.id.as_str()).collect();
        let prices = prices.join(",");
        let product = licensespring.products.first().cloned().unwrap_or_default();
        let mut settings = vec![
            ("API_MANAGAMENT_KEY", licensespring.api_key.clone()),
            ("PRODUCT_SHORT_CODE", product),
            ("ORDER_BASE_STRING", ORDER_BASE_STRING.to_owned()),
            ("STRIPE_PRIVATE_KEY", stripe.api_key.clone()),
            ("STRIPE_PRODUCT", prices),
            ("STRIPE_SECRET", webhook_secret.to_owned()),
        ];
        let stripe = stripe::start(stripe).await?;
        let licensespring = licensespring::start(licensespring).await?;
        settings.push(("STRIPE_API_BASE", stripe.base_url().to_string()));
        settings.push(("BASE_URL", licensespring.base_url().to_string()));
        Ok(Simulators { stripe, licensespring, settings })
    }

    /// The settings (name, value) of a server using these simulators: every required one.
    /// Where to listen, the cache file and the log filter are the caller's to add.
    pub fn settings(&self) -> Vec<(String, String)> {
        self.settings.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect()
    }

    /// Stops both, waiting (a few seconds at most) for them to finish.
    pub async fn shutdown(&self) {
        self.stripe.shutdown().await;
        self.licensespring.shutdown().await;
    }
}
