//! Integration tests of taskq-postgres against a private PostgreSQL server this binary starts
//! (one per binary, a fresh schema per test): the conformance suites, and what only
//! PostgreSQL does.

mod beat_store;
mod conformance;
mod durability;
mod errors;
mod support;
mod upkeep;
mod within;
