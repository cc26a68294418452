//! `Stripe-Signature` verification: pure functions over the header, the raw body, the secrets and
//! the current time.
//!
//! Stripe sends `t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=<hex>]` and signs `"{t}.{raw body}"`
//! with HMAC-SHA256 keyed by the endpoint secret, the whole `whsec_...` string. During a secret
//! roll it adds one `v1` per active secret, and the server may hold several secrets too: the body is
//! authentic when any `v1` matches any secret. Only `v1` is trusted; `v0` (a fake test-mode
//! signature) and unknown schemes are ignored, so a downgrade is impossible.
//!
//! Where Stripe's SDKs disagree (the `implementation_defined` vectors), this verifier chooses:
//! - **A timestamp in the future** by more than the tolerance is refused ([`SignatureError::InFuture`]),
//!   like stripe-php and async-stripe; stripe-python/node/go accept it. Stripe stamps every delivery
//!   attempt as it sends it, so only a clock skew beyond the tolerance produces one, and refusing it
//!   keeps a captured delivery replayable for at most twice the tolerance instead of until its
//!   future `t` has passed.
//! - **Spaces or tabs around items** (`t=..., v1=...`) are trimmed and accepted, as HTTP list headers
//!   allow. Stripe never sends them; accepting them cannot let a forgery through, since the MAC must
//!   still match.
//! - **Upper-case hex** in `v1` is accepted: each `v1` is decoded to its 32 bytes and compared as
//!   bytes, so the letter case carries no meaning.

use std::time::Duration;

use hmac::digest::CtOutput;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::settings::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Which check refused a delivery. The messages name the failed check and never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    MissingHeader,
    #[error("malformed Stripe-Signature header: {0}")]
    MalformedHeader(&'static str),
    #[error("no v1 signature in the Stripe-Signature header matches the body")]
    NoValidSignature,
    #[error("the signature is {age_secs} s old, more than the {tolerance_secs} s tolerance")]
    TooOld { age_secs: i64, tolerance_secs: i64 },
    #[error("the signature is {ahead_secs} s in the future, more than the {tolerance_secs} s tolerance")]
    InFuture { ahead_secs: i64, tolerance_secs: i64 },
}

/// Checks a delivery: `header` is the `Stripe-Signature` value (`None` when absent), `body` the raw
/// request bytes, `secrets` every configured signing secret, `now_unix` the current Unix time.
///
/// The signature is checked before the age, so [`SignatureError::TooOld`] and
/// [`SignatureError::InFuture`] only ever describe authentic deliveries (a clock problem, or a replay).
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[Secret],
    tolerance: Duration,
    now_unix: i64,
) -> Result<(), SignatureError> {
    let header = header.map(str::trim).filter(|h| !h.is_empty()).ok_or(SignatureError::MissingHeader)?;
    let header = SignatureHeader::parse(header)?;
    if header.v1.is_empty() || !secrets.iter().any(|secret| header.signed_by(secret, body)) {
        return Err(SignatureError::NoValidSignature);
    }
    check_age(header.timestamp, tolerance, now_unix)
}

/// The parts of a `Stripe-Signature` header that count.
struct SignatureHeader<'a> {
    timestamp: i64,
    /// `t` in canonical decimal, as the SDKs sign it (`t=0017` is signed as `17`).
    timestamp_digits: &'a str,
    /// Every well-formed `v1`; a `v1` that is not 64 hex digits can match nothing and is skipped.
    v1: Vec<[u8; 32]>,
}

impl<'a> SignatureHeader<'a> {
    fn parse(header: &'a str) -> Result<SignatureHeader<'a>, SignatureError> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for item in header.split(',') {
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            match key.trim_matches([' ', '\t']) {
                "t" if timestamp.is_some() => return Err(SignatureError::MalformedHeader("more than one t")),
                "t" => timestamp = Some(value.trim_matches([' ', '\t'])),
                "v1" => {
                    let mut signature = [0u8; 32];
                    if hex::decode_to_slice(value.trim_matches([' ', '\t']), &mut signature).is_ok() {
                        v1.push(signature);
                    }
                }
                _ => {}
            }
        }
        let digits = timestamp.ok_or(SignatureError::MalformedHeader("no t"))?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SignatureError::MalformedHeader("t is not a whole number of seconds"));
        }
        let timestamp = digits.parse().map_err(|_| SignatureError::MalformedHeader("t is out of range"))?;
        let canonical = digits.trim_start_matches('0');
        let timestamp_digits = if canonical.is_empty() { "0" } else { canonical };
        Ok(SignatureHeader { timestamp, timestamp_digits, v1 })
    }

    /// Whether any `v1` is the HMAC of `"{t}.{body}"` under `secret`, each compared in constant time.
    fn signed_by(&self, secret: &Secret, body: &[u8]) -> bool {
        let mut mac =
            HmacSha256::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes a key of any length");
        // Fed piece by piece: the signed payload is never copied.
        mac.update(self.timestamp_digits.as_bytes());
        mac.update(b".");
        mac.update(body);
        let expected = mac.finalize();
        self.v1.iter().any(|candidate| expected == CtOutput::new((*candidate).into()))
    }
}

fn check_age(timestamp: i64, tolerance: Duration, now_unix: i64) -> Result<(), SignatureError> {
    let tolerance_secs = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    let age_secs = now_unix.saturating_sub(timestamp);
    if age_secs > tolerance_secs {
        return Err(SignatureError::TooOld { age_secs, tolerance_secs });
    }
    let ahead_secs = timestamp.saturating_sub(now_unix);
    if ahead_secs > tolerance_secs {
        return Err(SignatureError::InFuture { ahead_secs, tolerance_secs });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;
    use sha2::Digest;

    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stripe");
    const SECRET: &str = "whsec_test_secret_abc123";
    const TOLERANCE: Duration = Duration::from_secs(300);

    /// Signs the way Stripe does, independently of the code under test.
    fn sign(body: &[u8], secret: &str, t: i64) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    fn secrets(names: &[&str]) -> Vec<Secret> {
        names.iter().map(|s| Secret::new(*s)).collect()
    }

    fn vector_file() -> Value {
        let text = std::fs::read(format!("{FIXTURES}/signatures.json")).expect("signatures.json");
        serde_json::from_slice(&text).expect("signatures.json is JSON")
    }

    /// The exact payload bytes of a vector: a fixture file untouched, or the inline string.
    fn payload(vector: &Value) -> Vec<u8> {
        match vector["file"].as_str() {
            Some(file) => std::fs::read(format!("{FIXTURES}/{file}")).expect("fixture file"),
            None => vector["payload"].as_str().expect("inline payload").as_bytes().to_vec(),
        }
    }

    fn run(vector: &Value) -> Result<(), SignatureError> {
        let configured: Vec<Secret> = vector["secrets"]
            .as_array()
            .expect("secrets")
            .iter()
            .map(|s| Secret::new(s.as_str().expect("secret")))
            .collect();
        let tolerance = Duration::from_secs(vector["tolerance_secs"].as_u64().expect("tolerance"));
        let now = vector["now"].as_i64().expect("now");
        verify(vector["header"].as_str(), &payload(vector), &configured, tolerance, now)
    }

    #[test]
    fn fixture_files_are_byte_exact() {
        for (file, facts) in vector_file()["files"].as_object().expect("files") {
            let bytes = std::fs::read(format!("{FIXTURES}/{file}")).expect("fixture file");
            assert_eq!(bytes.len() as u64, facts["bytes"].as_u64().expect("bytes"), "{file}");
            assert_eq!(
                hex::encode(Sha256::digest(&bytes)),
                facts["sha256"].as_str().expect("sha256"),
                "{file}"
            );
        }
    }

    #[test]
    fn every_vector_gives_its_expected_outcome() {
        let file = vector_file();
        let vectors = file["vectors"].as_array().expect("vectors");
        assert!(vectors.len() >= 28, "all vectors are read");
        for vector in vectors {
            let name = vector["name"].as_str().expect("name");
            let outcome = run(vector);
            match (vector["expected"].as_str(), vector["reason"].as_str()) {
                (Some("valid"), _) => assert_eq!(outcome, Ok(()), "{name}"),
                (Some("invalid"), Some("missing header")) => {
                    assert_eq!(outcome, Err(SignatureError::MissingHeader), "{name}")
                }
                (Some("invalid"), Some("malformed header")) => {
                    assert!(matches!(outcome, Err(SignatureError::MalformedHeader(_))), "{name}: {outcome:?}")
                }
                (Some("invalid"), Some("timestamp older than tolerance")) => {
                    assert!(matches!(outcome, Err(SignatureError::TooOld { .. })), "{name}: {outcome:?}")
                }
                (Some("invalid"), _) => assert_eq!(outcome, Err(SignatureError::NoValidSignature), "{name}"),
                (expected, _) => panic!("{name}: unknown expectation {expected:?}"),
            }
        }
    }

    /// The choices documented at the top of this module.
    #[test]
    fn implementation_defined_vectors_follow_the_documented_choices() {
        let file = vector_file();
        let vectors = file["implementation_defined"].as_array().expect("implementation_defined");
        assert_eq!(vectors.len(), 3);
        for vector in vectors {
            let name = vector["name"].as_str().expect("name");
            let expected = match name {
                "timestamp 1 h in the future" => {
                    Err(SignatureError::InFuture { ahead_secs: 3600, tolerance_secs: 300 })
                }
                "space after the comma" | "upper-case hex" => Ok(()),
                other => panic!("undecided implementation-defined vector {other:?}"),
            };
            assert_eq!(run(vector), expected, "{name}");
        }
    }

    #[test]
    fn a_future_timestamp_within_the_tolerance_passes() {
        let header = sign(b"{}", SECRET, 1_000_300);
        assert_eq!(verify(Some(&header), b"{}", &secrets(&[SECRET]), TOLERANCE, 1_000_000), Ok(()));
    }

    #[test]
    fn a_blank_header_counts_as_missing() {
        for header in [None, Some(""), Some("  ")] {
            assert_eq!(
                verify(header, b"{}", &secrets(&[SECRET]), TOLERANCE, 0),
                Err(SignatureError::MissingHeader)
            );
        }
    }

    #[test]
    fn t_must_be_one_unsigned_whole_number() {
        let v1 = "v1=1e102214d3b1b2f2966cfb1592904675f5c245ee0d098d914e18ffa2854e9e85";
        for header in [
            format!("t=,{v1}"),
            format!("t=-5,{v1}"),
            format!("t=+5,{v1}"),
            format!("t=1.5,{v1}"),
            format!("t=99999999999999999999,{v1}"),
            format!("t=1,t=1,{v1}"),
        ] {
            let outcome = verify(Some(&header), b"{}", &secrets(&[SECRET]), TOLERANCE, 0);
            assert!(matches!(outcome, Err(SignatureError::MalformedHeader(_))), "{header}: {outcome:?}");
        }
    }

    #[test]
    fn t_with_leading_zeros_is_signed_as_its_value() {
        let signed = sign(b"{}", SECRET, 1_767_000_000);
        let padded = signed.replacen("t=", "t=00", 1);
        assert_eq!(verify(Some(&padded), b"{}", &secrets(&[SECRET]), TOLERANCE, 1_767_000_000), Ok(()));
    }

    #[test]
    fn no_configured_secret_verifies_nothing() {
        let header = sign(b"{}", SECRET, 0);
        assert_eq!(verify(Some(&header), b"{}", &[], TOLERANCE, 0), Err(SignatureError::NoValidSignature));
    }

    #[test]
    fn messages_name_the_check_and_never_the_secret() {
        let header = sign(b"{}", SECRET, 0);
        let errors = [
            verify(None, b"{}", &secrets(&[SECRET]), TOLERANCE, 0),
            verify(Some("garbage"), b"{}", &secrets(&[SECRET]), TOLERANCE, 0),
            verify(Some(&header), b"{!}", &secrets(&[SECRET]), TOLERANCE, 0),
            verify(Some(&header), b"{}", &secrets(&[SECRET]), TOLERANCE, 301),
        ];
        let messages: Vec<String> =
            errors.iter().map(|e| e.as_ref().expect_err("refused").to_string()).collect();
        assert_eq!(
            messages,
            [
                "no Stripe-Signature header",
                "malformed Stripe-Signature header: no t",
                "no v1 signature in the Stripe-Signature header matches the body",
                "the signature is 301 s old, more than the 300 s tolerance",
            ]
        );
    }

    /// Header items that are neither `t` nor `v1`: `v0` and unknown schemes, values without commas.
    fn extra_item() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-f]{0,64}".prop_map(|value| format!("v0={value}")),
            ("[a-z][a-z0-9]{0,3}", "[^,]{0,20}")
                .prop_filter("not t or v1", |(key, _)| key != "t" && key != "v1")
                .prop_map(|(key, value)| format!("{key}={value}")),
        ]
    }

    /// A body, its `t`, and its valid header's items plus extra items, shuffled.
    fn signed_with_extras() -> impl Strategy<Value = (Vec<u8>, i64, Vec<String>)> {
        (
            proptest::collection::vec(any::<u8>(), 0..256),
            0i64..4_000_000_000,
            proptest::collection::vec(extra_item(), 1..5),
        )
            .prop_flat_map(|(body, t, extras)| {
                let mut items: Vec<String> = sign(&body, SECRET, t).split(',').map(str::to_owned).collect();
                items.extend(extras);
                (Just(body), Just(t), Just(items).prop_shuffle())
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_input_never_panics(
            header in prop_oneof![
                any::<String>(),
                "(t=[0-9+-]{0,21}|v1=[0-9a-fA-Fz]{0,66}|v0=[0-9a-f]{0,4}|[a-z]{0,2}=?[ -~]{0,8})(,(t=[0-9]{0,21}|v1=[0-9a-fA-F]{0,66}|[ -~]{0,8})){0,6}",
            ],
            body in proptest::collection::vec(any::<u8>(), 0..256),
            now in any::<i64>(),
            tolerance in any::<u64>(),
        ) {
            let _ = verify(Some(&header), &body, &secrets(&[SECRET]), Duration::from_secs(tolerance), now);
        }

        #[test]
        fn extra_schemes_in_any_order_do_not_matter((body, t, items) in signed_with_extras()) {
            let header = items.join(",");
            prop_assert_eq!(verify(Some(&header), &body, &secrets(&[SECRET]), TOLERANCE, t), Ok(()));
        }

        #[test]
        fn any_changed_byte_fails(
            body in proptest::collection::vec(any::<u8>(), 1..512),
            index in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            t in 0i64..4_000_000_000,
        ) {
            let header = sign(&body, SECRET, t);
            let mut tampered = body.clone();
            tampered[index.index(body.len())] ^= flip;
            prop_assert_eq!(
                verify(Some(&header), &tampered, &secrets(&[SECRET]), TOLERANCE, t),
                Err(SignatureError::NoValidSignature)
            );
        }

        #[test]
        fn a_wrong_secret_fails(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            signer in "whsec_[A-Za-z0-9]{1,32}",
            configured in "whsec_[A-Za-z0-9]{1,32}",
            t in 0i64..4_000_000_000,
        ) {
            prop_assume!(signer != configured);
            let header = sign(&body, &signer, t);
            prop_assert_eq!(
                verify(Some(&header), &body, &secrets(&[&configured]), TOLERANCE, t),
                Err(SignatureError::NoValidSignature)
            );
        }
    }
}
