//! Finding the directory of the PostgreSQL server binaries.

use std::env;
use std::path::{Path, PathBuf};

use super::EphemeralError;

/// The environment variable that names the binaries' directory.
const BIN_DIR_VAR: &str = "CITADEL_PG_BIN";

/// The directory in which Debian and Ubuntu install each major version, as
/// `VERSION/bin`.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The default install directory of a build from source.
const SOURCE_BUILD_DIR: &str = "/usr/local/pgsql/bin";

/// Returns the directory that contains `initdb` and `postgres`.
pub(super) fn find() -> Result<PathBuf, EphemeralError> {
    if let Some(dir) = env::var_os(BIN_DIR_VAR) {
        let path = PathBuf::from(dir);
        if has_server(&path) {
            return Ok(path);
        }
        return Err(EphemeralError::InvalidBinDir { path });
    }

    let found = initdb_on_path()
        .or_else(|| newest_versioned_dir(Path::new(DEBIAN_ROOT)))
        .or_else(|| Some(PathBuf::from(SOURCE_BUILD_DIR)).filter(|dir| has_server(dir)));
    found.ok_or(EphemeralError::BinariesNotFound)
}

fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

/// Returns the directory of the first `initdb` on `PATH` that has `postgres`
/// beside it, following a symbolic link to the real directory when only that
/// one has `postgres`.
fn initdb_on_path() -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path).find_map(|dir| {
        let initdb = dir.join("initdb");
        if !initdb.is_file() {
            return None;
        }
        if has_server(&dir) {
            return Some(dir);
        }
        let real_dir = initdb.canonicalize().ok()?.parent()?.to_path_buf();
        Some(real_dir).filter(|dir| has_server(dir))
    })
}

/// Returns `root/VERSION/bin` for the highest `VERSION` (such as `15` or
/// `9.6`) whose `bin` has the server binaries.
fn newest_versioned_dir(root: &Path) -> Option<PathBuf> {
    let entries = root.read_dir().ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = parse_version(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .max_by(|(left, _), (right, _)| left.cmp(right))
        .map(|(_, bin)| bin)
}

/// Parses `15` or `9.6` into its numeric parts, so that 15 sorts above 9.6.
fn parse_version(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn fake_bin(root: &Path, version: &str, binaries: &[&str]) {
        let bin = root.join(version).join("bin");
        fs::create_dir_all(&bin).unwrap();
        for binary in binaries {
            fs::write(bin.join(binary), b"").unwrap();
        }
    }

    #[test]
    fn newest_versioned_dir_picks_highest_complete_version() {
        let root = tempfile::tempdir().unwrap();
        fake_bin(root.path(), "9.6", &["initdb", "postgres"]);
        fake_bin(root.path(), "15", &["initdb", "postgres"]);
        fake_bin(root.path(), "16", &["initdb", "postgres"]);
        fake_bin(root.path(), "17", &["initdb"]);
        fake_bin(root.path(), "common", &["initdb", "postgres"]);

        let found = newest_versioned_dir(root.path()).unwrap();

        assert_eq!(found, root.path().join("16").join("bin"));
    }

    #[test]
    fn newest_versioned_dir_without_versions() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(newest_versioned_dir(root.path()), None);
        assert_eq!(newest_versioned_dir(&root.path().join("missing")), None);
    }

    #[test]
    fn parse_version_orders_numerically() {
        assert!(parse_version("15").unwrap() > parse_version("9.6").unwrap());
        assert_eq!(parse_version("main"), None);
    }
}
