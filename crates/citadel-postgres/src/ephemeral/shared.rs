//! [`fresh_store`]: a new, migrated database for each test, copied from a
//! template on one server per process.
//!
//! Each `#[tokio::test]` runs on a runtime of its own, and a pool's
//! connections belong to the runtime that opened them. So the static below
//! keeps only the server's admin URL, the template's name and the cluster
//! handle, and every call opens its own connections.

use std::env;
use std::fmt;
use std::thread;

use tokio::sync::OnceCell;

use super::{EphemeralError, EphemeralPostgres, admin};
use crate::PgStore;
use crate::error::redact_url;
use crate::store::MIGRATOR;

/// The environment variable that names an existing server to use instead of
/// starting a cluster.
const DATABASE_URL_VAR: &str = "DATABASE_URL";

/// The key of the advisory lock held while a template is built, so that two
/// processes sharing a server do not build it at once.
const TEMPLATE_LOCK_KEY: i64 = 0x6369_7461_6465_6c00;

/// The server every test of this process uses.
static SERVER: OnceCell<TestServer> = OnceCell::const_new();

#[derive(Debug)]
struct TestServer {
    admin_url: String,
    template: String,
    /// The cluster this process started, unless `DATABASE_URL` named a
    /// server. A static is never dropped, so its guard process removes it
    /// when the process exits.
    _cluster: Option<EphemeralPostgres>,
}

/// Returns a store on a new database with every migration applied, and the
/// handle that drops the database.
///
/// The first call in a process starts one [`EphemeralPostgres`] for every
/// test of the process or, when the `DATABASE_URL` environment variable is
/// set, uses that server through that URL, which needs the `CREATEDB`
/// privilege. It migrates a template database once, named after a hash of
/// the migrations so that a changed migration gets a new template. Every call
/// then copies the template with `CREATE DATABASE … TEMPLATE`, which takes
/// milliseconds.
///
/// Keep the [`TestDatabase`] alive as long as the store: dropping it drops
/// the database.
///
/// # Examples
///
/// ```no_run
/// use citadel_core::store::Store;
/// use citadel_postgres::ephemeral::fresh_store;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let (store, _database) = fresh_store().await?;
/// assert!(store.list_merchants().await?.is_empty());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// Any [`EphemeralError`] of starting the cluster, and
/// [`EphemeralError::Database`] or [`EphemeralError::Store`] when creating,
/// migrating or connecting to a database fails.
pub async fn fresh_store() -> Result<(PgStore, TestDatabase), EphemeralError> {
    let server = SERVER.get_or_try_init(TestServer::start).await?;
    let name = format!("citadel_test_{}", uuid::Uuid::new_v4().simple());

    let mut admin = admin::connect(&server.admin_url).await?;
    admin::create_database(&mut admin, &name, Some(&server.template)).await?;
    let database = TestDatabase {
        url: admin::database_url(&server.admin_url, &name),
        admin_url: server.admin_url.clone(),
        name,
    };

    let store = PgStore::connect(&database.url).await?;
    Ok((store, database))
}

impl TestServer {
    async fn start() -> Result<Self, EphemeralError> {
        let (admin_url, cluster) = match env::var(DATABASE_URL_VAR) {
            Ok(url) if !url.is_empty() => (url, None),
            // NOTE: this blocks the calling runtime for the second that
            // initdb takes; every other test waits for the server anyway.
            _ => {
                let cluster = EphemeralPostgres::start()?;
                (cluster.url().to_owned(), Some(cluster))
            }
        };
        let template = template_name();

        build_template(&admin_url, &template).await?;
        tracing::debug!(
            database.url = %redact_url(&admin_url),
            database.template = %template,
            "test database server ready"
        );
        Ok(Self {
            admin_url,
            template,
            _cluster: cluster,
        })
    }
}

/// Builds the template database unless it exists: under a temporary name
/// first, renamed once migrated, so an interrupted build never leaves a
/// half-migrated template.
async fn build_template(admin_url: &str, template: &str) -> Result<(), EphemeralError> {
    let mut admin = admin::connect(admin_url).await?;
    run_admin(
        &mut admin,
        "SELECT pg_advisory_lock($1)",
        "locking the template",
    )
    .await?;

    let built = build_template_locked(&mut admin, admin_url, template).await;

    run_admin(
        &mut admin,
        "SELECT pg_advisory_unlock($1)",
        "unlocking the template",
    )
    .await?;
    built
}

async fn build_template_locked(
    admin: &mut sqlx::PgConnection,
    admin_url: &str,
    template: &str,
) -> Result<(), EphemeralError> {
    const EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)";

    let exists: bool = sqlx::query_scalar(EXISTS)
        .bind(template)
        .fetch_one(&mut *admin)
        .await
        .map_err(|source| EphemeralError::Database {
            operation: "looking up the template",
            source,
        })?;
    if exists {
        return Ok(());
    }

    let building = format!("{template}_build");
    admin::drop_database(admin, &building).await?;
    admin::create_database(admin, &building, None).await?;
    let store = PgStore::connect(&admin::database_url(admin_url, &building)).await?;
    let migrated = store.migrate().await;
    store.pool().close().await;
    migrated?;

    admin::rename_database(admin, &building, template).await
}

/// Runs one statement that takes [`TEMPLATE_LOCK_KEY`].
async fn run_admin(
    admin: &mut sqlx::PgConnection,
    sql: &'static str,
    operation: &'static str,
) -> Result<(), EphemeralError> {
    sqlx::query(sql)
        .bind(TEMPLATE_LOCK_KEY)
        .execute(admin)
        .await
        .map_err(|source| EphemeralError::Database { operation, source })?;
    Ok(())
}

/// Returns the template's name: `citadel_template_` and a hash of every
/// migration's version and checksum.
fn template_name() -> String {
    let mut hash = Fnv1a::new();
    for migration in MIGRATOR.iter() {
        hash.write(&migration.version.to_le_bytes());
        hash.write(&migration.checksum);
    }
    format!("citadel_template_{:016x}", hash.finish())
}

/// The 64-bit FNV-1a hash, which gives the same value on every machine and
/// Rust version, unlike `std`'s `DefaultHasher`.
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Self(Self::OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A database made by [`fresh_store`]; dropping it drops the database.
pub struct TestDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDatabase {
    /// Returns the database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns a URL that connects to the database, for opening more
    /// connections or stores on it.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

impl Drop for TestDatabase {
    /// Drops the database, closing the connections still open on it.
    ///
    /// `Drop` cannot await, and may run inside a runtime that must not
    /// block, so a thread with a runtime of its own runs the statement while
    /// this one waits for it.
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        let dropped = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|err| err.to_string())?;
            runtime
                .block_on(async {
                    let mut admin = admin::connect(&admin_url).await?;
                    admin::drop_database(&mut admin, &name).await
                })
                .map_err(|err| err.to_string())
        })
        .join();

        if let Ok(Err(err)) = dropped {
            tracing::warn!(database.name = %self.name, error = %err, "failed to drop a test database");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_values() {
        let mut empty = Fnv1a::new();
        empty.write(b"");
        assert_eq!(empty.finish(), 0xcbf2_9ce4_8422_2325);

        let mut a = Fnv1a::new();
        a.write(b"a");
        assert_eq!(a.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn template_name_is_a_valid_database_name() {
        let name = template_name();
        assert!(admin::check_name(&name).is_ok(), "{name}");
        assert!(
            admin::check_name(&format!("{name}_build")).is_ok(),
            "{name}"
        );
    }
}
