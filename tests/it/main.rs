//! The one integration test binary: black-box tests through real sockets.

mod golden;
mod harness;
mod namesrv_route;
mod rust_client;
mod store_crash;
