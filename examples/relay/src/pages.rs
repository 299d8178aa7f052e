//! The relay's plain HTTP answers: `/healthz`, `/metrics`, and the page (`/`, `/page.js`,
//! and `GET /<room>` without an upgrade).

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::App;

pub(crate) async fn healthz(State(app): State<App>) -> Response {
    let (rooms, _) = app.presence.counts();
    // Connections still open or still announcing their leaves.
    let connections = app.active.load(Ordering::SeqCst);
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        app.presence.store().get("synckit-relay-healthz", "0"),
    )
    .await;
    let (status, ok) = match probe {
        Ok(Ok(_)) => (StatusCode::OK, "ok"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable"),
    };
    let body = serde_json::json!({
        "status": ok,
        "instance": app.instance,
        "instance_id": app.presence.instance_id(),
        "store": app.store_kind,
        "rooms": rooms,
        "documents": app.documents.len(),
        "connections": connections,
    });
    (status, Json(body)).into_response()
}

pub(crate) async fn metrics_text(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

pub(crate) async fn page(State(app): State<App>) -> Response {
    static_file(&app, "index.html", "text/html; charset=utf-8").await
}

pub(crate) async fn script(State(app): State<App>) -> Response {
    static_file(&app, "page.js", "text/javascript; charset=utf-8").await
}

async fn static_file(app: &App, name: &str, content_type: &'static str) -> Response {
    match tokio::fs::read(app.web_dir.join(name)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the page is not built ({} missing): run `make relay-web`",
                app.web_dir.join(name).display()
            ),
        )
            .into_response(),
    }
}
