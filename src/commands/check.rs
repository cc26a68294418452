//! `check`: the settings are valid (or the command would not have started), then each upstream is
//! asked one harmless question: Stripe, whether each configured price exists and is recurring;
//! LicenseSpring, whether the key reaches the product (a key is generated, which reserves
//! nothing). One line per check, with what to fix.

use crate::licensespring::LicenseSpringError;
use crate::settings::Settings;
use crate::stripe::StripeError;
use crate::web::{PriceProblem, check_price};

use super::exit;
use crate::billing::upstream_clients;

/// Runs `check`; the exit status: 0 when every check passes, 1 otherwise.
pub async fn run(settings: &Settings) -> u8 {
    let (stripe, licensespring) = upstream_clients(settings);
    println!("ok    settings: every setting is valid");
    let mut failed = 0;
    for price in &settings.stripe_price_ids {
        match check_price(&stripe, price).await {
            Ok(label) => println!("ok    Stripe price {price}: {label}, recurring"),
            Err(PriceProblem::Unusable { reason, .. }) => {
                failed += 1;
                println!("FAIL  Stripe price {price}: {reason}; fix STRIPE_PRODUCT");
            }
            Err(PriceProblem::Unreachable(error)) => {
                failed += 1;
                println!("FAIL  Stripe price {price}: {error}; {}", stripe_hint(&error));
            }
        }
    }
    match licensespring.generate_license_key(&settings.product_short_code).await {
        Ok(_) => println!("ok    LicenseSpring: the key reaches product {}", settings.product_short_code),
        Err(error) => {
            failed += 1;
            println!(
                "FAIL  LicenseSpring product {}: {error}; {}",
                settings.product_short_code,
                licensespring_hint(&error)
            );
        }
    }
    if failed == 0 { exit::OK } else { exit::FOUND }
}

fn stripe_hint(error: &StripeError) -> &'static str {
    match error.status() {
        Some(401) => "check STRIPE_PRIVATE_KEY",
        Some(403) => "the key may not read prices: give the restricted key read access to Prices",
        Some(_) => "Stripe refused; see its message",
        None => "check STRIPE_API_BASE and the network",
    }
}

fn licensespring_hint(error: &LicenseSpringError) -> &'static str {
    match error.status() {
        Some(401 | 403) => "check API_MANAGAMENT_KEY",
        Some(400 | 404) => "check PRODUCT_SHORT_CODE",
        Some(_) => "LicenseSpring refused; see its message",
        None => "check BASE_URL and the network",
    }
}
