//! Integration tests of taskq-core: the broker and backend conformance suites run against
//! every implementation, plus client behaviour.

mod backend_suite;
mod broker_suite;
mod client;
mod memory;
mod redis;
