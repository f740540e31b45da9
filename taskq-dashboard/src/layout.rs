//! The page shell (navigation, assets), action forms, and how payloads are shown.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use maud::{html, Markup, DOCTYPE};

use crate::state::AppState;

/// Payloads larger than this show their start, with a link to download them whole.
pub(crate) const SHOWN_BYTES: usize = 64 * 1024;

/// What a URL path segment or query value may hold unescaped (RFC 3986's unreserved set).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` as one URL path segment or query value: a queue named `a#b` or `x?y` still links to
/// itself.
pub(crate) fn url_part(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, UNRESERVED).to_string()
}

/// A page: title, navigation, `body`.
pub(crate) fn page(state: &AppState, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · taskq" }
                link rel="stylesheet" href="/assets/dashboard.css";
                script src="/assets/dashboard.js" defer {}
            }
            body {
                nav {
                    a.brand href="/" { "taskq" }
                    a href="/" { "Overview" }
                    a href="/active" { "Active" }
                    a href="/workers" { "Workers" }
                    a href="/history" { "History" }
                    a href="/numbers" { "Numbers" }
                    a href="/scheduled" { "Scheduled" }
                    a href="/dead" { "Dead letters" }
                    a href="/beat" { "Beat" }
                    form.lookup method="get" action="/tasks" {
                        input type="search" name="id" placeholder="task or workflow id" aria-label="task id";
                    }
                    @if state.read_only { span.badge { "read-only" } }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A POST button for `action` (hidden in read-only mode), carrying the CSRF token; with
/// `confirm`, the script asks before sending.
pub(crate) fn action(state: &AppState, action: &str, label: &str, confirm: Option<&str>) -> Markup {
    if state.read_only {
        return html! {};
    }
    html! {
        form.action method="post" action=(action) data-confirm=[confirm] {
            input type="hidden" name="csrf" value=(state.csrf.token());
            button type="submit" { (label) }
        }
    }
}

/// JSON text shown in full, pretty-printed and collapsible; past [`SHOWN_BYTES`] its start,
/// with `download` linking to the whole. Everything is escaped: a payload is text, never markup.
pub(crate) fn json_block(raw: &str, download: Option<&str>) -> Markup {
    json_details(raw, download, true)
}

/// [`json_block`] folded: a list of messages shows each one's size, and its JSON on a click.
pub(crate) fn json_folded(raw: &str) -> Markup {
    json_details(raw, None, false)
}

fn json_details(raw: &str, download: Option<&str>, open: bool) -> Markup {
    let pretty = serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| raw.to_owned());
    let cut = pretty.len() > SHOWN_BYTES;
    let shown = if cut {
        let mut end = SHOWN_BYTES;
        while !pretty.is_char_boundary(end) {
            end -= 1;
        }
        &pretty[..end]
    } else {
        &pretty[..]
    };
    html! {
        details open[open] {
            summary { (format!("{} bytes", raw.len())) }
            pre.json { (shown) }
            @if cut {
                p.note {
                    "Shown: the first " (SHOWN_BYTES / 1024) " KiB. "
                    @if let Some(href) = download { a href=(href) download { "Download the whole payload" } }
                }
            }
        }
    }
}

/// A table cell with an RFC 3339 time, shown relative by the script.
pub(crate) fn time(at: chrono::DateTime<chrono::Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) } }
}

/// An error page with status `status`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" { head { title { "taskq: error" } link rel="stylesheet" href="/assets/dashboard.css"; }
            body { main { h1 { "Something went wrong" } p.error { (message) } p { a href="/" { "Back to the overview" } } } } }
    };
    (status, body).into_response()
}

/// Turns a broker error into a 502 page that says what failed.
pub(crate) fn broker_error(err: taskq_core::Error) -> Response {
    error(
        StatusCode::BAD_GATEWAY,
        &format!(
            "the broker did not answer: {}",
            taskq_core::error_chain(&err)
        ),
    )
}

pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/dashboard.js"),
    )
        .into_response()
}

pub(crate) async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/dashboard.css"),
    )
        .into_response()
}
