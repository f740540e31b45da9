//! taskq-beat integration tests: fires and catch-up on the paused clock, the leader lock on
//! memory and Redis, and several real `taskq-beat` processes against one redis-server and
//! against RabbitMQ alone.

mod amqp;
mod cluster;
mod fires;
mod lock;
mod replicas;
mod schedule_file;
mod with_workers;
