//! Every route's success and error statuses, filters and pagination, as the
//! operator.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use citadel::core::ids::MerchantId;
use citadel::core::merchant::MerchantStatus;
use citadel::core::operator::token::TokenHash;
use citadel::core::store::Store;

use super::helpers::{Api, OPERATOR, error_code, ids};

#[tokio::test]
async fn health_needs_no_token() {
    let api = Api::start().await;

    let (status, body) = api.call("GET", "/api/health", None, None).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["database_reachable"], true);
    assert_eq!(body["migrations_current"], true);
    assert_eq!(body["pending_migrations"], json!([]));
    assert_eq!(body["workers_alive"], 0);
    assert!(body["oldest_due_task_age_seconds"].is_null());
}

#[tokio::test]
async fn health_counts_live_workers() {
    let api = Api::start().await;
    let first = uuid::Uuid::new_v4();
    let second = uuid::Uuid::new_v4();
    api.store()
        .register_worker(first, "worker-a")
        .await
        .unwrap();
    api.store()
        .register_worker(second, "worker-b")
        .await
        .unwrap();

    let (_, body) = api.call("GET", "/api/health", None, None).await;
    assert_eq!(body["workers_alive"], 2, "{body}");

    api.store().stop_worker(first).await.unwrap();
    let (_, body) = api.call("GET", "/api/health", None, None).await;
    assert_eq!(body["workers_alive"], 1, "{body}");
}

#[tokio::test]
async fn health_reports_oldest_due_task() {
    let api = Api::start().await;
    let (merchant, _) = api.merchant("acct_1HealthA").await;
    let due = (chrono::Utc::now() - chrono::Duration::seconds(120)).to_rfc3339();
    let (status, _) = api
        .post(
            "/api/tasks",
            OPERATOR,
            json!({"merchant_id": merchant, "kind": "export", "run_at": due}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (_, body) = api.call("GET", "/api/health", None, None).await;

    let age = body["oldest_due_task_age_seconds"].as_i64().unwrap();
    assert!((120..600).contains(&age), "{body}");
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let api = Api::start().await;

    let (status, body) = api.call("GET", "/api/openapi.json", None, None).await;

    assert_eq!(status, StatusCode::OK);
    let paths = body["paths"].as_object().unwrap();
    let expected = [
        ("/api/dashboard", "get"),
        ("/api/tasks", "get"),
        ("/api/tasks", "post"),
        ("/api/tasks/{id}", "get"),
        ("/api/tasks/{id}", "delete"),
        ("/api/tasks/{id}/retry", "post"),
        ("/api/tasks/completed", "delete"),
        ("/api/merchants", "get"),
        ("/api/merchants", "post"),
        ("/api/merchants/{id}", "get"),
        ("/api/merchants/{id}", "patch"),
        ("/api/activity", "get"),
        ("/api/worker/claim", "post"),
        ("/api/worker/complete/{id}", "post"),
        ("/api/health", "get"),
        ("/api/webhooks/stripe", "post"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path}"
        );
    }
    assert!(body["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn missing_or_wrong_token_is_unauthorized() {
    let api = Api::start().await;

    let (status, body) = api.call("GET", "/api/tasks", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthorized");

    let (status, _) = api.get("/api/tasks", "not-a-known-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let request = Request::get("/api/dashboard")
        .header("authorization", format!("Basic {OPERATOR}"))
        .body(Body::empty())
        .unwrap();
    let (status, _) = api.send(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unknown_route_answers_json_404() {
    let api = Api::start().await;

    let (status, body) = api.get("/api/nothing-here", OPERATOR).await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
}

#[tokio::test]
async fn merchant_create_get_and_list() {
    let api = Api::start().await;

    let (status, body) = api
        .post(
            "/api/merchants",
            OPERATOR,
            json!({
                "name": "Acme",
                "account_id": "acct_1AcmeCreate",
                "time_zone": "Europe/Paris",
                "policy": {"retry_delays": [60, 120], "final_action": "mark_uncollectible"}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["merchant"]["id"].as_i64().unwrap();
    assert_eq!(body["merchant"]["time_zone"], "Europe/Paris");
    assert_eq!(
        body["merchant"]["policy"]["schedule"]["delays"],
        json!([60, 120])
    );
    assert!(body["token"].as_str().unwrap().starts_with("citadel_mt_"));

    let (status, body) = api.get(&format!("/api/merchants/{id}"), OPERATOR).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["name"], "Acme");
    assert_eq!(body["status"], "active");
    assert!(body.get("token").is_none(), "the token is shown only once");

    let (status, body) = api.get("/api/merchants", OPERATOR).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&body), vec![id]);
    assert!(body["next_after"].is_null());
}

#[tokio::test]
async fn merchant_token_is_stored_hashed() {
    let api = Api::start().await;
    let (_, token) = api.merchant("acct_1HashedToken").await;

    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM merchant_tokens")
        .fetch_all(api.store().pool())
        .await
        .unwrap();

    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].len(), 32);
    assert_eq!(stored[0], TokenHash::of(&token).as_bytes().to_vec());
    assert_ne!(stored[0], token.as_bytes());
}

#[tokio::test]
async fn merchant_list_pages_by_id() {
    let api = Api::start().await;
    let mut created = Vec::new();
    for account in ["acct_1PageA", "acct_1PageB", "acct_1PageC"] {
        created.push(api.merchant(account).await.0);
    }

    let (_, first) = api.get("/api/merchants?limit=2", OPERATOR).await;
    assert_eq!(ids(&first), created[..2].to_vec());
    let after = first["next_after"].as_i64().unwrap();
    let (_, second) = api
        .get(&format!("/api/merchants?limit=2&after={after}"), OPERATOR)
        .await;
    assert_eq!(ids(&second), created[2..].to_vec());
    assert!(second["next_after"].is_null());
}

#[tokio::test]
async fn merchant_errors_have_their_status() {
    let api = Api::start().await;
    let (_, merchant_token) = api.merchant("acct_1Existing").await;

    let cases = [
        (
            json!({"name": "Dup", "account_id": "acct_1Existing"}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            json!({"name": "", "account_id": "acct_1Empty"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "nul\u{0}byte", "account_id": "acct_1NulName"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "Zone", "time_zone": "Not A Zone"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"name": "Acct", "account_id": "in_1NotAnAccount"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"account_id": "acct_1NoName"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (body, expected, code) in cases {
        let (status, answer) = api.post("/api/merchants", OPERATOR, body.clone()).await;
        assert_eq!(status, expected, "{body} -> {answer}");
        assert_eq!(error_code(&answer), code, "{body}");
    }

    let (status, answer) = api
        .post("/api/merchants", &merchant_token, json!({"name": "Mine"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&answer), "forbidden");

    let (status, _) = api.get("/api/merchants/999999", OPERATOR).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.get("/api/merchants/abc", OPERATOR).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.get("/api/merchants?limit=0", OPERATOR).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn malformed_json_body_is_bad_request() {
    let api = Api::start().await;
    let request = Request::post("/api/merchants")
        .header("authorization", format!("Bearer {OPERATOR}"))
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();

    let (status, body) = api.send(request).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_request");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let api = Api::start_with(|config| config.body_limit(1024)).await;
    let big = "x".repeat(4096);

    let (status, body) = api
        .post("/api/merchants", OPERATOR, json!({ "name": big }))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_code(&body), "payload_too_large");

    let request = Request::post("/api/webhooks/stripe")
        .header("stripe-signature", "t=1,v1=00")
        .body(Body::from(big))
        .unwrap();
    let (status, body) = api.send(request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
}

#[tokio::test]
async fn merchant_pause_and_resume() {
    let api = Api::start().await;
    let (id, token) = api.merchant("acct_1PauseMe").await;
    let uri = format!("/api/merchants/{id}");

    let (status, body) = api
        .call(
            "PATCH",
            &uri,
            Some(OPERATOR),
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "paused");
    let stored = api
        .store()
        .merchant(MerchantId::new(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, MerchantStatus::Paused);

    let (status, body) = api
        .call(
            "PATCH",
            &uri,
            Some(OPERATOR),
            Some(json!({"status": "active", "policy": {"schedule": {"delays": [30]}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stored = api
        .store()
        .merchant(MerchantId::new(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, MerchantStatus::Active);
    assert_eq!(
        stored.policy.schedule,
        citadel::core::policy::Schedule::Delays(vec![std::time::Duration::from_secs(30)])
    );

    let (status, _) = api
        .call(
            "PATCH",
            &uri,
            Some(OPERATOR),
            Some(json!({"status": "sleeping"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .call(
            "PATCH",
            &uri,
            Some(&token),
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .call(
            "PATCH",
            "/api/merchants/999999",
            Some(OPERATOR),
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn paused_merchant_tasks_are_not_claimed() {
    let api = Api::start().await;
    let (paused, _) = api.merchant("acct_1PausedClaim").await;
    let (active, _) = api.merchant("acct_1ActiveClaim").await;
    let paused_task = api.task(paused, "export").await;
    let active_task = api.task(active, "export").await;
    let (status, _) = api
        .call(
            "PATCH",
            &format!("/api/merchants/{paused}"),
            Some(OPERATOR),
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let claimed: Vec<i64> = api
        .claim(OPERATOR, "export")
        .await
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(claimed, vec![active_task]);

    api.call(
        "PATCH",
        &format!("/api/merchants/{paused}"),
        Some(OPERATOR),
        Some(json!({"status": "active"})),
    )
    .await;
    let claimed: Vec<i64> = api
        .claim(OPERATOR, "export")
        .await
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(claimed, vec![paused_task]);
}

#[tokio::test]
async fn task_create_get_and_errors() {
    let api = Api::start().await;
    let (merchant, _) = api.merchant("acct_1TaskCreate").await;

    let (status, body) = api
        .post(
            "/api/tasks",
            OPERATOR,
            json!({"merchant_id": merchant, "kind": "export", "dedupe_key": "daily", "max_attempts": 3}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["max_attempts"], 3);
    let id = body["id"].as_i64().unwrap();

    let (status, body) = api.get(&format!("/api/tasks/{id}"), OPERATOR).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["kind"], "export");

    let (status, body) = api
        .post(
            "/api/tasks",
            OPERATOR,
            json!({"merchant_id": merchant, "kind": "export", "dedupe_key": "daily"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let bad = [
        json!({"merchant_id": merchant, "kind": ""}),
        json!({"merchant_id": merchant, "kind": "export", "max_attempts": 0}),
        json!({"merchant_id": merchant, "kind": "export", "priority": 10}),
        json!({"merchant_id": merchant, "kind": "export", "prioritty": 1}),
        json!({"merchant_id": merchant, "kind": "export", "payload": {"note": "a\u{0}b"}}),
        json!({"merchant_id": merchant, "kind": "ex\u{0}port"}),
        json!({"merchant_id": merchant, "kind": "export", "priority": -1}),
        json!({"merchant_id": merchant, "kind": "retry_payment", "payload": {}}),
        json!({"merchant_id": 0, "kind": "export"}),
        json!({"kind": "export"}),
    ];
    for body in bad {
        let (status, answer) = api.post("/api/tasks", OPERATOR, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
    }
    let (status, _) = api
        .post(
            "/api/tasks",
            OPERATOR,
            json!({"merchant_id": 999999, "kind": "export"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _) = api.get("/api/tasks/999999", OPERATOR).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api.get("/api/tasks/not-a-number", OPERATOR).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not-a-number")
    );
}

#[tokio::test]
async fn task_list_filters_and_pages() {
    let api = Api::start().await;
    let (first, _) = api.merchant("acct_1ListA").await;
    let (second, _) = api.merchant("acct_1ListB").await;
    let a1 = api.task(first, "fails").await;
    let b1 = api.task(second, "export").await;
    let a2 = api.task(first, "export").await;
    api.fail_task(a1, "fails").await;

    let (_, page) = api.get("/api/tasks", OPERATOR).await;
    assert_eq!(ids(&page), vec![a2, b1, a1]);

    let (_, page) = api.get("/api/tasks?status=failed", OPERATOR).await;
    assert_eq!(ids(&page), vec![a1]);
    let (_, page) = api
        .get(&format!("/api/tasks?merchant_id={first}"), OPERATOR)
        .await;
    assert_eq!(ids(&page), vec![a2, a1]);
    let (_, page) = api
        .get(
            &format!("/api/tasks?merchant_id={first}&status=pending"),
            OPERATOR,
        )
        .await;
    assert_eq!(ids(&page), vec![a2]);

    let (_, page) = api.get("/api/tasks?limit=2", OPERATOR).await;
    assert_eq!(ids(&page), vec![a2, b1]);
    let before = page["next_before"].as_i64().unwrap();
    let (_, page) = api
        .get(&format!("/api/tasks?limit=2&before={before}"), OPERATOR)
        .await;
    assert_eq!(ids(&page), vec![a1]);
    assert!(page["next_before"].is_null());

    for query in [
        "status=done",
        "limit=0",
        "limit=1001",
        "before=x",
        "merchant_id=-1",
    ] {
        let (status, body) = api.get(&format!("/api/tasks?{query}"), OPERATOR).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error_code(&body), "invalid_request");
    }
}

#[tokio::test]
async fn task_retry_only_when_failed() {
    let api = Api::start().await;
    let (merchant, _) = api.merchant("acct_1RetryMe").await;
    let task = api.task(merchant, "export").await;
    let uri = format!("/api/tasks/{task}/retry");

    let (status, body) = api.post(&uri, OPERATOR, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pending")
    );

    api.fail_task(task, "export").await;
    let (status, body) = api.post(&uri, OPERATOR, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["attempts"], 0);
    assert_eq!(body["last_error"], "export target refused");

    let (status, _) = api
        .post("/api/tasks/999999/retry", OPERATOR, json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn task_retry_keeps_dedupe_key_unique() {
    let api = Api::start().await;
    let (merchant, _) = api.merchant("acct_1RetryDedupe").await;
    let (_, body) = api
        .post(
            "/api/tasks",
            OPERATOR,
            json!({"merchant_id": merchant, "kind": "export", "dedupe_key": "nightly"}),
        )
        .await;
    let failed = body["id"].as_i64().unwrap();
    api.fail_task(failed, "export").await;
    let (status, _) = api
        .post(
            "/api/tasks",
            OPERATOR,
            json!({"merchant_id": merchant, "kind": "export", "dedupe_key": "nightly"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, body) = api
        .post(&format!("/api/tasks/{failed}/retry"), OPERATOR, json!({}))
        .await;

    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nightly")
    );
}

#[tokio::test]
async fn task_delete_and_clear_completed() {
    let api = Api::start().await;
    let (merchant, _) = api.merchant("acct_1DeleteMe").await;
    let pending = api.task(merchant, "export").await;
    let running = api.task(merchant, "import").await;
    let claimed = api.claim(OPERATOR, "import").await;
    assert_eq!(claimed[0].0, running);

    let (status, body) = api
        .call(
            "DELETE",
            &format!("/api/tasks/{running}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, body) = api
        .call(
            "DELETE",
            &format!("/api/tasks/{pending}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], pending);
    let (status, _) = api
        .call(
            "DELETE",
            &format!("/api/tasks/{pending}"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = api
        .post(
            &format!("/api/worker/complete/{running}"),
            OPERATOR,
            json!({"lease_token": claimed[0].1, "outcome": "completed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "completed");
    api.task(merchant, "export").await;

    let (status, body) = api
        .call("DELETE", "/api/tasks/completed", Some(OPERATOR), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["deleted"], 1);
    let (_, page) = api.get("/api/tasks", OPERATOR).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn worker_complete_checks_lease_and_outcome() {
    let api = Api::start().await;
    let (merchant, _) = api.merchant("acct_1WorkerA").await;
    let task = api.task(merchant, "export").await;
    let claimed = api.claim(OPERATOR, "export").await;
    assert_eq!(claimed.len(), 1);
    let lease = &claimed[0].1;
    let uri = format!("/api/worker/complete/{task}");

    let (_, body) = api.get(&format!("/api/tasks/{task}"), OPERATOR).await;
    assert_eq!(body["status"], "running");
    assert_eq!(body["lease"]["owner"], "external-1");
    assert!(body["lease"].get("token").is_none());

    let stranger = uuid::Uuid::new_v4().to_string();
    let (status, _) = api
        .post(
            &uri,
            OPERATOR,
            json!({"lease_token": stranger, "outcome": "completed"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = api
        .post(
            &uri,
            OPERATOR,
            json!({"lease_token": lease, "outcome": "finished"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .post(
            &uri,
            OPERATOR,
            json!({"lease_token": lease, "outcome": "retry"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a retry needs an error");
    let (status, _) = api
        .post(
            &uri,
            OPERATOR,
            json!({"lease_token": "not-a-uuid", "outcome": "completed"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, body) = api
        .post(
            &uri,
            OPERATOR,
            json!({"lease_token": lease, "outcome": "retry", "error": "target busy", "run_at": later}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["last_error"], "target busy");
    assert!(
        api.claim(OPERATOR, "export").await.is_empty(),
        "not due for an hour"
    );

    let (status, _) = api
        .post(
            &uri,
            OPERATOR,
            json!({"lease_token": lease, "outcome": "completed"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the lease ended with the retry"
    );

    let (_, page) = api
        .get("/api/activity?kind=task_rescheduled", OPERATOR)
        .await;
    assert_eq!(page["items"][0]["task_id"], task);
}

#[tokio::test]
async fn worker_claim_rejects_invalid_requests() {
    let api = Api::start().await;
    let cases = [
        json!({"worker_id": ""}),
        json!({"worker_id": "w", "kinds": []}),
        json!({"worker_id": "w", "limit": 0}),
        json!({"worker_id": "w", "limit": 101}),
        json!({"worker_id": "w", "lease_seconds": 0}),
        json!({"worker_id": "w", "lease_seconds": 7200}),
        json!({"kinds": ["export"]}),
    ];
    for body in cases {
        let (status, answer) = api.post("/api/worker/claim", OPERATOR, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
    }
}

#[tokio::test]
async fn activity_filters_and_pages() {
    let api = Api::start().await;
    let (first, _) = api.merchant("acct_1ActivityA").await;
    let (second, _) = api.merchant("acct_1ActivityB").await;
    let a = api.task(first, "export").await;
    let b = api.task(second, "other").await;
    api.fail_task(a, "export").await;
    api.fail_task(b, "other").await;

    let (status, page) = api.get("/api/activity", OPERATOR).await;
    assert_eq!(status, StatusCode::OK);
    let tasks: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["task_id"].as_i64().unwrap())
        .collect();
    assert_eq!(tasks, vec![b, a], "newest first");

    let (_, page) = api
        .get(&format!("/api/activity?merchant_id={first}"), OPERATOR)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["merchant_id"], first);

    let (_, page) = api
        .get("/api/activity?kind=task_failed&limit=1", OPERATOR)
        .await;
    assert_eq!(page["items"][0]["task_id"], b);
    let before = page["next_before"].as_i64().unwrap();
    let (_, page) = api
        .get(
            &format!("/api/activity?kind=task_failed&limit=1&before={before}"),
            OPERATOR,
        )
        .await;
    assert_eq!(page["items"][0]["task_id"], a);

    let (_, page) = api
        .get("/api/activity?kind=recovery_opened", OPERATOR)
        .await;
    assert!(page["items"].as_array().unwrap().is_empty());
    let (status, _) = api.get("/api/activity?kind=nonsense", OPERATOR).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn dashboard_counts_tasks() {
    let api = Api::start().await;
    let (merchant, _) = api.merchant("acct_1Dashboard").await;
    let failed = api.task(merchant, "export").await;
    api.task(merchant, "import").await;
    api.fail_task(failed, "export").await;

    let (status, body) = api.get("/api/dashboard", OPERATOR).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tasks"]["pending"], 1);
    assert_eq!(body["tasks"]["failed"], 1);
    assert_eq!(body["recent_tasks"].as_array().unwrap().len(), 2);
    assert_eq!(body["recent_activity"].as_array().unwrap().len(), 1);
    assert!(body["recovery_rate"].is_null());
}
