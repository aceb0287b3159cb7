//! Dev mode only: how the service sees a token, through its own extractors.
//! `GET /localtest/whoami` (Altinn token) and `GET /localtest/whoami/platform`
//! (platform access token).

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::state::AppState;
use crate::domain::{PlatformApp, Principal, Subject};

pub fn router() -> Router<AppState> {
    Router::new().route("/localtest/whoami", get(whoami)).route("/localtest/whoami/platform", get(whoami_platform))
}

async fn whoami(principal: Principal) -> Json<Value> {
    let subject = match &principal.subject {
        Subject::User { user_id, party_id } => json!({"kind": "user", "userId": user_id, "partyId": party_id}),
        Subject::Org { org, org_number } => json!({"kind": "org", "org": org, "orgNumber": org_number}),
        Subject::SystemUser { id, org_number } => {
            json!({"kind": "systemuser", "systemUserId": id, "orgNumber": org_number})
        }
    };
    Json(json!({"subject": subject, "authLevel": principal.auth_level, "scopes": principal.scopes}))
}

async fn whoami_platform(app: PlatformApp) -> Json<Value> {
    Json(json!({"issuer": app.issuer, "app": app.app, "appId": app.app_id()}))
}
