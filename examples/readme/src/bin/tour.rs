//! The README's `tour` program, as written there (see build.rs).

include!(concat!(env!("OUT_DIR"), "/tour.rs"));
