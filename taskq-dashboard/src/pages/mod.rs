//! One module per page; each reads the broker and backend afresh on every request.

pub(crate) mod active;
pub(crate) mod beat;
pub(crate) mod dead;
pub(crate) mod history;
pub(crate) mod numbers;
pub(crate) mod overview;
pub(crate) mod queue;
pub(crate) mod scheduled;
pub(crate) mod tasks;
pub(crate) mod workers;

/// `?offset=` of a paged list.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Paging {
    #[serde(default)]
    pub(crate) offset: usize,
}

/// The form every action posts.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// Every queue with one count each (read all at once), and the queue a per-queue list shows:
/// the one asked for, else the first with something to show, else the first.
pub(crate) struct QueuePick {
    pub(crate) queues: Vec<(String, usize)>,
    pub(crate) chosen: Option<String>,
}

pub(crate) async fn pick_queue(
    state: &crate::state::AppState,
    asked: Option<&str>,
    count: fn(&taskq_core::QueueStats) -> usize,
) -> Result<QueuePick, axum::response::Response> {
    let inspector = state.client.inspector();
    let names = inspector
        .queues()
        .await
        .map_err(crate::layout::broker_error)?;
    let stats = futures_util::future::try_join_all(names.iter().map(|q| inspector.stats(q)))
        .await
        .map_err(crate::layout::broker_error)?;
    let queues: Vec<(String, usize)> = names.into_iter().zip(stats.iter().map(count)).collect();
    let chosen = asked
        .filter(|q| !q.is_empty())
        .map(str::to_owned)
        .or_else(|| queues.iter().find(|(_, n)| *n > 0).map(|(q, _)| q.clone()))
        .or_else(|| queues.first().map(|(q, _)| q.clone()));
    Ok(QueuePick { queues, chosen })
}

/// The queue `<select>` of a per-queue list, each with its count.
pub(crate) fn queue_select(pick: &QueuePick, chosen: &str) -> maud::Markup {
    maud::html! {
        label { "Queue " select name="queue" {
            @for (q, n) in &pick.queues {
                option value=(q) selected[q == chosen] { (q) " (" (n) ")" }
            }
        } }
    }
}

/// Runs an action once its CSRF token and origin pass, then sends the browser `back`; a
/// broker error becomes its error page. (`action` is a future: nothing runs before the check.)
pub(crate) async fn act<T>(
    state: &crate::state::AppState,
    headers: &axum::http::HeaderMap,
    csrf: &str,
    back: String,
    action: impl std::future::Future<Output = taskq_core::Result<T>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if let Err(refused) = crate::state::check_action(state, headers, csrf) {
        return refused;
    }
    match action.await {
        Ok(_) => axum::response::Redirect::to(&back).into_response(),
        Err(err) => crate::layout::broker_error(err),
    }
}
