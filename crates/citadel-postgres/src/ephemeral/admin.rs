//! Creating and dropping databases through a server's admin connection.
//!
//! `CREATE DATABASE` takes no bind parameters, so the name goes into the
//! statement's text. [`check_name`] lets only plain lowercase identifiers
//! through, and they are quoted as well.

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::EphemeralError;

/// The maximum identifier length in bytes that PostgreSQL keeps without
/// truncating it (`NAMEDATALEN - 1`).
const MAX_NAME_LEN: usize = 63;

/// Checks that `name` is a lowercase identifier that needs no escaping.
pub(super) fn check_name(name: &str) -> Result<(), EphemeralError> {
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if starts_well && rest_ok && name.len() <= MAX_NAME_LEN {
        return Ok(());
    }
    Err(EphemeralError::InvalidDatabaseName {
        name: name.to_owned(),
    })
}

/// Returns `url` with its database replaced by `name`, keeping its query.
pub(super) fn database_url(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |index| authority_start + index);

    let mut result = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

/// Opens one connection to the admin database.
pub(super) async fn connect(admin_url: &str) -> Result<PgConnection, EphemeralError> {
    PgConnection::connect(admin_url)
        .await
        .map_err(|source| EphemeralError::Database {
            operation: "connecting to the admin database",
            source,
        })
}

/// Creates database `name`, copied from `template` when given.
pub(super) async fn create_database(
    admin: &mut PgConnection,
    name: &str,
    template: Option<&str>,
) -> Result<(), EphemeralError> {
    check_name(name)?;
    let sql = match template {
        Some(template) => {
            check_name(template)?;
            format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"")
        }
        None => format!("CREATE DATABASE \"{name}\""),
    };

    // The names passed check_name: lowercase letters, digits and '_' only.
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(admin)
        .await
        .map_err(|source| EphemeralError::Database {
            operation: "creating a database",
            source,
        })?;
    Ok(())
}

/// Drops database `name` if it exists, closing its connections first.
pub(super) async fn drop_database(
    admin: &mut PgConnection,
    name: &str,
) -> Result<(), EphemeralError> {
    check_name(name)?;
    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");

    // The name passed check_name: lowercase letters, digits and '_' only.
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(admin)
        .await
        .map_err(|source| EphemeralError::Database {
            operation: "dropping a database",
            source,
        })?;
    Ok(())
}

/// Renames database `from` to `to`.
pub(super) async fn rename_database(
    admin: &mut PgConnection,
    from: &str,
    to: &str,
) -> Result<(), EphemeralError> {
    check_name(from)?;
    check_name(to)?;
    let sql = format!("ALTER DATABASE \"{from}\" RENAME TO \"{to}\"");

    // The names passed check_name: lowercase letters, digits and '_' only.
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(admin)
        .await
        .map_err(|source| EphemeralError::Database {
            operation: "renaming a database",
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_name_accepts_identifiers() {
        for name in ["citadel", "_x", "citadel_test_0f3a", &"a".repeat(63)] {
            assert!(check_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn check_name_rejects_others() {
        let long = "a".repeat(64);
        for name in ["", "1db", "Citadel", "a-b", "a\"b", "a b", long.as_str()] {
            assert!(check_name(name).is_err(), "{name}");
        }
    }

    #[test]
    fn database_url_replaces_path() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            ("postgres://u:p@db:5432", "postgres://u:p@db:5432/x"),
            (
                "postgres://db/admin?sslmode=disable",
                "postgres://db/x?sslmode=disable",
            ),
            (
                "postgresql:///admin?host=/run/postgresql",
                "postgresql:///x?host=/run/postgresql",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(database_url(url, "x"), expected, "{url}");
        }
    }
}
