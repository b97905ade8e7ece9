//! API errors: an HTTP status and a JSON body with a stable `code` and a
//! message that says what was wrong and what to do (`docs/api.md`, "Errors").

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::{Error, RepoError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The running job a `busy` answer points to.
    pub job: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            job: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(job) = self.job {
            error["job"] = json!(job);
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let (status, code) = status_of(&e);
        ApiError::new(status, code, e.to_string())
    }
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        ApiError::from(Error::Repo(e))
    }
}

fn status_of(e: &Error) -> (StatusCode, &'static str) {
    match e {
        Error::Repo(r) => repo_status(r),
        Error::Usage(_) | Error::Source(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        Error::Verification(_) => (StatusCode::UNPROCESSABLE_ENTITY, "verification_failed"),
        Error::Partial { source, .. } => status_of(source),
        Error::Failed(_) | Error::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

fn repo_status(e: &RepoError) -> (StatusCode, &'static str) {
    match e {
        RepoError::UnknownSnapshot(_) => (StatusCode::NOT_FOUND, "not_found"),
        RepoError::AmbiguousSnapshot(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        RepoError::Locked { .. } => (StatusCode::CONFLICT, "busy"),
        RepoError::ChunkMissing { .. }
        | RepoError::PackMissing { .. }
        | RepoError::Corrupt { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "verification_failed"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}
