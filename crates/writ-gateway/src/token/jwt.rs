//! What Writ checks of the JWTs it verifies (writs, assertions, OIDC tokens, JWT-SVIDs)
//! beyond the signature and the claims `jsonwebtoken` checks: their lifetime, judged by
//! the clock Writ was given rather than the system's, and the words a refusal uses.

use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;

/// A `Validation` for `algorithm` that leaves `exp` and `nbf` to [`within_lifetime`]:
/// `jsonwebtoken` would judge them by the system's clock, and Writ judges them by the
/// clock it was given. Whether `exp` is present (and a number) is still checked here,
/// by the required claims the caller names.
pub(super) fn validation(algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation
}

/// Whether a JWT is within its lifetime at `now`, with `leeway` seconds either way, as
/// `jsonwebtoken` judges `exp` and `nbf` (expired once `exp` is more than `leeway`
/// behind; not valid yet while `nbf` is more than `leeway` ahead), in [`describe`]'s
/// words.
pub(super) fn within_lifetime(
    exp: i64,
    nbf: Option<i64>,
    now: i64,
    leeway: u64,
) -> Result<(), &'static str> {
    let leeway = i64::try_from(leeway).unwrap_or(i64::MAX);
    if nbf.is_some_and(|nbf| nbf < 0) {
        return Err("it does not verify");
    }
    if exp < now.saturating_sub(leeway) {
        return Err("it has expired");
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err("it is not valid yet (`nbf`)");
    }
    Ok(())
}

/// `exp` and `nbf` of claims read as JSON: NumericDates, whole or not (rounded, as
/// `jsonwebtoken` reads them), never negative.
pub(super) fn lifetime_of(claims: &Value) -> Result<(i64, Option<i64>), &'static str> {
    let date = |value: &Value| -> Option<i64> {
        match value.as_u64() {
            Some(whole) => i64::try_from(whole).ok(),
            // Finite, not negative and below 2^63: rounded, it fits.
            None => value
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < 9.2e18)
                .map(|f| f.round() as i64),
        }
    };
    let exp = claims
        .get("exp")
        .and_then(date)
        .ok_or("it lacks the `exp` claim")?;
    let nbf = match claims.get("nbf") {
        None => None,
        Some(nbf) => Some(date(nbf).ok_or("it does not verify")?),
    };
    Ok((exp, nbf))
}

/// A JWT error as an agent can act on it, without library type names.
pub fn describe(err: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::InvalidSignature => "the signature does not verify".into(),
        ErrorKind::ExpiredSignature => "it has expired".into(),
        ErrorKind::ImmatureSignature => "it is not valid yet (`nbf`)".into(),
        ErrorKind::InvalidAudience => "it is meant for another audience (`aud`)".into(),
        ErrorKind::InvalidIssuer => "its issuer (`iss`) is not the expected one".into(),
        ErrorKind::InvalidSubject => "its subject (`sub`) is not the expected one".into(),
        ErrorKind::InvalidAlgorithm => "its algorithm is not the one its key is for".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it lacks the `{claim}` claim"),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "it is not a well-formed JWT".into(),
        _ => "it does not verify".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds `jsonwebtoken` applies by the system clock, applied by Writ's.
    #[test]
    fn lifetimes_are_judged_at_the_time_given_with_the_skew_either_way() {
        let now = 1_000;
        assert_eq!(within_lifetime(970, None, now, 30), Ok(()));
        assert_eq!(within_lifetime(969, None, now, 30), Err("it has expired"));
        assert_eq!(within_lifetime(2_000, Some(1_030), now, 30), Ok(()));
        assert_eq!(
            within_lifetime(2_000, Some(1_031), now, 30),
            Err("it is not valid yet (`nbf`)")
        );
        assert_eq!(
            within_lifetime(2_000, Some(-1), now, 30),
            Err("it does not verify")
        );
    }

    #[test]
    fn numeric_dates_read_as_json_are_rounded_and_never_negative() {
        let read = |claims: Value| lifetime_of(&claims);
        assert_eq!(read(serde_json::json!({"exp": 10})), Ok((10, None)));
        assert_eq!(
            read(serde_json::json!({"exp": 10.6, "nbf": 4.4})),
            Ok((11, Some(4)))
        );
        assert!(read(serde_json::json!({"exp": -1})).is_err());
        assert!(read(serde_json::json!({"exp": 10, "nbf": "soon"})).is_err());
        assert!(read(serde_json::json!({"nbf": 1})).is_err());
    }
}
