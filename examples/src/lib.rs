//! Demo tasks and process entry points shared by the examples, the `taskq-demo-worker` binary
//! and the fault tests that drive real worker processes.

pub mod demo;
pub mod producer;
