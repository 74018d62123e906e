//! The deterministic simulator (in progress).
