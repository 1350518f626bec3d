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

/// Replaces the passwords in a connection string with `***`, for errors and
/// logs. It handles URLs (`user:password@` and the `password` and
/// `sslpassword` query parameters) and libpq's `key=value` form. When in
/// doubt it hides too much rather than too little: the user info of a URL
/// ends at its last `@`, since a password may hold an unescaped `/`, `?` or
/// `@`.
pub(crate) fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => redact_url_form(scheme, rest),
        None => redact_keywords(url),
    }
}

fn redact_url_form(scheme: &str, rest: &str) -> String {
    let (user_info, after_user_info) = match rest.rsplit_once('@') {
        Some((user_info, after)) => (Some(user_info), after),
        None => (None, rest),
    };
    let (host_and_path, query) = match after_user_info.split_once('?') {
        Some((host_and_path, query)) => (host_and_path, Some(query)),
        None => (after_user_info, None),
    };

    let mut redacted = format!("{scheme}://");
    if let Some(user_info) = user_info {
        match user_info.split_once(':') {
            Some((user, _password)) => redacted.push_str(&format!("{user}:***@")),
            None => redacted.push_str(&format!("{user_info}@")),
        }
    }
    redacted.push_str(host_and_path);
    if let Some(query) = query {
        redacted.push('?');
        redacted.push_str(&redact_query(query));
    }
    redacted
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

/// Redacts libpq's `key=value key='quoted value'` form.
fn redact_keywords(text: &str) -> String {
    let mut redacted = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
        redacted.push_str(&rest[..start]);
        rest = &rest[start..];
        let key_end = rest.find(['=', ' ', '\t']).unwrap_or(rest.len());
        let key = &rest[..key_end];
        let after_key = &rest[key_end..];
        let spaces = after_key.len() - after_key.trim_start().len();
        let value_len = match keyword_value_len(after_key.trim_start()) {
            0 => 0,
            len => spaces + len,
        };
        let (pair, after) = rest.split_at(key_end + value_len);
        if is_password_key(key) {
            redacted.push_str(key);
            redacted.push_str("=***");
        } else {
            redacted.push_str(pair);
        }
        rest = after;
    }
    redacted
}

/// Returns the length of `=value` at the start of `text`: up to the next
/// space, or past the closing quote of a quoted value.
fn keyword_value_len(text: &str) -> usize {
    let Some(value) = text.strip_prefix('=') else {
        return 0;
    };
    let value = value.trim_start();
    let skipped = text.len() - value.len();
    if let Some(quoted) = value.strip_prefix('\'') {
        let mut escaped = false;
        for (index, c) in quoted.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '\'' if !escaped => return skipped + 1 + index + 1,
                _ => escaped = false,
            }
        }
        return text.len();
    }
    skipped + value.find(char::is_whitespace).unwrap_or(value.len())
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
    fn redact_url_hides_passwords_with_special_characters() {
        for url in [
            "postgres://app:Hunter2/Secret@db/citadel",
            "postgres://app:Hunter2?Secret@db/citadel",
            "postgres://app:Hunter2@Secret@db/citadel",
        ] {
            let redacted = redact_url(url);
            assert!(!redacted.contains("Secret"), "{url} -> {redacted}");
            assert!(!redacted.contains("Hunter2"), "{url} -> {redacted}");
        }
    }

    #[test]
    fn redact_keywords_hides_passwords() {
        assert_eq!(
            redact_url("host=127.0.0.1 port=1 user=app password=Hunter2Secret dbname=citadel"),
            "host=127.0.0.1 port=1 user=app password=*** dbname=citadel"
        );
        assert_eq!(
            redact_url("user=app password = 'with space \\' quote' dbname=x"),
            "user=app password=*** dbname=x"
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
