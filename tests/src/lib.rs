//! Workspace-level integration tests live in tests/tests/; this library holds
//! the fakes they share (only for what cannot exist on a test machine).

pub mod wsapi_fake;
