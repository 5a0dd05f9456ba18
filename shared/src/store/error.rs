//! `StoreError`: what went wrong, in which operation, on which key.
//!
//! Messages are written for an operator reading a log line: they name the operation
//! and the key, and the connect error says how to start Redis. The Redis URL is never
//! part of a message — it may carry a password — only its host, port and database.

/// How to get a Redis to talk to, appended to every connect error.
const START_HINT: &str = "Is Redis running? Start one with \
     `redis-server --daemonize yes --port 6379 --save ''` (or `docker compose up -d redis`), \
     or point FWDWATCH__REDIS__URL at a running one";

/// An error from a [`Store`](super::Store) or from the domain helpers built on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `redis.url` does not parse. The URL itself is not repeated: it may hold a password.
    #[error("the Redis URL (redis.url / FWDWATCH__REDIS__URL) is not valid: {reason}")]
    InvalidUrl { reason: String },

    /// No connection could be made at start-up.
    #[error("cannot connect to Redis at {target}: {source}. {START_HINT}")]
    Connect {
        /// `redis://host:port/db`, without user name or password.
        target: String,
        #[source]
        source: redis::RedisError,
    },

    /// A command failed (after the retries a dropped connection gets).
    #[error("Redis {op} on `{key}` failed: {source}")]
    Redis {
        op: &'static str,
        key: String,
        #[source]
        source: redis::RedisError,
    },

    /// The key holds another type of value (Redis `WRONGTYPE`).
    #[error("{op} on `{key}`: the key holds another type of value")]
    WrongType { op: &'static str, key: String },

    /// The caller passed something the store cannot accept (a NaN score, an empty
    /// stream entry, an approval that could never match…).
    #[error("{op} on `{key}`: {reason}")]
    InvalidArgument {
        op: &'static str,
        key: String,
        reason: String,
    },

    /// What is stored at the key does not decode (e.g. an allowlist entry that is not
    /// an `Approval`). Someone wrote it by hand or with an incompatible version.
    #[error("{op} on `{key}`: the stored value is not valid: {reason}")]
    InvalidData {
        op: &'static str,
        key: String,
        reason: String,
    },
}

impl StoreError {
    /// Wraps a Redis error with its context, singling out `WRONGTYPE` so both backends
    /// report a type clash the same way.
    pub(crate) fn redis(op: &'static str, key: &str, source: redis::RedisError) -> Self {
        if source.code() == Some("WRONGTYPE") {
            return StoreError::WrongType {
                op,
                key: key.to_owned(),
            };
        }
        StoreError::Redis {
            op,
            key: key.to_owned(),
            source,
        }
    }

    pub(crate) fn wrong_type(op: &'static str, key: &str) -> Self {
        StoreError::WrongType {
            op,
            key: key.to_owned(),
        }
    }

    pub(crate) fn invalid_argument(op: &'static str, key: &str, reason: impl Into<String>) -> Self {
        StoreError::InvalidArgument {
            op,
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_data(op: &'static str, key: &str, reason: impl Into<String>) -> Self {
        StoreError::InvalidData {
            op,
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}
