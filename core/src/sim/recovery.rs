//! Recovery in the simulated world (restore, mount, clone): placeholder
//! until the recovery faults and invariants land.

use recman_events::{Command, Outcome};

use super::{Checked, Sim};

impl Sim {
    /// A recovery step: not simulated yet (no recovery is requested).
    pub(super) fn recovery_step(&mut self, _w: usize, _cmd: &Command) -> Checked<(Option<Outcome>, u64)> {
        Ok((None, 0))
    }
}
