//! The OpenAPI document, generated from the handlers' annotations. `haul openapi` prints it
//! and a test checks that the committed `openapi.yaml` equals it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, SecurityRequirement};
use utoipa::{Modify, OpenApi};

use super::problem::ErrorCode;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "haul",
        description = "A download-manager daemon: submit URLs, get verified files. Errors are \
                       RFC 9457 problem documents whose `code` is stable.",
        license(name = "MIT OR Apache-2.0"),
    ),
    components(schemas(ErrorCode)),
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
