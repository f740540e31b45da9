//! The README's `partitions` program, as written there (see build.rs).

include!(concat!(env!("OUT_DIR"), "/partitions.rs"));
