//! Wires storage, auth, the hub and the routes together, runs the HTTP server,
//! the background chores, and the graceful shutdown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::params;

use crate::auth::AuthState;
use crate::config::Config;
use crate::datadir::{DataDir, DataDirError};
use crate::db::{self, Db, DbError, migrations};
use crate::error::AppError;
use crate::hub::{self, Hub};
use crate::metrics::Metrics;
use crate::settings::SettingsStore;
use crate::state::{AppState, SharedState};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl From<AppError> for ServeError {
    fn from(err: AppError) -> Self {
        ServeError::Setup(err.to_string())
    }
}

/// Everything a running server holds; dropping it releases the data directory.
pub struct Prepared {
    pub state: SharedState,
    _data_dir: DataDir,
}

/// Opens (and locks) the data directory, migrates, loads caches, starts the writer.
pub fn prepare(config: Config) -> Result<Prepared, ServeError> {
    // Certificate files are checked before anything is written.
    let tls_files = crate::tls::load_files(&config)?;
    let data_dir = DataDir::open_locked(&config.server.data_dir)?;
    let tls = crate::tls::Tls::start(&config, &data_dir.root, tls_files)?;
    let db_path = data_dir.database_path();
    let mut conn = db::open_writer_connection(&db_path)?;
    if config.database.synchronous == "full" {
        db::set_full_sync(&conn)?;
    }
    let applied = migrations::migrate(&mut conn)?;
    for migration in &applied {
        tracing::info!(version = migration.version, name = %migration.name, "applied migration");
    }
    let secret = data_dir.jwt_secret()?;
    let auth = AuthState::load(&conn, &secret, &config)?;
    let settings = SettingsStore::load(&conn, &config)?;
    let hub = Hub::new(config.limits.ws_outbound_queue);
    hub.load(&conn).map_err(DbError::from)?;
    let publisher = hub.clone();
    let db = Db::start(
        &db_path,
        conn,
        config.server.read_connections,
        Box::new(move |events| publisher.publish(events)),
        crate::search::indexer(),
    )?;
    let metrics = Metrics::new(hub.clone(), db.writer.stats.clone());
    crate::backup::remove_stale_temp_files(&data_dir.root);
    let transfers = crate::transfers::Transfers::new(&config.limits);
    let state = Arc::new(AppState {
        data_dir: data_dir.root.clone(),
        transfers,
        config,
        db,
        auth,
        hub,
        settings,
        metrics,
        started_at: Instant::now(),
        tls,
        mdns_name: Default::default(),
    });
    Ok(Prepared {
        state,
        _data_dir: data_dir,
    })
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let addr = config
        .listen_addr()
        .map_err(|e| ServeError::Setup(e.to_string()))?;
    let prepared = prepare(config)?;
    let state = prepared.state.clone();
    let listener = bind_listener(addr).map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let mdns = state.config.mdns.enabled.then(|| {
        crate::mdns::Mdns::start(
            &state.config.mdns.name,
            &state.config.server.name,
            local.port(),
            state.tls.clone(),
            state.mdns_name.clone(),
        )
    });
    announce(&state, local);

    // Prune before accepting anyone, so replay limits hold from the first connection.
    if let Err(err) = prune_events(&state).await {
        tracing::warn!(error = %err, "pruning old events failed");
    }
    let mut chores = spawn_chores(state.clone());
    if let Some(tls) = &state.tls {
        let every = Duration::from_secs(state.config.tls.check_secs);
        chores.push(tls.clone().spawn_refresher(every));
    }
    let routes = crate::api::routes(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let limits = crate::net::Limits::from_config(&state.config.connections);
    let server = tokio::spawn(crate::net::serve(
        listener,
        routes,
        state.tls.clone(),
        limits,
        async {
            let _ = stop_rx.await;
        },
    ));

    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    // Tell clients first, so they reconnect elsewhere or later with `since`.
    state.hub.close_all(hub::close::GOING_AWAY);
    let _ = stop_tx.send(());
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    if tokio::time::timeout(grace, server).await.is_err() {
        tracing::warn!("some requests did not finish within {grace:?}");
    }
    for chore in chores {
        chore.abort();
    }
    // Goodbye records: caches on the LAN forget the name at once.
    drop(mdns);
    flush_dirty(&state).await;
    state.db.writer.shutdown().await;
    tracing::info!("database closed; bye");
    drop(prepared);
    Ok(())
}

/// The listening socket. TCP_NODELAY is also set on every accepted connection
/// (src/net), which only some systems inherit from the listener.
fn bind_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Prints where to connect: the listening address, every LAN URL, with HTTPS
/// the secure addresses, the trust page and the CA's fingerprint, and the
/// setup link while no admin exists.
fn announce(state: &SharedState, local: SocketAddr) {
    // A plain line on stdout that scripts and tests can rely on.
    println!("lanchat listening on http://{local}");
    tracing::info!(address = %local, "listening");
    let mdns_name = state
        .mdns_name
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut http = lan_urls(local);
    let mut https = https_lan_urls(local);
    if let Some(name) = &mdns_name {
        http.push(format!("http://{name}:{}", local.port()));
        https.push(format!("https://{name}:{}", local.port()));
    }
    let tls = state.tls.as_deref();
    // With the local CA, devices that do not trust it yet start on plain HTTP,
    // where the page leads them to the trust page. With the office's own
    // certificate, or HTTPS required, people start on HTTPS.
    let start_on_https = tls.is_some_and(|tls| tls.ca().is_none() || tls.require);
    let open = if start_on_https { &https } else { &http };
    for url in open {
        println!("  open {url}");
        tracing::info!(%url, "people on the LAN can open");
    }
    if let Some(tls) = tls {
        if !start_on_https {
            println!("  secure (HTTPS, same port): {}", https.join("  "));
        }
        if let Some(ca) = tls.ca() {
            let base = http
                .first()
                .cloned()
                .unwrap_or_else(|| format!("http://{local}"));
            println!("  each device trusts this server's certificate authority once: {base}/trust");
            println!("  CA fingerprint (SHA-256): {}", ca.fingerprint);
            println!("  (lanchat ca: the CA file and commands to install it on every PC)");
            tracing::info!(fingerprint = %ca.fingerprint, "HTTPS with the local certificate authority");
        }
    }
    if let Some(token) = state.auth.setup_token() {
        let base = open
            .first()
            .cloned()
            .unwrap_or_else(|| format!("http://{local}"));
        crate::api::setup::announce_link(state, &format!("{base}/setup?token={token}"));
    } else {
        crate::api::setup::remove_link_file(state);
    }
}

/// `http://ip:port` for every address this machine can be reached at.
pub fn lan_urls(local: SocketAddr) -> Vec<String> {
    urls_with_scheme(local, "http")
}

/// `https://ip:port` for every address this machine can be reached at (HTTPS
/// is served on the same port as HTTP).
pub fn https_lan_urls(local: SocketAddr) -> Vec<String> {
    urls_with_scheme(local, "https")
}

/// The addresses to open in a browser on this server: HTTPS when it is on.
pub fn open_urls(state: &SharedState, local: SocketAddr) -> Vec<String> {
    if state.tls.is_some() {
        https_lan_urls(local)
    } else {
        lan_urls(local)
    }
}

fn urls_with_scheme(local: SocketAddr, scheme: &str) -> Vec<String> {
    let port = local.port();
    let specific = !local.ip().is_unspecified();
    if specific {
        return vec![format!("{scheme}://{local}")];
    }
    let mut urls = Vec::new();
    for ip in crate::tls::names::interface_addresses() {
        // Listening on 0.0.0.0 serves IPv4 only; on [::] both.
        if local.is_ipv4() && ip.is_ipv6() {
            continue;
        }
        urls.push(match ip {
            IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}"),
            IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
        });
    }
    if urls.is_empty() {
        urls.push(format!("{scheme}://127.0.0.1:{port}"));
    }
    urls
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// Periodic work: typing timeouts, persisting delivery marks and last-seen
/// times, search indexing and WAL checkpoints in quiet moments, revocations
/// made by other processes, pruning the event log, scheduled backups.
fn spawn_chores(state: SharedState) -> Vec<tokio::task::JoinHandle<()>> {
    let mut chores = Vec::new();
    chores.push(tokio::spawn(watch_revocations(state.clone())));
    let deferred_db = state.db.clone();
    chores.push(tokio::spawn(async move {
        // Quiet moments are looked for at this pace; under steady load the
        // deferred work runs every `BUSY_EVERY` ticks anyway.
        const TICK: Duration = Duration::from_millis(250);
        const BUSY_EVERY: u32 = 8;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut schedule = db::DeferredSchedule::new(BUSY_EVERY);
        loop {
            tick.tick().await;
            let work = schedule.tick(deferred_db.writer.stats.all_transactions());
            if work.nudge_background {
                // Messages sent in a quiet moment are indexed for search at once.
                deferred_db.writer.nudge_background();
            }
            if work.checkpoint
                && let Err(err) = deferred_db.checkpoint().await
            {
                tracing::warn!(error = %err, "checkpointing the WAL failed");
            }
        }
    }));
    let hub = state.hub.clone();
    chores.push(tokio::spawn(async move {
        // Delivery receipts go out coalesced, at most this late.
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            hub.flush_receipts();
            ticks += 1;
            if ticks.is_multiple_of(5) {
                hub.expire_typing();
            }
        }
    }));
    let flush_state = state.clone();
    chores.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            flush_dirty(&flush_state).await;
        }
    }));
    chores.push(crate::attachments::spawn_cleanup(state.clone()));
    if let Some(backups) = crate::backup::spawn_scheduled_backups(state.clone()) {
        chores.push(backups);
    }
    let prune_state = state;
    chores.push(tokio::spawn(async move {
        let every = Duration::from_secs(600);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tick.tick().await;
            if let Err(err) = prune_events(&prune_state).await {
                tracing::warn!(error = %err, "pruning old events failed");
            }
        }
    }));
    chores
}

/// Picks up sessions revoked by another process, such as `lanchat reset-password`
/// run beside the server: they are refused and their sockets closed within a
/// few seconds, instead of living until their access tokens expire. Revocations
/// made through the API are applied at once and are already known here.
async fn watch_revocations(state: SharedState) {
    const EVERY: Duration = Duration::from_secs(2);
    // The other process stamps `revoked_at` with its clock before it commits:
    // look back far enough to see commits that landed after the last look.
    const OVERLAP_MS: i64 = 30_000;
    let mut since = crate::db::now_ms();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    loop {
        tick.tick().await;
        let from = since - OVERLAP_MS;
        let looked_at = crate::db::now_ms();
        let revoked = state
            .db
            .read(move |conn| crate::auth::sessions::revoked_since(conn, from))
            .await;
        match revoked {
            Ok(ids) => {
                since = looked_at;
                let new: Vec<i64> = ids
                    .into_iter()
                    .filter(|id| !state.auth.is_session_revoked(*id))
                    .collect();
                state.auth.mark_sessions_revoked(&new);
                for session_id in new {
                    state
                        .hub
                        .close_session(session_id, crate::hub::close::POLICY);
                }
            }
            Err(err) => tracing::warn!(error = %err, "checking for revoked sessions failed"),
        }
    }
}

/// Writes the hub's delivery marks and last-seen times in one transaction.
async fn flush_dirty(state: &SharedState) {
    let crate::hub::Dirty {
        delivered,
        last_seen: seen,
    } = state.hub.take_dirty();
    if delivered.is_empty() && seen.is_empty() {
        return;
    }
    let result = state
        .db
        .writer
        .run(move |ctx| {
            let mut mark = ctx.conn().prepare_cached(
                "UPDATE members SET last_delivered_id = ?3
                 WHERE conversation_id = ?1 AND user_id = ?2 AND last_delivered_id < ?3",
            )?;
            for ((conversation_id, user_id), message_id) in &delivered {
                mark.execute(params![conversation_id, user_id, message_id])?;
            }
            let mut last_seen = ctx
                .conn()
                .prepare_cached("UPDATE users SET last_seen_at = ?2 WHERE id = ?1")?;
            for (user_id, at) in &seen {
                last_seen.execute(params![user_id, at])?;
            }
            Ok::<_, AppError>(())
        })
        .await;
    if let Err(err) = result {
        tracing::warn!(error = %err, "saving delivery marks failed");
    }
}

/// Drops events past the retention (count or age, whichever is reached first).
pub async fn prune_events(state: &SharedState) -> Result<usize, AppError> {
    let keep = state.config.events.retention_count as i64;
    let max_age_ms = (state.config.events.retention_days as i64) * 86_400_000;
    state
        .db
        .writer
        .run(move |ctx| {
            let cutoff = ctx.now() - max_age_ms;
            Ok(delete_old_events(ctx.conn(), keep, cutoff)?)
        })
        .await
}

/// Deletes all but the newest `keep` events, and those created before `cutoff`
/// (ms). Event ids grow with time, so both are a range of ids: found from the
/// oldest end, without an index on the time (one page fewer written per event).
fn delete_old_events(
    conn: &rusqlite::Connection,
    keep: i64,
    cutoff: i64,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM events WHERE event_id < MAX(
             (SELECT COALESCE(MAX(event_id), 0) FROM events) - ?1 + 1,
             COALESCE((SELECT event_id FROM events WHERE created_at >= ?2 ORDER BY event_id LIMIT 1),
                      (SELECT COALESCE(MAX(event_id), 0) + 1 FROM events)))",
        params![keep, cutoff],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(created: &[i64]) -> rusqlite::Connection {
        let mut conn = rusqlite::Connection::open_in_memory().expect("db");
        migrations::migrate(&mut conn).expect("migrate");
        for (i, at) in created.iter().enumerate() {
            conn.execute(
                "INSERT INTO events (event_id, type, payload, created_at) VALUES (?1, 't', '{}', ?2)",
                params![i as i64 + 1, at],
            )
            .expect("event");
        }
        conn
    }

    fn left(conn: &rusqlite::Connection) -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT event_id FROM events ORDER BY 1")
            .expect("query");
        stmt.query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("ids")
    }

    #[test]
    fn old_events_are_pruned_by_count_or_age() {
        let conn = events(&[10, 20, 30, 40, 50]);
        assert_eq!(delete_old_events(&conn, 10, 0).expect("prune"), 0);
        assert_eq!(delete_old_events(&conn, 3, 0).expect("prune"), 2);
        assert_eq!(left(&conn), [3, 4, 5]);
        assert_eq!(delete_old_events(&conn, 10, 40).expect("prune"), 1);
        assert_eq!(left(&conn), [4, 5]);
        // All too old: none kept, whatever the count.
        assert_eq!(delete_old_events(&conn, 10, 60).expect("prune"), 2);
        assert!(left(&conn).is_empty());
        assert_eq!(delete_old_events(&conn, 10, 60).expect("prune"), 0);
    }
}
