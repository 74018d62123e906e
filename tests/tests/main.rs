//! The workspace-level integration tests: every integration test of the crate in one binary (one
//! compile and one link of the crate's dependencies instead of one per
//! file). Each file of this directory is a module; nextest still runs each
//! test in its own process. A new file must be declared here: the test
//! below fails otherwise.

mod amqp_bench;
mod amqp_cluster;
mod amqp_deploy_walkthrough;
mod amqp_dlq;
mod amqp_engine;
mod amqp_failover;
mod amqp_faults;
mod amqp_host_freeze;
mod amqp_identity;
mod amqp_limits;
mod amqp_permissions;
mod amqp_postgres_restore;
mod amqp_python;
mod amqp_recovery;
mod amqp_up;
mod api;
mod api_bounded;
mod api_contract;
mod api_roles;
mod api_support;
mod api_tls;
mod approval_api;
mod audit_cli;
mod audit_export_cli;
mod by_identity;
mod check_cli;
mod checkpoints;
mod console_browser;
mod engine_listen;
mod events_follow_cli;
mod group_catalog_cli;
mod hostile_text_cli;
mod linux_e2e;
mod log_damage_cli;
mod log_location_cli;
mod log_segments;
mod notify_cli;
mod package_deb;
mod pg_log_cli;
mod pg_standby;
mod postgres_e2e;
mod postgres_protect;
mod postgres_restore;
mod prune_cli;
mod read_cli;
mod reconcile_cli;
mod reconcile_e2e;
mod recovery_api;
mod recovery_cli;
mod schedules_cli;
mod schemas;
mod simulate_cli;
mod snapshot_demo_cli;
mod snapshot_failures_cli;
mod threepar_e2e;
mod threepar_examples;
mod threepar_provider;
mod threepar_recovery;
mod trace_jobs;
mod trace_otlp;
mod up_cli;
mod verify_cli;
mod verify_e2e;
mod verify_pg;
mod worker_status_cli;
mod wsapi_fake;

/// Every `.rs` file beside this one is a module of the suite (a file that is
/// not would silently never compile or run).
#[test]
fn every_test_file_is_a_module_of_the_suite() {
    recman_testkit::suite::assert_every_test_file_is_declared(env!("CARGO_MANIFEST_DIR"));
}
