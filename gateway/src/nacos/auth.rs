//! Nacos authentication (off by default): `POST /nacos/v1/auth/login` (and `/users/login`, which
//! the Java client calls) checks a configured user's password and issues an access token; with
//! auth on, every other Nacos call must carry a valid one — `accessToken` as a query or form
//! parameter, an `accessToken` or `Authorization: Bearer` header over HTTP, or `accessToken` in
//! the gRPC metadata headers — or it is refused with 403 (HTTP) / errorCode 403 (gRPC), as Nacos
//! does. Tokens are `base64url(user:expiry).base64url(HMAC-SHA256)` under `nacos_auth_secret`,
//! so any member sharing the secret accepts them (a member without a configured secret signs
//! with a random one of its own: its tokens are only good on it).

use super::{NacosError, Params};
use crate::grpc::nacos::{RpcError, code};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;

type HmacSha256 = Hmac<Sha256>;

/// Settings and state of Nacos authentication.
pub struct NacosAuth {
    enabled: bool,
    users: HashMap<String, String>,
    ttl_s: u64,
    secret: Vec<u8>,
}

/// Why a token was refused (the message Nacos gives).
#[derive(Debug, PartialEq)]
pub enum Refused {
    Missing,
    Invalid,
    Expired,
}

impl Refused {
    fn message(&self) -> &'static str {
        match self {
            Refused::Missing => "user not found!",
            Refused::Invalid => "token invalid!",
            Refused::Expired => "token expired!",
        }
    }
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl NacosAuth {
    /// Auth off: every call passes.
    pub fn disabled() -> NacosAuth {
        NacosAuth {
            enabled: false,
            users: HashMap::new(),
            ttl_s: 18_000,
            secret: Vec::new(),
        }
    }

    /// From the configuration: `users` are `name:password`.
    pub fn new(enabled: bool, users: &[String], ttl_s: u64, secret: &str) -> NacosAuth {
        let users = users
            .iter()
            .filter_map(|u| u.split_once(':'))
            .map(|(n, p)| (n.to_owned(), p.to_owned()))
            .collect();
        let secret = if secret.is_empty() {
            let mut s = vec![0u8; 32];
            rand::Rng::fill(&mut rand::thread_rng(), &mut s[..]);
            s
        } else {
            secret.as_bytes().to_vec()
        };
        NacosAuth {
            enabled,
            users,
            ttl_s: ttl_s.max(1),
            secret,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn sign(&self, claims: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(claims.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Check a user's password and issue a token.
    pub fn login(&self, user: &str, password: &str) -> Option<String> {
        let known = self.users.get(user)?;
        // Compare in constant time through the MAC (equal inputs, equal tags).
        if self.sign(known) != self.sign(password) {
            return None;
        }
        let claims = format!("{user}:{}", now_s() + self.ttl_s);
        Some(format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&claims),
            URL_SAFE_NO_PAD.encode(self.sign(&claims))
        ))
    }

    /// The user a token was issued to, if it is valid and unexpired.
    pub fn verify(&self, token: Option<&str>) -> Result<String, Refused> {
        let token = token.filter(|t| !t.is_empty()).ok_or(Refused::Missing)?;
        let (c, s) = token.split_once('.').ok_or(Refused::Invalid)?;
        let claims = URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(Refused::Invalid)?;
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| Refused::Invalid)?;
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(claims.as_bytes());
        mac.verify_slice(&sig).map_err(|_| Refused::Invalid)?;
        let (user, exp) = claims.rsplit_once(':').ok_or(Refused::Invalid)?;
        let exp: u64 = exp.parse().map_err(|_| Refused::Invalid)?;
        if exp < now_s() {
            return Err(Refused::Expired);
        }
        Ok(user.to_owned())
    }

    /// Check a gRPC request's `accessToken` header; a refusal answers as `typed` with 403.
    pub fn check_grpc(
        &self,
        headers: Option<&HashMap<String, String>>,
        typed: &'static str,
    ) -> Result<(), RpcError> {
        if !self.enabled {
            return Ok(());
        }
        let token = headers.and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("accessToken"))
                .map(|(_, v)| v.as_str())
        });
        match self.verify(token) {
            Ok(_) => Ok(()),
            Err(r) => {
                metrics::counter!("roster_nacos_auth_refused_total", "protocol" => "grpc")
                    .increment(1);
                Err(RpcError::new(code::NO_RIGHT, r.message()).typed(typed))
            }
        }
    }

    /// The token of an HTTP request: header `accessToken`, `Authorization: Bearer`, or the
    /// `accessToken` parameter.
    fn http_token<'a>(
        headers: &'a HeaderMap,
        params: &'a HashMap<String, String>,
    ) -> Option<&'a str> {
        headers
            .get("accessToken")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            })
            .or_else(|| params.get("accessToken").map(String::as_str))
    }
}

async fn login(State(auth): State<Arc<NacosAuth>>, p: Params) -> Result<Response, NacosError> {
    let user = p.required("username")?;
    let password = p.required("password")?;
    match auth.login(user, password) {
        Some(token) => Ok(Json(json!({
            "accessToken": token,
            "tokenTtl": auth.ttl_s,
            "globalAdmin": false,
            "username": user,
        }))
        .into_response()),
        None => {
            tracing::info!(user, "Nacos login refused");
            metrics::counter!("roster_nacos_auth_refused_total", "protocol" => "login")
                .increment(1);
            Ok((StatusCode::FORBIDDEN, "unknown user!").into_response())
        }
    }
}

/// The login routes (answered whether or not auth is on, as Nacos does).
pub fn routes(auth: Arc<NacosAuth>) -> Router {
    Router::new()
        .route("/nacos/v1/auth/login", post(login))
        .route("/nacos/v1/auth/users/login", post(login))
        .with_state(auth)
}

/// Middleware on the other Nacos routes: with auth on, refuse calls without a valid token.
pub async fn require_token(
    State((auth, max_body)): State<(Arc<NacosAuth>, usize)>,
    req: Request,
    next: Next,
) -> Response {
    if !auth.enabled {
        return next.run(req).await;
    }
    // Parameters may be in the query or a form body: read both (the body is handed on).
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, max_body).await {
        Ok(b) => b,
        Err(e) => {
            return NacosError::bad(format!("reading the body: {e}")).into_response();
        }
    };
    let mut params: HashMap<String, String> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let form = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        params.extend(form_urlencoded::parse(&bytes).into_owned());
    }
    if let Err(r) = auth.verify(NacosAuth::http_token(&parts.headers, &params)) {
        metrics::counter!("roster_nacos_auth_refused_total", "protocol" => "http").increment(1);
        tracing::debug!(path = %parts.uri.path(), reason = r.message(), "Nacos call refused");
        return (StatusCode::FORBIDDEN, r.message()).into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_the_secret_and_before_expiry() {
        let a = NacosAuth::new(true, &["nacos:pw".into()], 60, "s3cret");
        assert!(a.login("nacos", "wrong").is_none());
        assert!(a.login("nobody", "pw").is_none());
        let t = a.login("nacos", "pw").unwrap();
        assert_eq!(a.verify(Some(&t)), Ok("nacos".into()));
        let other = NacosAuth::new(true, &["nacos:pw".into()], 60, "different");
        assert_eq!(other.verify(Some(&t)), Err(Refused::Invalid));
        assert_eq!(a.verify(None), Err(Refused::Missing));
        assert_eq!(a.verify(Some("garbage")), Err(Refused::Invalid));
        // A token whose claims were altered (longer expiry) fails the MAC.
        let (_, sig) = t.split_once('.').unwrap();
        let forged = format!("{}.{sig}", URL_SAFE_NO_PAD.encode("nacos:99999999999"));
        assert_eq!(a.verify(Some(&forged)), Err(Refused::Invalid));
        let claims = format!("nacos:{}", now_s() - 1);
        let expired = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&claims),
            URL_SAFE_NO_PAD.encode(a.sign(&claims))
        );
        assert_eq!(a.verify(Some(&expired)), Err(Refused::Expired));
    }
}
