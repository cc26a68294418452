//! Stripe webhooks: signature verification and the typed event model.

pub mod signature;

pub use signature::{SignatureError, verify};
