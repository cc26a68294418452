//! Stripe webhooks: signature verification and the typed event model.
//!
//! The route verifies first ([`verify`], over the raw body) and only then parses ([`parse_event`]);
//! the rest of the server sees only the small types of [`event`].

pub mod event;
pub mod signature;

pub use event::{
    BillingReason, Event, EventError, EventKind, HANDLED_EVENT_TYPES, InvoicePaid, InvoicePaymentFailed,
    InvoiceSubscription, SubscriptionChange, SubscriptionChanged, SubscriptionDeleted, parse_event,
};
pub use signature::{SignatureError, verify};
