//! `/events`: the overview's numbers every two seconds as server-sent events, so the page
//! updates without reloading.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures_util::Stream;

use crate::{pages::overview, state::Shared};

/// How often the overview is sent.
const EVERY: Duration = Duration::from_secs(2);

pub(crate) async fn stream(
    State(state): State<Shared>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = async_stream::stream! {
        loop {
            match overview::read(&state.client).await {
                Ok(data) => {
                    if let Ok(event) = Event::default().event("overview").json_data(&data) {
                        yield Ok(event);
                    }
                }
                Err(err) => {
                    yield Ok(Event::default().event("broker-error").data(taskq_core::error_chain(&err)));
                }
            }
            tokio::time::sleep(EVERY).await;
        }
    };
    Sse::new(events).keep_alive(KeepAlive::default())
}
