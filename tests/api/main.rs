//! Black-box tests: the real server on a loopback port against local upstreams.

mod helpers;
mod home;
mod webhooks;
