//! Error types of the applications the tests pretend to be.

use cachestack::Error;

/// An application error that wraps cache failures (what `on_cache_error = "propagate"` needs).
#[derive(Debug)]
pub enum AppError {
    Cache(Error),
}

impl From<Error> for AppError {
    fn from(err: Error) -> Self {
        AppError::Cache(err)
    }
}
