//! Request logging (tower-http's `TraceLayer`): one span per HTTP request with its method and
//! path, and a line when it is answered (status, latency). Writes to the public API are logged
//! at INFO (an operator's audit trail); reads, the dashboard's polling, scrapes and the internal
//! routes other members call at DEBUG, so a busy cluster does not drown its own logs. Each
//! answer names who asked: the token's accessor, `admin-token` or `anonymous`.
//!
//! A 503 (no quorum, a leader change, a member cut off) is the client's cue to retry elsewhere,
//! not an operator's: it is counted ([`HttpAnswers`], `/metrics`) and logged like any answer.
//! Other 5xx answers are counted and logged at ERROR (tower-http logs every 5xx at ERROR).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, Response};
use tower_http::classify::{ServerErrorsAsFailures, ServerErrorsFailureClass, SharedClassifier};
use tower_http::trace::{OnFailure, TraceLayer};
use tracing::{Level, Span};

/// Server-side failures of this member's HTTP answers, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpAnswers {
    /// 503: transient, the client retries (possibly through another member).
    pub unavailable: AtomicU64,
    /// Any other 5xx, or a failure before a status: a bug or a broken member.
    pub server_errors: AtomicU64,
}

/// Whether a failed answer is transient (503) rather than something an operator must look at.
pub fn is_transient(class: &ServerErrorsFailureClass) -> bool {
    matches!(class, ServerErrorsFailureClass::StatusCode(code) if code.as_u16() == 503)
}

/// Counts failed answers; only the ones an operator must act on are logged at ERROR.
#[derive(Clone)]
pub struct CountFailures(Arc<HttpAnswers>);

impl OnFailure<ServerErrorsFailureClass> for CountFailures {
    fn on_failure(&mut self, class: ServerErrorsFailureClass, latency: Duration, span: &Span) {
        if is_transient(&class) {
            self.0.unavailable.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.0.server_errors.fetch_add(1, Ordering::Relaxed);
        let micros = latency.as_micros() as u64;
        tracing::error!(parent: span, %class, micros, "answered with a server error");
    }
}

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
    // Who asked: a token's accessor (never its secret), set by the ACL check.
    let accessor = response
        .extensions()
        .get::<hivemind_control_plane::access::Accessor>()
        .map_or("-", |a| a.0.as_str());
    tracing::info!(parent: span, status, micros, accessor, "answered");
}

/// The layer for the member's whole HTTP router; failed answers are counted in `answers`.
pub fn layer(
    answers: Arc<HttpAnswers>,
) -> TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    MakeSpan,
    (),
    OnResponse,
    tower_http::trace::DefaultOnBodyChunk,
    tower_http::trace::DefaultOnEos,
    CountFailures,
> {
    TraceLayer::new_for_http()
        .make_span_with(make_span as MakeSpan)
        .on_request(())
        .on_response(on_response as OnResponse)
        .on_failure(CountFailures(answers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_503_is_transient_other_server_errors_are_not() {
        use axum::http::StatusCode;
        let of = |code: StatusCode| ServerErrorsFailureClass::StatusCode(code);
        assert!(is_transient(&of(StatusCode::SERVICE_UNAVAILABLE)));
        assert!(!is_transient(&of(StatusCode::INTERNAL_SERVER_ERROR)));
        assert!(!is_transient(&ServerErrorsFailureClass::Error(
            "reset".into()
        )));
        let answers = Arc::new(HttpAnswers::default());
        let mut count = CountFailures(answers.clone());
        count.on_failure(
            of(StatusCode::SERVICE_UNAVAILABLE),
            Duration::ZERO,
            &Span::none(),
        );
        count.on_failure(of(StatusCode::BAD_GATEWAY), Duration::ZERO, &Span::none());
        assert_eq!(answers.unavailable.load(Ordering::Relaxed), 1);
        assert_eq!(answers.server_errors.load(Ordering::Relaxed), 1);
    }

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
