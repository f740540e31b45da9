//! Redis plumbing shared by the Redis broker and result backend: key names, Lua scripts,
//! connections and server checks.

pub(crate) mod connection;
pub(crate) mod keys;
pub(crate) mod scripts;
