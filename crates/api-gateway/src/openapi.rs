//! The OpenAPI 3.1 document, generated from the handlers (`#[utoipa::path]`) and their
//! types, and `GET /docs`, an API reference rendered from it on the server (no scripts,
//! no CDN). Error responses are added to every operation in one place, so the document
//! lists every status a route can answer with.

use axum::Json;
use axum::extract::State;
use axum::response::Html;
use std::sync::Arc;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr, Response, ResponseBuilder, content::ContentBuilder};

use crate::error::ErrorResponse;

/// The `Idempotency-Key` header of mutating routes.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// 1 to 256 printable ASCII characters; a retry with the same key and body replays the
    /// first response (`"idempotent": true`) instead of doing the work twice.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 256,
        pattern = "^[\\x20-\\x7e]+$"
    )]
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

/// Document-level metadata: title, servers, security schemes, shared schemas.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Plangrep job platform API",
        description = "Create jobs in projects, upload drawing sets and specification books, and receive every status change as a signed Standard Webhooks POST."
    ),
    components(schemas(ErrorResponse, plangrep_core::JobStatus)),
    tags(
        (name = "projects", description = "Projects group jobs"),
        (name = "jobs", description = "Jobs and their lifecycle"),
        (name = "webhooks", description = "The webhook delivery log"),
        (name = "admin", description = "Operator API (PLANGREP_ADMIN_TOKEN)")
    )
)]
pub struct ApiDoc;

/// The camelCase name SPEC gives a route's snake_case path parameter (`project_id` →
/// `projectId`): client generators turn these names into argument names.
pub fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `/jobs/{job_id}` → `/jobs/{jobId}`. The axum routes keep their own names (and the
/// idempotency scopes stored under them); only the published document changes.
fn camel_case_template(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..=open]);
        out.push_str(&camel_case(&rest[open + 1..open + close]));
        out.push('}');
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

fn camel_case_path_parameters(parameters: Option<&mut Vec<RefOr<Parameter>>>) {
    for parameter in parameters.into_iter().flatten() {
        if let RefOr::T(parameter) = parameter
            && parameter.parameter_in == ParameterIn::Path
        {
            parameter.name = camel_case(&parameter.name);
        }
    }
}

/// Completes the generated document: SPEC's path parameter names, security per area, and
/// the error responses every operation can produce.
pub fn finish(mut doc: OpenApi) -> OpenApi {
    let paths = std::mem::take(&mut doc.paths.paths);
    for (path, mut item) in paths {
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.patch,
            &mut item.put,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            camel_case_path_parameters(operation.parameters.as_mut());
        }
        doc.paths.paths.insert(camel_case_template(&path), item);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    let bearer = || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
    components.add_security_scheme("apiKey", bearer());
    components.add_security_scheme("adminToken", bearer());
    for (path, item) in doc.paths.paths.iter_mut() {
        let scheme = if path.starts_with("/admin/") {
            "adminToken"
        } else {
            "apiKey"
        };
        let operations = [
            (&mut item.get, false),
            (&mut item.post, true),
            (&mut item.patch, true),
        ];
        for (operation, mutating) in operations {
            let Some(operation) = operation.as_mut() else {
                continue;
            };
            operation.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                scheme,
                Vec::<String>::new(),
            )]);
            let mut statuses = vec![
                ("400", "Invalid input (details name the fields)"),
                ("401", "Missing, unknown, revoked or expired credentials"),
                ("404", "No such resource (or another organization's)"),
                ("405", "Method not allowed"),
                ("503", "A dependency is unavailable; retry later"),
            ];
            if !path.starts_with("/admin/") {
                statuses.push(("403", "The API key lacks the scope"));
                statuses.push(("429", "Rate limited; see Retry-After"));
            }
            if mutating {
                statuses.extend([
                    ("409", "The resource's state does not allow this (or the same Idempotency-Key is in flight)"),
                    ("413", "The body is too large"),
                    ("415", "The body is not application/json"),
                    ("422", "The Idempotency-Key was used with a different request"),
                ]);
            }
            for (status, description) in statuses {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error_response(description));
            }
        }
    }
    doc
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name(
                        "ErrorResponse",
                    )))
                    .build(),
            )
            .build(),
    )
}

/// `GET /openapi.json`.
pub async fn document(State(doc): State<Arc<OpenApi>>) -> Json<OpenApi> {
    Json((*doc).clone())
}

/// `GET /docs`: the reference, rendered from the document.
pub async fn reference(State(doc): State<Arc<OpenApi>>) -> Html<String> {
    Html(render(&doc))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the document as one self-contained HTML page.
pub fn render(doc: &OpenApi) -> String {
    let json = serde_json::to_value(doc).unwrap_or_default();
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Plangrep API reference</title><style>\
         body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
         h2{border-bottom:1px solid #ddd;padding-bottom:.3rem}\
         .op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.6rem 1rem}\
         .m{font-weight:700;text-transform:uppercase;margin-right:.6rem}\
         code{background:#f4f4f4;padding:0 .2rem}td,th{text-align:left;padding:.1rem .8rem .1rem 0}\
         </style></head><body>",
    );
    let info = &json["info"];
    html.push_str(&format!(
        "<h1>{}</h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI {}).</p>",
        escape(info["title"].as_str().unwrap_or_default()),
        escape(info["description"].as_str().unwrap_or_default()),
        escape(json["openapi"].as_str().unwrap_or_default()),
    ));
    let Some(paths) = json["paths"].as_object() else {
        return html + "</body></html>";
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, operation) in item {
            html.push_str(&format!(
                "<div class=\"op\"><p><span class=\"m\">{}</span><code>{}</code></p><p>{}</p>",
                escape(method),
                escape(path),
                escape(operation["summary"].as_str().unwrap_or_default()),
            ));
            if let Some(parameters) = operation["parameters"].as_array() {
                html.push_str("<table><tr><th>parameter</th><th>in</th><th>description</th></tr>");
                for parameter in parameters {
                    html.push_str(&format!(
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                        escape(parameter["name"].as_str().unwrap_or_default()),
                        escape(parameter["in"].as_str().unwrap_or_default()),
                        escape(parameter["description"].as_str().unwrap_or_default()),
                    ));
                }
                html.push_str("</table>");
            }
            if let Some(body) =
                operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
            {
                html.push_str(&format!(
                    "<p>Body: <code>{}</code></p>",
                    escape(body.rsplit('/').next().unwrap_or(body))
                ));
            }
            if let Some(responses) = operation["responses"].as_object() {
                html.push_str("<table><tr><th>status</th><th>meaning</th></tr>");
                for (status, response) in responses {
                    html.push_str(&format!(
                        "<tr><td>{}</td><td>{}</td></tr>",
                        escape(status),
                        escape(response["description"].as_str().unwrap_or_default()),
                    ));
                }
                html.push_str("</table>");
            }
            html.push_str("</div>");
        }
    }
    if let Some(schemas) = json["components"]["schemas"].as_object() {
        html.push_str("<h2>Schemas</h2>");
        for (name, schema) in schemas {
            html.push_str(&format!(
                "<h3 id=\"{0}\">{0}</h3><pre>{1}</pre>",
                escape(name),
                escape(&serde_json::to_string_pretty(schema).unwrap_or_default()),
            ));
        }
    }
    html + "</body></html>"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_named_in_camel_case() {
        assert_eq!(camel_case("project_id"), "projectId");
        assert_eq!(camel_case("jobId"), "jobId");
        assert_eq!(
            camel_case_template("/api/open/v1/projects/{project_id}/jobs"),
            "/api/open/v1/projects/{projectId}/jobs"
        );
        assert_eq!(
            camel_case_template("/admin/v1/orgs/{org_id}/api-keys"),
            "/admin/v1/orgs/{orgId}/api-keys"
        );
        assert_eq!(
            camel_case_template("/api/open/v1/projects"),
            "/api/open/v1/projects"
        );
    }
}
