//! Who caused the events of one step (`Event::by`): the sender of the input
//! (an API user, `amqp:<user>`, `cli:<unix user>`), or, for what the engine
//! decides at a timer, the schedule whose slot fired (`schedule:<id>`);
//! empty for the rest (workers' reports, timeouts, retention).

use std::collections::BTreeMap;

use recman_events::{Event, EventBody, JobId};

/// Gives every event of `events` without a `by` the sender's (nothing when
/// `by` is empty).
pub fn stamp(events: &mut [Event], by: &str) {
    if by.is_empty() {
        return;
    }
    for e in events.iter_mut().filter(|e| e.by.is_empty()) {
        e.by = by.to_string();
    }
}

/// `schedule:<id>` on the schedule's own events and on every event of a
/// job one of its slots fired in this step (its request, queueing, first
/// attempt).
pub fn attribute_schedules(events: &mut [Event]) {
    let fired: BTreeMap<JobId, String> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ScheduleFired { schedule, .. } => Some((e.job, schedule.clone())),
            _ => None,
        })
        .collect();
    for e in events.iter_mut().filter(|e| e.by.is_empty()) {
        let schedule = match &e.body {
            EventBody::ScheduleFired { schedule, .. }
            | EventBody::ScheduleSkipped { schedule, .. }
            | EventBody::ScheduleQueued { schedule, .. } => Some(schedule),
            _ if e.job != JobId::NONE => fired.get(&e.job),
            _ => None,
        };
        if let Some(s) = schedule {
            e.by = format!("schedule:{s}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recman_events::{RequestId, SnapshotKind, TargetId};

    fn ev(job: JobId, body: EventBody) -> Event {
        Event {
            at_ms: 1,
            job,
            body,
            by: String::new(),
        }
    }

    #[test]
    fn a_firing_is_the_schedules_and_a_call_the_senders() {
        let (a, b) = (JobId::from_parts(1, 1), JobId::from_parts(1, 2));
        let mut events = vec![
            ev(
                a,
                EventBody::Requested {
                    request_id: RequestId::from("schedule:nightly:1"),
                    targets: vec![TargetId::from("db01")],
                    kind: SnapshotKind::Full,
                    origin: "schedule:nightly".into(),
                },
            ),
            ev(
                a,
                EventBody::ScheduleFired {
                    schedule: "nightly".into(),
                    slot_ms: 1,
                },
            ),
            ev(
                a,
                EventBody::AttemptStarted {
                    attempt: 1,
                    freeze_budget_ms: 1,
                    watchdog_at_ms: 1,
                },
            ),
            ev(
                b,
                EventBody::Failed {
                    attempt: 1,
                    reason: "timeout".into(),
                },
            ),
        ];
        attribute_schedules(&mut events);
        let by: Vec<&str> = events.iter().map(|e| e.by.as_str()).collect();
        assert_eq!(
            by,
            ["schedule:nightly", "schedule:nightly", "schedule:nightly", ""]
        );
        stamp(&mut events, "alice");
        assert_eq!(events[3].by, "alice");
        assert_eq!(
            events[0].by, "schedule:nightly",
            "an attribution is not overwritten"
        );
        stamp(&mut events[3..], "");
        assert_eq!(events[3].by, "alice");
    }
}
