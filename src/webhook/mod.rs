//! Stripe webhooks: signature verification and the typed event model.
