//! The AMQP bus's integration tests: every integration test of the crate in one binary (one
//! compile and one link of the crate's dependencies instead of one per
//! file). Each file of this directory is a module; nextest still runs each
//! test in its own process. A new file must be declared here: the test
//! below fails otherwise.

mod broker_faults;
mod broker_restart;
mod bus_contract;
mod definitions;
mod group_routing;
mod tls;

/// Every `.rs` file beside this one is a module of the suite (a file that is
/// not would silently never compile or run).
#[test]
fn every_test_file_is_a_module_of_the_suite() {
    recman_testkit::suite::assert_every_test_file_is_declared(env!("CARGO_MANIFEST_DIR"));
}
