//! Signing keys of the local token issuer. The key is generated at start
//! unless `localtest.key_file` names a PKCS#8 PEM file; rotation adds a new
//! key (new `kid`) and keeps the old ones in the JWKS.

use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("RSA key generation failed")]
    Generate(#[source] rsa::Error),
    #[error("key file is not a PKCS#8 RSA private key")]
    Decode(#[source] rsa::pkcs8::Error),
    #[error("key encoding failed")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("token signing failed")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    public: RsaPublicKey,
}

impl SigningKey {
    fn from_private(private: &RsaPrivateKey) -> Result<Self, KeyError> {
        let public = private.to_public_key();
        // kid: a thumbprint-like id from the modulus, stable for a key file.
        let n = public.n().to_bytes_be();
        let kid = URL_SAFE_NO_PAD.encode(&n[n.len().saturating_sub(12)..]);
        let pkcs1 =
            rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_der(private).map_err(|e| KeyError::Encode(Box::new(e)))?;
        let encoding = EncodingKey::from_rsa_der(pkcs1.as_bytes());
        Ok(Self { kid, encoding, public })
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(self.public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(self.public.e().to_bytes_be()),
        })
    }
}

pub struct LocalKeys {
    keys: RwLock<Vec<SigningKey>>,
}

/// A fresh 2048-bit RSA key as PKCS#8 PEM (what `localtest.key_file` holds).
pub fn generate_pem() -> Result<String, KeyError> {
    let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(KeyError::Generate)?;
    Ok(key.to_pkcs8_pem(LineEnding::LF).map_err(|e| KeyError::Encode(Box::new(e)))?.to_string())
}

impl LocalKeys {
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let private = RsaPrivateKey::from_pkcs8_pem(pem).map_err(KeyError::Decode)?;
        Ok(Self { keys: RwLock::new(vec![SigningKey::from_private(&private)?]) })
    }

    pub fn generate() -> Result<Self, KeyError> {
        Self::from_pem(&generate_pem()?)
    }

    /// Adds a new signing key; tokens are signed with it from now on.
    pub fn rotate(&self) -> Result<String, KeyError> {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(KeyError::Generate)?;
        let key = SigningKey::from_private(&private)?;
        let kid = key.kid.clone();
        self.keys.write().expect("key lock").push(key);
        Ok(kid)
    }

    pub fn jwks(&self) -> Value {
        let keys = self.keys.read().expect("key lock");
        json!({ "keys": keys.iter().map(SigningKey::jwk).collect::<Vec<_>>() })
    }

    /// SubjectPublicKeyInfo PEM of the current key: what `{issuer}.pem` holds
    /// for platform access tokens in dev mode.
    pub fn public_pem(&self) -> Result<String, KeyError> {
        let keys = self.keys.read().expect("key lock");
        let current = keys.last().expect("at least one key");
        current.public.to_public_key_pem(LineEnding::LF).map_err(|e| KeyError::Encode(Box::new(e)))
    }

    pub fn sign(&self, claims: &impl Serialize) -> Result<String, KeyError> {
        let keys = self.keys.read().expect("key lock");
        let current = keys.last().expect("at least one key");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(current.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &current.encoding).map_err(KeyError::Sign)
    }

    /// Verification key for tokens this issuer signed (Maskinporten exchange).
    pub fn decoding_keys(&self) -> Vec<jsonwebtoken::DecodingKey> {
        let keys = self.keys.read().expect("key lock");
        keys.iter()
            .map(|k| {
                jsonwebtoken::DecodingKey::from_rsa_raw_components(
                    &k.public.n().to_bytes_be(),
                    &k.public.e().to_bytes_be(),
                )
            })
            .collect()
    }
}
