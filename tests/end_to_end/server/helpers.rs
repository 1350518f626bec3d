//! A router over a fresh database, and calls to it.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use citadel::core::{Engine, Secret};
use citadel::postgres::PgStore;
use citadel::postgres::ephemeral::{TestDatabase, fresh_store};
use citadel::server::{ServerConfig, router};
use citadel::stripe::gateway::StripeGateway;
use citadel::stripe::stand_in::StandIn;

pub(crate) const OPERATOR: &str = "operator-token-of-the-tests";
pub(crate) const WEBHOOK_SECRET: &str = "whsec_server_tests";

/// A router over a fresh database, and what it was built from.
pub(crate) struct Api {
    pub(crate) app: Router,
    pub(crate) engine: Arc<Engine<PgStore, StripeGateway>>,
    pub(crate) _stand_in: StandIn,
    pub(crate) _database: TestDatabase,
}

impl Api {
    pub(crate) async fn start() -> Self {
        Self::start_with(|config| config).await
    }

    pub(crate) async fn start_with(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> Self {
        let (store, database) = fresh_store().await.unwrap();
        let stand_in = StandIn::start().await.unwrap();
        let gateway = StripeGateway::builder(Secret::new("sk_test_server"))
            .base_url(stand_in.url())
            .build()
            .unwrap();
        let engine = Arc::new(Engine::new(store, gateway));
        let config =
            ServerConfig::new(Secret::new(OPERATOR)).webhook_secrets([Secret::new(WEBHOOK_SECRET)]);
        let app = router(Arc::clone(&engine), configure(config)).unwrap();
        Self {
            app,
            engine,
            _stand_in: stand_in,
            _database: database,
        }
    }

    pub(crate) fn store(&self) -> &PgStore {
        self.engine.store()
    }

    /// Sends a request; returns the status and the JSON body (`Null` when
    /// empty).
    pub(crate) async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    pub(crate) async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, body)
    }

    pub(crate) async fn get(&self, uri: &str, token: &str) -> (StatusCode, Value) {
        self.call("GET", uri, Some(token), None).await
    }

    pub(crate) async fn post(&self, uri: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", uri, Some(token), Some(body)).await
    }

    /// Registers a merchant as the operator; returns its id and token.
    pub(crate) async fn merchant(&self, account: &str) -> (i64, String) {
        let (status, body) = self
            .post(
                "/api/merchants",
                OPERATOR,
                json!({"name": format!("merchant {account}"), "account_id": account}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["merchant"]["id"].as_i64().unwrap();
        let token = body["token"].as_str().unwrap().to_owned();
        (id, token)
    }

    /// Queues a task of a custom kind as the operator; returns its id.
    pub(crate) async fn task(&self, merchant: i64, kind: &str) -> i64 {
        let (status, body) = self
            .post(
                "/api/tasks",
                OPERATOR,
                json!({"merchant_id": merchant, "kind": kind, "payload": {"n": 1}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// Claims due tasks of `kind` with `token`; returns `(task id, lease
    /// token)` pairs.
    pub(crate) async fn claim(&self, token: &str, kind: &str) -> Vec<(i64, String)> {
        let (status, body) = self
            .post(
                "/api/worker/claim",
                token,
                json!({"worker_id": "external-1", "kinds": [kind], "limit": 100}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|claimed| {
                (
                    claimed["task"]["id"].as_i64().unwrap(),
                    claimed["lease_token"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Claims and fails a task of `kind`, as an external worker. Every due
    /// task of `kind` is claimed, so give the task a kind of its own.
    pub(crate) async fn fail_task(&self, id: i64, kind: &str) {
        let claimed = self.claim(OPERATOR, kind).await;
        let (_, lease) = claimed.iter().find(|(task, _)| *task == id).unwrap();
        let (status, body) = self
            .post(
                &format!("/api/worker/complete/{id}"),
                OPERATOR,
                json!({"lease_token": lease, "outcome": "failed", "error": "export target refused"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "failed");
    }
}

/// Returns the ids of a page's items.
pub(crate) fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_i64().unwrap())
        .collect()
}

/// Asserts the stable error shape and returns the error's code.
pub(crate) fn error_code(body: &Value) -> &str {
    assert!(body["error"]["message"].is_string(), "{body}");
    body["error"]["code"].as_str().unwrap()
}
