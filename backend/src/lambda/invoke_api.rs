//! The Invoke API path of AWS Lambda, `POST /2015-03-31/functions/{name}/invocations`, in front of local
//! function services, so that standard clients (the AWS SDKs and CLI with `--endpoint-url`) call them.
//!
//! Synchronous invocation (`X-Amz-Invocation-Type: RequestResponse`, the default) answers like AWS: 200
//! with the function's payload, or 200 with `X-Amz-Function-Error: Unhandled` and an
//! `{"errorType", "errorMessage"}` body for a function error; service errors carry `x-amzn-ErrorType`
//! (`TooManyRequestsException` 429, `RequestTooLargeException` 413, `ResourceNotFoundException` 404).
//! `DryRun` answers 204. `Event` (asynchronous invocation, with its queue and retries) is not offered and is
//! refused with 400 rather than run with semantics AWS does not have. Signatures are not checked.
//! Each answer also carries the invocation's accounting in `x-hyscale-*` headers (cold, init, duration,
//! billed duration, memory), the figures of Lambda's `REPORT` log line.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{FunctionService, LambdaError, MAX_PAYLOAD_BYTES};

type Functions = Arc<BTreeMap<String, FunctionService>>;

/// An axum router serving the Invoke API path for `functions`, each under its configured name. Merge it
/// into a server, or serve it alone with `axum::serve`.
pub fn invoke_router(functions: impl IntoIterator<Item = FunctionService>) -> Router {
    let functions: Functions =
        Arc::new(functions.into_iter().map(|f| (f.config().name.clone(), f)).collect::<BTreeMap<_, _>>());
    Router::new()
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        // Read a little past the limit so that an oversized payload gets AWS's error, not a bare 413.
        .layer(DefaultBodyLimit::max(2 * MAX_PAYLOAD_BYTES))
        .with_state(functions)
}

async fn invoke(
    State(functions): State<Functions>,
    Path(name): Path<String>,
    headers: HeaderMap,
    payload: Bytes,
) -> Response {
    let name = function_name(&name);
    let Some(service) = functions.get(name) else {
        return aws_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: arn:aws:lambda:us-east-1:000000000000:function:{name}"),
        );
    };
    match headers.get("x-amz-invocation-type").map(HeaderValue::to_str) {
        None | Some(Ok("RequestResponse")) => {}
        Some(Ok("DryRun")) => return StatusCode::NO_CONTENT.into_response(),
        Some(Ok("Event")) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                "asynchronous invocation (Event) is not offered by the local Lambda service; use RequestResponse",
            );
        }
        Some(other) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                &format!("unknown invocation type {other:?}"),
            );
        }
    }
    let outcome = match service.invoke(payload).await {
        Ok(outcome) => outcome,
        Err(LambdaError::Throttled { .. }) => {
            let body = serde_json::json!({
                "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                "Type": "User",
                "message": "Rate Exceeded.",
            });
            return with_error_type(StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", body);
        }
        Err(e @ LambdaError::PayloadTooLarge { .. }) => {
            return aws_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException", &e.to_string());
        }
        Err(e @ LambdaError::ShutDown(_)) => {
            return aws_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", &e.to_string());
        }
        Err(e) => return aws_error(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", &e.to_string()),
    };
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-amzn-requestid", outcome.request_id.clone());
    set("x-amz-executed-version", "$LATEST".into());
    set("x-hyscale-cold", outcome.cold.to_string());
    set("x-hyscale-init-duration-ms", format!("{:.3}", outcome.init_duration.as_millis_f64()));
    set("x-hyscale-duration-ms", format!("{:.3}", outcome.duration.as_millis_f64()));
    set("x-hyscale-billed-duration-ms", format!("{:.0}", outcome.billed_duration.as_millis_f64()));
    set("x-hyscale-memory-size-mb", outcome.memory_mb.to_string());
    if let Some(used) = outcome.max_memory_used_mb {
        set("x-hyscale-max-memory-used-mb", used.to_string());
    }
    match outcome.result {
        Ok(body) => {
            set("content-type", "application/json".into());
            (StatusCode::OK, headers, body).into_response()
        }
        Err(error) => {
            set("x-amz-function-error", "Unhandled".into());
            set("content-type", "application/json".into());
            let body = serde_json::json!({ "errorType": error.error_type, "errorMessage": error.message });
            (StatusCode::OK, headers, body.to_string()).into_response()
        }
    }
}

/// The function name in a path segment that may hold a name, a partial or full ARN, and a qualifier
/// (`my-fn`, `my-fn:$LATEST`, `arn:aws:lambda:us-east-1:123456789012:function:my-fn:1`).
fn function_name(segment: &str) -> &str {
    let rest = segment.split_once("function:").map_or(segment, |(_, rest)| rest);
    rest.split(':').next().unwrap_or(rest)
}

fn aws_error(status: StatusCode, error_type: &'static str, message: &str) -> Response {
    with_error_type(status, error_type, serde_json::json!({ "Type": "User", "message": message }))
}

fn with_error_type(status: StatusCode, error_type: &'static str, body: serde_json::Value) -> Response {
    (
        status,
        [(HeaderName::from_static("x-amzn-errortype"), error_type), (header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::function_name;

    #[test]
    fn function_names_come_out_of_names_arns_and_qualifiers() {
        for (segment, name) in [
            ("my-fn", "my-fn"),
            ("my-fn:$LATEST", "my-fn"),
            ("123456789012:function:my-fn", "my-fn"),
            ("arn:aws:lambda:us-east-1:123456789012:function:my-fn:7", "my-fn"),
        ] {
            assert_eq!(function_name(segment), name, "{segment}");
        }
    }
}
