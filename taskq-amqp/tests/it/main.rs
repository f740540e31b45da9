//! Integration tests of taskq-amqp on a private RabbitMQ node (one per test binary, a fresh
//! vhost per test): the conformance suites where AMQP behaves as the other brokers, and what
//! only RabbitMQ does (delays, delivery limits, redelivery by the server).

mod beat;
mod behaviour;
mod celery;
mod conformance;
mod delays;
mod long_runs;
mod replies;
mod support;
mod tls;
mod worker;
