//! Bearer-token authentication and scopes for `/v1` routes, when any token is configured.
//!
//! `api_token` grants every scope; each `[[tokens]]` entry grants its own (see [`super::scope`]).
//! A missing or unknown token is 401, a known one without the route's scope 403.

use std::fmt;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::AppState;
use super::problem::{ApiError, ErrorCode};
use super::scope::{self, Scopes};
use crate::config::{Secret, TokenRule};

/// The configured tokens, kept as SHA-256 digests: comparing digests takes the same time
/// whatever the length of the guess, and the values need not stay in memory in clear.
pub struct Tokens {
    entries: Vec<Entry>,
}

struct Entry {
    digest: [u8; 32],
    caller: Caller,
}

/// Who made a request: put in the request's extensions once its token is accepted.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `api_token` or the `[[tokens]]` entry's name; safe to log.
    pub name: Arc<str>,
    pub scopes: Scopes,
    /// A `[[tokens]]` entry: its requests are rate-limited by token rather than by address.
    pub scoped: bool,
}

impl Tokens {
    /// Compiles `api_token` (every scope) and the scoped tokens.
    pub fn new(api_token: Option<&Secret>, tokens: &[TokenRule]) -> Tokens {
        let all = api_token.map(|token| {
            let caller = Caller {
                name: Arc::from("api_token"),
                scopes: Scopes::ALL,
                scoped: false,
            };
            (token, caller)
        });
        let scoped = tokens.iter().enumerate().map(|(i, rule)| {
            let name = rule.name.clone().unwrap_or_else(|| format!("tokens[{i}]"));
            let caller = Caller {
                name: Arc::from(name),
                scopes: Scopes::of(&rule.scopes),
                scoped: true,
            };
            (&rule.token, caller)
        });
        let entries = all
            .into_iter()
            .chain(scoped)
            .map(|(token, caller)| Entry {
                digest: digest(token.expose()),
                caller,
            })
            .collect();
        Tokens { entries }
    }

    /// Whether any token is configured (else the API is open, as on loopback by default).
    pub fn required(&self) -> bool {
        !self.entries.is_empty()
    }

    /// The caller whose token this is. Every entry is compared, with no early exit on a match,
    /// so the time taken does not tell which entry (or whether any) matched.
    fn find(&self, given: &str) -> Option<&Caller> {
        let given = digest(given);
        let mut found = u32::MAX;
        for (i, entry) in self.entries.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            found.conditional_assign(&index, given.ct_eq(&entry.digest));
        }
        self.entries
            .get(usize::try_from(found).ok()?)
            .map(|e| &e.caller)
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|e| &*e.caller.name).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Rejects `/v1` requests without a configured token (401) or whose token lacks the route's
/// scope (403). Other routes (`/healthz`, `/readyz`, `/openapi.json`) stay open so probes and
/// generators work without one.
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let tokens = &state.api.tokens;
    if !tokens.required() || !request.uri().path().starts_with("/v1") {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(caller) = given.and_then(|g| tokens.find(g)) else {
        let detail = match given {
            None => "this daemon requires `Authorization: Bearer <token>`",
            Some(_) => "the bearer token is not valid",
        };
        return ApiError::new(ErrorCode::Unauthorized, detail).into_response();
    };
    // The route pattern, not the path as sent: no spelling of a path can change its scope.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let needed = route.and_then(|r| scope::required(request.method(), r));
    if let Some(scope) = needed.filter(|s| !caller.scopes.allows(*s)) {
        tracing::info!(
            auth.token = %caller.name,
            auth.scope_needed = %scope,
            http.method = %request.method(),
            http.route = route.unwrap_or_default(),
            "refused {} {}: token {} lacks the {scope} scope",
            request.method(),
            route.unwrap_or_default(),
            caller.name
        );
        let detail = format!(
            "this token lacks the `{scope}` scope, which {} {} needs",
            request.method(),
            route.unwrap_or_default()
        );
        return ApiError::new(ErrorCode::Forbidden, detail).into_response();
    }
    // The token's name (never its value), for every log line of the request.
    tracing::Span::current().record("auth.token", &*caller.name);
    let caller = caller.clone();
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::scope::Scope;

    fn rule(name: Option<&str>, token: &str, scopes: &[Scope]) -> TokenRule {
        TokenRule {
            name: name.map(str::to_owned),
            token: Secret::new(token),
            scopes: scopes.to_vec(),
        }
    }

    #[test]
    fn every_token_is_found_and_nothing_else() {
        let admin = Secret::new("all-powerful");
        let tokens = Tokens::new(
            Some(&admin),
            &[
                rule(Some("ci"), "reader-1", &[Scope::Read]),
                rule(None, "submitter-2", &[Scope::Submit]),
            ],
        );
        let name = |t: &str| tokens.find(t).map(|c| c.name.to_string());
        assert_eq!(name("all-powerful").as_deref(), Some("api_token"));
        assert_eq!(name("reader-1").as_deref(), Some("ci"));
        assert_eq!(name("submitter-2").as_deref(), Some("tokens[1]"));
        for wrong in ["", "reader-", "reader-1 ", "READER-1", "all-powerfull"] {
            assert!(tokens.find(wrong).is_none(), "{wrong:?}");
        }
        assert!(tokens.find("all-powerful").is_some_and(|c| !c.scoped));
        assert!(tokens.find("reader-1").is_some_and(|c| c.scoped));
        assert!(!Tokens::new(None, &[]).required());
        let shown = format!("{tokens:?}");
        assert!(
            !shown.contains("reader-1") && shown.contains("ci"),
            "{shown}"
        );
    }
}
