//! The messaging workloads (P1, P2, P3, C10K), each driven the same way against
//! lanchat and against the wire server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::client::{self, Conn, Phase, ReaderHooks};
use crate::procstat::{self, Meter, PhaseUsage};
use crate::servers::Res;
use crate::stats::Latency;
use crate::targets::Target;

/// Handshakes in flight while connecting a workload's clients.
const CONNECT_PARALLEL: usize = 64;

/// The figures of one measured phase on one side.
#[derive(Debug, Clone, Serialize)]
pub struct Flow {
    pub complete: bool,
    pub delivered: u64,
    pub expected: u64,
    pub elapsed_secs: f64,
    /// Deliveries per second (messages × recipients).
    pub rate: f64,
    pub latency: Latency,
    pub usage: PhaseUsage,
    pub errors: BTreeMap<String, u64>,
}

/// Lets presence and other set-up traffic drain before timing starts.
async fn settle(connections: usize) {
    let ms = 300 + (connections as u64 / 10).min(2700);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// P1: one DM, `count` messages one at a time, the next sent once the previous
/// arrived. Returns the send→receive latencies.
pub async fn p1(target: &mut Target, count: usize, filler: &str, timeout: Duration) -> Res<Flow> {
    let room = target.rooms(&[2]).await?.pop().ok_or("no room was made")?;
    let mut conns = client::connect_all(room.urls, 2).await?;
    let receiver = conns.pop().ok_or("no receiver")?;
    let Conn {
        sink: mut sender_sink,
        source: sender_source,
        ..
    } = conns.pop().ok_or("no sender")?;
    let phase = Phase::new(count as u64);
    let (arrived, mut arrivals) = mpsc::unbounded_channel();
    let readers = vec![
        client::spawn_reader(
            sender_source,
            ReaderHooks {
                prefix: "p1s-".into(),
                window: None,
                arrivals: None,
            },
            phase.clone(),
        ),
        client::spawn_reader(
            receiver.source,
            ReaderHooks {
                prefix: "p1r-".into(),
                window: None,
                arrivals: Some(arrived),
            },
            phase.clone(),
        ),
    ];
    let _receiver_sink = receiver.sink;
    settle(2).await;

    let meter = Meter::start(Some(target.pid()));
    let started = Instant::now();
    let deadline = started + timeout;
    let mut complete = true;
    for seq in 0..count {
        let frame = client::send_frame(room.conversation_id, "p1s-", seq, filler);
        if let Err(err) = sender_sink.send(frame).await {
            return Err(format!("P1 send: {err}"));
        }
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(10));
        match tokio::time::timeout(wait, arrivals.recv()).await {
            Ok(Some(())) => {}
            _ => {
                complete = false;
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    let usage = meter.stop();
    phase.stop();
    let mut latencies = Vec::new();
    for reader in readers {
        latencies.extend(reader.await.map_err(|e| e.to_string())?.latencies);
    }
    // For finding what the slow messages have in common (a period, a chore).
    if let Some(path) = std::env::var_os("LANCHAT_BENCH_P1_LATENCIES") {
        let lines: String = latencies.iter().map(|ns| format!("{ns}\n")).collect();
        std::fs::write(&path, lines).map_err(|e| format!("writing {path:?}: {e}"))?;
    }
    let delivered = phase.delivered();
    Ok(Flow {
        complete,
        delivered,
        expected: count as u64,
        elapsed_secs: elapsed.as_secs_f64(),
        rate: delivered as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Latency::from_nanos(latencies),
        usage,
        errors: phase.errors(),
    })
}

/// A throughput workload: rooms of the given sizes; in each, the first `senders`
/// members each send `messages`, at most `window` unacknowledged.
pub struct Plan {
    pub room_sizes: Vec<usize>,
    pub senders: usize,
    pub messages: usize,
    pub window: usize,
}

impl Plan {
    pub fn expected_deliveries(&self) -> u64 {
        self.room_sizes
            .iter()
            .map(|&size| (self.senders.min(size) * self.messages * (size - 1)) as u64)
            .sum()
    }
}

/// P2 and P3: every member connected before timing; timing runs from the senders'
/// start to the last expected delivery.
pub async fn throughput(
    target: &mut Target,
    plan: &Plan,
    filler: &str,
    timeout: Duration,
) -> Res<Flow> {
    let rooms = target.rooms(&plan.room_sizes).await?;
    let urls: Vec<String> = rooms.iter().flat_map(|r| r.urls.iter().cloned()).collect();
    let total = urls.len();
    let mut conns = client::connect_all(urls, CONNECT_PARALLEL)
        .await?
        .into_iter();
    let expected = plan.expected_deliveries();
    let phase = Phase::new(expected);
    let mut readers = Vec::with_capacity(total);
    let mut senders = Vec::new();
    let mut idle_sinks = Vec::new();
    let mut index = 0usize;
    for room in &rooms {
        for member in 0..room.urls.len() {
            let conn = conns.next().ok_or("missing connection")?;
            index += 1;
            let prefix = format!("c{index}-");
            let sends = member < plan.senders;
            let window = sends.then(|| Arc::new(Semaphore::new(plan.window.max(1))));
            readers.push(client::spawn_reader(
                conn.source,
                ReaderHooks {
                    prefix: prefix.clone(),
                    window: window.clone(),
                    arrivals: None,
                },
                phase.clone(),
            ));
            match window {
                Some(window) => senders.push((conn.sink, room.conversation_id, prefix, window)),
                None => idle_sinks.push(conn.sink),
            }
        }
    }
    settle(total).await;

    let meter = Meter::start(Some(target.pid()));
    let (go_tx, go_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(senders.len());
    for (mut sink, conversation_id, prefix, window) in senders {
        let mut go = go_rx.clone();
        let filler = filler.to_owned();
        let messages = plan.messages;
        tasks.push(tokio::spawn(async move {
            let _ = go.wait_for(|go| *go).await;
            let sent = client::send_pipelined(
                &mut sink,
                conversation_id,
                &prefix,
                messages,
                &window,
                &filler,
            )
            .await;
            (sink, sent)
        }));
    }
    let started = Instant::now();
    let _ = go_tx.send(true);
    let complete = phase.wait(timeout).await;
    let ended = phase.last_delivery().unwrap_or_else(Instant::now);
    let usage = meter.stop();
    phase.stop();

    let mut send_errors = Vec::new();
    for task in tasks {
        if !task.is_finished() {
            task.abort();
            continue;
        }
        if let Ok((_sink, Err(err))) = task.await {
            send_errors.push(err);
        }
    }
    let mut latencies = Vec::new();
    for reader in readers {
        latencies.extend(reader.await.map_err(|e| e.to_string())?.latencies);
    }
    drop(idle_sinks);
    let mut errors = phase.errors();
    for err in send_errors {
        *errors.entry(err).or_default() += 1;
    }
    let delivered = phase.delivered();
    let elapsed = ended.saturating_duration_since(started);
    Ok(Flow {
        complete,
        delivered,
        expected,
        elapsed_secs: elapsed.as_secs_f64(),
        rate: delivered as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: Latency::from_nanos(latencies),
        usage,
        errors,
    })
}

/// C10K figures on one side.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    pub connections: usize,
    pub connect_secs: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// Server RSS growth per idle connection, bytes.
    pub bytes_per_connection: f64,
    pub server_cpu_while_idle_secs: f64,
    /// Connections the server closed while they were held.
    pub lost: u64,
    /// P1 while the idle connections are held.
    pub p1: Option<Flow>,
    pub p1_error: Option<String>,
}

/// C10K: opens `count` authenticated idle connections, measures the server's
/// memory per connection, runs P1 while they are held.
pub async fn c10k(
    target: &mut Target,
    count: usize,
    per_user: usize,
    p1_messages: usize,
    filler: &str,
    timeout: Duration,
) -> Res<Idle> {
    let urls = target.idle_urls(count, per_user).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = procstat::sample(target.pid()).ok_or("the server is gone")?;
    let started = Instant::now();
    let conns = client::connect_all(urls, CONNECT_PARALLEL).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let (stop_tx, stop_rx) = watch::channel(false);
    let lost = Arc::new(AtomicU64::new(0));
    let holders: Vec<_> = conns
        .into_iter()
        .map(|conn| client::hold_idle(conn, stop_rx.clone(), lost.clone()))
        .collect();
    settle(count).await;
    let idle_start = procstat::sample(target.pid()).ok_or("the server is gone")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = procstat::sample(target.pid()).ok_or("the server is gone")?;
    let growth = after.rss_kib.saturating_sub(before.rss_kib);

    let (p1, p1_error) = match p1(target, p1_messages, filler, timeout).await {
        Ok(flow) => (Some(flow), None),
        Err(err) => (None, Some(err)),
    };

    let _ = stop_tx.send(true);
    let closing = futures_util::future::join_all(holders);
    let _ = tokio::time::timeout(Duration::from_secs(30), closing).await;
    Ok(Idle {
        connections: count,
        connect_secs,
        rss_before_kib: before.rss_kib,
        rss_after_kib: after.rss_kib,
        bytes_per_connection: growth as f64 * 1024.0 / count.max(1) as f64,
        server_cpu_while_idle_secs: after.cpu_secs - idle_start.cpu_secs,
        lost: lost.load(Ordering::Relaxed),
        p1,
        p1_error,
    })
}
