//! HTTP routes, one module per resource. Handlers parse input into domain types, call
//! the owning service over gRPC and render the public views; errors go through
//! [`ApiError`](crate::error::ApiError) only.

pub mod admin;
pub mod dead_letters;
pub mod deliveries;
pub mod files;
pub mod jobs;
pub mod projects;
pub mod webhook_secret;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::error::ApiError;

/// A path id of the expected kind; anything else is a 404 (an id that is not ours
/// names nothing), never a 400 that would hint at our id format.
pub struct PathId<T>(pub T);

/// Names the resource kind in not-found messages.
pub trait ResourceName {
    /// e.g. `job`.
    const NAME: &'static str;
}

impl ResourceName for plangrep_core::id::JobId {
    const NAME: &'static str = "job";
}
impl ResourceName for plangrep_core::id::ProjectId {
    const NAME: &'static str = "project";
}
impl ResourceName for plangrep_core::id::DeliveryId {
    const NAME: &'static str = "webhook delivery";
}
impl ResourceName for plangrep_core::id::OrgId {
    const NAME: &'static str = "organization";
}
impl ResourceName for plangrep_core::id::ApiKeyId {
    const NAME: &'static str = "API key";
}

impl<S, T> FromRequestParts<S> for PathId<T>
where
    S: Send + Sync,
    T: std::str::FromStr + ResourceName + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found(T::NAME))?;
        raw.parse()
            .map(PathId)
            .map_err(|_| ApiError::not_found(T::NAME))
    }
}
