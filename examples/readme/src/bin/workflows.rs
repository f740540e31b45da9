//! The README's `workflows` program, as written there (see build.rs).

include!(concat!(env!("OUT_DIR"), "/workflows.rs"));
