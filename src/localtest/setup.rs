//! Dev mode's wiring: the local platform (keys, dataset, the access-token
//! certificates the production verifier reads) set up from configuration.
//!
//! Invariants it keeps:
//! - **Nothing is left behind**: certificates go to a folder of the
//!   service's own (unless `auth.access_token_certs_dir` names one), removed
//!   when the [`DevPlatform`] is dropped.
//! - **The production paths run**: the service verifies local tokens and
//!   access tokens with the same code and settings as in `serve`; only what
//!   it is pointed at differs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use url::Url;

use super::{Dataset, LocalKeys, LocalPlatform};
use crate::config::Config;

/// The local platform of a dev-mode instance, and the folder it made.
pub struct DevPlatform {
    pub local: Arc<LocalPlatform>,
    _scratch: Option<ScratchDir>,
}

impl DevPlatform {
    /// The local platform's keys and dataset from `config`, answering at
    /// `platform`; the access-token certificates are written where
    /// `config` says, or to a new folder (then set in `config`).
    pub fn set_up(config: &mut Config, platform: &Url, addr: SocketAddr) -> anyhow::Result<Self> {
        let keys = match &config.localtest.key_file {
            Some(path) => {
                let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
                LocalKeys::from_pem(&pem).context("localtest.key_file")?
            }
            None => LocalKeys::generate().context("generating the local signing key")?,
        };
        let dataset = Dataset::load(config.localtest.dataset.as_deref()).context("localtest.dataset")?;
        let local = LocalPlatform::new(keys, dataset, platform.clone());
        let mut scratch = None;
        let dir = match &config.auth.access_token_certs_dir {
            Some(dir) => dir.clone(),
            None => {
                let root =
                    std::env::temp_dir().join(format!("altinn-events-dev-{}-{}", std::process::id(), addr.port()));
                scratch = Some(ScratchDir(root.clone()));
                let dir = root.join("certs");
                config.auth.access_token_certs_dir = Some(dir.clone());
                dir
            }
        };
        local.write_access_token_certs(&dir).with_context(|| format!("writing certificates to {}", dir.display()))?;
        Ok(Self { local: Arc::new(local), _scratch: scratch })
    }

    /// The stand-ins' routes (Altinn's paths).
    pub fn router(&self) -> Router {
        super::router(self.local.clone())
    }
}

/// A folder the service made for itself, removed when dropped.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(error = %e, path = %self.0.display(), "removing the dev folder failed");
        }
    }
}
