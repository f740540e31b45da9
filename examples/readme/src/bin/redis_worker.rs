//! The README's `redis_worker` program, as written there (see build.rs).

include!(concat!(env!("OUT_DIR"), "/redis_worker.rs"));
