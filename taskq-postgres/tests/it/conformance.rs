//! The conformance suites on PostgreSQL: every suite test runs here, as on Redis.

use super::support::{
    bounded_postgres_broker, capped_postgres_broker, postgres_backend, postgres_broker,
};

taskq_testkit::transport_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] transport => postgres_broker(), bounded_at_fifty => bounded_postgres_broker());
taskq_testkit::membership_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] membership => postgres_broker());
taskq_testkit::control_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] control => postgres_broker());
taskq_testkit::inspector_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] inspector => postgres_broker(), capped => capped_postgres_broker());
taskq_testkit::partitions_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] partitions => postgres_broker(), bounded_at_fifty => bounded_postgres_broker());
taskq_testkit::keyed_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] keyed => postgres_broker(), bounded_at_fifty => bounded_postgres_broker());
taskq_testkit::catalog_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] catalog => postgres_broker());
taskq_testkit::backend_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] backend => postgres_backend());
