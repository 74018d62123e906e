//! When the engine takes mounts away (`max_mount_age`): each mount's age
//! limit, indexed as recovery events fold in, so neither a decision nor a
//! fold looks at every mount (a fleet's day leaves thousands of them).

use std::collections::{BTreeMap, BTreeSet};

use recman_events::{Event, EventBody, JobId, RecoveryAction};

use crate::recovery;
use crate::{CoreConfig, State};

/// The age limit of every mount that has one and whose taking away the
/// engine has not asked for ([`recovery::mount_due`]), by mount and by time.
#[derive(Clone, Debug, Default)]
pub struct MountsDue {
    by_mount: BTreeMap<JobId, u64>,
    by_time: BTreeSet<(u64, JobId)>,
}

impl MountsDue {
    /// The index of `state`'s mounts (a start or a resume).
    pub fn build(state: &State, cfg: &CoreConfig) -> MountsDue {
        let mut ix = MountsDue::default();
        for id in state.recovery.mounts.keys() {
            ix.refresh(state, cfg, *id);
        }
        ix
    }

    /// The earliest (what [`recovery::mounts_due`] finds by a full scan).
    pub fn earliest(&self) -> Option<u64> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// The mounts due at `now`, in mount id order (as a full scan finds them).
    pub fn due_by(&self, now: u64) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self
            .by_time
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, id)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// After `e` was folded into `state`: a mount's limit changes only with
    /// an event of the mount's own job (it appears or goes), or of a
    /// recovery whose action is to unmount it (asked, started, ended,
    /// cancelled: whether the engine's taking away is pending).
    pub fn observe(&mut self, state: &State, cfg: &CoreConfig, e: &Event) {
        let op = state.recovery.ops.get(&e.job);
        if op.is_none() && !recovery::changes_mounts_due(&e.body) {
            return;
        }
        self.refresh(state, cfg, e.job);
        let named = match (&e.body, op) {
            (EventBody::RecoveryRequested { action, .. }, _) => unmount_of(action),
            (_, Some(op)) => unmount_of(&op.action),
            _ => None,
        };
        if let Some(mount) = named {
            self.refresh(state, cfg, mount);
        }
    }

    fn refresh(&mut self, state: &State, cfg: &CoreConfig, mount: JobId) {
        if let Some(at) = self.by_mount.remove(&mount) {
            self.by_time.remove(&(at, mount));
        }
        let due = state
            .recovery
            .mounts
            .get(&mount)
            .and_then(|m| recovery::mount_due(state, cfg, m));
        if let Some(at) = due {
            self.by_mount.insert(mount, at);
            self.by_time.insert((at, mount));
        }
    }
}

fn unmount_of(action: &RecoveryAction) -> Option<JobId> {
    match action {
        RecoveryAction::Unmount { mount } => Some(*mount),
        _ => None,
    }
}
