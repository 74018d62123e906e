//! The W3C `traceparent` header (version 00): parse, format, and the
//! deterministic trace of a job (its UUID is the trace id).

use std::fmt;

use recman_events::JobId;

/// One W3C trace context: `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    /// The span the receiver's spans become children of.
    pub span_id: u64,
    /// Bit 0: sampled.
    pub flags: u8,
}

/// The sampled flag of [`TraceParent::flags`].
pub const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// The root of `job`'s trace: trace id = the job's 16 UUID bytes, span id =
    /// its last 8 bytes (the random part of a v7 UUID). Every process computes
    /// the same value, so an engine restarted after a crash, or a worker that got
    /// a command without a header, still puts its spans in the job's trace.
    pub fn job_root(job: JobId) -> TraceParent {
        let id = job.as_u128();
        let span_id = match id as u64 {
            0 => 1, // a span id of zero is invalid
            s => s,
        };
        TraceParent {
            trace_id: id,
            span_id,
            flags: SAMPLED,
        }
    }

    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// Parses a header value; `None` when it is not a valid version-00 (or
    /// later, per the spec's forward compatibility) traceparent.
    pub fn parse(s: &str) -> Option<TraceParent> {
        let s = s.trim();
        let mut parts = s.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let all_hex = |p: &str| p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ![version, trace, span, flags].into_iter().all(all_hex) {
            return None;
        }
        // Version ff is forbidden; version 00 has exactly four fields.
        if version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let tp = TraceParent {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            span_id: u64::from_str_radix(span, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (tp.trace_id != 0 && tp.span_id != 0).then_some(tp)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_the_spec_example() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(s).unwrap();
        assert_eq!(tp.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(tp.span_id, 0x00f067aa0ba902b7);
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), s);
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_job_root_is_the_job_uuid() {
        let job: JobId = "019abcde-f012-7345-8678-9abcdef01234".parse().unwrap();
        let root = TraceParent::job_root(job);
        assert_eq!(
            root.to_string(),
            "00-019abcdef012734586789abcdef01234-86789abcdef01234-01"
        );
        assert_eq!(TraceParent::job_root(job), root, "deterministic");
    }
}
