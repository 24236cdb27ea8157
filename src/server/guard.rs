//! What every request passes before it reaches a route. A local server is reachable by
//! every web page the user opens, so: the `Host` must be a loopback name, the bound
//! address or one the user allowed (DNS rebinding); a browser's cross-origin request is
//! refused unless its origin was allowed with `--cors-origin`, which also answers the
//! preflight; the API key, when set, guards every route but `/health` (compared in
//! constant time); a POST body must be sent as JSON.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ServerState;
use super::error::ApiError;

/// The host part of a `Host` header: without the port, brackets kept off an IPv6 address.
pub fn host_name(value: &str) -> String {
    let v = value.trim();
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_ascii_lowercase();
    }
    match v.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host.to_ascii_lowercase(),
        _ => v.to_ascii_lowercase(),
    }
}

/// Equal in time that does not depend on where the two differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

pub async fn guard(State(state): State<Arc<ServerState>>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req.uri().path().to_owned();
    let result = check(&state, &req);
    let origin = req.headers().get(header::ORIGIN).cloned();
    let response = match result {
        Err(e) => e.into_response(),
        Ok(Preflight::Answer) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            cors_headers(&mut r, origin.as_ref(), true);
            r
        }
        Ok(Preflight::Pass { cors }) => {
            let mut r = next.run(req).await;
            if cors {
                cors_headers(&mut r, origin.as_ref(), false);
            }
            r
        }
    };
    state.metrics.request(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

enum Preflight {
    /// A CORS preflight, answered here.
    Answer,
    /// Goes on to the route; `cors` adds the allowed origin to the answer.
    Pass { cors: bool },
}

fn check(state: &ServerState, req: &Request) -> Result<Preflight, ApiError> {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_name)
        .ok_or_else(|| ApiError::forbidden("the request has no Host header"))?;
    if !state.allowed_hosts.contains(&host) {
        return Err(ApiError::forbidden(format!(
            "this server does not answer to the host {host:?} (it answers to {}); start it with --allow-host {host} to accept it",
            state.allowed_hosts.join(", ")
        )));
    }
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let cors = match origin {
        None => false,
        Some(o) if state.config.cors_origins.iter().any(|allowed| allowed == o) => true,
        Some(o) => {
            return Err(ApiError::forbidden(format!(
                "requests from web pages of {o} are not accepted; start the server with --cors-origin {o} to allow them"
            )));
        }
    };
    if cors && req.method() == Method::OPTIONS {
        return Ok(Preflight::Answer);
    }
    if let Some(key) = &state.config.api_key
        && req.uri().path() != "/health"
    {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        match given {
            None => {
                return Err(ApiError::unauthorized(
                    "an API key is needed: send Authorization: Bearer <key>",
                ));
            }
            Some(k) if !constant_time_eq(k.as_bytes(), key.as_bytes()) => {
                return Err(ApiError::unauthorized("the API key is wrong"));
            }
            Some(_) => {}
        }
    }
    if req.method() == Method::POST {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
        if !json {
            return Err(ApiError::not_json(
                "send the body as JSON, with Content-Type: application/json",
            ));
        }
    }
    Ok(Preflight::Pass { cors })
}

fn cors_headers(r: &mut Response, origin: Option<&HeaderValue>, preflight: bool) {
    let Some(origin) = origin else { return };
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if preflight {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_without_ports() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("Host.Docker.Internal:80"), "host.docker.internal");
    }

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
