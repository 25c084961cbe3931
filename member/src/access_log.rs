//! Request logging (tower-http's `TraceLayer`): one span per HTTP request with its method and
//! path, and a line when it is answered (status, latency). Writes to the public API are logged
//! at INFO (an operator's audit trail); reads, the dashboard's polling, scrapes and the internal
//! routes other members call at DEBUG, so a busy cluster does not drown its own logs.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, Response};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::TraceLayer;
use tracing::{Level, Span};

/// The level a request is logged at.
pub fn level(method: &Method, path: &str) -> Level {
    let write = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if write && path.starts_with("/v1/") {
        Level::INFO
    } else {
        Level::DEBUG
    }
}

type MakeSpan = fn(&Request<Body>) -> Span;
type OnResponse = fn(&Response<Body>, Duration, &Span);

fn make_span(request: &Request<Body>) -> Span {
    let (method, path) = (request.method(), request.uri().path());
    if level(method, path) == Level::INFO {
        tracing::info_span!("http", %method, path)
    } else {
        tracing::debug_span!("http", %method, path)
    }
}

fn on_response(response: &Response<Body>, latency: Duration, span: &Span) {
    if span.is_disabled() {
        return;
    }
    let status = response.status().as_u16();
    let micros = latency.as_micros() as u64;
    tracing::info!(parent: span, status, micros, "answered");
}

/// The layer for the member's whole HTTP router.
pub fn layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, MakeSpan, (), OnResponse> {
    TraceLayer::new_for_http()
        .make_span_with(make_span as MakeSpan)
        .on_request(())
        .on_response(on_response as OnResponse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_to_the_api_at_info_everything_else_at_debug() {
        assert_eq!(level(&Method::PUT, "/v1/kv/a"), Level::INFO);
        assert_eq!(level(&Method::POST, "/v1/cp/voters"), Level::INFO);
        assert_eq!(level(&Method::DELETE, "/v1/kv/a"), Level::INFO);
        assert_eq!(level(&Method::PATCH, "/v1/keygroups/a/b/c"), Level::INFO);
        assert_eq!(level(&Method::GET, "/v1/members"), Level::DEBUG);
        assert_eq!(level(&Method::GET, "/metrics"), Level::DEBUG);
        assert_eq!(
            level(&Method::POST, "/internal/v1/raft/append"),
            Level::DEBUG
        );
    }
}
