//! Message search: the query language, the SQL behind it, and highlighted
//! snippets.
//!
//! A query is words and `"quoted phrases"`. Each word finds words starting with
//! it (`hel` finds `hello`), a phrase finds those words in that order; all terms
//! must match. The text typed is never handed to FTS5's query syntax: it is cut
//! into terms here and each is quoted, so `AND`, `"`, `*`, `(`, `NEAR/`, `-x` or
//! `col:x` are just text and no query can fail.
//!
//! Languages written without spaces (Chinese, Japanese, Thai...) defeat the
//! word index: its tokenizer (`unicode61`) takes a whole run of such characters
//! as one "word", so `天气` is not found in `今天天气很好`. Those messages are
//! also indexed in `messages_cjk` by character pairs ([`grams`]: every pair of
//! neighbouring characters of a run, and the run's last character), the way
//! search engines index these scripts: a term of two or more characters is
//! found as the phrase of its pairs, a single character as a prefix. Pairs,
//! not the trigram tokenizer, because most Chinese words have two characters,
//! which a trigram index cannot find without a scan. The index only narrows
//! the candidates (newest first, a page at a time); a `LIKE` on those checks
//! the exact text, so a term mixing scripts (`rust入門`) is exact too.
//! Measured at 1M messages, one in five Chinese (cold-path bench,
//! docs/PERFORMANCE.md): 0.5–1.4 ms per search in those scripts, where the scan
//! took 2–3 s on the same shared machine; the index adds ~19 % to the database.
//! A search with both kinds of term is driven by the index with fewer matches
//! (`choose_driver`), the other looked up by rowid.
//!
//! The index (`messages_fts`, external content over `messages`) is kept by the
//! writer, off the commit path of a send: its background step ([`indexer`])
//! indexes new messages up to a thousand at a time and records how far it got in
//! `search_index_state.indexed_upto`. Messages up to that id are in the index
//! with their current text (edits and deletes of those update it in their own
//! transaction, [`is_indexed`]); later ones are not yet. A search first has
//! the writer catch up ([`needs_catch_up`]), so a message just sent is found.

use std::collections::HashMap;

use rusqlite::Connection;
use rusqlite::types::Value;
use serde::Serialize;

use crate::chat::messages::{self, Message};
use crate::error::{AppError, AppResult};

pub const MAX_QUERY_CHARS: usize = 500;
pub const MAX_TERMS: usize = 16;
/// Page size: the API's usual default and bounds (out-of-range values are clamped).
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 200;
/// Longest snippet, in characters (not counting the ellipses).
pub const SNIPPET_CHARS: usize = 200;
/// Characters shown before the first hit when a long message is cut.
const SNIPPET_LEAD: usize = 60;

/// Markers FTS5's `highlight()` puts around hits; bodies containing them get
/// their highlights from the substring pass only.
const OPEN: char = '\u{1}';
const CLOSE: char = '\u{2}';

/// One term of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// Words starting with this (FTS5 prefix query).
    Prefix(String),
    /// These words in this order (FTS5 phrase).
    Phrase(String),
    /// Text in a script written without spaces: found as a substring, through
    /// the character-pair index.
    Substring(String),
}

/// Adds a text message's body to the full-text index (and to the
/// character-pair index when it has characters of scripts without spaces).
pub fn index_body(conn: &Connection, message_id: i64, body: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO messages_fts (rowid, body) VALUES (?1, ?2)")?
        .execute(rusqlite::params![message_id, body])?;
    if let Some(grams) = grams(body) {
        conn.prepare_cached("INSERT INTO messages_cjk (rowid, grams) VALUES (?1, ?2)")?
            .execute(rusqlite::params![message_id, grams])?;
    }
    Ok(())
}

/// Removes a body that [`index_body`] added (FTS5's external-content delete needs
/// the indexed text itself).
pub fn unindex_body(conn: &Connection, message_id: i64, body: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', ?1, ?2)",
    )?
    .execute(rusqlite::params![message_id, body])?;
    if grams(body).is_some() {
        conn.prepare_cached("DELETE FROM messages_cjk WHERE rowid = ?1")?
            .execute([message_id])?;
    }
    Ok(())
}

/// Indexes every message from scratch and moves the watermark to the newest:
/// for tools that fill a database in bulk (the benchmark's seed).
pub fn rebuild(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
         DELETE FROM messages_cjk;
         INSERT INTO messages_cjk (rowid, grams)
             SELECT id, lanchat_grams(body) FROM messages
             WHERE kind = 'text' AND deleted_at IS NULL AND lanchat_grams(body) IS NOT NULL;
         UPDATE search_index_state SET indexed_upto = COALESCE((SELECT MAX(id) FROM messages), 0);",
    )
}

/// A character as one token of the pair index: its code point in 5 hex digits
/// (every character [`is_unsegmented`] takes fits), so a pair is 10 digits and
/// a 5-digit prefix names its first character exactly.
fn gram_char(c: char, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(out, "{:05x}", c as u32);
}

/// The runs of characters of scripts without spaces in `text`.
fn unsegmented_runs(text: &str) -> impl Iterator<Item = Vec<char>> + '_ {
    text.split(|c: char| !is_unsegmented(c))
        .filter(|run| !run.is_empty())
        .map(|run| run.chars().collect())
}

/// What `messages_cjk` indexes of a body: for each run of characters of scripts
/// without spaces, every pair of neighbours and then the run's last character,
/// as space-separated tokens. `None` when the body has no such character.
pub fn grams(body: &str) -> Option<String> {
    let mut out = String::new();
    for run in unsegmented_runs(body) {
        for pair in run.windows(2) {
            gram_char(pair[0], &mut out);
            gram_char(pair[1], &mut out);
            out.push(' ');
        }
        if let Some(last) = run.last() {
            gram_char(*last, &mut out);
            out.push(' ');
        }
    }
    (!out.is_empty()).then(|| out.trim_end().to_owned())
}

/// Registers `lanchat_grams(text)` ([`grams`]) on a connection, for the SQL
/// that fills the pair index (a migration, [`rebuild`]).
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "lanchat_grams",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let body = ctx.get_raw(0).as_str().unwrap_or("");
            Ok(grams(body))
        },
    )
}

/// The pair index's MATCH expression for the substring terms: each run of a
/// term as the phrase of its pairs (a lone character: every pair starting with
/// it, or the run's last). `None` when there are no such terms.
pub fn gram_expression(terms: &[Term]) -> Option<String> {
    let mut parts = Vec::new();
    for term in terms {
        let Term::Substring(text) = term else {
            continue;
        };
        for run in unsegmented_runs(text) {
            let mut tokens = String::new();
            if let [only] = run.as_slice() {
                gram_char(*only, &mut tokens);
                parts.push(format!("\"{tokens}\"*"));
                continue;
            }
            for pair in run.windows(2) {
                if !tokens.is_empty() {
                    tokens.push(' ');
                }
                gram_char(pair[0], &mut tokens);
                gram_char(pair[1], &mut tokens);
            }
            parts.push(format!("\"{tokens}\""));
        }
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The last message id the index has taken in.
fn indexed_upto(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT indexed_upto FROM search_index_state WHERE id = 1")?
        .query_row([], |row| row.get(0))
}

/// Whether the index has taken in this message (and so must be told of its
/// edit or delete); a later message is indexed with whatever text it has then.
pub fn is_indexed(conn: &Connection, message_id: i64) -> rusqlite::Result<bool> {
    Ok(message_id <= indexed_upto(conn)?)
}

/// Indexes up to `limit` messages past the watermark (text messages not deleted;
/// the others are only stepped over) and moves it; says whether more remain. Runs
/// in the caller's transaction.
pub fn index_pending(conn: &Connection, limit: usize) -> rusqlite::Result<bool> {
    let from = indexed_upto(conn)?;
    let mut last = from;
    let mut seen = 0usize;
    let mut pending = conn.prepare_cached(
        "SELECT id, kind = 'text' AND deleted_at IS NULL, body FROM messages
         WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    // One row past the limit tells whether more remain.
    let mut rows = pending.query(rusqlite::params![from, limit as i64 + 1])?;
    let mut more = false;
    while let Some(row) = rows.next()? {
        if seen == limit {
            more = true;
            break;
        }
        let id: i64 = row.get(0)?;
        if row.get::<_, bool>(1)? {
            index_body(conn, id, row.get_ref(2)?.as_str()?)?;
        }
        last = id;
        seen += 1;
    }
    if last > from {
        conn.prepare_cached("UPDATE search_index_state SET indexed_upto = ?1 WHERE id = 1")?
            .execute([last])?;
    }
    Ok(more)
}

/// The writer's background step: [`index_pending`].
pub fn indexer() -> crate::db::BackgroundStep {
    Box::new(|conn, limit| Ok(index_pending(conn, limit)?))
}

/// Whether messages were committed that the index has not taken in yet (then a
/// search asks the writer to catch up first).
pub fn needs_catch_up(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT COALESCE((SELECT MAX(id) FROM messages), 0) > indexed_upto
         FROM search_index_state WHERE id = 1",
    )?
    .query_row([], |row| row.get(0))
}

/// Scripts written without spaces between words.
pub fn is_unsegmented(c: char) -> bool {
    matches!(c as u32,
        0x0E00..=0x0EFF       // Thai, Lao
        | 0x1000..=0x109F     // Myanmar
        | 0x1780..=0x17FF     // Khmer
        | 0x2E80..=0x2FDF     // CJK radicals
        | 0x3005..=0x3007     // 々 〆 〇
        | 0x3040..=0x30FF     // Hiragana, Katakana
        | 0x3100..=0x312F     // Bopomofo
        | 0x31F0..=0x31FF     // Katakana extensions
        | 0x3400..=0x4DBF     // CJK extension A
        | 0x4E00..=0x9FFF     // CJK unified ideographs
        | 0xF900..=0xFAFF     // CJK compatibility ideographs
        | 0xFF66..=0xFF9F     // half-width Katakana
        | 0x20000..=0x3FFFF   // CJK extensions B and later
    )
}

/// Cuts a query into terms. An empty query is a 400; a query with nothing
/// searchable in it (only punctuation) gives no terms, and so no results.
pub fn parse_query(q: &str) -> AppResult<Vec<Term>> {
    let q = q.trim();
    if q.is_empty() {
        return Err(AppError::validation("q", "type something to search for"));
    }
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(AppError::validation(
            "q",
            format!("a search is at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    let mut terms: Vec<Term> = Vec::new();
    let mut push = |term: Term| {
        if !terms.contains(&term) {
            terms.push(term);
        }
    };
    let mut rest = q;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('"') {
            // A phrase runs to the next quote, or to the end if it is not closed.
            let (phrase, next) = match after.find('"') {
                Some(end) => (&after[..end], &after[end + 1..]),
                None => (after, ""),
            };
            if phrase.chars().any(is_unsegmented) {
                let text = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
                push(Term::Substring(text));
            } else {
                let words = words(phrase);
                if !words.is_empty() {
                    push(Term::Phrase(words.join(" ")));
                }
            }
            rest = next;
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '"')
                .unwrap_or(rest.len());
            for word in words(&rest[..end]) {
                if word.chars().any(is_unsegmented) {
                    push(Term::Substring(word.to_owned()));
                } else {
                    push(Term::Prefix(word.to_owned()));
                }
            }
            rest = rest[end..].trim_start_matches(char::is_whitespace);
        }
    }
    if terms.len() > MAX_TERMS {
        return Err(AppError::validation(
            "q",
            format!("a search has at most {MAX_TERMS} words"),
        ));
    }
    Ok(terms)
}

/// The runs of letters and digits in `text` (what the word index sees as words).
fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The FTS5 MATCH expression for the word terms: every term quoted, so nothing
/// the user typed is ever FTS5 syntax. `None` when there are no word terms.
pub fn fts_expression(terms: &[Term]) -> Option<String> {
    let quoted = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    let parts: Vec<String> = terms
        .iter()
        .filter_map(|term| match term {
            Term::Prefix(word) => Some(format!("{}*", quoted(word))),
            Term::Phrase(words) => Some(quoted(words)),
            Term::Substring(_) => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// A `LIKE` pattern matching `text` anywhere, with `\` as the escape character.
pub fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// What to search, already validated.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub terms: Vec<Term>,
    pub conversation_id: Option<i64>,
    pub from: Option<i64>,
    /// Only messages older than this id (the previous page's cursor).
    pub before: Option<i64>,
    pub limit: usize,
}

/// One match: a message id and its highlighted snippet (HTML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub message_id: i64,
    pub snippet: String,
}

/// Matching messages that `viewer` can read (a member of the conversation, or
/// any channel), not deleted, not from someone the viewer blocked, newest first,
/// at most `query.limit`. Pages by message id, never by offset.
pub fn find(conn: &Connection, viewer: i64, query: &SearchQuery) -> AppResult<Vec<Hit>> {
    if query.terms.is_empty() || query.limit == 0 {
        return Ok(Vec::new());
    }
    let substrings = substrings(&query.terms);
    let driver = choose_driver(conn, &query.terms)?;
    let Some((sql, params)) = find_sql(viewer, query, &substrings, driver) else {
        return Ok(Vec::new());
    };
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(params), |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, Option<String>>(2)?,
        ))
    })?;
    let mut hits = Vec::new();
    for row in rows {
        let (message_id, body, highlighted) = row?;
        hits.push(Hit {
            message_id,
            snippet: snippet(&body, highlighted.as_deref(), &substrings),
        });
    }
    Ok(hits)
}

/// Which index drives a search that has both words and terms in scripts
/// without spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    Words,
    Pairs,
}

/// Up to this many matches are counted on each side to pick the driver.
const DRIVER_PROBE: i64 = 2_000;

/// The index with fewer matches drives (counted up to [`DRIVER_PROBE`], a few
/// milliseconds at most): `天气 report` is read from the few messages with
/// `天气`, not from every report. Words by default (their highlights).
fn choose_driver(conn: &Connection, terms: &[Term]) -> rusqlite::Result<Driver> {
    let (Some(words), Some(grams)) = (fts_expression(terms), gram_expression(terms)) else {
        return Ok(Driver::Words);
    };
    let count = |table: &str, expression: String| -> rusqlite::Result<i64> {
        conn.prepare_cached(&format!(
            "SELECT count(*) FROM (SELECT rowid FROM {table} WHERE {table} MATCH ?1 LIMIT ?2)"
        ))?
        .query_row(rusqlite::params![expression, DRIVER_PROBE], |row| {
            row.get(0)
        })
    };
    let pairs = count("messages_cjk", grams)?;
    if pairs >= DRIVER_PROBE {
        return Ok(Driver::Words);
    }
    Ok(if pairs < count("messages_fts", words)? {
        Driver::Pairs
    } else {
        Driver::Words
    })
}

/// The texts of the substring terms.
fn substrings(terms: &[Term]) -> Vec<String> {
    terms
        .iter()
        .filter_map(|term| match term {
            Term::Substring(text) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// The statement [`find`] runs, and its parameters.
fn find_sql(
    viewer: i64,
    query: &SearchQuery,
    substrings: &[String],
    driver: Driver,
) -> Option<(String, Vec<Value>)> {
    let mut params: Vec<Value> = Vec::new();
    let mut sql = String::new();
    // One index drives the query, newest first, and the other (if the query has
    // both kinds of term) is looked up for each of its rows: never a scan of the
    // messages.
    let (id_column, order) = match (fts_expression(&query.terms), gram_expression(&query.terms)) {
        (Some(words), Some(grams)) => {
            let (first, second) = match driver {
                Driver::Words => ("messages_fts", "messages_cjk"),
                Driver::Pairs => ("messages_cjk", "messages_fts"),
            };
            // CROSS JOIN fixes the order: the message's own checks (readable,
            // the exact text) come before the second index is looked up, which
            // stays in the join for the word highlights either way.
            sql.push_str(&format!(
                "SELECT m.id, m.body, highlight(messages_fts, 0, char(1), char(2))
                 FROM {first} CROSS JOIN messages m CROSS JOIN {second}
                 WHERE messages_fts MATCH ? AND messages_cjk MATCH ?
                   AND m.id = {first}.rowid AND {second}.rowid = {first}.rowid"
            ));
            params.push(Value::Text(words));
            params.push(Value::Text(grams));
            match driver {
                Driver::Words => ("messages_fts.rowid", "ORDER BY messages_fts.rowid DESC"),
                Driver::Pairs => ("messages_cjk.rowid", "ORDER BY messages_cjk.rowid DESC"),
            }
        }
        (Some(words), None) => {
            sql.push_str(
                "SELECT m.id, m.body, highlight(messages_fts, 0, char(1), char(2))
                 FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
                 WHERE messages_fts MATCH ?",
            );
            params.push(Value::Text(words));
            ("messages_fts.rowid", "ORDER BY messages_fts.rowid DESC")
        }
        (None, Some(grams)) => {
            sql.push_str(
                "SELECT m.id, m.body, NULL
                 FROM messages_cjk JOIN messages m ON m.id = messages_cjk.rowid
                 WHERE messages_cjk MATCH ?",
            );
            params.push(Value::Text(grams));
            ("messages_cjk.rowid", "ORDER BY messages_cjk.rowid DESC")
        }
        (None, None) => return None,
    };
    sql.push_str(
        " AND m.kind = 'text' AND m.deleted_at IS NULL
          AND (m.conversation_id IN (SELECT conversation_id FROM members WHERE user_id = ?)
               OR m.conversation_id IN (SELECT id FROM conversations WHERE kind = 'channel'))
          AND (m.sender_id IS NULL
               OR m.sender_id NOT IN (SELECT blocked_id FROM blocks WHERE blocker_id = ?))",
    );
    params.push(Value::Integer(viewer));
    params.push(Value::Integer(viewer));
    if let Some(before) = query.before {
        sql.push_str(&format!(" AND {id_column} < ?"));
        params.push(Value::Integer(before));
    }
    if let Some(conversation_id) = query.conversation_id {
        sql.push_str(" AND m.conversation_id = ?");
        params.push(Value::Integer(conversation_id));
    }
    if let Some(from) = query.from {
        sql.push_str(" AND m.sender_id = ?");
        params.push(Value::Integer(from));
    }
    // The index finds candidates; the exact text is checked on those only.
    for text in substrings {
        sql.push_str(" AND m.body LIKE ? ESCAPE '\\'");
        params.push(Value::Text(like_pattern(text)));
    }
    sql.push(' ');
    sql.push_str(order);
    sql.push_str(" LIMIT ?");
    params.push(Value::Integer(query.limit as i64));
    Some((sql, params))
}

/// The contract's search result item.
#[derive(Debug, Clone, Serialize)]
pub struct SearchItem {
    pub message: Message,
    pub snippet: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchPage {
    pub items: Vec<SearchItem>,
    pub next_cursor: Option<String>,
}

/// A page of results with full Message objects; `next_cursor` is set when
/// there may be more.
pub fn search(conn: &Connection, viewer: i64, query: &SearchQuery) -> AppResult<SearchPage> {
    let limit = query.limit;
    let mut probe = query.clone();
    probe.limit = limit + 1;
    let mut hits = find(conn, viewer, &probe)?;
    let more = hits.len() > limit;
    hits.truncate(limit);
    let ids: Vec<i64> = hits.iter().map(|h| h.message_id).collect();
    let mut loaded: HashMap<i64, Message> = messages::load_many(conn, &ids)?
        .into_iter()
        .map(|m| (m.id, m))
        .collect();
    let items: Vec<SearchItem> = hits
        .into_iter()
        .filter_map(|hit| {
            loaded.remove(&hit.message_id).map(|message| SearchItem {
                message,
                snippet: hit.snippet,
            })
        })
        .collect();
    let next_cursor = if more {
        items.last().map(|item| item.message.id.to_string())
    } else {
        None
    };
    Ok(SearchPage { items, next_cursor })
}

/// HTML for a result: the message text (cut around the first hit when long),
/// escaped, with `<mark>` around every hit. Word hits come from FTS5's
/// `highlight()` output (`highlighted`, the body with U+0001/U+0002 around
/// hits); substring terms are found here.
pub fn snippet(body: &str, highlighted: Option<&str>, substrings: &[String]) -> String {
    let chars: Vec<char> = body.chars().collect();
    let mut marked = vec![false; chars.len()];
    if let Some(highlighted) = highlighted
        && !body.contains([OPEN, CLOSE])
    {
        mark_highlights(highlighted, &mut marked);
    }
    mark_substrings(&chars, substrings, &mut marked);

    let (start, end) = window(chars.len(), marked.iter().position(|m| *m));
    let mut out = String::with_capacity(SNIPPET_CHARS * 2);
    if start > 0 {
        out.push('…');
    }
    let mut open = false;
    for i in start..end {
        if marked[i] != open {
            out.push_str(if marked[i] { "<mark>" } else { "</mark>" });
            open = marked[i];
        }
        match chars[i] {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_whitespace() => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    if open {
        out.push_str("</mark>");
    }
    if end < chars.len() {
        out.push('…');
    }
    out
}

/// Marks the characters FTS5 wrapped in the markers. If the marked text does not
/// line up with the body, nothing is marked.
fn mark_highlights(highlighted: &str, marked: &mut [bool]) {
    let mut index = 0usize;
    let mut inside = false;
    let mut found = Vec::new();
    for c in highlighted.chars() {
        match c {
            OPEN => inside = true,
            CLOSE => inside = false,
            _ => {
                if inside {
                    found.push(index);
                }
                index += 1;
            }
        }
    }
    if index != marked.len() {
        return;
    }
    for i in found {
        marked[i] = true;
    }
}

/// Marks every occurrence of each substring (ASCII case-insensitively, as
/// SQLite's LIKE matched it).
fn mark_substrings(chars: &[char], substrings: &[String], marked: &mut [bool]) {
    let fold = |c: &char| c.to_ascii_lowercase();
    let haystack: Vec<char> = chars.iter().map(fold).collect();
    for needle in substrings {
        let needle: Vec<char> = needle.chars().map(|c| fold(&c)).collect();
        if needle.is_empty() || needle.len() > haystack.len() {
            continue;
        }
        for start in 0..=haystack.len() - needle.len() {
            if haystack[start..start + needle.len()] == needle[..] {
                for m in &mut marked[start..start + needle.len()] {
                    *m = true;
                }
            }
        }
    }
}

/// Which characters to show: everything when short, else [`SNIPPET_CHARS`]
/// starting a little before the first hit.
fn window(len: usize, first_hit: Option<usize>) -> (usize, usize) {
    if len <= SNIPPET_CHARS {
        return (0, len);
    }
    let start = first_hit
        .unwrap_or(0)
        .saturating_sub(SNIPPET_LEAD)
        .min(len - SNIPPET_CHARS);
    (start, start + SNIPPET_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> Term {
        Term::Prefix(s.into())
    }

    #[test]
    fn queries_become_terms() {
        assert_eq!(
            parse_query("hel wor").expect("ok"),
            vec![prefix("hel"), prefix("wor")]
        );
        assert_eq!(
            parse_query("  \"quick brown\"  fox ").expect("ok"),
            vec![Term::Phrase("quick brown".into()), prefix("fox")]
        );
        assert_eq!(
            parse_query("\"unclosed phrase").expect("ok"),
            vec![Term::Phrase("unclosed phrase".into())]
        );
        assert_eq!(
            parse_query("天气 東京タワー").expect("ok"),
            vec![
                Term::Substring("天气".into()),
                Term::Substring("東京タワー".into())
            ]
        );
        assert_eq!(
            parse_query("\"今天 天气\"").expect("ok"),
            vec![Term::Substring("今天 天气".into())]
        );
        assert_eq!(
            parse_query("o'neil foo.bar").expect("ok"),
            vec![prefix("o"), prefix("neil"), prefix("foo"), prefix("bar")]
        );
        assert_eq!(parse_query("a a A").expect("ok").len(), 2);
        assert!(parse_query("* ( ) \" - :").expect("ok").is_empty());
        assert!(parse_query("").is_err());
        assert!(parse_query("   ").is_err());
        assert!(parse_query(&"a".repeat(501)).is_err());
        let many = (0..20)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(parse_query(&many).is_err());
    }

    #[test]
    fn fts_syntax_is_always_quoted() {
        let terms = parse_query("AND OR NOT NEAR/3 -x col:x (a) b* \"c d\"").expect("ok");
        let expression = fts_expression(&terms).expect("some");
        assert_eq!(
            expression,
            "\"AND\"* \"OR\"* \"NOT\"* \"NEAR\"* \"3\"* \"x\"* \"col\"* \"a\"* \"b\"* \"c d\""
        );
        assert_eq!(fts_expression(&[Term::Substring("天".into())]), None);
        assert_eq!(
            fts_expression(&[prefix("a\"b")]).as_deref(),
            Some("\"a\"\"b\"*")
        );
    }

    #[test]
    fn like_patterns_are_escaped() {
        assert_eq!(like_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
    }

    #[test]
    fn scripts_without_spaces() {
        for c in ['天', 'の', 'カ', 'ｶ', 'ไ', '𠀋'] {
            assert!(is_unsegmented(c), "{c}");
        }
        for c in ['a', 'é', 'д', '한', '1'] {
            assert!(!is_unsegmented(c), "{c}");
        }
    }

    #[test]
    fn snippets_escape_and_mark() {
        let body = "say <b>hello</b> & bye";
        let highlighted = "say <b>\u{1}hello\u{2}</b> & bye";
        assert_eq!(
            snippet(body, Some(highlighted), &[]),
            "say &lt;b&gt;<mark>hello</mark>&lt;/b&gt; &amp; bye"
        );
        assert_eq!(
            snippet("今天天气很好", None, &["天气".into()]),
            "今天<mark>天气</mark>很好"
        );
        // Markers that do not line up with the body are ignored.
        assert_eq!(snippet("abc", Some("\u{1}abcd\u{2}"), &[]), "abc");
        // A body containing the marker characters gets no FTS marks (and no controls).
        assert_eq!(snippet("a\u{1}b", Some("\u{1}a\u{1}b\u{2}"), &[]), "ab");
        // Newlines become spaces.
        assert_eq!(snippet("a\nb", None, &[]), "a b");
    }

    #[test]
    fn long_messages_are_cut_around_the_first_hit() {
        let body = format!("{} needle {}", "x".repeat(300), "y".repeat(300));
        let highlighted = body.replace("needle", "\u{1}needle\u{2}");
        let s = snippet(&body, Some(&highlighted), &[]);
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.contains("<mark>needle</mark>"));
        assert_eq!(s.chars().filter(|c| *c == 'x').count(), SNIPPET_LEAD - 1);
        let s = snippet(&"z".repeat(500), None, &[]);
        assert!(!s.starts_with('…') && s.ends_with('…'));
    }

    /// A migrated in-memory database: users 1 (alice), 2 (bob), 3 (carol);
    /// conversation 1 a group of alice+bob, 2 a channel (only bob joined),
    /// 3 a direct alice–carol.
    fn fixture() -> Connection {
        let mut conn = Connection::open_in_memory().expect("db");
        crate::db::migrations::migrate(&mut conn).expect("migrate");
        conn.execute_batch(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES
                 (1, 'alice', 'x', 0), (2, 'bob', 'x', 0), (3, 'carol', 'x', 0);
             INSERT INTO conversations (id, kind, title, created_at, last_activity_at) VALUES
                 (1, 'group', 'g', 0, 0), (2, 'channel', 'c', 0, 0), (3, 'direct', '', 0, 0);
             INSERT INTO members (conversation_id, user_id, joined_at) VALUES
                 (1, 1, 0), (1, 2, 0), (2, 2, 0), (3, 1, 0), (3, 3, 0);",
        )
        .expect("fixture");
        conn
    }

    fn post(conn: &Connection, conversation: i64, sender: i64, body: &str) -> i64 {
        conn.execute(
            "INSERT INTO messages (conversation_id, sender_id, body, created_at) VALUES (?1, ?2, ?3, 0)",
            rusqlite::params![conversation, sender, body],
        )
        .expect("insert");
        let id = conn.last_insert_rowid();
        assert!(!index_pending(conn, 100).expect("index"), "all indexed");
        id
    }

    fn insert_unindexed(conn: &Connection, kind: &str, body: &str) -> i64 {
        conn.execute(
            "INSERT INTO messages (conversation_id, sender_id, kind, body, created_at)
             VALUES (1, 1, ?1, ?2, 0)",
            rusqlite::params![kind, body],
        )
        .expect("insert");
        conn.last_insert_rowid()
    }

    #[test]
    fn the_index_catches_up_from_its_watermark() {
        let conn = fixture();
        let first = post(&conn, 1, 1, "first indexed");
        assert!(is_indexed(&conn, first).expect("state"));
        assert!(!needs_catch_up(&conn).expect("state"));

        let edited = insert_unindexed(&conn, "text", "draft wording");
        let system = insert_unindexed(&conn, "system", "wording joined");
        let deleted = insert_unindexed(&conn, "text", "wording removed");
        let plain = insert_unindexed(&conn, "text", "final wording");
        assert!(needs_catch_up(&conn).expect("state"));
        assert!(!is_indexed(&conn, edited).expect("state"));
        // Edited and deleted before the index took them in: nothing to undo.
        conn.execute_batch(&format!(
            "UPDATE messages SET body = 'clean wording' WHERE id = {edited};
             UPDATE messages SET body = '', deleted_at = 1 WHERE id = {deleted};"
        ))
        .expect("change");

        assert!(index_pending(&conn, 2).expect("step"), "more remain");
        assert!(is_indexed(&conn, system).expect("state"));
        assert!(!is_indexed(&conn, deleted).expect("state"));
        assert!(needs_catch_up(&conn).expect("state"));
        assert!(!index_pending(&conn, 2).expect("step"), "done");
        assert!(!needs_catch_up(&conn).expect("state"));
        assert!(!index_pending(&conn, 2).expect("step"), "nothing to do");

        // The text each message has now, once; not system or deleted messages.
        assert_eq!(ids(&conn, 1, "wording"), vec![plain, edited]);
        assert!(ids(&conn, 1, "draft").is_empty());
        assert!(ids(&conn, 1, "removed").is_empty());
        assert_eq!(ids(&conn, 1, "first"), vec![first]);
        let integrity: Result<usize, _> = conn.execute(
            "INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')",
            [],
        );
        assert!(integrity.is_ok(), "the index is sound: {integrity:?}");
    }

    fn ids(conn: &Connection, viewer: i64, q: &str) -> Vec<i64> {
        let query = SearchQuery {
            terms: parse_query(q).expect("query"),
            conversation_id: None,
            from: None,
            before: None,
            limit: 50,
        };
        find(conn, viewer, &query)
            .expect("find")
            .into_iter()
            .map(|h| h.message_id)
            .collect()
    }

    #[test]
    fn finds_words_prefixes_and_phrases() {
        let conn = fixture();
        let a = post(&conn, 1, 1, "Hello world, the quick brown fox");
        let b = post(&conn, 1, 2, "brown quick fox, hello");
        let c = post(&conn, 1, 2, "Café au lait");
        assert_eq!(ids(&conn, 1, "hel"), vec![b, a]);
        assert_eq!(ids(&conn, 1, "HELLO wor"), vec![a]);
        assert_eq!(ids(&conn, 1, "\"quick brown\""), vec![a]);
        assert_eq!(ids(&conn, 1, "\"brown quick\""), vec![b]);
        assert_eq!(ids(&conn, 1, "cafe"), vec![c]);
        assert!(ids(&conn, 1, "zebra").is_empty());
    }

    #[test]
    fn hostile_queries_never_fail() {
        let conn = fixture();
        post(&conn, 1, 1, "AND OR NOT near col x");
        for q in [
            "AND",
            "OR",
            "NOT",
            "\"",
            "\"\"",
            "*",
            "(",
            ")",
            "NEAR/2",
            "NEAR(a b)",
            "-x",
            "col:x",
            "a OR",
            "^",
            "{a b}",
            "body:AND",
            "\"unterminated",
            "a\"b",
            "'; DROP TABLE messages; --",
            "%",
            "_",
            "\\",
            "\u{0301}",
            "\u{1}",
        ] {
            let query = SearchQuery {
                terms: parse_query(q).expect("parses"),
                conversation_id: None,
                from: None,
                before: None,
                limit: 10,
            };
            find(&conn, 1, &query).unwrap_or_else(|e| panic!("{q:?} failed: {e}"));
        }
        assert_eq!(ids(&conn, 1, "AND").len(), 1);
        assert_eq!(ids(&conn, 1, "col:x").len(), 1);
    }

    #[test]
    fn only_readable_messages() {
        let conn = fixture();
        let group = post(&conn, 1, 2, "secret plan");
        let channel = post(&conn, 2, 2, "secret channel plan");
        let direct = post(&conn, 3, 3, "secret direct plan");
        let deleted = post(&conn, 1, 1, "secret deleted plan");
        conn.execute(
            "UPDATE messages SET body = '', deleted_at = 1 WHERE id = ?1",
            [deleted],
        )
        .expect("delete");
        super::unindex_body(&conn, deleted, "secret deleted plan").expect("unindex");
        // alice: her group, her direct, and the channel she has not joined.
        assert_eq!(ids(&conn, 1, "secret"), vec![direct, channel, group]);
        // bob: group and channel, not alice–carol.
        assert_eq!(ids(&conn, 2, "secret"), vec![channel, group]);
        // carol: the direct and the public channel only.
        assert_eq!(ids(&conn, 3, "secret"), vec![direct, channel]);
        assert_eq!(ids(&conn, 3, "秘密 OR secret").len(), 0);
        // Blocking hides the blocked sender's messages.
        conn.execute(
            "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES (1, 3, 0)",
            [],
        )
        .expect("block");
        assert_eq!(ids(&conn, 1, "secret"), vec![channel, group]);
    }

    #[test]
    fn filters_and_pages() {
        let conn = fixture();
        let mut posted = Vec::new();
        for i in 0..7 {
            posted.push(post(&conn, 1, 1 + (i % 2), &format!("report number {i}")));
        }
        post(&conn, 2, 2, "report in the channel");
        let mut query = SearchQuery {
            terms: parse_query("report").expect("q"),
            conversation_id: Some(1),
            from: None,
            before: None,
            limit: 3,
        };
        let mut seen = Vec::new();
        loop {
            let page = find(&conn, 1, &query).expect("find");
            if page.is_empty() {
                break;
            }
            query.before = page.last().map(|h| h.message_id);
            seen.extend(page.into_iter().map(|h| h.message_id));
        }
        posted.reverse();
        assert_eq!(seen, posted);
        query.before = None;
        query.limit = 50;
        query.from = Some(2);
        assert_eq!(find(&conn, 1, &query).expect("find").len(), 3);
    }

    #[test]
    fn chinese_and_japanese_are_found_inside_runs() {
        let conn = fixture();
        let zh = post(&conn, 1, 1, "今天天气很好，我们一起去吃饭吧");
        let ja = post(&conn, 1, 2, "明日の会議はプロジェクトの確認です");
        let mixed = post(&conn, 1, 2, "Rust入門の本を読んだ (review tomorrow)");
        // The word index alone misses words inside a run of Han characters.
        let word_index: i64 = conn
            .query_row(
                "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH '\"天气\"*'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(word_index, 0);
        assert_eq!(ids(&conn, 1, "天气"), vec![zh]);
        assert_eq!(ids(&conn, 1, "会議"), vec![ja]);
        assert_eq!(ids(&conn, 1, "プロジェクト 確認"), vec![ja]);
        assert_eq!(ids(&conn, 1, "rust入門"), vec![mixed]);
        assert_eq!(ids(&conn, 1, "入門 review"), vec![mixed]);
        assert!(ids(&conn, 1, "入門 lunch").is_empty());
        let hits = find(
            &conn,
            1,
            &SearchQuery {
                terms: parse_query("天气").expect("q"),
                conversation_id: None,
                from: None,
                before: None,
                limit: 5,
            },
        )
        .expect("find");
        assert_eq!(
            hits[0].snippet,
            "今天<mark>天气</mark>很好，我们一起去吃饭吧"
        );
    }

    #[test]
    fn pairs_of_characters_are_indexed() {
        assert_eq!(grams("hello world"), None);
        // 天 5929, 气 6c14, 好 597d: the pairs of a run, then its last character.
        assert_eq!(
            grams("天气 ok 好").as_deref(),
            Some("0592906c14 06c14 0597d")
        );
        let terms = parse_query("天气 好 \"天 气\"").expect("q");
        assert_eq!(
            gram_expression(&terms).as_deref(),
            Some("\"0592906c14\" \"0597d\"* \"05929\"* \"06c14\"*")
        );
        assert_eq!(gram_expression(&parse_query("plain").expect("q")), None);
    }

    #[test]
    fn single_characters_thai_and_run_boundaries() {
        let conn = fixture();
        let zh = post(&conn, 1, 1, "今天天气很好");
        let split = post(&conn, 1, 1, "天 气 apart");
        let th = post(&conn, 1, 2, "ประชุมพรุ่งนี้");
        assert_eq!(ids(&conn, 1, "好"), vec![zh]);
        assert_eq!(ids(&conn, 1, "天"), vec![split, zh]);
        assert_eq!(ids(&conn, 1, "天气"), vec![zh], "not across a space");
        assert_eq!(ids(&conn, 1, "气 apart"), vec![split]);
        assert_eq!(ids(&conn, 1, "พรุ่งนี้"), vec![th]);
        assert!(ids(&conn, 1, "鳄鱼").is_empty());
    }

    #[test]
    fn edits_and_deletes_leave_the_pair_index() {
        let conn = fixture();
        let edited = post(&conn, 1, 1, "会议取消");
        let deleted = post(&conn, 1, 1, "会议改期");
        unindex_body(&conn, edited, "会议取消").expect("unindex");
        index_body(&conn, edited, "meeting cancelled").expect("index");
        unindex_body(&conn, deleted, "会议改期").expect("unindex");
        assert!(ids(&conn, 1, "会议").is_empty());
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM messages_cjk", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 0);
    }

    #[test]
    fn the_pair_index_takes_in_what_was_indexed_before_it_existed() {
        use crate::db::migrations::{embedded, migrate_with};
        let all = embedded().expect("migrations");
        let before: Vec<_> = all.iter().filter(|m| m.version < 5).cloned().collect();
        let mut conn = Connection::open_in_memory().expect("db");
        migrate_with(&mut conn, &before).expect("migrate to 4");
        conn.execute_batch(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES (1, 'alice', 'x', 0);
             INSERT INTO conversations (id, kind, title, created_at, last_activity_at)
                 VALUES (1, 'group', 'g', 0, 0);
             INSERT INTO members (conversation_id, user_id, joined_at) VALUES (1, 1, 0);
             INSERT INTO messages (id, conversation_id, sender_id, body, created_at)
                 VALUES (1, 1, 1, '今天天气很好', 0), (2, 1, 1, '明天天气', 0);
             INSERT INTO messages (id, conversation_id, sender_id, body, created_at, deleted_at)
                 VALUES (3, 1, 1, '', 0, 1);
             INSERT INTO messages (id, conversation_id, sender_id, body, created_at)
                 VALUES (4, 1, 1, '天气 not yet indexed', 0);
             INSERT INTO messages_fts (rowid, body) VALUES (1, '今天天气很好'), (2, '明天天气');
             UPDATE search_index_state SET indexed_upto = 3;",
        )
        .expect("old data");
        migrate_with(&mut conn, &all).expect("migrate");
        assert_eq!(ids(&conn, 1, "天气"), vec![2, 1]);
        // Past the watermark: the indexer's next step, as for words.
        assert!(!index_pending(&conn, 10).expect("step"));
        assert_eq!(ids(&conn, 1, "天气"), vec![4, 2, 1]);
    }

    #[test]
    fn searches_in_scripts_without_spaces_do_not_scan() {
        let conn = fixture();
        for q in ["天气", "天", "天气 hello", "rust入門"] {
            let query = SearchQuery {
                terms: parse_query(q).expect("q"),
                conversation_id: None,
                from: None,
                before: None,
                limit: 10,
            };
            for driver in [Driver::Words, Driver::Pairs] {
                let (sql, params) =
                    find_sql(1, &query, &substrings(&query.terms), driver).expect("sql");
                let plan: Vec<String> = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .expect("plan")
                    .query_map(rusqlite::params_from_iter(params), |r| {
                        r.get::<_, String>(3)
                    })
                    .expect("rows")
                    .collect::<Result<_, _>>()
                    .expect("collect");
                // The second index of a mixed search is looked up by rowid (FTS5's
                // plan `=M`), not searched whole for each row.
                assert!(
                    plan.iter()
                        .skip(1)
                        .filter(|p| p.starts_with("SCAN"))
                        .all(|p| p.contains(":=M")),
                    "{q}: {plan:?}"
                );
                assert!(plan[0].contains("VIRTUAL TABLE"), "{q}: {plan:?}");
                assert!(
                    plan.iter()
                        .filter(|p| p.starts_with("SCAN"))
                        .all(|p| p.contains("VIRTUAL TABLE")),
                    "{q}: {plan:?}"
                );
            }
        }
    }

    #[test]
    fn the_rarer_side_of_a_mixed_search_drives_it() {
        let conn = fixture();
        let mut reports = Vec::new();
        for i in 0..30 {
            reports.push(post(&conn, 1, 1, &format!("weekly report {i}")));
        }
        let both = post(&conn, 1, 2, "天气 report");
        let terms = parse_query("天气 report").expect("q");
        assert_eq!(choose_driver(&conn, &terms).expect("driver"), Driver::Pairs);
        assert_eq!(ids(&conn, 1, "天气 report"), vec![both]);
        assert_eq!(ids(&conn, 1, "report 天气"), vec![both]);
        // Highlights from the word index either way.
        let hits = find(
            &conn,
            1,
            &SearchQuery {
                terms,
                conversation_id: None,
                from: None,
                before: None,
                limit: 5,
            },
        )
        .expect("find");
        assert_eq!(hits[0].snippet, "<mark>天气</mark> <mark>report</mark>");
        for _ in 0..3 {
            post(&conn, 1, 1, "天气 天气");
        }
        let terms = parse_query("天气 zebra").expect("q");
        post(&conn, 1, 1, "zebra");
        assert_eq!(choose_driver(&conn, &terms).expect("driver"), Driver::Words);
        assert!(ids(&conn, 1, "天气 zebra").is_empty());
    }

    #[test]
    fn snippets_from_the_index_are_escaped() {
        let conn = fixture();
        post(&conn, 1, 1, "<script>alert('x')</script> deploy & pray");
        let hits = find(
            &conn,
            1,
            &SearchQuery {
                terms: parse_query("depl").expect("q"),
                conversation_id: None,
                from: None,
                before: None,
                limit: 5,
            },
        )
        .expect("find");
        assert_eq!(
            hits[0].snippet,
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; <mark>deploy</mark> &amp; pray"
        );
    }

    #[test]
    fn the_word_index_drives_the_query() {
        let conn = fixture();
        let plan: Vec<String> = conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT m.id FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid
                 WHERE messages_fts MATCH 'x' AND messages_fts.rowid < 10 ORDER BY messages_fts.rowid DESC LIMIT 5",
            )
            .expect("plan")
            .query_map([], |r| r.get::<_, String>(3))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("collect");
        assert!(plan[0].contains("VIRTUAL TABLE"), "{plan:?}");
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
    }
}
