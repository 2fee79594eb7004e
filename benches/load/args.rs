//! Command-line options: which workloads, at which sizes, against which side.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Workload {
    /// Latency: 2 users, one DM, messages one at a time.
    P1,
    /// DM throughput: pairs of users, pipelined senders.
    P2,
    /// Group fan-out: one group, a few pipelined senders.
    P3,
    /// Many idle authenticated WebSockets, then P1 while they are held.
    C10k,
    /// History, conversation list, search and start-up on a large database.
    Cold,
    /// The storage limit alone (P2 measures it too).
    Storage,
}

/// Which servers to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sides {
    /// lanchat and the limits (the default: ratios need both).
    Both,
    /// Only the lanchat server.
    Lanchat,
    /// Only the limits (wire server, storage).
    Limits,
}

#[derive(Debug, Parser)]
#[command(
    name = "load",
    about = "lanchat load benchmark: drives the release server and the machine's own limits \
             (a minimal WebSocket forwarder, raw SQLite inserts) with the same workloads.",
    after_help = "Run it with `cargo bench --bench load -- [OPTIONS] [WORKLOADS]...`. \
                  With no workload, all run at the sizes of issue 5. See docs/PERFORMANCE.md."
)]
pub struct Cli {
    /// Workloads to run (default: all).
    #[arg(value_enum)]
    pub workloads: Vec<Workload>,
    /// Tiny sizes, for a smoke test in seconds. Explicit size options still win.
    #[arg(long)]
    pub quick: bool,
    /// Which side to drive.
    #[arg(long, value_enum, default_value = "both")]
    pub side: Sides,

    /// P1 (and C10K's P1): messages sent one at a time [1000; quick 50].
    #[arg(long, value_name = "N")]
    pub p1_messages: Option<usize>,
    /// P2: DM pairs [50; quick 5].
    #[arg(long, value_name = "N")]
    pub pairs: Option<usize>,
    /// P2: messages per sender [200; quick 20].
    #[arg(long, value_name = "N")]
    pub p2_messages: Option<usize>,
    /// P2: messages in flight per sender (each waits for its ack) [20].
    #[arg(long, value_name = "N")]
    pub p2_window: Option<usize>,
    /// P3: members of the group, all connected [100; quick 10].
    #[arg(long, value_name = "N")]
    pub members: Option<usize>,
    /// P3: members that send [5; quick 2].
    #[arg(long, value_name = "N")]
    pub senders: Option<usize>,
    /// P3: messages per sender [100; quick 10].
    #[arg(long, value_name = "N")]
    pub p3_messages: Option<usize>,
    /// P3: messages in flight per sender [10].
    #[arg(long, value_name = "N")]
    pub p3_window: Option<usize>,
    /// C10K: idle authenticated connections [10000; quick 200].
    #[arg(long, value_name = "N")]
    pub conns: Option<usize>,
    /// C10K: WebSockets per registered user (the server's per-user cap is raised) [500].
    #[arg(long, value_name = "N")]
    pub conns_per_user: Option<usize>,
    /// Cold paths: messages seeded into the database [1000000; quick 20000].
    #[arg(long, value_name = "N")]
    pub cold_messages: Option<usize>,
    /// Cold paths: conversations the measured user is in [200; quick 20].
    #[arg(long, value_name = "N")]
    pub cold_conversations: Option<usize>,
    /// Storage limit: rows inserted per batch size [P2's message count].
    #[arg(long, value_name = "N")]
    pub storage_rows: Option<usize>,
    /// Approximate message body size in bytes (the send time is part of it).
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub body_bytes: usize,

    /// The lanchat binary to run [the one cargo built with this bench].
    #[arg(long, value_name = "PATH", env = "LANCHAT_BENCH_SERVER")]
    pub server: Option<PathBuf>,
    /// Where data directories are made [target/tmp/lanchat-bench-PID].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// Cold paths: seed the database again instead of reusing the cached seed
    /// (target/tmp/lanchat-bench-cache/, keyed by sizes and schema).
    #[arg(long)]
    pub reseed: bool,
    /// Keep the data directories and server logs after the run.
    #[arg(long)]
    pub keep: bool,
    /// Give up on one measured phase after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    /// Measure P1 and P2 over TLS (wss://) beside plain ws://, each on a fresh
    /// lanchat server, in a section of its own. Alone it runs only that.
    #[arg(long)]
    pub tls: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Added by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

/// The sizes in force after `--quick` and explicit options.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sizes {
    pub p1_messages: usize,
    pub pairs: usize,
    pub p2_messages: usize,
    pub p2_window: usize,
    pub members: usize,
    pub senders: usize,
    pub p3_messages: usize,
    pub p3_window: usize,
    pub conns: usize,
    pub conns_per_user: usize,
    pub cold_messages: usize,
    pub cold_conversations: usize,
    pub storage_rows: usize,
    pub body_bytes: usize,
}

impl Cli {
    pub fn sizes(&self) -> Sizes {
        let q = self.quick;
        let pick = |given: Option<usize>, full: usize, quick: usize| {
            given.unwrap_or(if q { quick } else { full }).max(1)
        };
        let pairs = pick(self.pairs, 50, 5);
        let p2_messages = pick(self.p2_messages, 200, 20);
        let members = pick(self.members, 100, 10).max(2);
        Sizes {
            p1_messages: pick(self.p1_messages, 1000, 50),
            pairs,
            p2_messages,
            p2_window: pick(self.p2_window, 20, 20),
            members,
            senders: pick(self.senders, 5, 2).min(members),
            p3_messages: pick(self.p3_messages, 100, 10),
            p3_window: pick(self.p3_window, 10, 10),
            conns: pick(self.conns, 10_000, 200),
            conns_per_user: pick(self.conns_per_user, 500, 100),
            cold_messages: pick(self.cold_messages, 1_000_000, 20_000),
            cold_conversations: pick(self.cold_conversations, 200, 20).max(2),
            storage_rows: pick(self.storage_rows, pairs * p2_messages, pairs * p2_messages),
            body_bytes: self.body_bytes.clamp(24, 8000),
        }
    }

    /// The workloads to run, in a fixed order.
    pub fn workloads(&self) -> Vec<Workload> {
        let mut list = if self.workloads.is_empty() {
            vec![
                Workload::P1,
                Workload::P2,
                Workload::P3,
                Workload::C10k,
                Workload::Cold,
            ]
        } else {
            self.workloads.clone()
        };
        list.sort();
        list.dedup();
        // P2 measures the storage limit itself.
        if list.contains(&Workload::P2) {
            list.retain(|w| *w != Workload::Storage);
        }
        list
    }

    pub fn lanchat(&self) -> bool {
        self.side != Sides::Limits
    }

    pub fn limits(&self) -> bool {
        self.side != Sides::Lanchat
    }
}
