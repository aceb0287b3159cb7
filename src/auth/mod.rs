//! Who is calling, proven: Altinn tokens validated against the platform's
//! OIDC keys, platform access tokens against the issuing organisation's
//! certificate, and instance access keys against the configured key ring.
//! Platform-client layer: makes [`crate::domain::Principal`] and
//! [`crate::domain::PlatformApp`] from tokens; knows nothing of HTTP
//! requests (the extractors that read headers live in `api/`).

mod access_token;
mod claims;
pub mod instance_key;
mod oidc;
mod verified;

pub use access_token::AccessTokenVerifier;
pub use claims::principal_from_claims;
pub use oidc::{DISCOVERY_PATH as OIDC_DISCOVERY_PATH, OidcKeys, SigningKeys, TokenValidator};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("signing keys could not be fetched")]
    KeysUnavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AuthError {
    pub(crate) fn invalid(e: impl std::fmt::Display) -> Self {
        Self::Invalid(e.to_string())
    }

    /// A token refused by the JWT library: the reason, never a value from
    /// the token (JSON errors quote the claim they could not read).
    pub(crate) fn jwt(e: jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind;
        let reason = match e.kind() {
            ErrorKind::InvalidToken => "not a JWT",
            ErrorKind::InvalidSignature => "signature does not verify",
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm not accepted",
            ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
            ErrorKind::ExpiredSignature => "expired",
            ErrorKind::InvalidIssuer => "issuer not accepted",
            ErrorKind::ImmatureSignature => "not valid yet",
            ErrorKind::Base64(_) => "not base64url",
            ErrorKind::Json(_) | ErrorKind::Utf8(_) => "header or claims not readable",
            _ => "token not accepted",
        };
        Self::Invalid(reason.to_owned())
    }
}
