//! First-run setup: creates the first admin with the one-time token made at
//! start-up. The setup link is shown on the terminal, if the server runs on one,
//! and written to an owner-only file in the data directory, never to the log.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use super::auth::{NewAccount, create_account};
use super::{ClientInfo, client_info, json_body, ok, respond, with_state};
use crate::auth::SetupCheck;
use crate::error::{AppError, AppResult};
use crate::state::SharedState;

/// The file in the data directory that holds the setup link while no admin exists.
pub const LINK_FILE: &str = "setup-link.txt";

fn link_file(state: &SharedState) -> PathBuf {
    state.data_dir.join(LINK_FILE)
}

/// Makes the setup link known at start-up: printed when standard output is a
/// terminal, and written to [`LINK_FILE`] (mode 0600) in the data directory.
pub fn announce_link(state: &SharedState, link: &str) {
    let path = link_file(state);
    let minutes = state.config.auth.setup_token_ttl_secs.div_ceil(60);
    match write_owner_only(&path, &format!("{link}\n")) {
        Ok(()) => {
            tracing::warn!(file = %path.display(), "no admin yet: the setup link is in this file (readable by the server's user only)");
        }
        Err(err) => {
            tracing::warn!(file = %path.display(), error = %err, "no admin yet, and the setup link could not be written to its file");
        }
    }
    if std::io::stdout().is_terminal() {
        println!("  first-run setup (valid for {minutes} min): {link}");
    } else {
        println!("  first-run setup: the link is in {}", path.display());
    }
    println!("  (or run: lanchat --create-user NAME --admin)");
}

/// Setup is over (or was over at start-up): the link file goes.
pub fn remove_link_file(state: &SharedState) {
    let path = link_file(state);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(file = %path.display(), error = %err, "could not delete the setup link file")
        }
    }
}

/// Writes `text` to `path` readable by its owner only, replacing it atomically.
fn write_owner_only(path: &Path, text: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}

/// Setup is over for good: an admin exists.
pub fn end_setup(state: &SharedState) {
    state.auth.end_setup();
    remove_link_file(state);
}

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
        end_setup(&state);
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
    match state.auth.check_setup_token(&body.setup_token) {
        SetupCheck::Valid => {}
        SetupCheck::Done => {
            return Err(AppError::Conflict {
                code: "setup_done",
                message: "setup is already done: an admin exists".into(),
            });
        }
        SetupCheck::Wrong => {
            return Err(AppError::forbidden_code(
                "invalid_setup_token",
                "the setup token is wrong",
            ));
        }
        SetupCheck::Expired => {
            return Err(AppError::forbidden_code(
                "setup_token_expired",
                "the setup link has expired: restart the server for a new one, or run lanchat --create-user NAME --admin",
            ));
        }
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
    end_setup(&state);
    Ok(response)
}
