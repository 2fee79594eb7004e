//! First-run setup: creates the first admin with the token printed at start-up.

use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::auth::{NewAccount, create_account};
use super::{ClientInfo, client_info, json_body, ok, respond, with_state};
use crate::error::{AppError, AppResult};
use crate::state::SharedState;

pub fn routes(state: SharedState) -> BoxedFilter<(Response,)> {
    let limit = state.config.limits.max_json_bytes;
    let status = warp::path!("setup")
        .and(warp::get())
        .and(with_state(state.clone()))
        .then(setup_status)
        .map(respond);
    let run = warp::path!("setup")
        .and(warp::post())
        .and(with_state(state))
        .and(client_info())
        .and(json_body::<SetupRequest>(limit))
        .then(run_setup)
        .map(respond);
    status.or(run).unify().boxed()
}

/// Setup is needed while no admin exists. An admin created meanwhile from the
/// command line (beside the running server) ends it too.
async fn setup_status(state: SharedState) -> AppResult<Response> {
    let mut needs_setup = state.auth.setup_token().is_some();
    if needs_setup && state.db.read(crate::users::any_admin).await? {
        state.auth.end_setup();
        needs_setup = false;
    }
    Ok(ok(&serde_json::json!({
        "needs_setup": needs_setup,
        "server_name": state.settings.get().server_name,
    })))
}

#[derive(Debug, Deserialize)]
struct SetupRequest {
    setup_token: String,
    username: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
}

async fn run_setup(
    state: SharedState,
    client: ClientInfo,
    body: SetupRequest,
) -> AppResult<Response> {
    if state.auth.setup_token().is_none() {
        return Err(AppError::Conflict {
            code: "setup_done",
            message: "setup is already done: an admin exists".into(),
        });
    }
    if !state.auth.setup_token_matches(&body.setup_token) {
        return Err(AppError::forbidden_code(
            "invalid_setup_token",
            "the setup token is wrong",
        ));
    }
    let response = create_account(
        &state,
        &client,
        NewAccount {
            username: body.username,
            password: body.password,
            display_name: body.display_name,
            invite: None,
            as_setup_admin: true,
        },
    )
    .await?;
    state.auth.end_setup();
    Ok(response)
}
