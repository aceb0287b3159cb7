//! Platform access tokens (header `PlatformAccessToken`): a JWT issued by an
//! organisation (`iss` = `ttd`) for one of its apps (`urn:altinn:app`),
//! verified with that issuer's public certificate `{dir}/{issuer}.pem`, the
//! way AKS mounts Key Vault certificates. Certificates are re-read after
//! `RELOAD_AFTER`, so a rotated certificate is picked up without a restart.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::RwLock;

use super::AuthError;
use super::oidc::rs256_validation;
use super::verified::Verified;
use crate::domain::PlatformApp;

const RELOAD_AFTER: Duration = Duration::from_secs(300);

#[derive(Deserialize)]
struct AccessClaims {
    iss: String,
    #[serde(default)]
    exp: u64,
    #[serde(rename = "urn:altinn:app")]
    app: Option<String>,
}

pub struct AccessTokenVerifier {
    dir: PathBuf,
    leeway_seconds: u64,
    cache: RwLock<HashMap<String, (DecodingKey, Instant)>>,
    verified: Verified<PlatformApp>,
}

impl AccessTokenVerifier {
    pub fn new(dir: PathBuf, leeway_seconds: u64) -> Self {
        Self { dir, leeway_seconds, cache: RwLock::default(), verified: Verified::new(leeway_seconds) }
    }

    pub async fn verify(&self, token: &str) -> Result<PlatformApp, AuthError> {
        if let Some(app) = self.verified.get(token) {
            return Ok(app);
        }
        let header = jsonwebtoken::decode_header(token).map_err(AuthError::jwt)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        // The issuer decides which certificate to check with; it is trusted
        // only after the signature verifies with that certificate.
        let unverified: AccessClaims =
            jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(AuthError::jwt)?;
        let issuer = unverified.iss;
        if issuer.is_empty() || !issuer.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(AuthError::invalid("issuer is not a valid organisation code"));
        }
        let key = self.key(&issuer).await?;
        let validation = rs256_validation(self.leeway_seconds, &issuer);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation).map_err(AuthError::jwt)?;
        let app = data.claims.app.filter(|a| !a.is_empty()).ok_or_else(|| AuthError::invalid("no urn:altinn:app"))?;
        let verified = PlatformApp { issuer, app };
        self.verified.insert(token, data.claims.exp, verified.clone());
        Ok(verified)
    }

    async fn key(&self, issuer: &str) -> Result<DecodingKey, AuthError> {
        if let Some((key, at)) = self.cache.read().await.get(issuer)
            && at.elapsed() < RELOAD_AFTER
        {
            return Ok(key.clone());
        }
        let path = self.dir.join(format!("{issuer}.pem"));
        let pem = match tokio::fs::read(&path).await {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AuthError::invalid(format!("no certificate for issuer {issuer}")));
            }
            Err(e) => return Err(AuthError::KeysUnavailable(Box::new(e))),
        };
        let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| AuthError::KeysUnavailable(Box::new(e)))?;
        self.cache.write().await.insert(issuer.to_owned(), (key.clone(), Instant::now()));
        Ok(key)
    }
}
