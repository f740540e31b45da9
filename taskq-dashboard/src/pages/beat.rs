//! `/beat`: the leading beat, its entries with their schedules as written, and their last and
//! next fires (as the leader last published them).

use axum::{extract::State, response::Response};
use maud::{html, Markup};

use crate::{layout, state::Shared};

pub(crate) async fn page(State(state): State<Shared>) -> Result<Markup, Response> {
    let Some(store) = &state.beat else {
        let body = html! { p.note { "This dashboard was started without a beat store; `taskq dashboard` gives it the broker's." } };
        return Ok(layout::page(&state, "Beat", body));
    };
    let status = store.status().await.map_err(layout::broker_error)?;
    let body = match status {
        None => html! {
            p.note { "No beat leads: none is running, or the leader stopped publishing for longer than its lock lasts." }
        },
        Some(status) => html! {
            dl.record {
                dt { "Leader" } dd { code #beat-leader { (status.leader) } }
                dt { "Published" } dd { (layout::time(status.published_at)) }
            }
            h2 { "Entries" }
            p.note { "Schedules as written, cron lines in their own time zone; fire times in UTC." }
            table #beat-entries {
                thead { tr { th { "Entry" } th { "Task" } th { "Schedule" } th { "Last fire" } th { "Next fires" } } }
                tbody {
                    @for entry in &status.entries {
                        tr {
                            td { (entry.name) }
                            td { (entry.task) }
                            td { code.schedule { (entry.schedule) } }
                            td { @if let Some(at) = entry.last_fire { (layout::time(at)) } @else { "never" } }
                            td.upcoming {
                                @if entry.upcoming.is_empty() {
                                    @if let Some(at) = entry.next_fire { (layout::time(at)) } @else { "ended" }
                                } @else {
                                    @for (i, at) in entry.upcoming.iter().enumerate() {
                                        @if i > 0 { br; }
                                        (layout::time(*at))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    };
    Ok(layout::page(&state, "Beat", body))
}
