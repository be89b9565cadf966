//! The OpenAPI document, generated from the handlers' annotations. `haul openapi` prints it
//! and a test checks that the committed `openapi.yaml` equals it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, SecurityRequirement};
use utoipa::{Modify, OpenApi};

use super::problem::ErrorCode;
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

/// The complete document.
pub fn document() -> Document {
    let mut doc = super::routes().split_for_parts().1;
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    let requirement = SecurityRequirement::new("bearer", Vec::<String>::new());
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/v1") {
            continue;
        }
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.patch,
            &mut item.delete,
            &mut item.put,
        ]
        .into_iter()
        .flatten()
        {
            operation.security = Some(vec![requirement.clone()]);
        }
    }
    doc
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
