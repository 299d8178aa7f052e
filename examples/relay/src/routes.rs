//! Every route of the relay, and which module answers it.

use axum::routing::{get, put};
use axum::Router;

use crate::{agents, pages, room, who, App};

/// `/` and `/page.js` the page, `/healthz`, `/metrics`, who is here (`/rooms`,
/// `/rooms/{room}/presence[/events]`), agents (`PUT`/`DELETE
/// /rooms/{room}/presence/{participant}`), and `/{room}`: the WebSocket (or the page).
pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route("/", get(pages::page))
        .route("/healthz", get(pages::healthz))
        .route("/metrics", get(pages::metrics_text))
        .route("/page.js", get(pages::script))
        .route("/rooms", get(who::rooms))
        .route("/rooms/{room}/presence", get(who::presence))
        .route("/rooms/{room}/presence/events", get(who::events))
        .route(
            "/rooms/{room}/presence/{participant}",
            put(agents::put).delete(agents::delete),
        )
        .route("/{room}", get(room::room))
        .with_state(app)
}
