//! `cargo bench --bench load`: lanchat against the machine's own limits.
//!
//! For each workload the bench starts a fresh release server (`lanchat --data-dir
//! <tmp> --listen 127.0.0.1:0`), creates users and conversations through the public
//! API, connects every client before timing starts, and drives the workload with
//! tokio-tungstenite clients. The same clients then drive the *wire limit* (a
//! minimal forwarding WebSocket server, no JSON, no database, in its own process),
//! and P2 also measures the *storage limit* (the same rows inserted straight through
//! rusqlite). The report prints lanchat's figure, the limit's and the ratio, and
//! checks the targets of issue 5. See docs/PERFORMANCE.md.
//!
//! `cargo bench --bench load -- --help` lists the options; `-- --quick` is a smoke
//! test that takes seconds.
//!
//! The modules live in `benches/load/` (a bench root file resolves `mod` beside
//! itself, hence the `#[path]`s).

#[path = "load/args.rs"]
mod args;
#[path = "load/client.rs"]
mod client;
#[path = "load/cold.rs"]
mod cold;
#[path = "load/procstat.rs"]
mod procstat;
#[path = "load/report.rs"]
mod report;
#[path = "load/servers.rs"]
mod servers;
#[path = "load/stats.rs"]
mod stats;
#[path = "load/storage.rs"]
mod storage;
#[path = "load/targets.rs"]
mod targets;
#[path = "load/wire.rs"]
mod wire;
#[path = "load/workloads.rs"]
mod workloads;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use args::{Cli, Sizes, Workload};
use report::{Report, Section};
use servers::Res;
use stats::{mib, ms, thousands};
use targets::{Side, Target};
use workloads::{Flow, Idle, Plan};

fn main() -> ExitCode {
    // reqwest's rustls uses ring, as the server does.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::args().nth(1).as_deref() == Some(wire::SUBCOMMAND) {
        return wire::serve_main();
    }
    let cli = Cli::parse();
    let nofile = procstat::raise_nofile_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("load: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, nofile)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("load: {err}");
            ExitCode::FAILURE
        }
    }
}

struct Bench {
    cli: Cli,
    sizes: Sizes,
    binary: PathBuf,
    work: PathBuf,
    timeout: Duration,
    filler: String,
    report: Report,
}

async fn run(cli: Cli, nofile: u64) -> Res<()> {
    client::epoch();
    client::self_check()?;
    let sizes = cli.sizes();
    let binary = if cli.lanchat() {
        servers::lanchat_binary(cli.server.as_deref())?
    } else {
        PathBuf::new()
    };
    let work = cli.work_dir.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lanchat-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let machine = report::machine();
    println!(
        "lanchat load bench: {} CPUs ({}), {} GiB, kernel {}",
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or("?")
    );
    if cli.lanchat() {
        println!("server binary: {}", binary.display());
    }
    println!(
        "work directory: {} (open files limit {nofile})",
        work.display()
    );
    // `--tls` alone measures only TLS beside plain.
    let workloads = if cli.tls && cli.workloads.is_empty() {
        Vec::new()
    } else {
        cli.workloads()
    };
    let filler = client::filler(sizes.body_bytes.saturating_sub(20));
    let mut bench = Bench {
        timeout: Duration::from_secs(cli.timeout),
        report: Report {
            machine,
            sizes: serde_json::to_value(&sizes).unwrap_or_default(),
            sections: Vec::new(),
        },
        cli,
        sizes,
        binary,
        work,
        filler,
    };
    for workload in workloads {
        let section = match workload {
            Workload::P1 => bench.p1().await,
            Workload::P2 => bench.p2().await,
            Workload::P3 => bench.p3().await,
            Workload::C10k => bench.c10k().await,
            Workload::Cold => bench.cold().await,
            Workload::Storage => bench.storage_only().await,
        };
        bench.report.add(section);
    }
    if bench.cli.tls {
        let section = bench.tls().await;
        bench.report.add(section);
    }
    print!("{}", bench.report.summary());
    if let Some(path) = &bench.cli.json {
        let text = serde_json::to_string_pretty(&bench.report).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("results written to {}", path.display());
    }
    if bench.cli.keep {
        println!("kept {}", bench.work.display());
    } else {
        let _ = std::fs::remove_dir_all(&bench.work);
    }
    Ok(())
}

/// A side's outcome: `None` when that side was not asked for.
type Outcome<T> = Option<Res<T>>;

fn value<T>(outcome: &Outcome<T>) -> Option<&T> {
    outcome.as_ref().and_then(|r| r.as_ref().ok())
}

fn ratio(lanchat: Option<f64>, limit: Option<f64>) -> Option<f64> {
    match (lanchat, limit) {
        (Some(l), Some(w)) if w > 0.0 => Some(l / w),
        _ => None,
    }
}

fn compare(
    section: &mut Section,
    metric: &str,
    lanchat: Option<f64>,
    limit: Option<f64>,
    format: fn(f64) -> String,
) {
    section.row(
        metric,
        lanchat.map(format),
        limit.map(format),
        ratio(lanchat, limit),
    );
}

fn per_sec(v: f64) -> String {
    format!("{}/s", thousands(v))
}

fn secs(v: f64) -> String {
    format!("{v:.2} s")
}

fn kib(v: f64) -> String {
    mib(v as u64)
}

/// Notes failures and incomplete runs of a side.
fn note_side<T>(
    section: &mut Section,
    side: Side,
    outcome: &Outcome<T>,
    flow: impl Fn(&T) -> Option<&Flow>,
) {
    match outcome {
        None => section.note(format!("{}: not run (--side)", side.label())),
        Some(Err(err)) => section.note(format!("{}: FAILED: {err}", side.label())),
        Some(Ok(result)) => {
            if let Some(flow) = flow(result) {
                if !flow.complete {
                    section.note(format!(
                        "{}: INCOMPLETE: {} of {} deliveries arrived (a connection was lost, or the timeout)",
                        side.label(),
                        flow.delivered,
                        flow.expected
                    ));
                }
                if !flow.errors.is_empty() {
                    section.note(format!("{}: errors seen: {:?}", side.label(), flow.errors));
                }
            }
        }
    }
}

/// The rows every messaging workload shows.
fn flow_rows(section: &mut Section, rate: Option<&str>, l: Option<&Flow>, w: Option<&Flow>) {
    if l.is_none() && w.is_none() {
        return;
    }
    let get = |f: Option<&Flow>, pick: fn(&Flow) -> f64| f.map(pick);
    if let Some(label) = rate {
        // A rate over an incomplete phase means nothing: say so instead.
        let shown = |f: Option<&Flow>| {
            f.map(|f| {
                if f.complete {
                    per_sec(f.rate)
                } else {
                    "incomplete".to_owned()
                }
            })
        };
        let complete = |f: Option<&Flow>| f.filter(|f| f.complete).map(|f| f.rate);
        section.row(label, shown(l), shown(w), ratio(complete(l), complete(w)));
    }
    compare(
        section,
        "latency p50",
        get(l, |f| f.latency.p50_ms),
        get(w, |f| f.latency.p50_ms),
        ms,
    );
    compare(
        section,
        "latency p99",
        get(l, |f| f.latency.p99_ms),
        get(w, |f| f.latency.p99_ms),
        ms,
    );
    compare(
        section,
        "latency max",
        get(l, |f| f.latency.max_ms),
        get(w, |f| f.latency.max_ms),
        ms,
    );
    compare(
        section,
        "measured time",
        get(l, |f| f.elapsed_secs),
        get(w, |f| f.elapsed_secs),
        secs,
    );
    compare(
        section,
        "server CPU",
        get(l, |f| f.usage.server.cpu_secs),
        get(w, |f| f.usage.server.cpu_secs),
        secs,
    );
    compare(
        section,
        "server RSS at start of phase",
        get(l, |f| f.usage.server.rss_start_kib as f64),
        get(w, |f| f.usage.server.rss_start_kib as f64),
        kib,
    );
    compare(
        section,
        "server peak RSS",
        get(l, |f| f.usage.server.peak_rss_kib as f64),
        get(w, |f| f.usage.server.peak_rss_kib as f64),
        kib,
    );
    compare(
        section,
        "generator CPU",
        get(l, |f| f.usage.generator_cpu_secs),
        get(w, |f| f.usage.generator_cpu_secs),
        secs,
    );
    if [l, w]
        .iter()
        .flatten()
        .any(|f| !f.usage.server.peak_is_phase_only)
    {
        section.note("(peak RSS is since server start: the kernel refused to reset it)");
    }
}

fn flow_data(l: &Outcome<Flow>, w: &Outcome<Flow>) -> serde_json::Value {
    serde_json::json!({ "lanchat": value(l), "wire": value(w) })
}

impl Bench {
    fn dir(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    /// Runs `body` on a fresh target of each side asked for: the wire server first.
    async fn both<T, F>(&self, name: &str, mut body: F) -> (Outcome<T>, Outcome<T>)
    where
        F: AsyncFnMut(&mut Target) -> Res<T>,
    {
        let mut wire_result = None;
        let mut lanchat_result = None;
        for side in [Side::Wire, Side::Lanchat] {
            let wanted = match side {
                Side::Wire => self.cli.limits(),
                Side::Lanchat => self.cli.lanchat(),
            };
            if !wanted {
                continue;
            }
            println!("  {name}: {} ...", side.label());
            let dir = self.dir(&format!("{name}-{}", side.label().replace(' ', "-")));
            let result = match Target::start(side, &self.binary, dir).await {
                Ok(mut target) => {
                    let result = body(&mut target).await;
                    if result.is_err() && side == Side::Lanchat {
                        eprintln!("  (server log: {})", target.server.log_path.display());
                    }
                    target.stop().await;
                    result
                }
                Err(err) => Err(err),
            };
            match side {
                Side::Wire => wire_result = Some(result),
                Side::Lanchat => lanchat_result = Some(result),
            }
        }
        (lanchat_result, wire_result)
    }

    /// P2's plan: one DM per pair, one pipelined sender each.
    fn p2_plan(&self) -> Plan {
        let z = &self.sizes;
        Plan {
            room_sizes: vec![2; z.pairs],
            senders: 1,
            messages: z.p2_messages,
            window: z.p2_window,
        }
    }

    /// P1 and P2 against lanchat over plain WebSockets and over TLS (`wss://`,
    /// the server's local CA trusted), each on a fresh server.
    async fn tls(&mut self) -> Section {
        let count = self.sizes.p1_messages;
        let z = &self.sizes;
        let plan = self.p2_plan();
        let (filler, timeout) = (self.filler.clone(), self.timeout);
        let mut p1 = [None, None];
        let mut p2 = [None, None];
        for (i, tls) in [false, true].into_iter().enumerate() {
            let scheme = if tls { "tls" } else { "plain" };
            for workload in ["p1", "p2"] {
                let dir = self.dir(&format!("{workload}-{scheme}"));
                println!(
                    "-- {workload} over {}",
                    if tls { "wss://" } else { "ws://" }
                );
                let result = async {
                    let mut target = Target::start(Side::Lanchat, &self.binary, dir).await?;
                    let result = async {
                        if tls {
                            target.use_tls().await?;
                        }
                        if workload == "p1" {
                            workloads::p1(&mut target, count, &filler, timeout).await
                        } else {
                            workloads::throughput(&mut target, &plan, &filler, timeout).await
                        }
                    }
                    .await;
                    target.stop().await;
                    result
                }
                .await;
                if let Err(err) = &result {
                    eprintln!("  {workload} over {scheme}: {err}");
                }
                if workload == "p1" {
                    p1[i] = result.ok();
                } else {
                    p2[i] = result.ok();
                }
            }
        }
        let mut s = Section::new(format!(
            "TLS beside plain: P1 ({count} messages) and P2 ({} pairs × {} messages), fresh servers",
            z.pairs, z.p2_messages
        ));
        s.columns = ("TLS (wss)", "plain (ws)");
        let [p1_plain, p1_tls] = &p1;
        let [p2_plain, p2_tls] = &p2;
        let rate = |f: &Option<Flow>| f.as_ref().filter(|f| f.complete).map(|f| f.rate);
        compare(
            &mut s,
            "P2 delivered messages/s",
            rate(p2_tls),
            rate(p2_plain),
            per_sec,
        );
        let p50 = |f: &Option<Flow>| f.as_ref().map(|f| f.latency.p50_ms);
        let p99 = |f: &Option<Flow>| f.as_ref().map(|f| f.latency.p99_ms);
        compare(&mut s, "P1 latency p50", p50(p1_tls), p50(p1_plain), ms);
        compare(&mut s, "P1 latency p99", p99(p1_tls), p99(p1_plain), ms);
        let p2_met = match (rate(p2_tls), rate(p2_plain)) {
            (Some(t), Some(p)) => Some(t >= 0.85 * p),
            _ => None,
        };
        s.check(
            "TLS costs at most 15% of P2",
            format!(
                "TLS {} vs plain {}",
                rate(p2_tls).map(per_sec).unwrap_or("-".into()),
                rate(p2_plain).map(per_sec).unwrap_or("-".into())
            ),
            p2_met,
        );
        let p1_met = match (p99(p1_tls), p99(p1_plain)) {
            (Some(t), Some(p)) => Some(t - p <= 0.1),
            _ => None,
        };
        s.check(
            "TLS adds at most 0.1 ms to P1 p99",
            format!(
                "TLS {} vs plain {}",
                p99(p1_tls).map(ms).unwrap_or("-".into()),
                p99(p1_plain).map(ms).unwrap_or("-".into())
            ),
            p1_met,
        );
        s.data = serde_json::json!({
            "p1": { "plain": p1_plain, "tls": p1_tls },
            "p2": { "plain": p2_plain, "tls": p2_tls },
        });
        s
    }

    async fn p1(&mut self) -> Section {
        let count = self.sizes.p1_messages;
        let (filler, timeout) = (self.filler.clone(), self.timeout);
        let (l, w) = self
            .both("p1", async |t: &mut Target| {
                workloads::p1(t, count, &filler, timeout).await
            })
            .await;
        let mut s = Section::new(format!(
            "P1 latency: 2 users, one DM, {count} messages one at a time"
        ));
        flow_rows(&mut s, None, value(&l), value(&w));
        // For reading P1: a message is delivered only once durable, and one durable
        // commit on this disk costs this much.
        let commit = if self.cli.limits() {
            let dir = self.dir("storage-p1");
            let filler = self.filler.clone();
            let runs = vec![(200, 1)];
            tokio::task::spawn_blocking(move || storage::measure(&dir, 1, &runs, &filler))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r)
                .ok()
                .and_then(|mut runs| runs.pop())
        } else {
            None
        };
        if let Some(run) = &commit {
            s.row(
                "one durable commit p50",
                None,
                Some(ms(run.commit.p50_ms)),
                None,
            );
            s.row(
                "one durable commit p99",
                None,
                Some(ms(run.commit.p99_ms)),
                None,
            );
            s.note("(a commit: one message's rows in one transaction, with the server's synchronous setting: the floor under lanchat's P1)");
        }
        note_side(&mut s, Side::Lanchat, &l, |f| Some(f));
        note_side(&mut s, Side::Wire, &w, |f| Some(f));
        p1_check(&mut s, "P1 p99 ≤ 3 × wire p99", value(&l), value(&w));
        s.data = serde_json::json!({ "lanchat": value(&l), "wire": value(&w), "commit": commit });
        s
    }

    async fn p2(&mut self) -> Section {
        let z = &self.sizes;
        let plan = self.p2_plan();
        let (filler, timeout) = (self.filler.clone(), self.timeout);
        let (l, w) = self
            .both("p2", async |t: &mut Target| {
                workloads::throughput(t, &plan, &filler, timeout).await
            })
            .await;
        let mut s = Section::new(format!(
            "P2 DM throughput: {} pairs × {} messages, ≤ {} in flight per sender",
            z.pairs, z.p2_messages, z.p2_window
        ));
        flow_rows(&mut s, Some("delivered messages/s"), value(&l), value(&w));
        note_side(&mut s, Side::Lanchat, &l, |f| Some(f));
        note_side(&mut s, Side::Wire, &w, |f| Some(f));

        let storage = if self.cli.limits() {
            Some(
                self.storage_runs(z.pairs, z.storage_rows, z.pairs * z.p2_window)
                    .await,
            )
        } else {
            None
        };
        let storage_limit = storage_rows(&mut s, &storage);
        let wire_rate = value(&w).filter(|f| f.complete).map(|f| f.rate);
        let limit = match (wire_rate, storage_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        };
        let lanchat_rate = value(&l).filter(|f| f.complete).map(|f| f.rate);
        s.row(
            "min(wire, storage) limit",
            lanchat_rate.map(per_sec),
            limit.map(per_sec),
            ratio(lanchat_rate, limit),
        );
        let met = match (lanchat_rate, limit) {
            (Some(l), Some(m)) => Some(l >= 0.5 * m),
            _ => None,
        };
        s.check(
            "P2 msgs/s ≥ 0.5 × min(wire, storage)",
            format!(
                "lanchat {} vs 0.5 × {}",
                lanchat_rate.map(per_sec).unwrap_or("-".into()),
                limit.map(per_sec).unwrap_or("-".into())
            ),
            met,
        );
        s.data = serde_json::json!({
            "lanchat": value(&l), "wire": value(&w),
            "storage": storage.as_ref().and_then(|r| r.as_ref().ok()),
        });
        s
    }

    /// The storage limit at the workload's batch size (what a group-committing
    /// writer could batch: the messages in flight, at most the writer's 512), and
    /// unbatched (one commit per message) for reference.
    async fn storage_runs(
        &self,
        pairs: usize,
        rows: usize,
        in_flight: usize,
    ) -> Res<Vec<storage::Storage>> {
        let batch = in_flight.clamp(1, 512);
        let runs = vec![(rows, batch), ((rows / 10).clamp(50, 1000), 1)];
        let dir = self.dir("storage");
        let filler = self.filler.clone();
        println!("  storage limit ...");
        tokio::task::spawn_blocking(move || storage::measure(&dir, pairs, &runs, &filler))
            .await
            .map_err(|e| e.to_string())?
    }

    async fn storage_only(&mut self) -> Section {
        let z = &self.sizes;
        let mut s = Section::new(format!(
            "Storage limit: {} message rows over {} DMs",
            z.storage_rows, z.pairs
        ));
        let storage = Some(
            self.storage_runs(z.pairs, z.storage_rows, z.pairs * z.p2_window)
                .await,
        );
        storage_rows(&mut s, &storage);
        s.data = serde_json::json!({ "storage": storage.as_ref().and_then(|r| r.as_ref().ok()) });
        s
    }

    async fn p3(&mut self) -> Section {
        let z = &self.sizes;
        let plan = Plan {
            room_sizes: vec![z.members],
            senders: z.senders,
            messages: z.p3_messages,
            window: z.p3_window,
        };
        let (filler, timeout) = (self.filler.clone(), self.timeout);
        let (l, w) = self
            .both("p3", async |t: &mut Target| {
                workloads::throughput(t, &plan, &filler, timeout).await
            })
            .await;
        let mut s = Section::new(format!(
            "P3 group fan-out: {} members, {} senders × {} messages, ≤ {} in flight each",
            z.members, z.senders, z.p3_messages, z.p3_window
        ));
        flow_rows(&mut s, Some("deliveries/s"), value(&l), value(&w));
        note_side(&mut s, Side::Lanchat, &l, |f| Some(f));
        note_side(&mut s, Side::Wire, &w, |f| Some(f));
        let lanchat_rate = value(&l).filter(|f| f.complete).map(|f| f.rate);
        let wire_rate = value(&w).filter(|f| f.complete).map(|f| f.rate);
        let met = match (lanchat_rate, wire_rate) {
            (Some(l), Some(w)) => Some(l >= 0.5 * w),
            _ => None,
        };
        s.check(
            "P3 deliveries/s ≥ 0.5 × wire",
            format!(
                "lanchat {} vs 0.5 × {}",
                lanchat_rate.map(per_sec).unwrap_or("-".into()),
                wire_rate.map(per_sec).unwrap_or("-".into())
            ),
            met,
        );
        s.data = flow_data(&l, &w);
        s
    }

    async fn c10k(&mut self) -> Section {
        let z = &self.sizes;
        let (count, per_user, p1_messages) = (z.conns, z.conns_per_user, z.p1_messages);
        let (filler, timeout) = (self.filler.clone(), self.timeout);
        let (l, w) = self
            .both("c10k", async |t: &mut Target| {
                workloads::c10k(t, count, per_user, p1_messages, &filler, timeout).await
            })
            .await;
        let mut s = Section::new(format!(
            "C10K: {count} idle authenticated WebSockets, then P1 ({p1_messages} messages) while held"
        ));
        let (li, wi) = (value(&l), value(&w));
        let get = |i: Option<&Idle>, pick: fn(&Idle) -> f64| i.map(pick);
        compare(
            &mut s,
            "server RSS per connection",
            get(li, |i| i.bytes_per_connection),
            get(wi, |i| i.bytes_per_connection),
            |b| format!("{:.1} KiB", b / 1024.0),
        );
        compare(
            &mut s,
            "server RSS with all connected",
            get(li, |i| i.rss_after_kib as f64),
            get(wi, |i| i.rss_after_kib as f64),
            kib,
        );
        compare(
            &mut s,
            "time to connect all",
            get(li, |i| i.connect_secs),
            get(wi, |i| i.connect_secs),
            secs,
        );
        compare(
            &mut s,
            "server CPU, 2 s idle",
            get(li, |i| i.server_cpu_while_idle_secs),
            get(wi, |i| i.server_cpu_while_idle_secs),
            secs,
        );
        compare(
            &mut s,
            "connections lost",
            get(li, |i| i.lost as f64),
            get(wi, |i| i.lost as f64),
            thousands,
        );
        let (lp, wp) = (
            li.and_then(|i| i.p1.as_ref()),
            wi.and_then(|i| i.p1.as_ref()),
        );
        compare(
            &mut s,
            "P1 p50 while held",
            lp.map(|f| f.latency.p50_ms),
            wp.map(|f| f.latency.p50_ms),
            ms,
        );
        compare(
            &mut s,
            "P1 p99 while held",
            lp.map(|f| f.latency.p99_ms),
            wp.map(|f| f.latency.p99_ms),
            ms,
        );
        compare(
            &mut s,
            "P1 max while held",
            lp.map(|f| f.latency.max_ms),
            wp.map(|f| f.latency.max_ms),
            ms,
        );
        note_side(&mut s, Side::Lanchat, &l, |i| i.p1.as_ref());
        note_side(&mut s, Side::Wire, &w, |i| i.p1.as_ref());
        for (side, idle) in [(Side::Lanchat, li), (Side::Wire, wi)] {
            if let Some(err) = idle.and_then(|i| i.p1_error.as_ref()) {
                s.note(format!("{}: P1 while held FAILED: {err}", side.label()));
            }
        }
        let per_conn = li.map(|i| i.bytes_per_connection);
        s.check(
            "C10K ≤ 32 KiB RSS per idle connection",
            format!(
                "lanchat {}",
                per_conn
                    .map(|b| format!("{:.1} KiB", b / 1024.0))
                    .unwrap_or("-".into())
            ),
            per_conn.map(|b| b <= 32.0 * 1024.0),
        );
        p1_check(
            &mut s,
            "C10K: P1 p99 ≤ 3 × wire p99 (both with idle load)",
            lp,
            wp,
        );
        s.data = serde_json::json!({ "lanchat": li, "wire": wi });
        s
    }

    async fn cold(&mut self) -> Section {
        let z = &self.sizes;
        let mut s = Section::new(format!(
            "Cold paths: {} messages, a user in {} conversations",
            thousands(z.cold_messages as f64),
            z.cold_conversations
        ));
        if !self.cli.lanchat() {
            s.note("lanchat: not run (--side); cold paths have no limit side");
            return s;
        }
        println!("  cold: seeding ...");
        let result = cold::run(
            &self.binary,
            self.dir("cold-lanchat"),
            z.cold_messages,
            z.cold_conversations,
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("lanchat-bench-cache"),
            self.cli.reseed,
        )
        .await;
        let cold = match result {
            Ok(cold) => cold,
            Err(err) => {
                s.note(format!("lanchat: FAILED: {err}"));
                for target in [
                    "history page ≤ 5 ms",
                    "search ≤ 50 ms",
                    "start-up to healthy ≤ 200 ms",
                ] {
                    s.check(target, "-", None);
                }
                return s;
            }
        };
        let starts: Vec<String> = cold.startups_ms.iter().map(|&v| ms(v)).collect();
        s.row(
            "start-up to healthy (median)",
            Some(ms(cold.startup_median_ms)),
            None,
            None,
        );
        s.note(format!("start-ups: {}", starts.join(", ")));
        let timed_row = |s: &mut Section, t: &cold::Timed| {
            s.row(
                format!("{} p50", t.name),
                Some(ms(t.latency.p50_ms)),
                None,
                None,
            );
            s.row(
                format!("{} p99", t.name),
                Some(ms(t.latency.p99_ms)),
                None,
                None,
            );
            s.note(format!(
                "{}: first request {}, {} items, GET {}",
                t.name,
                ms(t.first_ms),
                t.items,
                t.path
            ));
        };
        for t in &cold.history {
            timed_row(&mut s, t);
        }
        if let Some(t) = &cold.conversation_list {
            timed_row(&mut s, t);
        }
        for t in &cold.search {
            timed_row(&mut s, t);
        }
        for err in &cold.errors {
            s.note(format!("lanchat: FAILED: {err}"));
        }
        let worst = |list: &[cold::Timed]| {
            list.iter()
                .map(|t| t.latency.p99_ms)
                .fold(None, |acc: Option<f64>, v| {
                    Some(acc.map_or(v, |a| a.max(v)))
                })
        };
        let history = worst(&cold.history).filter(|_| cold.history.len() == 3);
        s.check(
            "history page ≤ 5 ms",
            format!("worst p99 {}", history.map(ms).unwrap_or("-".into())),
            history.map(|v| v <= 5.0),
        );
        let search = worst(&cold.search).filter(|_| cold.search.len() == cold.search_queries);
        s.check(
            "search ≤ 50 ms",
            format!("worst p99 {}", search.map(ms).unwrap_or("-".into())),
            search.map(|v| v <= 50.0),
        );
        s.check(
            "start-up to healthy ≤ 200 ms",
            format!("median {}", ms(cold.startup_median_ms)),
            Some(cold.startup_median_ms <= 200.0),
        );
        s.data = serde_json::to_value(&cold).unwrap_or_default();
        s
    }
}

fn p1_check(s: &mut Section, target: &str, l: Option<&Flow>, w: Option<&Flow>) {
    let (lp, wp) = (
        l.filter(|f| f.complete).map(|f| f.latency.p99_ms),
        w.filter(|f| f.complete).map(|f| f.latency.p99_ms),
    );
    s.check(
        target,
        format!(
            "lanchat {} vs 3 × {}",
            lp.map(ms).unwrap_or("-".into()),
            wp.map(ms).unwrap_or("-".into())
        ),
        match (lp, wp) {
            (Some(l), Some(w)) => Some(l <= 3.0 * w),
            _ => None,
        },
    );
}

/// Prints the storage runs; returns the batched rate (the storage limit).
fn storage_rows(s: &mut Section, storage: &Outcome<Vec<storage::Storage>>) -> Option<f64> {
    match storage {
        None => None,
        Some(Err(err)) => {
            s.note(format!("storage limit: FAILED: {err}"));
            None
        }
        Some(Ok(runs)) => {
            for run in runs {
                s.row(
                    format!("storage limit, batch {}", run.batch),
                    None,
                    Some(per_sec(run.rows_per_sec)),
                    None,
                );
                s.note(format!(
                    "storage, batch {}: {} rows in {} transactions, {:.2} s; a transaction p50 {}, p99 {}",
                    run.batch,
                    run.rows,
                    run.transactions,
                    run.secs,
                    ms(run.commit.p50_ms),
                    ms(run.commit.p99_ms)
                ));
            }
            runs.first().map(|r| r.rows_per_sec)
        }
    }
}
