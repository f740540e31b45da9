//! Integration tests of taskq-redis: the broker and backend conformance suites on a real
//! redis-server, plus what only the Redis implementations promise.

mod cluster;
mod conformance;
mod due_index;
mod tls;
mod waiters;
