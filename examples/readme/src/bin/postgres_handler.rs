//! The README's `postgres_handler` program, as written there (see build.rs).

include!(concat!(env!("OUT_DIR"), "/postgres_handler.rs"));
