//! The schedules as `recman schedules` and `GET /v1/schedules` show them:
//! each one's config, next firing, last firing and its outcome, skips and
//! pause, from the config and the log (`recman_core::schedule::Book`).

use recman_core::schedule::{self, Schedule};
use recman_events::{JobId, TargetId};
use serde::{Deserialize, Serialize};

use super::{state_name, View};

/// One schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleView {
    pub id: String,
    pub targets: Vec<TargetId>,
    /// `cron=… timezone=…` or `every=…`, and the rules.
    pub spec: String,
    /// Why it is paused, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// When it fires next (Unix ms, jitter included); none while paused,
    /// or before the engine recorded a changed config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_slot_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<JobId>,
    /// The last firing's job state (`completed`, `failed: …`, `freezing`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    pub fired: u64,
    pub skipped: u64,
    /// The newest skip's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skip: Option<String>,
    /// The config differs from the one the engine recorded: it applies
    /// at the engine's next start.
    #[serde(default)]
    pub pending_restart: bool,
}

impl View {
    /// The config's schedules (for `schedules`).
    pub fn with_schedules(mut self, schedules: Vec<Schedule>) -> Self {
        self.schedules = schedules;
        self
    }

    /// Every schedule of the config, in config order.
    pub fn schedules(&self) -> Vec<ScheduleView> {
        self.schedules
            .iter()
            .map(|s| {
                let st = self.state.book.schedules.get(&s.id).cloned().unwrap_or_default();
                let last_outcome = st
                    .last_job
                    .and_then(|j| self.any_job(&j))
                    .map(|j| match &j.outcome {
                        Some(why) if j.state.is_terminal() => format!("{}: {why}", state_name(j.state)),
                        _ => state_name(j.state).to_string(),
                    });
                ScheduleView {
                    id: s.id.clone(),
                    targets: s.targets.clone(),
                    spec: s.spec(),
                    paused: st.paused.clone(),
                    next_ms: schedule::schedule_due(&self.state, s).map(|d| d.max(self.last_at_ms)),
                    last_slot_ms: st.last_slot_ms,
                    last_job: st.last_job,
                    last_outcome,
                    fired: st.fired,
                    skipped: st.skipped,
                    last_skip: st.last_skip.as_ref().map(|(_, r)| r.clone()),
                    pending_restart: st.spec != s.spec(),
                }
            })
            .collect()
    }
}
