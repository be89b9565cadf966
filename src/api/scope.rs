//! Token scopes and the one table saying which scope each `/v1` operation needs.
//!
//! The table is used twice: by [`super::auth`] to refuse a token that lacks the scope, and by
//! the OpenAPI document, whose security requirements name it. A test checks that every
//! documented `/v1` operation is in it, so a new route cannot be left at "any token".

use std::fmt;

use axum::http::Method;
use serde::{Deserialize, Serialize};

/// What a token may do. `admin` implies `read` and `submit`; the other two are independent,
/// so a submit-only token (a browser extension, a CI job) cannot list other people's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every `GET`: jobs, their events and deliveries, stats, limits.
    Read,
    /// Creating jobs and acting on one job: submit, retry, pause, resume, cancel, change, delete.
    Submit,
    /// Daemon-wide actions: cancel every job, prune the history, change the global rate limit.
    Admin,
}

impl Scope {
    /// The name used in the settings and in the OpenAPI document.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes, as granted to one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes {
    read: bool,
    submit: bool,
    admin: bool,
}

impl Scopes {
    /// Every scope: what `api_token` grants.
    pub const ALL: Scopes = Scopes {
        read: true,
        submit: true,
        admin: true,
    };

    /// The scopes of a `[[tokens]]` entry.
    pub fn of(scopes: &[Scope]) -> Scopes {
        let admin = scopes.contains(&Scope::Admin);
        Scopes {
            read: admin || scopes.contains(&Scope::Read),
            submit: admin || scopes.contains(&Scope::Submit),
            admin,
        }
    }

    /// Whether `scope` is granted.
    pub fn allows(self, scope: Scope) -> bool {
        match scope {
            Scope::Read => self.read,
            Scope::Submit => self.submit,
            Scope::Admin => self.admin,
        }
    }
}

/// Each `/v1` operation (method and route pattern as registered) with the scope it needs.
const ROUTES: &[(&str, &str, Scope)] = &[
    ("GET", "/v1/jobs", Scope::Read),
    ("GET", "/v1/jobs/{id}", Scope::Read),
    ("GET", "/v1/jobs/{id}/wait", Scope::Read),
    ("GET", "/v1/jobs/{id}/events", Scope::Read),
    ("GET", "/v1/jobs/{id}/deliveries", Scope::Read),
    ("GET", "/v1/events", Scope::Read),
    ("GET", "/v1/stats", Scope::Read),
    ("GET", "/v1/limits", Scope::Read),
    ("POST", "/v1/jobs", Scope::Submit),
    ("PATCH", "/v1/jobs/{id}", Scope::Submit),
    ("DELETE", "/v1/jobs/{id}", Scope::Submit),
    ("POST", "/v1/jobs/{id}/cancel", Scope::Submit),
    ("POST", "/v1/jobs/{id}/pause", Scope::Submit),
    ("POST", "/v1/jobs/{id}/resume", Scope::Submit),
    ("POST", "/v1/jobs/{id}/retry", Scope::Submit),
    ("POST", "/v1/jobs/cancel-all", Scope::Admin),
    ("POST", "/v1/jobs/prune", Scope::Admin),
    ("PUT", "/v1/limits", Scope::Admin),
];

/// The scope an operation needs; `None` for what is not an operation (an unknown route, a
/// method the route does not take), which any valid token may call to get its 404 or 405.
pub fn required(method: &Method, route: &str) -> Option<Scope> {
    // HEAD is answered like GET by axum.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ROUTES
        .iter()
        .find(|(m, r, _)| *m == method && *r == route)
        .map(|(_, _, scope)| *scope)
}

/// Operations that create jobs: limited per client by [`super::rate`].
pub fn creates_jobs(method: &Method, route: &str) -> bool {
    method == Method::POST && matches!(route, "/v1/jobs" | "/v1/jobs/{id}/retry")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_v1_operation_has_a_scope() {
        let doc = crate::api::openapi::document();
        let mut count = 0;
        for (path, item) in &doc.paths.paths {
            let operations = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            for (method, operation) in operations {
                if operation.is_none() {
                    continue;
                }
                let scope = required(&method, path);
                assert_eq!(
                    scope.is_some(),
                    path.starts_with("/v1"),
                    "{method} {path} has no scope in the table"
                );
                count += usize::from(scope.is_some());
            }
        }
        assert_eq!(
            count,
            ROUTES.len(),
            "the table names routes that do not exist"
        );
    }

    #[test]
    fn admin_implies_the_others_and_the_others_are_independent() {
        let admin = Scopes::of(&[Scope::Admin]);
        assert!(
            [Scope::Read, Scope::Submit, Scope::Admin]
                .iter()
                .all(|s| admin.allows(*s))
        );
        let submit = Scopes::of(&[Scope::Submit]);
        assert!(submit.allows(Scope::Submit) && !submit.allows(Scope::Read));
        assert!(!submit.allows(Scope::Admin));
        let read = Scopes::of(&[Scope::Read]);
        assert!(read.allows(Scope::Read) && !read.allows(Scope::Submit));
        assert_eq!(Scopes::of(&[]), Scopes::default());
        assert_eq!(required(&Method::HEAD, "/v1/stats"), Some(Scope::Read));
        assert_eq!(required(&Method::POST, "/v1/stats"), None);
    }
}
