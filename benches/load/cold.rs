//! Cold paths at scale: a data directory seeded with SQL (the real schema through
//! the embedded migrations) before the server starts, then timed requests.
//!
//! The seeded world: one measured user (`cold_me`) in `conversations`
//! conversations (a tenth are 20-member groups, the rest DMs), plus half as many
//! DMs between other users; `messages` messages, 30 % of them in the first group
//! (the deep history), the rest spread evenly, ids interleaved over time (30 s
//! apart, ending now); bodies of 4–20 words drawn Zipf-like from a vocabulary of
//! office words and ~8,000 made-up ones, and one message in five in Chinese or
//! Japanese: 4–20 words run together without spaces, drawn Zipf-like from
//! common office words and ~2,500 made-up two-character ones. The event log holds the newest 10,000
//! `message.created` events, as a server that prunes to its default retention
//! would. The read pointers leave a few unread messages per conversation.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::params;
use serde::Serialize;

use crate::servers::{self, Api, ChildServer, Res};
use crate::stats::{self, Latency};

const ME: &str = "cold_me";
const PASSWORD: &str = "bench-password";
const EVENTS_KEPT: usize = 10_000;
const COMMON: &[&str] = &[
    "hello", "the", "meeting", "report", "lunch", "project", "deadline", "review", "please",
    "thanks", "update", "coffee", "printer", "budget", "client", "schedule", "today", "tomorrow",
    "status", "call", "team", "office", "invoice", "draft", "slides", "server", "backup",
    "holiday", "question", "answer",
];
/// Office words in Chinese and Japanese, for the messages written without spaces.
const COMMON_CJK: &[&str] = &[
    "会议",
    "报告",
    "午饭",
    "项目",
    "截止",
    "审核",
    "请",
    "谢谢",
    "更新",
    "咖啡",
    "打印机",
    "预算",
    "客户",
    "日程",
    "今天",
    "明天",
    "状态",
    "电话",
    "团队",
    "办公室",
    "发票",
    "草稿",
    "幻灯片",
    "服务器",
    "备份",
    "假期",
    "问题",
    "答案",
    "会議",
    "確認",
    "プロジェクト",
    "お疲れ様です",
];
/// Characters the made-up words are built from (pairs of them). None of the
/// characters of [`ABSENT_CJK`] is among them.
const HAN: &str = "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话";
/// A word no seeded message contains: the search that reads the most.
const ABSENT_CJK: &str = "鳄鱼";
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ve", "da", "gor", "bel", "tin", "sa", "qu",
    "ze", "fa", "jo", "wi", "xu",
];

/// A small deterministic generator (xorshift64*), so every run seeds the same data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub fn vocabulary() -> Vec<String> {
    let mut words: Vec<String> = COMMON.iter().map(|w| w.to_string()).collect();
    let n = SYLLABLES.len();
    for i in 0..n * n * n {
        let (a, b, c) = (i / (n * n), (i / n) % n, i % n);
        words.push(format!("{}{}{}", SYLLABLES[a], SYLLABLES[b], SYLLABLES[c]));
    }
    words
}

/// The Chinese and Japanese vocabulary: [`COMMON_CJK`], then every pair of
/// [`HAN`] characters.
pub fn cjk_vocabulary() -> Vec<String> {
    let mut words: Vec<String> = COMMON_CJK.iter().map(|w| w.to_string()).collect();
    let chars: Vec<char> = HAN.chars().collect();
    for a in &chars {
        for b in &chars {
            words.push(format!("{a}{b}"));
        }
    }
    words
}

/// A word index, log-uniform (Zipf with s = 1): rank r has probability ∝ 1/r.
fn zipf(rng: &mut Rng, n: usize) -> usize {
    let index = (n as f64).powf(rng.unit()) as usize;
    index.saturating_sub(1).min(n - 1)
}

/// What the seeding made, for the queries.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Seeded {
    pub messages: usize,
    pub conversations: usize,
    pub my_conversations: usize,
    pub users: usize,
    pub big_conversation: i64,
    pub big_messages: usize,
    /// A message id 1 % into the big conversation's history (oldest side).
    pub deep_before: i64,
    /// A message id half-way into it.
    pub middle_before: i64,
    pub rare_word: String,
    pub mid_word: String,
    pub cjk_mid_word: String,
    pub cjk_rare_word: String,
    pub seed_secs: f64,
    pub database_mib: f64,
}

/// Seeds `data_dir/lanchat.db`.
pub fn seed(data_dir: &Path, messages: usize, my_conversations: usize) -> Res<Seeded> {
    let started = Instant::now();
    let e = |e: rusqlite::Error| e.to_string();
    std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
    let path = data_dir.join("lanchat.db");
    let mut conn = lanchat::db::open_writer_connection(&path).map_err(|e| e.to_string())?;
    lanchat::db::migrations::migrate(&mut conn).map_err(|e| e.to_string())?;
    // Seeding only: no fsync per transaction, a big cache.
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")
        .map_err(e)?;

    let words = vocabulary();
    let cjk_words = cjk_vocabulary();
    let mut rng = Rng::new(0x5eed);
    let hash = lanchat::auth::password::hash(PASSWORD)?;
    let now = lanchat::db::now_ms();
    let groups = (my_conversations / 10).max(1);
    let dms = my_conversations - groups;
    let other_dms = my_conversations / 2;
    let users = dms + 1 + other_dms * 2 + 20;
    let conversations = my_conversations + other_dms;
    let start_ms = now - messages as i64 * 30_000;

    // Members of each conversation (user ids); user 1 is the measured user.
    let mut members: Vec<Vec<i64>> = Vec::with_capacity(conversations);
    for _ in 0..groups {
        let mut list = vec![1i64];
        while list.len() < 21 {
            let user = 2 + rng.below(users - 1) as i64;
            if !list.contains(&user) {
                list.push(user);
            }
        }
        members.push(list);
    }
    for peer in 0..dms {
        members.push(vec![1, peer as i64 + 2]);
    }
    for k in 0..other_dms {
        let a = (dms + 2 + 2 * k) as i64;
        members.push(vec![a, a + 1]);
    }

    let tx = conn.transaction().map_err(e)?;
    {
        let mut user = tx
            .prepare(
                "INSERT INTO users (id, username, display_name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(e)?;
        for id in 1..=users as i64 {
            let name = if id == 1 {
                ME.to_owned()
            } else {
                format!("cold_{id}")
            };
            user.execute(params![id, name, format!("User {id}"), hash, start_ms])
                .map_err(e)?;
        }
        let mut conversation = tx
            .prepare(
                "INSERT INTO conversations (id, kind, title, created_by, created_at, direct_key, last_activity_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)",
            )
            .map_err(e)?;
        let mut member = tx
            .prepare(
                "INSERT INTO members (conversation_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(e)?;
        for (index, list) in members.iter().enumerate() {
            let id = index as i64 + 1;
            let group = list.len() > 2;
            let (kind, title, key) = if group {
                ("group", format!("Group {id}"), None)
            } else {
                let (a, b) = (list[0].min(list[1]), list[0].max(list[1]));
                ("direct", String::new(), Some(format!("{a}:{b}")))
            };
            conversation
                .execute(params![id, kind, title, list[0], start_ms, key])
                .map_err(e)?;
            for (n, user) in list.iter().enumerate() {
                let role = if group && n == 0 { "owner" } else { "member" };
                member
                    .execute(params![id, user, role, start_ms])
                    .map_err(e)?;
            }
        }
    }
    tx.commit().map_err(e)?;

    // Messages, in transactions of 50,000.
    let mut last_ids: Vec<Vec<i64>> = vec![Vec::new(); conversations];
    let mut big_ids: Vec<i64> = Vec::new();
    let mut done = 0;
    while done < messages {
        let end = (done + 50_000).min(messages);
        let tx = conn.transaction().map_err(e)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO messages (conversation_id, sender_id, kind, body, client_id, mentions, created_at)
                     VALUES (?1, ?2, 'text', ?3, NULL, '[]', ?4)",
                )
                .map_err(e)?;
            let mut event = tx
                .prepare_cached(
                    "INSERT INTO events (type, conversation_id, actor_id, payload, created_at)
                     VALUES ('message.created', ?1, ?2, ?3, ?4)",
                )
                .map_err(e)?;
            let mut body = String::with_capacity(200);
            for i in done..end {
                let conversation = if rng.unit() < 0.3 {
                    0
                } else {
                    rng.below(conversations)
                };
                let list = &members[conversation];
                let sender = list[rng.below(list.len())];
                body.clear();
                if rng.unit() < 0.2 {
                    for w in 0..4 + rng.below(17) {
                        if w > 0 && w % 6 == 0 {
                            body.push('，');
                        }
                        body.push_str(&cjk_words[zipf(&mut rng, cjk_words.len())]);
                    }
                    body.push('。');
                } else {
                    for w in 0..4 + rng.below(17) {
                        if w > 0 {
                            body.push(' ');
                        }
                        body.push_str(&words[zipf(&mut rng, words.len())]);
                    }
                }
                let at = start_ms + i as i64 * 30_000;
                insert
                    .execute(params![conversation as i64 + 1, sender, body, at])
                    .map_err(e)?;
                let id = tx.last_insert_rowid();
                if conversation == 0 {
                    big_ids.push(id);
                }
                let last = &mut last_ids[conversation];
                last.push(id);
                if last.len() > 8 {
                    last.remove(0);
                }
                if messages - i <= EVENTS_KEPT {
                    let payload = serde_json::json!({
                        "type": "message.created",
                        "message": {"id": id, "conversation_id": conversation + 1, "sender_id": sender,
                            "body": body, "kind": "text", "client_id": null, "reply_to": null,
                            "attachments": [], "reactions": [], "mentions": [], "created_at": at,
                            "edited_at": null, "deleted_at": null},
                    })
                    .to_string();
                    event
                        .execute(params![conversation as i64 + 1, sender, payload, at])
                        .map_err(e)?;
                }
            }
        }
        tx.commit().map_err(e)?;
        done = end;
    }
    // The server indexes messages up to a thousand at a time; for a bulk seed, one
    // rebuild from the messages table is much faster. The watermark tells the
    // server all of them are in.
    lanchat::search::rebuild(&conn).map_err(e)?;

    // Last activity, and read pointers: the measured user has up to 5 unread
    // messages per conversation, everyone else has read everything.
    let tx = conn.transaction().map_err(e)?;
    for (index, last) in last_ids.iter().enumerate() {
        let Some(&newest) = last.last() else { continue };
        let id = index as i64 + 1;
        tx.execute(
            "UPDATE conversations SET last_message_id = ?2,
                 last_activity_at = (SELECT created_at FROM messages WHERE id = ?2) WHERE id = ?1",
            params![id, newest],
        )
        .map_err(e)?;
        let mine = last[last.len().saturating_sub(6)];
        tx.execute(
            "UPDATE members SET last_read_id = CASE user_id WHEN 1 THEN ?2 ELSE ?3 END,
                 last_delivered_id = ?3 WHERE conversation_id = ?1",
            params![id, mine, newest],
        )
        .map_err(e)?;
    }
    tx.commit().map_err(e)?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .map_err(e)?;
    drop(conn);

    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let at = |fraction: f64| {
        big_ids
            .get((big_ids.len() as f64 * fraction) as usize)
            .copied()
            .unwrap_or(1)
    };
    Ok(Seeded {
        messages,
        conversations,
        my_conversations,
        users,
        big_conversation: 1,
        big_messages: big_ids.len(),
        deep_before: at(0.01),
        middle_before: at(0.5),
        rare_word: words[words.len() - 10].clone(),
        mid_word: words[COMMON.len() + 40].clone(),
        cjk_mid_word: cjk_words[COMMON_CJK.len() + 40].clone(),
        cjk_rare_word: cjk_words[cjk_words.len() - 10].clone(),
        seed_secs: started.elapsed().as_secs_f64(),
        database_mib: bytes as f64 / 1048576.0,
    })
}

/// One timed request, repeated.
#[derive(Debug, Clone, Serialize)]
pub struct Timed {
    pub name: String,
    pub path: String,
    /// The first request after start-up.
    pub first_ms: f64,
    /// The repeats after it.
    pub latency: Latency,
    /// Items in the answer (to show the query found something).
    pub items: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cold {
    pub seeded: Seeded,
    /// How many search queries were meant to run (some may have failed).
    pub search_queries: usize,
    pub startups_ms: Vec<f64>,
    pub startup_median_ms: f64,
    pub history: Vec<Timed>,
    pub conversation_list: Option<Timed>,
    pub search: Vec<Timed>,
    pub errors: Vec<String>,
}

async fn time_get(api: &Api, token: &str, name: &str, path: String, repeats: usize) -> Res<Timed> {
    let (first, value) = api.timed_get(token, &path).await?;
    let items = value["items"].as_array().map(|a| a.len()).unwrap_or(0);
    let mut samples = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        samples.push(api.timed_get(token, &path).await?.0);
    }
    Ok(Timed {
        name: name.to_owned(),
        path,
        first_ms: first.as_secs_f64() * 1e3,
        latency: Latency::from_durations(&samples),
        items,
    })
}

fn encode(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

/// Bump when the seeded world changes, so cached databases are not reused.
const SEED_VERSION: u32 = 2;

/// The cache file for a seeded database: keyed by the sizes, the seed version and
/// the embedded migrations' checksums (a schema change means a new seed).
fn cache_path(cache_dir: &Path, messages: usize, my_conversations: usize) -> Res<PathBuf> {
    let migrations = lanchat::db::migrations::embedded().map_err(|e| e.to_string())?;
    // FNV-1a over the checksums: a short, stable key.
    let mut key: u64 = 0xcbf2_9ce4_8422_2325;
    for migration in &migrations {
        for byte in migration.checksum.bytes() {
            key ^= byte as u64;
            key = key.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(cache_dir.join(format!(
        "cold-v{SEED_VERSION}-{messages}-{my_conversations}-{key:016x}.db"
    )))
}

/// Fills `data_dir/lanchat.db`: from the cache when it holds this seed (and
/// `reseed` is off), else by seeding and then caching the result.
fn seed_or_reuse(
    data_dir: &Path,
    messages: usize,
    my_conversations: usize,
    cache_dir: &Path,
    reseed: bool,
) -> Res<(Seeded, bool)> {
    let cached = cache_path(cache_dir, messages, my_conversations)?;
    let meta = cached.with_extension("json");
    let target = data_dir.join("lanchat.db");
    if !reseed && cached.is_file() && meta.is_file() {
        let seeded = std::fs::read_to_string(&meta)
            .ok()
            .and_then(|text| serde_json::from_str::<Seeded>(&text).ok());
        if let Some(seeded) = seeded {
            std::fs::create_dir_all(data_dir).map_err(|e| e.to_string())?;
            std::fs::copy(&cached, &target).map_err(|e| format!("{}: {e}", cached.display()))?;
            return Ok((seeded, true));
        }
    }
    let seeded = seed(data_dir, messages, my_conversations)?;
    // Caching is a convenience: a failure only means the next run seeds again.
    let _ = std::fs::create_dir_all(cache_dir);
    let partial = cached.with_extension("partial");
    if std::fs::copy(&target, &partial).is_ok() && std::fs::rename(&partial, &cached).is_ok() {
        let _ = std::fs::write(&meta, serde_json::to_string(&seeded).unwrap_or_default());
    }
    Ok((seeded, false))
}

/// Seeds (or reuses a cached seed), measures start-up three times, then the requests.
pub async fn run(
    binary: &Path,
    data_dir: PathBuf,
    messages: usize,
    my_conversations: usize,
    cache_dir: PathBuf,
    reseed: bool,
) -> Res<Cold> {
    let seed_dir = data_dir.clone();
    let (seeded, reused) = tokio::task::spawn_blocking(move || {
        seed_or_reuse(&seed_dir, messages, my_conversations, &cache_dir, reseed)
    })
    .await
    .map_err(|e| e.to_string())??;
    if reused {
        println!(
            "  reused a cached seed of {} messages in {} conversations ({:.0} MiB); --reseed seeds again",
            stats::thousands(seeded.messages as f64),
            seeded.conversations,
            seeded.database_mib,
        );
    } else {
        println!(
            "  seeded {} messages in {} conversations ({:.0} MiB) in {:.1} s",
            stats::thousands(seeded.messages as f64),
            seeded.conversations,
            seeded.database_mib,
            seeded.seed_secs
        );
    }

    let mut startups_ms = Vec::new();
    let mut server: Option<ChildServer> = None;
    for _ in 0..3 {
        if let Some(running) = server.take() {
            running.stop().await;
        }
        let started = servers::start_lanchat(binary, &data_dir).await?;
        startups_ms.push(started.startup.as_secs_f64() * 1e3);
        server = Some(started);
    }
    let server = server.ok_or("no server")?;
    let mut sorted = startups_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let startup_median_ms = sorted[sorted.len() / 2];

    let api = Api::new(server.addr);
    let mut errors = Vec::new();
    let searches = [
        ("search: frequent word", "meeting".to_owned()),
        ("search: mid word", seeded.mid_word.clone()),
        ("search: rare word", seeded.rare_word.clone()),
        ("search: prefix", "proj".to_owned()),
        ("search: two words", format!("budget {}", seeded.mid_word)),
        ("search: phrase", "\"status update\"".to_owned()),
        ("search: CJK frequent word", "会议".to_owned()),
        ("search: CJK mid word", seeded.cjk_mid_word.clone()),
        ("search: CJK rare word", seeded.cjk_rare_word.clone()),
        ("search: CJK absent word", ABSENT_CJK.to_owned()),
        ("search: CJK one character", "会".to_owned()),
        (
            "search: CJK and a word",
            format!("会议 {}", seeded.mid_word),
        ),
    ];
    let search_queries = searches.len();
    let outcome = async {
        let me = api.login(ME, PASSWORD).await?;
        let token = me.token.as_str();
        let big = seeded.big_conversation;
        let mut history = Vec::new();
        for (name, path) in [
            (
                "history: newest page",
                format!("/conversations/{big}/messages?limit=50"),
            ),
            (
                "history: page mid-way",
                format!(
                    "/conversations/{big}/messages?limit=50&before={}",
                    seeded.middle_before
                ),
            ),
            (
                "history: page deep (1 %)",
                format!(
                    "/conversations/{big}/messages?limit=50&before={}",
                    seeded.deep_before
                ),
            ),
        ] {
            match time_get(&api, token, name, path, 200).await {
                Ok(timed) => history.push(timed),
                Err(err) => errors.push(err),
            }
        }
        let conversation_list = match time_get(
            &api,
            token,
            "conversation list",
            "/conversations".to_owned(),
            50,
        )
        .await
        {
            Ok(timed) => Some(timed),
            Err(err) => {
                errors.push(err);
                None
            }
        };
        let mut search = Vec::new();
        for (name, q) in searches {
            match time_get(&api, token, name, format!("/search?q={}", encode(&q)), 30).await {
                Ok(timed) => search.push(timed),
                Err(err) => errors.push(err),
            }
        }
        Ok::<_, String>((history, conversation_list, search))
    }
    .await;
    let stop = tokio::time::timeout(Duration::from_secs(30), server.stop());
    let _ = stop.await;
    let (history, conversation_list, search) = match outcome {
        Ok(parts) => parts,
        Err(err) => {
            errors.push(err);
            (Vec::new(), None, Vec::new())
        }
    };
    Ok(Cold {
        seeded,
        search_queries,
        startups_ms,
        startup_median_ms,
        history,
        conversation_list,
        search,
        errors,
    })
}
