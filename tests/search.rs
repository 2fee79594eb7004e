//! Search end to end, against the real binary: prefixes, phrases, hostile
//! queries, privacy, channels, filters, pagination, snippets, and text in
//! languages written without spaces.

mod common;

use common::*;

async fn send(server: &TestServer, user: &Session, conversation: &Value, body: &str) -> i64 {
    let message = server
        .post_ok(
            &format!("/api/v1/conversations/{}/messages", conversation["id"]),
            user,
            json!({"body": body}),
        )
        .await;
    message["id"].as_i64().expect("id")
}

async fn search_raw(server: &TestServer, user: &Session, params: &[(&str, &str)]) -> (u16, Value) {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    server.get(&format!("/api/v1/search?{query}"), user).await
}

async fn search(server: &TestServer, user: &Session, params: &[(&str, &str)]) -> Value {
    let (status, body) = search_raw(server, user, params).await;
    assert_eq!(status, 200, "{params:?}: {body}");
    body
}

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["message"]["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test]
async fn search_end_to_end() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let group = server
        .post_ok(
            "/api/v1/conversations",
            &alice,
            json!({"kind": "group", "title": "plans", "member_ids": [bob.user_id]}),
        )
        .await;
    let direct = server
        .post_ok(
            "/api/v1/conversations",
            &alice,
            json!({"kind": "direct", "user_id": carol.user_id}),
        )
        .await;
    let channel = server
        .post_ok(
            "/api/v1/conversations",
            &bob,
            json!({"kind": "channel", "title": "general"}),
        )
        .await;

    let hello = send(&server, &alice, &group, "Hello world, the quick brown fox").await;
    let reversed = send(&server, &bob, &group, "brown quick fox says hello").await;
    let html = send(&server, &bob, &group, "<b>deploy</b> & pray").await;
    let secret = send(&server, &alice, &direct, "the secret password is swordfish").await;
    let public = send(&server, &bob, &channel, "announcement: swordfish for lunch").await;
    let zh = send(&server, &alice, &group, "今天天气很好，我们一起去吃饭吧").await;
    let ja = send(&server, &bob, &group, "明日の会議はプロジェクトの確認です").await;

    // Prefixes, newest first, with full Message objects.
    let page = search(&server, &alice, &[("q", "hel")]).await;
    assert_eq!(ids(&page), vec![reversed, hello]);
    assert_eq!(page["items"][0]["message"]["conversation_id"], group["id"]);
    assert_eq!(
        page["items"][0]["message"]["body"],
        "brown quick fox says hello"
    );
    assert_eq!(
        page["items"][0]["snippet"],
        "brown quick fox says <mark>hello</mark>"
    );
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(
        ids(&search(&server, &alice, &[("q", "HELLO wor")]).await),
        vec![hello]
    );

    // Phrases match exactly.
    assert_eq!(
        ids(&search(&server, &alice, &[("q", "\"quick brown\"")]).await),
        vec![hello]
    );
    assert_eq!(
        ids(&search(&server, &alice, &[("q", "\"brown quick\"")]).await),
        vec![reversed]
    );

    // Snippets are escaped HTML.
    let page = search(&server, &bob, &[("q", "deploy")]).await;
    assert_eq!(ids(&page), vec![html]);
    assert_eq!(
        page["items"][0]["snippet"],
        "&lt;b&gt;<mark>deploy</mark>&lt;/b&gt; &amp; pray"
    );

    // Hostile queries are just text.
    for q in [
        "AND",
        "OR x",
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
        "body:hello",
        "hello\"",
        "{a b}",
        "^hello",
        "'; DROP TABLE messages; --",
        "%",
        "_",
        "\\",
        "hel*",
        "a OR b AND c",
        "\u{0}",
    ] {
        search(&server, &alice, &[("q", q)]).await;
    }
    assert_eq!(
        ids(&search(&server, &alice, &[("q", "body:hello")]).await),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(&search(&server, &alice, &[("q", "^hello")]).await),
        vec![reversed, hello]
    );

    // Other people's private messages are never found; channels are public.
    assert_eq!(
        ids(&search(&server, &alice, &[("q", "swordfish")]).await),
        vec![public, secret]
    );
    assert_eq!(
        ids(&search(&server, &bob, &[("q", "swordfish")]).await),
        vec![public]
    );
    assert_eq!(
        ids(&search(&server, &carol, &[("q", "swordfish")]).await),
        vec![public, secret]
    );
    assert!(ids(&search(&server, &carol, &[("q", "hello")]).await).is_empty());
    assert!(ids(&search(&server, &carol, &[("q", "天气")]).await).is_empty());
    // Naming a conversation one cannot read is a 404, as everywhere.
    let (status, body) = search_raw(
        &server,
        &carol,
        &[
            ("q", "hello"),
            ("conversation_id", &group["id"].to_string()),
        ],
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // Chinese and Japanese are found inside runs of characters.
    let page = search(&server, &bob, &[("q", "天气")]).await;
    assert_eq!(ids(&page), vec![zh]);
    assert_eq!(
        page["items"][0]["snippet"],
        "今天<mark>天气</mark>很好，我们一起去吃饭吧"
    );
    assert_eq!(
        ids(&search(&server, &bob, &[("q", "会議")]).await),
        vec![ja]
    );
    assert_eq!(
        ids(&search(&server, &bob, &[("q", "プロジェクト 確認")]).await),
        vec![ja]
    );
    assert_eq!(
        ids(&search(&server, &bob, &[("q", "\"一起去\"")]).await),
        vec![zh]
    );

    // Filters.
    let group_id = group["id"].to_string();
    let from_bob = search(
        &server,
        &alice,
        &[("q", "fox"), ("from", &bob.user_id.to_string())],
    )
    .await;
    assert_eq!(ids(&from_bob), vec![reversed]);
    let in_group = search(
        &server,
        &alice,
        &[("q", "swordfish"), ("conversation_id", &group_id)],
    )
    .await;
    assert!(ids(&in_group).is_empty());

    // Edits and deletions reach the index.
    let (status, body) = server
        .patch(
            &format!("/api/v1/messages/{hello}"),
            &alice,
            json!({"body": "goodbye moon"}),
        )
        .await;
    assert!((200..300).contains(&status), "edit: {status} {body}");
    assert_eq!(
        ids(&search(&server, &alice, &[("q", "hello")]).await),
        vec![reversed]
    );
    assert_eq!(
        ids(&search(&server, &alice, &[("q", "moon")]).await),
        vec![hello]
    );
    let (status, body) = server
        .delete(&format!("/api/v1/messages/{reversed}"), &bob)
        .await;
    assert!((200..300).contains(&status), "delete: {status} {body}");
    assert!(ids(&search(&server, &alice, &[("q", "hello")]).await).is_empty());

    // Edited and deleted right after sending: before the writer's background
    // step has indexed them (it runs at a quiet moment, or at the next search).
    let interim = send(&server, &alice, &group, "interim wording").await;
    let scrap = send(&server, &alice, &group, "interim scrap").await;
    let (status, body) = server
        .patch(
            &format!("/api/v1/messages/{interim}"),
            &alice,
            json!({"body": "settled wording"}),
        )
        .await;
    assert!((200..300).contains(&status), "edit: {status} {body}");
    let (status, body) = server
        .delete(&format!("/api/v1/messages/{scrap}"), &alice)
        .await;
    assert!((200..300).contains(&status), "delete: {status} {body}");
    assert!(ids(&search(&server, &alice, &[("q", "interim")]).await).is_empty());
    assert_eq!(
        ids(&search(&server, &alice, &[("q", "wording")]).await),
        vec![interim]
    );
    assert_eq!(
        ids(&search(&server, &alice, &[("q", "scrap")]).await),
        Vec::<i64>::new()
    );

    // Bad requests.
    for (params, field) in [
        (vec![("q", "")], "q"),
        (vec![("q", "   ")], "q"),
        (vec![], "q"),
        (vec![("q", "x"), ("cursor", "abc")], "cursor"),
        (vec![("q", "x"), ("from", "-1")], "from"),
    ] {
        let (status, body) = search_raw(&server, &alice, &params).await;
        assert_eq!(status, 400, "{params:?}: {body}");
        assert_eq!(body["error"]["field"], field, "{params:?}");
    }
    let (_, body) = search_raw(&server, &alice, &[("q", "")]).await;
    assert_eq!(body["error"]["code"], "validation_failed");
    let (status, body) = server.get("/api/v1/search?q=hello", ANON).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn pages_follow_the_cursor() {
    let server = TestServer::start().await;
    let alice = server.register("alice").await;
    let channel = server
        .post_ok(
            "/api/v1/conversations",
            &alice,
            json!({"kind": "channel", "title": "log"}),
        )
        .await;
    let mut sent = Vec::new();
    for i in 0..12 {
        sent.push(send(&server, &alice, &channel, &format!("build {i} finished")).await);
        send(&server, &alice, &channel, "unrelated chatter").await;
    }
    sent.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = vec![("q", "build".to_owned()), ("limit", "5".to_owned())];
        if let Some(cursor) = &cursor {
            params.push(("cursor", cursor.clone()));
        }
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = search(&server, &alice, &params).await;
        pages += 1;
        assert!(ids(&page).len() <= 5);
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, sent);
    assert_eq!(pages, 3);
}

/// Messages committed but not yet indexed when the server stopped (a crash
/// between a send and the index step) are indexed when it starts again,
/// without anyone searching first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_left_unindexed_are_indexed_at_start() {
    let sandbox = Sandbox::new();
    sandbox.create_user("admin", true);
    sandbox.seed_content(); // messages 1 and 2, and 3 deleted: none indexed
    let server = TestServer::start_in(sandbox, ServerOptions::new()).await;
    let indexed_upto = || -> i64 {
        server
            .db()
            .query_row("SELECT indexed_upto FROM search_index_state", [], |row| {
                row.get(0)
            })
            .expect("watermark")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while indexed_upto() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not index what it found at start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let admin = server.login("admin", PASSWORD).await;
    assert_eq!(ids(&search(&server, &admin, &[("q", "hello")]).await), [1]);
    assert_eq!(ids(&search(&server, &admin, &[("q", "second")]).await), [2]);
}
