//! The token service over HTTP: `/oauth/*`, `/.well-known/*`, and the challenges `/mcp`
//! answers when a request is not let in (MCP authorization, RFC 6750 section 3, RFC 9449
//! section 7.1, RFC 9728 section 5.1).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use writ_core::oauth::{CLIENT_ASSERTION_JWT, GRANT_TOKEN_EXCHANGE};

use super::dpop::PROOF_ALGORITHMS;
use super::oauth::{Form, OAuthError};
use super::{Denied, TokenService};

const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");
/// Form bodies larger than this are not token requests.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The routes of the token service.
pub fn routes(service: Arc<TokenService>) -> Router {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .route("/oauth/introspect", post(introspect))
        .route(
            "/.well-known/oauth-authorization-server",
            get(authorization_server),
        )
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/.well-known/oauth-protected-resource",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(protected_resource),
        )
        .with_state(service)
}

/// A JSON answer that no cache may keep (RFC 6749 section 5.1).
fn no_store(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        body.to_string(),
    )
        .into_response()
}

fn oauth_error(error: &OAuthError) -> Response {
    let mut response = no_store(
        error.status,
        &json!({ "error": error.error, "error_description": error.description }),
    );
    if let Some(nonce) = error
        .dpop_nonce
        .as_deref()
        .and_then(|n| HeaderValue::from_str(n).ok())
    {
        response.headers_mut().insert(DPOP_NONCE, nonce);
    }
    response
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The form parameters of an OAuth request body.
fn form(headers: &HeaderMap, body: &Bytes) -> Result<Form, OAuthError> {
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::invalid_request(
            "the body must be `application/x-www-form-urlencoded`",
        ));
    }
    if body.len() > MAX_FORM_BYTES {
        return Err(OAuthError::invalid_request(format!(
            "the body is larger than {MAX_FORM_BYTES} bytes"
        )));
    }
    Form::parse(form_urlencoded::parse(body).into_owned().collect())
}

async fn token(
    State(service): State<Arc<TokenService>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = match form(&headers, &body) {
        Ok(form) => {
            service
                .issuer
                .exchange(&form, header_str(&headers, "dpop"))
                .await
        }
        Err(err) => Err(err),
    };
    match result {
        Ok(answer) => {
            let mut response = no_store(StatusCode::OK, &answer);
            if let Some(nonce) = service
                .dpop_nonce()
                .and_then(|n| HeaderValue::from_str(&n).ok())
            {
                response.headers_mut().insert(DPOP_NONCE, nonce);
            }
            response
        }
        Err(err) => {
            tracing::info!(error = err.error, description = %err.description, "token request refused");
            oauth_error(&err)
        }
    }
}

async fn revoke(
    State(service): State<Arc<TokenService>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = match form(&headers, &body) {
        Ok(form) => service.issuer.revoke(&form).await,
        Err(err) => Err(err),
    };
    match result {
        Ok(()) => no_store(StatusCode::OK, &json!({})),
        Err(err) => oauth_error(&err),
    }
}

async fn introspect(
    State(service): State<Arc<TokenService>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = match form(&headers, &body) {
        Ok(form) => {
            service
                .issuer
                .introspect(&form, header_str(&headers, header::AUTHORIZATION.as_str()))
                .await
        }
        Err(err) => Err(err),
    };
    match result {
        Ok(answer) => no_store(StatusCode::OK, &answer),
        Err(err) => oauth_error(&err),
    }
}

fn proof_algorithms() -> Vec<String> {
    PROOF_ALGORITHMS.iter().map(|a| format!("{a:?}")).collect()
}

/// RFC 8414 authorization server metadata.
async fn authorization_server(State(service): State<Arc<TokenService>>) -> Response {
    let urls = &service.urls;
    no_store(
        StatusCode::OK,
        &json!({
            "issuer": urls.issuer,
            "token_endpoint": urls.token_endpoint,
            "jwks_uri": urls.jwks,
            "revocation_endpoint": urls.revocation_endpoint,
            "introspection_endpoint": urls.introspection_endpoint,
            "grant_types_supported": [GRANT_TOKEN_EXCHANGE],
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "introspection_endpoint_auth_methods_supported": ["private_key_jwt", "bearer"],
            "introspection_endpoint_auth_signing_alg_values_supported": ["EdDSA", "ES256"],
            "authorization_details_types_supported": [writ_core::task::MCP_TASK_TYPE],
            "dpop_signing_alg_values_supported": proof_algorithms(),
            "client_assertion_types_supported": [CLIENT_ASSERTION_JWT],
        }),
    )
}

async fn jwks(State(service): State<Arc<TokenService>>) -> Response {
    match serde_json::to_value(service.keys.jwks()) {
        Ok(set) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            set.to_string(),
        )
            .into_response(),
        Err(err) => {
            tracing::error!(%err, "could not encode the key set");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// RFC 9728 protected resource metadata for `/mcp`.
async fn protected_resource(State(service): State<Arc<TokenService>>) -> Response {
    let urls = &service.urls;
    no_store(
        StatusCode::OK,
        &json!({
            "resource": urls.mcp,
            "authorization_servers": [urls.issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": "Writ MCP gateway",
            "dpop_signing_alg_values_supported": proof_algorithms(),
            "dpop_bound_access_tokens_required": service.issuer.dpop_required(),
            "authorization_details_types_supported": [writ_core::task::MCP_TASK_TYPE],
        }),
    )
}

/// Quotes a value for an auth-param (RFC 9110 section 11.2): no quotes or backslashes.
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

/// The response `/mcp` gives a request that was not let in: 401 with challenges (403 for
/// scope), a small JSON body, and a fresh nonce when nonces are in use.
pub fn challenge(service: &TokenService, denied: &Denied, body: String) -> Response {
    let metadata = format!("resource_metadata=\"{}\"", service.urls.resource_metadata);
    let algs = proof_algorithms().join(" ");
    let (status, bearer, dpop) = match denied {
        Denied::NoToken => (
            StatusCode::UNAUTHORIZED,
            format!("Bearer {metadata}"),
            format!("DPoP algs=\"{algs}\", {metadata}"),
        ),
        Denied::InvalidToken(why) => {
            let params = format!(
                "error=\"invalid_token\", error_description=\"{}\", {metadata}",
                quoted(why)
            );
            (
                StatusCode::UNAUTHORIZED,
                format!("Bearer {params}"),
                format!("DPoP algs=\"{algs}\", {params}"),
            )
        }
        Denied::InvalidProof(why) => (
            StatusCode::UNAUTHORIZED,
            format!("Bearer {metadata}"),
            format!(
                "DPoP error=\"invalid_dpop_proof\", error_description=\"{}\", algs=\"{algs}\", {metadata}",
                quoted(why)
            ),
        ),
        Denied::UseNonce(_) => (
            StatusCode::UNAUTHORIZED,
            format!("Bearer {metadata}"),
            format!(
                "DPoP error=\"use_dpop_nonce\", error_description=\"send the DPoP proof again with the nonce in `DPoP-Nonce`\", algs=\"{algs}\", {metadata}"
            ),
        ),
        Denied::InsufficientScope(why) => {
            let params = format!(
                "error=\"insufficient_scope\", error_description=\"{}\", {metadata}",
                quoted(why)
            );
            (
                StatusCode::FORBIDDEN,
                format!("Bearer {params}"),
                format!("DPoP algs=\"{algs}\", {params}"),
            )
        }
        Denied::Unavailable => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response();
        }
    };
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    for value in [bearer, dpop] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(header::WWW_AUTHENTICATE, value);
        }
    }
    let nonce = match denied {
        Denied::UseNonce(nonce) => Some(nonce.clone()),
        _ => service.dpop_nonce(),
    };
    if let Some(nonce) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
        headers.insert(DPOP_NONCE, nonce);
    }
    response
}
