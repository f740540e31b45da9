//! Workers on Redis's distributed engines: a real Redis Cluster (3 masters + 3 replicas) and a
//! Sentinel group (master, replica, 3 sentinels). Masters are killed and slots moved while
//! workers run; every task id the producer was told is enqueued is accounted for by its
//! stored result.

mod cluster;
mod sentinel;
mod support;
