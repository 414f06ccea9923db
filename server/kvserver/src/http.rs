//! The node's HTTP endpoint for operators: `GET /metrics` (OpenMetrics text for
//! Prometheus) and `GET /health` (200 when every shard this node holds has a leader, 503
//! otherwise). HTTP/1.1 only, served by hyper; nothing here changes the node's state.

use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Most HTTP connections served at once; more wait in the listen backlog.
pub const HTTP_CONNECTIONS_MAX: usize = 64;

/// The content type Prometheus expects for OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `/metrics` and `/health` on `listener` for as long as the task runs.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    let limit = Arc::new(Semaphore::new(HTTP_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("HTTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("HTTP connection ended: {e}");
            }
            drop(permit);
        });
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String, content_type: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into(), PLAIN);
    }
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, metrics.encode(), OPENMETRICS_CONTENT_TYPE),
        "/health" if metrics.healthy() => text(StatusCode::OK, "ok\n".into(), PLAIN),
        "/health" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "a shard this node holds has no known leader\n".into(),
            PLAIN,
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics or /health\n".into(),
            PLAIN,
        ),
    }
}
