//! Search end to end, against the real binary: prefixes, phrases, hostile
//! queries, privacy, channels, filters, pagination, snippets, and text in
//! languages written without spaces.

use reqwest::StatusCode;
use serde_json::{Value, json};

use harness::{Server, User};

async fn send(server: &Server, user: &User, conversation: &Value, body: &str) -> i64 {
    let message = server
        .post_json(
            user,
            &format!("/api/v1/conversations/{}/messages", conversation["id"]),
            json!({"body": body}),
        )
        .await;
    message["id"].as_i64().expect("id")
}

async fn search_raw(server: &Server, user: &User, params: &[(&str, &str)]) -> reqwest::Response {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    server
        .client
        .get(server.url(&format!("/api/v1/search?{query}")))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("search")
}

async fn search(server: &Server, user: &User, params: &[(&str, &str)]) -> Value {
    let response = search_raw(server, user, params).await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{params:?}: {body}");
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
    let server = Server::start().await;
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let group = server
        .post_json(
            &alice,
            "/api/v1/conversations",
            json!({"kind": "group", "title": "plans", "member_ids": [bob.id]}),
        )
        .await;
    let direct = server
        .post_json(
            &alice,
            "/api/v1/conversations",
            json!({"kind": "direct", "user_id": carol.id}),
        )
        .await;
    let channel = server
        .post_json(
            &bob,
            "/api/v1/conversations",
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
    let response = search_raw(
        &server,
        &carol,
        &[
            ("q", "hello"),
            ("conversation_id", &group["id"].to_string()),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

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
        &[("q", "fox"), ("from", &bob.id.to_string())],
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
    let response = server
        .client
        .patch(server.url(&format!("/api/v1/messages/{hello}")))
        .bearer_auth(&alice.token)
        .json(&json!({"body": "goodbye moon"}))
        .send()
        .await
        .expect("edit");
    assert!(response.status().is_success());
    assert_eq!(
        ids(&search(&server, &alice, &[("q", "hello")]).await),
        vec![reversed]
    );
    assert_eq!(
        ids(&search(&server, &alice, &[("q", "moon")]).await),
        vec![hello]
    );
    let response = server
        .client
        .delete(server.url(&format!("/api/v1/messages/{reversed}")))
        .bearer_auth(&bob.token)
        .send()
        .await
        .expect("delete");
    assert!(response.status().is_success());
    assert!(ids(&search(&server, &alice, &[("q", "hello")]).await).is_empty());

    // Bad requests.
    for (params, field) in [
        (vec![("q", "")], "q"),
        (vec![("q", "   ")], "q"),
        (vec![], "q"),
        (vec![("q", "x"), ("cursor", "abc")], "cursor"),
        (vec![("q", "x"), ("from", "-1")], "from"),
    ] {
        let response = search_raw(&server, &alice, &params).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{params:?}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["field"], field, "{params:?}");
    }
    let body: Value = search_raw(&server, &alice, &[("q", "")])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["error"]["code"], "validation_failed");
    let response = server
        .client
        .get(server.url("/api/v1/search?q=hello"))
        .send()
        .await
        .expect("anon");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pages_follow_the_cursor() {
    let server = Server::start().await;
    let alice = server.register("alice").await;
    let channel = server
        .post_json(
            &alice,
            "/api/v1/conversations",
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

/// A private harness: start the real binary on a free port in a temp data dir.
/// (Each test file has its own copy; not every file uses every helper.)
#[allow(dead_code)]
mod harness {
    use std::io::{BufRead, BufReader};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct User {
        pub id: i64,
        pub token: String,
    }

    pub struct Server {
        child: Child,
        pub addr: String,
        pub client: reqwest::Client,
        data_dir: tempfile::TempDir,
    }

    impl Server {
        pub async fn start() -> Server {
            Server::start_with(&[]).await
        }

        pub async fn start_with(env: &[(&str, &str)]) -> Server {
            let data_dir = tempfile::tempdir().expect("tempdir");
            let show_log = std::env::var_os("LANCHAT_TEST_LOG").is_some();
            let mut child = Command::new(env!("CARGO_BIN_EXE_lanchat"))
                .arg("--data-dir")
                .arg(data_dir.path())
                .arg("--listen")
                .arg("127.0.0.1:0")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(if show_log {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .spawn()
                .expect("start lanchat");
            let stdout = child.stdout.take().expect("stdout");
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                if let Some(Ok(first)) = lines.next() {
                    let _ = tx.send(first);
                }
                // Keep reading so the server never blocks on a full pipe.
                for _ in lines {}
            });
            let first = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("lanchat printed nothing");
            let addr = first
                .strip_prefix("lanchat listening on http://")
                .unwrap_or_else(|| panic!("unexpected first line: {first}"))
                .trim()
                .to_owned();
            let server = Server {
                child,
                addr,
                client: reqwest::Client::new(),
                data_dir,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(response) = server.client.get(server.url("/healthz")).send().await
                    && response.status().is_success()
                {
                    break;
                }
                assert!(Instant::now() < deadline, "lanchat did not become healthy");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            server
        }

        pub fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        pub fn data_dir(&self) -> &Path {
            self.data_dir.path()
        }

        pub async fn register(&self, username: &str) -> User {
            let response = self
                .client
                .post(self.url("/api/v1/auth/register"))
                .json(&json!({"username": username, "password": "correct horse battery"}))
                .send()
                .await
                .expect("register");
            assert_eq!(response.status(), reqwest::StatusCode::CREATED);
            let body: Value = response.json().await.expect("json");
            User {
                id: body["user"]["id"].as_i64().expect("id"),
                token: body["access_token"].as_str().expect("token").to_owned(),
            }
        }

        /// POST JSON, expecting success; returns the body.
        pub async fn post_json(&self, user: &User, path: &str, body: Value) -> Value {
            let response = self
                .client
                .post(self.url(path))
                .bearer_auth(&user.token)
                .json(&body)
                .send()
                .await
                .expect("post");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            assert!(status.is_success(), "POST {path}: {status} {body}");
            body
        }

        /// A GET with the path sent exactly as given (no client normalization).
        pub async fn raw_get(&self, path: &str, token: &str) -> (u16, String) {
            let mut stream = tokio::net::TcpStream::connect(&self.addr)
                .await
                .expect("connect");
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
                self.addr
            );
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.expect("read");
            let text = String::from_utf8_lossy(&response).into_owned();
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            (status, text)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
