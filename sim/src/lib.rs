//! Simulators of the two upstream services of `stripe-licensespring`, for its tests and its
//! offline sandbox: [`stripe`] speaks the subset of Stripe's API the server uses (and delivers
//! signed webhooks), [`licensespring`] the subset of LicenseSpring's Management API.
//!
//! Each simulator is a real HTTP server on a loopback port with its state in memory. Its handle
//! gives the base URL, typed read access to the state, a log of every request received
//! ([`RecordedRequest`]), and fault injection ([`Fault`], [`FaultKind`]). Dropping the handle
//! stops the server.
//!
//! The simulators speak only HTTP and share no types with the server: they read requests with
//! their own form and JSON parsing and render answers and events as the real services' JSON, so
//! a field the server's clients name wrongly is caught here rather than agreed on.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! let stripe = sim::stripe::start(sim::stripe::StripeSimConfig::default()).await?;
//! let licensespring =
//!     sim::licensespring::start(sim::licensespring::LicenseSpringSimConfig::default()).await?;
//! // Point the server's STRIPE_API_BASE at `stripe.base_url()`, its BASE_URL at
//! // `licensespring.base_url()`, then drive the simulated world:
//! let subscription = stripe.create_subscription(sim::stripe::DEFAULT_PRICE_ID).expect("a price");
//! let renewal = stripe.renew(&subscription).expect("active");
//! let signature = sim::sign_stripe_payload(&renewal.body, "whsec_...", 1_767_000_000);
//! # let _ = (licensespring, signature);
//! # Ok(())
//! # }
//! ```

mod faults;
mod frontdoor;
pub mod licensespring;
pub mod stripe;

use std::fmt;

pub use faults::{Fault, FaultKind};
pub use frontdoor::RecordedRequest;
pub use stripe::sign_stripe_payload;

/// What a hand-written `Debug` prints in place of an API key or a webhook secret.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
