//! Integration tests of taskq-core: the broker and backend conformance suites run against
//! every implementation, plus client behaviour.

mod client;
mod enqueue_paths;
mod memory;
