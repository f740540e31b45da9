//! Worker behaviour on the in-memory broker with tokio's paused clock.

mod support;

mod acl;
mod control;
mod encryption;
mod failures;
mod lifecycle;
mod ordering;
mod redis;
mod semantics;
mod signing;
mod success;
