//! Wiring: reads `secrets_dir` again every `secrets_reload_seconds` and
//! hands new values of the settings that can change while the service runs
//! (the PDP and Register subscription keys, the cursor, instance access
//! and subscription secret key rings) to what uses them. Other settings changed in a file are logged:
//! they take effect at the next start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::cursor::Cursors;
use crate::auth::instance_key::InstanceKeys;
use crate::config::{Config, Mode, Role};
use crate::secrets::{self, SharedSecret};

/// The settings that change without a restart: these files, and the files
/// of the two key rings (`cursors__key_ring`, `cursors__keys__<id>`, ...).
const RELOADED: &[&str] = &["pdp__subscription_key", "register__subscription_key"];
const CURSOR_FILES: &[&str] = &["cursors__"];
const INSTANCE_ACCESS_FILES: &[&str] =
    &["instance_access__keys__", "instance_access__key_ring", "instance_access__signing_key"];
const SUBSCRIPTION_SECRET_FILES: &[&str] = &["subscription_secrets__"];

fn reloaded(name: &str) -> bool {
    RELOADED.contains(&name)
        || CURSOR_FILES
            .iter()
            .chain(INSTANCE_ACCESS_FILES)
            .chain(SUBSCRIPTION_SECRET_FILES)
            .any(|s| name.starts_with(s))
}

/// Whether a file starting with `prefix` is in either listing.
fn involves(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>, prefix: &str) -> bool {
    before.keys().chain(after.keys()).any(|name| name.starts_with(prefix))
}

pub struct Reload {
    pub dir: PathBuf,
    pub file: Option<PathBuf>,
    pub mode: Mode,
    /// The role the instance runs (`serve --role` may have set it).
    pub role: Role,
    pub pdp_key: SharedSecret,
    pub register_key: SharedSecret,
    pub cursors: Arc<Cursors>,
    pub instance_keys: Arc<InstanceKeys>,
    /// The ring sealing the stored webhook secrets (`FeedStore::webhook_secrets`).
    pub webhook_secrets: Arc<crate::secrets::Sealer>,
}

impl Reload {
    /// Applies the files as they are now (at start: the configuration the
    /// service was given may predate them); what was read, for [`Reload::run`].
    pub fn apply_current(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let files = secrets::read_dir(&self.dir).map_err(anyhow::Error::msg)?;
        self.apply(&files, &files)?;
        Ok(files)
    }

    /// Reads the folder every `every` and applies what changed since `seen`.
    pub async fn run(self, mut seen: BTreeMap<String, String>, every: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let files = match secrets::read_dir(&self.dir) {
                Ok(files) => files,
                Err(e) => {
                    tracing::warn!(error = %e, "reading secrets_dir failed; the settings stay as they are");
                    metrics::counter!("secrets_reloads_total", "outcome" => "failed").increment(1);
                    continue;
                }
            };
            if files == seen {
                continue;
            }
            match self.apply(&seen, &files) {
                Ok(()) => seen = files,
                Err(e) => {
                    tracing::error!(error = %e, "the changed secrets are invalid; the settings stay as they are");
                    metrics::counter!("secrets_reloads_total", "outcome" => "failed").increment(1);
                }
            }
        }
    }

    /// Loads the configuration again (with the new files) and hands on what
    /// changed. Nothing is applied unless the whole configuration is valid.
    /// Only the settings that files give (now or before) are handed on: what
    /// came from elsewhere stays as the service was started with it.
    fn apply(&self, before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> anyhow::Result<()> {
        let mut config = Config::load_with_secrets(self.file.as_deref(), Some(&self.dir))?;
        config.role = self.role;
        let config = config.finalize(self.mode)?;
        let (cursors, instance_keys) = (&config.cursor_ring, &config.instance_access_ring);
        let mut changed = Vec::new();
        let involved = |prefix: &str| involves(before, after, prefix);
        if involved("pdp__subscription_key") && self.pdp_key.set(config.pdp.subscription_key.clone()) {
            changed.push("pdp.subscription_key");
        }
        if involved("register__subscription_key") && self.register_key.set(config.register.subscription_key.clone()) {
            changed.push("register.subscription_key");
        }
        // Dev mode made up a ring when none was configured: keep it.
        if CURSOR_FILES.iter().any(|s| involved(s))
            && !(cursors.keys.is_empty() && self.mode == Mode::Dev)
            && self.cursors.replace(cursors)
        {
            changed.push("cursors");
        }
        if INSTANCE_ACCESS_FILES.iter().any(|s| involved(s))
            && !(instance_keys.keys.is_empty() && self.mode == Mode::Dev)
            && self.instance_keys.replace(instance_keys)
        {
            changed.push("instance_access");
        }
        let webhook_ring = &config.subscription_secret_ring;
        if SUBSCRIPTION_SECRET_FILES.iter().any(|s| involved(s))
            && !(webhook_ring.keys.is_empty() && self.mode == Mode::Dev)
            && self.webhook_secrets.replace(webhook_ring)
        {
            changed.push("subscription_secrets");
        }
        let restart: std::collections::BTreeSet<&str> = before
            .keys()
            .chain(after.keys())
            .filter(|name| before.get(*name) != after.get(*name) && !reloaded(name))
            .map(String::as_str)
            .collect();
        if !restart.is_empty() {
            tracing::warn!(settings = ?restart, "settings changed in secrets_dir take effect at the next restart");
        }
        if !changed.is_empty() {
            tracing::info!(settings = ?changed, "secrets reloaded");
            metrics::counter!("secrets_reloads_total", "outcome" => "applied").increment(1);
        }
        Ok(())
    }
}
