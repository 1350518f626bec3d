//! Tenant isolation: a merchant token reaches only its own merchant's rows,
//! through every route.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::helpers::{Api, OPERATOR, ids};

/// Two merchants with one failed and one pending task each.
struct Tenants {
    api: Api,
    own: i64,
    own_token: String,
    own_failed: i64,
    other: i64,
    other_failed: i64,
    other_pending: i64,
}

async fn tenants() -> Tenants {
    let api = Api::start().await;
    let (own, own_token) = api.merchant("acct_1TenantOwn").await;
    let (other, _) = api.merchant("acct_1TenantOther").await;
    // Each task to fail has a kind of its own, so failing it claims no other.
    let own_failed = api.task(own, "fails-own").await;
    let other_failed = api.task(other, "fails-other").await;
    api.fail_task(own_failed, "fails-own").await;
    api.fail_task(other_failed, "fails-other").await;
    api.task(own, "export").await;
    let other_pending = api.task(other, "export").await;
    Tenants {
        api,
        own,
        own_token,
        own_failed,
        other,
        other_failed,
        other_pending,
    }
}

fn merchant_ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["merchant_id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn merchant_cannot_touch_other_merchants_task() {
    let t = tenants().await;
    let token = t.own_token.as_str();

    let (status, body) = t
        .api
        .get(&format!("/api/tasks/{}", t.other_failed), token)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "read: {body}");
    let (status, _) = t
        .api
        .post(
            &format!("/api/tasks/{}/retry", t.other_failed),
            token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "retry");
    let (status, _) = t
        .api
        .call(
            "DELETE",
            &format!("/api/tasks/{}", t.other_pending),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "delete");
    let (status, _) = t
        .api
        .post(
            &format!("/api/worker/complete/{}", t.other_pending),
            token,
            json!({"lease_token": uuid::Uuid::new_v4(), "outcome": "completed"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "complete");

    // The other merchant's tasks are untouched.
    let (_, body) = t
        .api
        .get(&format!("/api/tasks/{}", t.other_failed), OPERATOR)
        .await;
    assert_eq!(body["status"], "failed");
    let (_, body) = t
        .api
        .get(&format!("/api/tasks/{}", t.other_pending), OPERATOR)
        .await;
    assert_eq!(body["status"], "pending");
}

#[tokio::test]
async fn merchant_changes_its_own_tasks() {
    let t = tenants().await;
    let token = t.own_token.as_str();

    let (status, body) = t
        .api
        .get(&format!("/api/tasks/{}", t.own_failed), token)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = t
        .api
        .post(
            &format!("/api/tasks/{}/retry", t.own_failed),
            token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = t
        .api
        .call(
            "DELETE",
            &format!("/api/tasks/{}", t.own_failed),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn merchant_lists_never_leak() {
    let t = tenants().await;
    let token = t.own_token.as_str();

    let (_, page) = t.api.get("/api/tasks", token).await;
    assert_eq!(merchant_ids(&page), vec![t.own, t.own]);
    let (_, page) = t
        .api
        .get(&format!("/api/tasks?merchant_id={}", t.other), token)
        .await;
    assert!(ids(&page).is_empty(), "{page}");
    let (_, page) = t.api.get("/api/tasks?status=failed", token).await;
    assert_eq!(ids(&page), vec![t.own_failed]);

    let (_, page) = t.api.get("/api/activity", token).await;
    assert_eq!(merchant_ids(&page), vec![t.own]);
    let (_, page) = t
        .api
        .get(&format!("/api/activity?merchant_id={}", t.other), token)
        .await;
    assert!(page["items"].as_array().unwrap().is_empty());

    let (_, page) = t.api.get("/api/merchants", token).await;
    assert_eq!(ids(&page), vec![t.own]);
    let (status, _) = t
        .api
        .get(&format!("/api/merchants/{}", t.other), token)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = t.api.get(&format!("/api/merchants/{}", t.own), token).await;
    assert_eq!(status, StatusCode::OK);

    let (_, dashboard) = t.api.get("/api/dashboard", token).await;
    assert_eq!(dashboard["tasks"]["failed"], 1);
    assert_eq!(dashboard["tasks"]["pending"], 1);
    assert_eq!(
        merchant_ids(&json!({"items": dashboard["recent_tasks"]})),
        vec![t.own, t.own]
    );
    assert_eq!(
        merchant_ids(&json!({"items": dashboard["recent_activity"]})),
        vec![t.own]
    );
}

#[tokio::test]
async fn merchant_claims_only_its_own_tasks() {
    let t = tenants().await;

    let claimed = t.api.claim(&t.own_token, "export").await;

    assert_eq!(claimed.len(), 1);
    let (_, body) = t
        .api
        .get(&format!("/api/tasks/{}", claimed[0].0), OPERATOR)
        .await;
    assert_eq!(body["merchant_id"], t.own);
    let (_, body) = t
        .api
        .get(&format!("/api/tasks/{}", t.other_pending), OPERATOR)
        .await;
    assert_eq!(body["status"], "pending");
}

#[tokio::test]
async fn merchant_clear_completed_keeps_others() {
    let t = tenants().await;
    for (task, lease) in t.api.claim(OPERATOR, "export").await {
        let (status, _) = t
            .api
            .post(
                &format!("/api/worker/complete/{task}"),
                OPERATOR,
                json!({"lease_token": lease, "outcome": "completed"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }

    let (_, body) = t
        .api
        .call("DELETE", "/api/tasks/completed", Some(&t.own_token), None)
        .await;

    assert_eq!(body["deleted"], 1);
    let (_, page) = t.api.get("/api/tasks?status=completed", OPERATOR).await;
    assert_eq!(merchant_ids(&page), vec![t.other]);
}

#[tokio::test]
async fn merchant_cannot_create_task_for_other() {
    let t = tenants().await;

    let (status, _) = t
        .api
        .post(
            "/api/tasks",
            &t.own_token,
            json!({"merchant_id": t.other, "kind": "export"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = t
        .api
        .post(
            "/api/tasks",
            &t.own_token,
            json!({"merchant_id": t.own, "kind": "export"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}
