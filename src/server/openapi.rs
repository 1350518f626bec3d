//! The OpenAPI document, derived from the route handlers and view types.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::views;
use super::{merchants, other, tasks};

/// The OpenAPI 3.1 document of the HTTP API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Citadel operator API", description = "Tasks, merchants, activity, external workers, health and the Stripe webhook of a Citadel deployment."),
    paths(
        other::dashboard,
        tasks::list, tasks::get_one, tasks::create, tasks::retry, tasks::delete, tasks::clear_completed,
        merchants::list, merchants::get_one, merchants::create, merchants::update,
        other::activity, other::claim, other::complete, other::health, other::webhook,
    ),
    components(schemas(
        views::ErrorBody, views::ErrorDetail, views::TaskView, views::LeaseView, views::TaskPage,
        views::ClaimedTask, views::ClaimResponse, views::DeletedCount, views::MerchantView,
        views::MerchantPage, views::CreatedMerchantView, views::ActivityView, views::ActivityPage,
        views::TaskCountsView, views::DashboardView, views::HealthView, views::WebhookResponse,
        views::CreateTaskRequest, views::CreateMerchantRequest, views::UpdateMerchantRequest,
        views::ClaimRequestBody, views::CompleteRequestBody,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme the routes refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Serves the document.
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
