//! What every page reads: the shared [`AppState`], the page-size bound, and the check every
//! action passes. Below the pages and the server, so neither imports the other through it.

use std::sync::Arc;

use axum::{
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use taskq_core::{BeatStore, Client};

use crate::{csrf::Csrf, gate::Gate, host::AllowedHosts};

/// Most entries one page lists, whatever the request asks: a million dead letters never make
/// a page slow.
pub const MAX_PAGE: usize = 200;

/// What every handler reads.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) client: Client,
    pub(crate) gate: Gate,
    /// `Host` names an open dashboard answers (see [`crate::host`]).
    pub(crate) hosts: AllowedHosts,
    pub(crate) read_only: bool,
    pub(crate) csrf: Csrf,
    /// Where the beat publishes its schedule, when known.
    pub(crate) beat: Option<Arc<dyn BeatStore>>,
}

pub(crate) type Shared = Arc<AppState>;

/// Checks an action's CSRF token and, when the browser sent one, its `Origin`.
pub(crate) fn check_action(
    state: &AppState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(), Response> {
    if !state.csrf.accepts(csrf) {
        return Err((
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token; reload the page",
        )
            .into_response());
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| rest == host);
        if !same {
            return Err((StatusCode::FORBIDDEN, "cross-origin action refused").into_response());
        }
    }
    Ok(())
}
