//! A throwaway PostgreSQL cluster for tests and examples (feature
//! `ephemeral`).
//!
//! [`EphemeralPostgres::start`] runs `initdb` and `postgres` from the
//! machine's server binaries into a new directory under
//! [`std::env::temp_dir`], on a free port of 127.0.0.1 with trust
//! authentication. Dropping it stops the server and removes the directory.
//! Because a process can end without running `Drop` (a static is never
//! dropped, and `SIGKILL` runs nothing), each cluster also has a small guard
//! process that waits on a pipe from this process and, when the pipe closes
//! without a word, stops the server and removes the directory.
//!
//! [`fresh_store`] is the entry point for tests: the first call in a process
//! starts one shared cluster and migrates a template database, and every call
//! returns a [`PgStore`] on a new database copied from that template.
//!
//! # Finding the binaries
//!
//! In order: the directory in the `CITADEL_PG_BIN` environment variable,
//! the directory of `initdb` on `PATH`, the highest version under
//! `/usr/lib/postgresql/*/bin` (Debian and Ubuntu), then
//! `/usr/local/pgsql/bin` (a source build).
//!
//! # Running as root
//!
//! `initdb` and `postgres` refuse to run as root. When this process runs as
//! root, they run as the `postgres` system user, or as `nobody` when there is
//! no `postgres` user, and the cluster's directory is given to that user.
//!
//! # Examples
//!
//! ```no_run
//! use citadel_postgres::ephemeral::EphemeralPostgres;
//! use citadel_postgres::PgStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = EphemeralPostgres::start()?;
//! let url = cluster.create_database("demo").await?;
//! let store = PgStore::connect(&url).await?;
//! store.migrate().await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`PgStore`]: crate::PgStore

mod admin;
mod binaries;
mod cluster;
mod shared;

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

pub use cluster::EphemeralPostgres;
pub use shared::{TestDatabase, fresh_store};

use crate::PgError;

/// An error from starting or using a throwaway cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EphemeralError {
    /// No directory with both `initdb` and `postgres` was found.
    #[error(
        "PostgreSQL server binaries not found in CITADEL_PG_BIN, on PATH, in \
         /usr/lib/postgresql/*/bin or in /usr/local/pgsql/bin; install Debian's postgresql \
         package or set CITADEL_PG_BIN to the directory that contains initdb and postgres"
    )]
    BinariesNotFound,
    /// `CITADEL_PG_BIN` names a directory without `initdb` and `postgres`.
    #[error(
        "CITADEL_PG_BIN is {}, which does not contain both initdb and postgres; set it to the \
         directory of the PostgreSQL server binaries",
        path.display()
    )]
    InvalidBinDir {
        /// The value of `CITADEL_PG_BIN`.
        path: PathBuf,
    },
    /// The process runs as root, and there is no user to run the server as.
    #[error(
        "running as root, but neither the postgres nor the nobody user exists to run initdb and \
         postgres as; create a postgres system user, or run as a user other than root"
    )]
    NoServiceUser,
    /// A file system or process operation failed.
    #[error("failed to {action} {}", path.display())]
    Io {
        /// The action that failed, such as "create directory".
        action: &'static str,
        /// The file, directory or program concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// `initdb` exited with an error.
    #[error("initdb failed with {status}; see {}, which ends with:\n{tail}", log.display())]
    InitdbFailed {
        /// The exit status of `initdb`.
        status: ExitStatus,
        /// The log of `initdb`, kept for reading.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// The server exited or did not accept connections in time.
    #[error("postgres did not start: {reason}; see {}, which ends with:\n{tail}", log.display())]
    StartFailed {
        /// The cause, such as the server's exit status.
        reason: String,
        /// The server's log, kept for reading.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// A database name is not a plain lowercase identifier.
    #[error(
        "invalid database name {name:?}: expected 1 to 63 lowercase ASCII letters, digits and \
         '_', starting with a letter or '_'"
    )]
    InvalidDatabaseName {
        /// The rejected name.
        name: String,
    },
    /// A statement on the server's admin database failed.
    #[error("database error while {operation}")]
    Database {
        /// The operation that failed, such as "creating database".
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Connecting a store or migrating a database failed.
    #[error(transparent)]
    Store(#[from] PgError),
}
