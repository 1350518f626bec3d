//! Errors of this crate, and the mapping of sqlx errors to
//! [`StoreError`].

use citadel_core::store::StoreError;

/// An error from connecting to the database or migrating it.
///
/// Errors of the store's operations are [`StoreError`]s, as the
/// [`Store`](citadel_core::store::Store) trait requires.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The connection URL could not be parsed.
    #[error("invalid database url {url}: expected postgres://user:password@host:port/database")]
    InvalidUrl {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// The parser's error.
        #[source]
        source: sqlx::Error,
    },
    /// The database could not be reached or rejected the connection.
    #[error("failed to connect to database {url}")]
    Connect {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the migrations failed; the failed migration was rolled back.
    #[error("failed to apply citadel migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Returns a closure that wraps a sqlx error as [`StoreError::Database`]
/// with what the store was doing, for use with `map_err`.
pub(crate) fn database(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database {
        operation,
        source: Box::new(source),
    }
}

/// Builds the error for a stored row that does not convert to a domain value.
pub(crate) fn invalid_row(table: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::InvalidRow {
        table,
        message: message.into(),
    }
}

/// Replaces the passwords in a connection URL with `***`: the one in the user
/// info (`user:password@`) and the `password` and `sslpassword` query
/// parameters that libpq also accepts.
pub(crate) fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut redacted = redact_user_info(base);
    if let Some(query) = query {
        redacted.push('?');
        redacted.push_str(&redact_query(query));
    }
    redacted
}

fn redact_user_info(base: &str) -> String {
    let Some((scheme, rest)) = base.split_once("://") else {
        return base.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return base.to_owned();
    };
    let Some((user, _password)) = user_info.split_once(':') else {
        return base.to_owned();
    };
    format!("{scheme}://{user}:***@{host}{path}")
}

fn redact_query(query: &str) -> String {
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if is_password_key(key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    pairs.join("&")
}

fn is_password_key(key: &str) -> bool {
    key.eq_ignore_ascii_case("password") || key.eq_ignore_ascii_case("sslpassword")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_password() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/citadel?sslmode=require"),
            "postgres://app:***@db:5432/citadel?sslmode=require"
        );
    }

    #[test]
    fn redact_url_keeps_url_without_password() {
        for url in [
            "postgres://app@db/citadel",
            "postgres://db/citadel",
            "not a url",
            "postgres://db/path@with-at",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn redact_url_hides_query_passwords() {
        assert_eq!(
            redact_url("postgres://app@db/citadel?password=s3cret&sslmode=require&sslpassword=k3y"),
            "postgres://app@db/citadel?password=***&sslmode=require&sslpassword=***"
        );
        assert_eq!(
            redact_url("postgres://app:s3cret@db/citadel?PASSWORD=again"),
            "postgres://app:***@db/citadel?PASSWORD=***"
        );
    }

    #[test]
    fn redact_url_handles_at_in_password() {
        assert_eq!(
            redact_url("postgres://app:p@ss@db/citadel"),
            "postgres://app:***@db/citadel"
        );
    }
}
