//! Starts the notifier of the config's `[[notify]]` sinks beside the engine
//! (`recman up`, `recman engine`): it follows the event log on its own
//! tasks, so delivery never blocks the engine (crate `recman-notify`).

use std::sync::Arc;
use std::time::Duration;

use recman_config::Config;
use recman_events::EventLog;
use recman_notify::Notifier;

/// How long a stopping server gives queued notifications to go out.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The notifier of `config` on `log`, or none without `[[notify]]`. Call
/// before the engine starts: what the engine records from then on (an RPO
/// breached at start-up too) is notified. An unreadable secret file is an
/// error naming its config line.
pub fn start(config: &Config, log: Arc<dyn EventLog>) -> anyhow::Result<Option<Notifier>> {
    if config.notify.is_empty() {
        return Ok(None);
    }
    let targets = config
        .targets
        .iter()
        .map(|t| (t.id.clone(), t.rpo.map(|d| d.as_millis() as u64)))
        .collect();
    Ok(Some(Notifier::start(
        &config.notify,
        targets,
        log,
        config.audit.publish_head_every,
    )?))
}

/// Every sink's secret file readable (`recman validate-config`): the first
/// error, naming its config line and the file, never the content.
pub fn check_secrets(config: &Config) -> Result<(), String> {
    for n in &config.notify {
        match &n.kind {
            recman_config::SinkConfig::Webhook(w) => w.secret.read().map(drop)?,
            recman_config::SinkConfig::Email(e) => {
                if let Some(p) = &e.password {
                    p.read().map(drop)?;
                }
            }
        }
    }
    Ok(())
}
