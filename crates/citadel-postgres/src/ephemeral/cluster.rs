//! [`EphemeralPostgres`]: one throwaway cluster and the processes that keep
//! it clean.

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{EphemeralError, admin, binaries};

/// How long the server gets to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the server gets to shut down before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many lines of a log go into an error.
const LOG_TAIL_LINES: usize = 20;

/// The superuser that `initdb` creates.
const SUPERUSER: &str = "postgres";

/// The guard process's script, run as `sh -c SCRIPT citadel-pg-guard PID DIR`.
///
/// It blocks reading a line from its stdin, which is a pipe from this
/// process. `released` means the cluster was cleaned up already. End of file
/// means this process died without cleaning up, so the guard stops the server
/// (immediate shutdown, then `SIGKILL` after 10 seconds) and removes the
/// directory. It ignores the terminal's `SIGINT` and `SIGHUP`, which would
/// otherwise kill it together with this process.
const GUARD_SCRIPT: &str = r#"
trap '' INT HUP
read -r word
if [ "$word" = released ]; then exit 0; fi
kill -QUIT "$1" 2>/dev/null
tries=0
while kill -0 "$1" 2>/dev/null && [ "$tries" -lt 100 ]; do
    sleep 0.1
    tries=$((tries + 1))
done
if kill -0 "$1" 2>/dev/null; then kill -KILL "$1"; fi
rm -rf "$2"
"#;

/// A PostgreSQL cluster in a temporary directory, stopped and removed on
/// drop.
///
/// The server listens on 127.0.0.1 only, on a port that was free when it
/// started, and trusts every connection: use it for tests and demos only.
#[derive(Debug)]
pub struct EphemeralPostgres {
    root: PathBuf,
    data_dir: PathBuf,
    port: u16,
    url: String,
    log_path: PathBuf,
    server: Child,
    guard: Option<Guard>,
}

/// The user that runs `initdb` and `postgres` when this process is root.
#[derive(Debug, Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
}

impl EphemeralPostgres {
    /// Initializes a cluster in a new directory under
    /// [`std::env::temp_dir`], starts its server and waits until it accepts
    /// connections.
    ///
    /// This blocks for as long as `initdb` and the server's start take,
    /// about a second.
    ///
    /// # Errors
    ///
    /// - [`EphemeralError::BinariesNotFound`] or
    ///   [`EphemeralError::InvalidBinDir`] when the server binaries are
    ///   missing;
    /// - [`EphemeralError::NoServiceUser`] when running as root without a
    ///   `postgres` or `nobody` user;
    /// - [`EphemeralError::InitdbFailed`] or [`EphemeralError::StartFailed`]
    ///   with the log's path and its last lines;
    /// - [`EphemeralError::Io`] when a directory, file or process cannot be
    ///   made.
    pub fn start() -> Result<Self, EphemeralError> {
        let bin_dir = binaries::find()?;
        let owner = service_user()?;
        let root = create_root()?;

        let started = Self::start_in(root.clone(), &bin_dir, owner);
        if started.is_err() {
            // NOTE: a started server was stopped when its value dropped.
            let _ = fs::remove_dir_all(&root);
        }
        started
    }

    /// Returns the URL of the `postgres` database as the superuser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns the port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Returns the cluster's data directory, which drop removes.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Stops the server (a fast shutdown, which ends every connection) and
    /// starts it again on the same data directory and port, for tests of
    /// what survives a database restart.
    ///
    /// # Errors
    ///
    /// The errors of [`EphemeralPostgres::start`] for finding the binaries
    /// and starting the server.
    pub fn restart(&mut self) -> Result<(), EphemeralError> {
        let bin_dir = binaries::find()?;
        let owner = service_user()?;
        self.stop_server();
        if let Some(guard) = self.guard.take() {
            guard.release();
        }

        let socket_dir = self.root.join("socket");
        self.server = spawn_server(
            &bin_dir,
            &self.root,
            &self.data_dir,
            &socket_dir,
            self.port,
            owner,
        )?;
        self.guard = Some(Guard::spawn(self.server.id(), &self.root)?);
        self.wait_until_ready()?;
        tracing::debug!(
            postgres.port = self.port,
            "ephemeral PostgreSQL cluster restarted"
        );
        Ok(())
    }

    /// Creates an empty database and returns its URL.
    ///
    /// # Errors
    ///
    /// [`EphemeralError::InvalidDatabaseName`] unless `name` is 1 to 63
    /// lowercase ASCII letters, digits and `_`, starting with a letter or
    /// `_`; [`EphemeralError::Database`] when the server rejects it, for
    /// example because the database exists.
    pub async fn create_database(&self, name: &str) -> Result<String, EphemeralError> {
        let mut admin = admin::connect(&self.url).await?;

        admin::create_database(&mut admin, name, None).await?;

        Ok(admin::database_url(&self.url, name))
    }

    fn start_in(
        root: PathBuf,
        bin_dir: &Path,
        owner: Option<Owner>,
    ) -> Result<Self, EphemeralError> {
        let data_dir = root.join("data");
        let socket_dir = root.join("socket");
        fs::create_dir(&socket_dir).map_err(io_error("create directory", &socket_dir))?;
        if let Some(owner) = owner {
            owner.take(&root)?;
            owner.take(&socket_dir)?;
        }

        run_initdb(bin_dir, &root, &data_dir, owner)?;

        let port = free_port()?;
        let log_path = root.join("postgres.log");
        let server = spawn_server(bin_dir, &root, &data_dir, &socket_dir, port, owner)?;
        let mut cluster = Self {
            root,
            data_dir,
            port,
            url: format!("postgres://{SUPERUSER}@127.0.0.1:{port}/postgres"),
            log_path,
            server,
            guard: None,
        };
        cluster.guard = Some(Guard::spawn(cluster.server.id(), &cluster.root)?);

        cluster.wait_until_ready()?;
        tracing::debug!(postgres.port = port, "ephemeral PostgreSQL cluster started");
        Ok(cluster)
    }

    /// Waits until the server reports `ready` in `postmaster.pid` and its
    /// port accepts a TCP connection.
    fn wait_until_ready(&mut self) -> Result<(), EphemeralError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let pid_file = self.data_dir.join("postmaster.pid");
        loop {
            if let Ok(Some(status)) = self.server.try_wait() {
                return Err(self.start_failed(format!("postgres exited with {status}")));
            }
            if reports_ready(&pid_file) && self.accepts_tcp() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let reason = format!("not ready after {} seconds", START_TIMEOUT.as_secs());
                return Err(self.start_failed(reason));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn accepts_tcp(&self) -> bool {
        TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok()
    }

    /// Builds the error for a server that did not start, moving its log out
    /// of the directory that drop removes.
    fn start_failed(&self, reason: String) -> EphemeralError {
        let log = keep_log(&self.root, &self.log_path);
        EphemeralError::StartFailed {
            reason,
            tail: log_tail(&log),
            log,
        }
    }

    /// Asks the server for a fast shutdown, and kills it if it is still
    /// running after [`STOP_TIMEOUT`].
    fn stop_server(&mut self) {
        if !matches!(self.server.try_wait(), Ok(None)) {
            return;
        }
        let pid = self.server.id().to_string();
        let signalled = Command::new("sh")
            .args(["-c", r#"kill -INT "$1""#, "sh", &pid])
            .status()
            .is_ok_and(|status| status.success());

        let deadline = Instant::now() + STOP_TIMEOUT;
        while signalled && Instant::now() < deadline {
            if !matches!(self.server.try_wait(), Ok(None)) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(
            postgres.port = self.port,
            "ephemeral PostgreSQL did not shut down in time; killing it"
        );
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Drop for EphemeralPostgres {
    fn drop(&mut self) {
        self.stop_server();

        if let Err(err) = fs::remove_dir_all(&self.root)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(
                error = %err,
                path = %self.root.display(),
                "failed to remove the ephemeral PostgreSQL directory"
            );
        }
        if let Some(guard) = self.guard.take() {
            guard.release();
        }
    }
}

/// The guard process and the write end of the pipe it reads.
#[derive(Debug)]
struct Guard {
    process: Child,
    stdin: ChildStdin,
}

impl Guard {
    fn spawn(server_pid: u32, root: &Path) -> Result<Self, EphemeralError> {
        let mut process = Command::new("sh")
            .arg("-c")
            .arg(GUARD_SCRIPT)
            .arg("citadel-pg-guard")
            .arg(server_pid.to_string())
            .arg(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io_error("start the guard process", Path::new("sh")))?;
        let stdin = process.stdin.take().ok_or_else(|| EphemeralError::Io {
            action: "open the guard process's stdin",
            path: PathBuf::from("sh"),
            source: io::Error::other("stdin was not piped"),
        })?;
        Ok(Self { process, stdin })
    }

    /// Tells the guard that the cluster is gone, and waits for it to exit.
    fn release(mut self) {
        let _ = self.stdin.write_all(b"released\n");
        drop(self.stdin);
        let _ = self.process.wait();
    }
}

impl Owner {
    /// Gives `path` to this user.
    fn take(self, path: &Path) -> Result<(), EphemeralError> {
        chown(path, Some(self.uid), Some(self.gid)).map_err(io_error("change the owner of", path))
    }

    fn apply(self, command: &mut Command) {
        command.uid(self.uid).gid(self.gid);
    }
}

/// Returns the user to run the server as: `None` (this process's user)
/// unless this process is root.
fn service_user() -> Result<Option<Owner>, EphemeralError> {
    if effective_uid() != Some(0) {
        return Ok(None);
    }
    ["postgres", "nobody"]
        .into_iter()
        .find_map(|name| {
            let uid = id_number("-u", name)?;
            let gid = id_number("-g", name)?;
            Some(Owner { uid, gid })
        })
        .map(Some)
        .ok_or(EphemeralError::NoServiceUser)
}

/// Returns this process's effective user id, from `/proc/self/status` or,
/// where there is no `/proc`, from `id -u`.
fn effective_uid() -> Option<u32> {
    let from_proc = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            // "Uid:" lists the real, effective, saved and file system ids.
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2)?.parse().ok()
        });
    from_proc.or_else(|| id_number("-u", ""))
}

/// Runs `id FLAG [USER]` and parses the number it prints.
fn id_number(flag: &str, user: &str) -> Option<u32> {
    let mut command = Command::new("id");
    command.arg(flag);
    if !user.is_empty() {
        command.arg(user);
    }
    let output = command.stderr(Stdio::null()).output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()?.trim().parse().ok()
}

/// Creates the cluster's directory and returns its path; the caller removes
/// it.
fn create_root() -> Result<PathBuf, EphemeralError> {
    let temp_dir = std::env::temp_dir();
    let root = tempfile::Builder::new()
        .prefix("citadel-pg-")
        .tempdir_in(&temp_dir)
        .map_err(io_error("create a directory in", &temp_dir))?;
    Ok(root.keep())
}

fn run_initdb(
    bin_dir: &Path,
    root: &Path,
    data_dir: &Path,
    owner: Option<Owner>,
) -> Result<(), EphemeralError> {
    let initdb = bin_dir.join("initdb");
    let log_path = root.join("initdb.log");
    let log = File::create(&log_path).map_err(io_error("create", &log_path))?;
    let log_err = log.try_clone().map_err(io_error("open", &log_path))?;

    // The C locale makes text sort the same on every machine, and works
    // where no other locale is installed.
    let mut command = Command::new(&initdb);
    command
        .arg("--pgdata")
        .arg(data_dir)
        .args(["--auth=trust", "--username", SUPERUSER, "--no-sync"])
        .args(["--encoding=UTF8", "--locale=C"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    if let Some(owner) = owner {
        owner.apply(&mut command);
    }

    let status = command.status().map_err(io_error("run", &initdb))?;
    if status.success() {
        return Ok(());
    }
    let log = keep_log(root, &log_path);
    Err(EphemeralError::InitdbFailed {
        status,
        tail: log_tail(&log),
        log,
    })
}

fn spawn_server(
    bin_dir: &Path,
    root: &Path,
    data_dir: &Path,
    socket_dir: &Path,
    port: u16,
    owner: Option<Owner>,
) -> Result<Child, EphemeralError> {
    let postgres = bin_dir.join("postgres");
    let log_path = root.join("postgres.log");
    let log = File::create(&log_path).map_err(io_error("create", &log_path))?;
    let log_err = log.try_clone().map_err(io_error("open", &log_path))?;

    // Durability is pointless for a cluster that is thrown away, so every
    // flush to disk is off. Each test opens a pool of its own, hence the
    // raised connection limit.
    let mut command = Command::new(&postgres);
    command
        .arg("-D")
        .arg(data_dir)
        .args(["-p", &port.to_string()])
        .arg("-k")
        .arg(socket_dir)
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=off"])
        .args(["-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off"])
        .args(["-c", "max_connections=300"])
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0);
    if let Some(owner) = owner {
        owner.apply(&mut command);
    }

    command.spawn().map_err(io_error("start", &postgres))
}

/// Returns a port of 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, EphemeralError> {
    let address = (Ipv4Addr::LOCALHOST, 0);
    let listener =
        TcpListener::bind(address).map_err(io_error("bind", Path::new("127.0.0.1:0")))?;
    let local = listener
        .local_addr()
        .map_err(io_error("read the address of", Path::new("127.0.0.1:0")))?;
    Ok(local.port())
}

/// Returns whether `postmaster.pid` reports that the server accepts
/// connections.
///
/// Since PostgreSQL 10, its eighth line is the postmaster's status, which
/// reads `ready` once connections are accepted; `pg_ctl` waits for the same.
fn reports_ready(pid_file: &Path) -> bool {
    fs::read_to_string(pid_file)
        .ok()
        .and_then(|contents| contents.lines().nth(7).map(|line| line.trim() == "ready"))
        .unwrap_or(false)
}

/// Moves a log out of the cluster's directory to beside it, so that it
/// outlives the directory; returns where the log is now.
fn keep_log(root: &Path, log: &Path) -> PathBuf {
    let (Some(dir_name), Some(log_name)) = (root.file_name(), log.file_name()) else {
        return log.to_path_buf();
    };
    let mut kept_name = dir_name.to_os_string();
    kept_name.push("-");
    kept_name.push(log_name);
    let kept = root.with_file_name(kept_name);
    match fs::rename(log, &kept) {
        Ok(()) => kept,
        Err(_) => log.to_path_buf(),
    }
}

/// Returns the last [`LOG_TAIL_LINES`] lines of a log.
fn log_tail(log: &Path) -> String {
    let Ok(bytes) = fs::read(log) else {
        return String::from("(the log could not be read)");
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[start..].join("\n")
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> EphemeralError + 'a {
    move |source| EphemeralError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_ready_reads_eighth_line() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("postmaster.pid");
        let starting = "42\n/data\n1\n5432\n/sock\n127.0.0.1\n1 2\nstarting\n";
        let ready = "42\n/data\n1\n5432\n/sock\n127.0.0.1\n1 2\nready   \n";

        assert!(!reports_ready(&pid_file));
        fs::write(&pid_file, starting).unwrap();
        assert!(!reports_ready(&pid_file));
        fs::write(&pid_file, ready).unwrap();
        assert!(reports_ready(&pid_file));
    }

    #[test]
    fn log_tail_keeps_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("postgres.log");
        let text: Vec<String> = (1..=30).map(|line| format!("line {line}")).collect();
        fs::write(&log, text.join("\n")).unwrap();

        let tail = log_tail(&log);

        assert!(tail.starts_with("line 11\n"), "{tail}");
        assert!(tail.ends_with("line 30"), "{tail}");
    }

    #[test]
    fn keep_log_moves_log_beside_directory() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("citadel-pg-abc");
        fs::create_dir(&root).unwrap();
        let log = root.join("postgres.log");
        fs::write(&log, "FATAL: boom").unwrap();

        let kept = keep_log(&root, &log);

        assert_eq!(kept, parent.path().join("citadel-pg-abc-postgres.log"));
        assert_eq!(fs::read_to_string(&kept).unwrap(), "FATAL: boom");
    }

    #[test]
    fn effective_uid_is_known() {
        assert!(effective_uid().is_some());
    }
}
