//! The one integration test binary: black-box tests through real sockets.

mod acl;
mod admin_cli;
mod admin_config;
mod admin_offsets;
mod admin_query;
mod broker_admin;
mod broker_basic;
mod broker_crash;
mod broker_delay;
mod broker_quirks;
mod broker_transaction;
mod dashboard;
mod dashboard_browser;
mod golden;
mod ha;
mod ha_process;
mod harness;
mod loadgen;
mod namesrv_route;
mod process;
mod rust_client;
mod rust_client_broker;
mod rust_client_features;
mod rust_client_support;
mod shutdown_cli;
mod store_crash;
