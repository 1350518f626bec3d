//! The `server` example as a process: started on a free port, called over
//! HTTP, and stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use citadel::core::Secret;
use citadel::core::store::Store;
use citadel::core::task::TaskStatus;
use citadel::postgres::ephemeral::fresh_store;
use citadel::stripe::webhook::sign;

use super::helpers::{OPERATOR, WEBHOOK_SECRET};

/// Returns the path of the built `server` example, next to this test binary.
fn server_example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    profile_dir.join("examples").join("server")
}

/// Sends one HTTP/1.1 request and returns the status and JSON body.
async fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();

    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, body)
}

fn operator_headers() -> Vec<(&'static str, String)> {
    vec![
        ("authorization", format!("Bearer {OPERATOR}")),
        ("content-type", "application/json".to_owned()),
    ]
}

/// Starts the example and returns it with the address it listens on and a
/// thread that collects its log. The log is read while the server runs, so
/// a full pipe never blocks the server's writes.
fn start_server(database_url: &str) -> (Child, String, std::thread::JoinHandle<String>) {
    let mut child = Command::new(server_example())
        .args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .env("DATABASE_URL", database_url)
        .env("CITADEL_OPERATOR_TOKEN", OPERATOR)
        .env(
            "STRIPE_WEBHOOK_SECRET",
            format!("whsec_old_secret,{WEBHOOK_SECRET}"),
        )
        .env("RUST_LOG", "info")
        .env_remove("STRIPE_SECRET_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server example is built by `cargo test`");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("citadel server listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        text
    });
    (child, address, log)
}

/// Builds a failed-invoice event of the Alpha account with ids of its own.
fn failed_invoice_event(n: usize) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data/events/01-soft-decline-payment-failed.json");
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("in_1CitadelSoftDecline", &format!("in_1CitadelSigterm{n}"))
        .replace("evt_1CitadelSoft01", &format!("evt_1CitadelSigterm{n}"));
    text.into_bytes()
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("the server did not stop within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn server_example_stops_on_sigterm_with_tasks_finished() {
    const EVENTS: usize = 40;
    let (store, database) = fresh_store().await.unwrap();
    let (mut child, address, log) = start_server(database.url());

    let (status, body) = http(
        &address,
        "POST",
        "/api/merchants",
        &operator_headers(),
        json!({"name": "Alpha", "account_id": "acct_1CitadelDemoAlpha", "policy": {"retry_delays": [0]}})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    for n in 0..EVENTS {
        let event = failed_invoice_event(n);
        let header = sign(
            &event,
            &Secret::new(WEBHOOK_SECRET),
            chrono::Utc::now().timestamp(),
        );
        let headers = [
            ("stripe-signature", header),
            ("content-type", "application/json".to_owned()),
        ];
        let (status, body) = http(&address, "POST", "/api/webhooks/stripe", &headers, &event).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outcome"], "applied");
    }

    // Wait until the workers have finished a task, so they are busy.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, dashboard) =
            http(&address, "GET", "/api/dashboard", &operator_headers(), b"").await;
        if dashboard["tasks"]["completed"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no task completed: {dashboard}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let status = wait_for_exit(&mut child, Duration::from_secs(60));
    let stderr = log.join().unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("server stopped"), "{stderr}");

    let counts = store.task_counts().await.unwrap();
    assert_eq!(counts.running, 0, "a task was left running: {counts:?}");
    let tasks: Vec<_> = store
        .list_tasks(&citadel::core::store::TaskFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|task| task.kind.as_str() == "retry_payment")
        .collect();
    assert_eq!(tasks.len(), EVENTS);
    assert!(
        tasks
            .iter()
            .all(|task| matches!(task.status, TaskStatus::Completed | TaskStatus::Pending)),
        "{counts:?}"
    );
}

#[test]
fn server_example_requires_operator_token() {
    let output = Command::new(server_example())
        .env_remove("CITADEL_OPERATOR_TOKEN")
        .env("DATABASE_URL", "postgres://127.0.0.1:1/unused")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("CITADEL_OPERATOR_TOKEN"), "{stderr}");
}
