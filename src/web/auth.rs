//! Tokens in `Authorization` (for `/admin` and `/metrics`), compared in constant time.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::settings::Secret;

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
pub fn bearer(headers: &HeaderMap) -> Option<Vec<u8>> {
    let (scheme, credentials) = authorization(headers)?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.as_bytes().to_vec())
}

/// The password of `Authorization: Basic <base64 of user:password>`, whatever the user name.
pub fn basic_password(headers: &HeaderMap) -> Option<Vec<u8>> {
    let (scheme, credentials) = authorization(headers)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

fn authorization(headers: &HeaderMap) -> Option<(&str, &str)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    Some((scheme, credentials.trim()))
}

/// Whether `presented` is `token`, in time independent of where they differ and of their
/// lengths: both are MACed first, and the MACs compared in constant time.
pub fn is_token(presented: &[u8], token: &Secret) -> bool {
    same_secret(presented, token.expose().as_bytes())
}

pub fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    let mac = |data: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"stripe-licensespring token comparison")
            .expect("HMAC takes any key length");
        mac.update(data);
        mac
    };
    mac(presented).verify_slice(&mac(expected).finalize().into_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value.parse().expect("a header value"));
        headers
    }

    #[test]
    fn both_schemes_carry_a_token_and_only_the_same_one_matches() {
        let basic = base64::engine::general_purpose::STANDARD.encode("anyone:t0ken:with:colons");
        assert_eq!(basic_password(&with(&format!("Basic {basic}"))).unwrap(), b"t0ken:with:colons");
        assert_eq!(bearer(&with("bearer t0ken")).unwrap(), b"t0ken", "the scheme in any case");
        assert_eq!(bearer(&with("Basic t0ken")), None);
        assert_eq!(basic_password(&with("Digest x")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
        let token = Secret::new("s3cr3t-Token");
        assert!(is_token(b"s3cr3t-Token", &token));
        for wrong in ["s3cr3t-token", "s3cr3t-Token2", "s3cr3t", ""] {
            assert!(!is_token(wrong.as_bytes(), &token), "{wrong:?}");
        }
    }
}
