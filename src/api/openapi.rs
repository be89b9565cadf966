//! The OpenAPI document, generated from the handlers' annotations. `haul openapi` prints it
//! and a test checks that the committed `openapi.yaml` equals it.

use axum::http::Method;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder, SecurityRequirement,
};
use utoipa::{Modify, OpenApi};

use super::problem::ErrorCode;
use super::scope;
use crate::events::EventsLost;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "haul",
        description = "A download-manager daemon: submit URLs, get verified files. Errors are \
                       RFC 9457 problem documents whose `code` is stable.",
        license(name = "MIT OR Apache-2.0"),
    ),
    components(schemas(ErrorCode, EventsLost)),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Submit, watch and control downloads"),
        (name = "events", description = "Server-Sent Events"),
        (name = "ops", description = "Health, readiness, totals, this document"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer scheme and requires it on every `/v1` operation.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The complete document. The responses every route shares by the API's layers (the scope
/// check, the `Host` and `Origin` checks, the header limit, the submission rate limit) are
/// added here, from the same table the layers use, rather than repeated on each handler.
pub fn document() -> Document {
    let mut doc = super::routes().split_for_parts().1;
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
            (Method::PUT, &mut item.put),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                add_security_responses(path, &method, operation);
            }
        }
    }
    doc
}

fn add_security_responses(path: &str, method: &Method, operation: &mut Operation) {
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, response: Response| {
        responses.insert(status.to_owned(), RefOr::T(response));
    };
    add(
        "431",
        problem("The request line and headers are larger than `max_header_bytes`"),
    );
    if !matches!(path, "/healthz" | "/readyz") {
        add(
            "421",
            problem("The `Host` header names a host this daemon does not answer to"),
        );
    }
    if !path.starts_with("/v1") {
        return;
    }
    add(
        "403",
        problem(
            "The token lacks the scope this operation needs (`forbidden`), or the request comes \
             from a web origin or site that may not use the API (`origin-not-allowed`)",
        ),
    );
    if scope::creates_jobs(method, path) {
        let seconds = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(0));
        let retry_after = HeaderBuilder::new()
            .schema(Some(seconds))
            .description(Some("Seconds to wait"))
            .build();
        let description = "The queue is full (`queue-full`) or this client submits jobs faster \
                           than the daemon allows (`rate-limited`); retry after `Retry-After` \
                           seconds";
        let mut response = problem(description);
        response
            .headers
            .insert("Retry-After".to_owned(), RefOr::T(retry_after));
        add("429", response);
    }
    let scopes = scope::required(method, path).map(scope::Scope::as_str);
    operation.security = Some(vec![SecurityRequirement::new("bearer", scopes)]);
}

fn problem(description: &str) -> Response {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ProblemDetails")))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", content)
        .build()
}

/// The document as YAML, exactly as `haul openapi` prints it.
pub fn yaml() -> Result<String, String> {
    document().to_yaml().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed contract must be exactly what the code generates. To update it after an
    /// API change: `cargo run -- openapi > openapi.yaml`.
    #[test]
    fn committed_openapi_yaml_is_up_to_date() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.yaml");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = yaml().unwrap();
        assert!(
            committed == generated,
            "openapi.yaml is stale: run `cargo run -- openapi > openapi.yaml`"
        );
    }

    #[test]
    fn every_operation_has_an_id_a_tag_and_described_responses() {
        let doc = document();
        for (path, item) in &doc.paths.paths {
            for operation in [&item.get, &item.post, &item.patch, &item.delete]
                .into_iter()
                .flatten()
            {
                assert!(
                    operation.operation_id.is_some(),
                    "{path} lacks an operation_id"
                );
                assert!(
                    operation.tags.as_ref().is_some_and(|t| !t.is_empty()),
                    "{path} lacks a tag"
                );
                for (status, response) in &operation.responses.responses {
                    let utoipa::openapi::RefOr::T(response) = response else {
                        continue;
                    };
                    assert!(
                        !response.description.is_empty(),
                        "{path} {status} lacks a description"
                    );
                }
                let secured = operation.security.is_some();
                assert_eq!(
                    secured,
                    path.starts_with("/v1"),
                    "{path}: only /v1 requires the token"
                );
            }
        }
    }
}
