//! The routes, one file per group; `api::app` puts them together.

pub mod info;
pub mod probes;
pub mod sandboxes;

use super::error::ApiError;

pub async fn no_such_route() -> ApiError {
    ApiError::NoSuchRoute
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
