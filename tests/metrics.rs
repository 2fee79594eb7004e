//! Operations against the real binary: `/metrics` (format, series, route
//! normalisation, access modes), `/healthz`, and JSON logs.

mod common;

use common::*;

/// Checks the exposition line by line: comments, `name{labels} value` samples,
/// and the closing `# EOF`. Returns the samples as (series, value).
fn parse_exposition(text: &str) -> Vec<(String, f64)> {
    assert!(text.ends_with("# EOF\n"), "no EOF marker");
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap_or_default();
            assert!(
                ["HELP", "TYPE", "UNIT", "EOF"].contains(&kind),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in: {line}");
        }
        samples.push((series.to_owned(), value));
    }
    samples
}

fn value_of(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(name, _)| name == series)
        .map(|(_, value)| *value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_from_loopback_have_every_series() {
    let mut server = TestServer::start_with(ServerOptions::new().admin("admin")).await;
    let (status, health) = server.get("/healthz", ANON).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["db"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    // A write (a new session) and a request with an id in its path.
    let admin = server.login("admin", PASSWORD).await;
    let (status, _) = server.get("/api/v1/users/424242", &admin).await;
    assert_eq!(status, 404);
    let (status, _) = server.get("/some/page/of/the/web/client", &admin).await;
    assert!((200..300).contains(&status) || status == 404);

    let response = server.send(server.request(Method::GET, "/metrics")).await;
    assert_eq!(response.status, 200);
    let content_type = response.header("content-type").expect("a content type");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text;
    let samples = parse_exposition(&text);
    for series in [
        "lanchat_websocket_connections",
        "lanchat_online_users",
        "lanchat_messages_sent_total",
        "lanchat_events_delivered_total",
        "lanchat_db_write_transactions_total",
        "lanchat_delivery_latency_seconds_count",
        "lanchat_db_write_batch_size_count",
    ] {
        assert!(
            value_of(&samples, series).is_some(),
            "no {series} in\n{text}"
        );
    }
    assert_eq!(
        value_of(&samples, "lanchat_websocket_connections"),
        Some(0.0)
    );
    assert!(value_of(&samples, "lanchat_db_write_batch_size_count").unwrap_or(0.0) >= 1.0);
    assert_eq!(
        value_of(
            &samples,
            "lanchat_http_requests_total{method=\"POST\",route=\"/api/v1/auth/login\",status=\"200\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value_of(
            &samples,
            "lanchat_http_requests_total{method=\"GET\",route=\"/api/v1/users/{id}\",status=\"404\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("lanchat_http_requests_total{method=\"GET\",route=\"static\""),
        "{text}"
    );
    assert!(
        samples.iter().any(|(series, _)| {
            series.starts_with("lanchat_http_request_duration_seconds_bucket{")
                && series.contains("method=\"GET\"")
                && series.contains("route=\"/healthz\"")
        }),
        "{text}"
    );
    assert!(!text.contains("424242"), "ids never become labels");
    assert!(
        !text.contains("web/client"),
        "client paths never become labels"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_access_modes() {
    let sandbox = Sandbox::new();
    sandbox.create_user("admin", true);
    sandbox.create_user("bob", false);

    let options = ServerOptions::new().env("LANCHAT_METRICS_ACCESS", "off");
    let mut server = TestServer::start_in(sandbox, options).await;
    let (status, body) = server.get("/metrics", ANON).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    server.stop().await;

    server.set_env("LANCHAT_METRICS_ACCESS", "admins");
    server.start_again().await;
    let (status, _) = server.get("/metrics", ANON).await;
    assert_eq!(status, 401);
    let bob = server.login("bob", PASSWORD).await;
    let (status, body) = server.get("/metrics", &bob).await;
    assert_eq!(status, 403, "{body}");
    let admin = server.login("admin", PASSWORD).await;
    let response = server
        .send(
            server
                .request(Method::GET, "/metrics")
                .bearer_auth(&admin.access_token),
        )
        .await;
    assert_eq!(response.status, 200);
    parse_exposition(&response.text);
    server.stop().await;

    server.set_env("LANCHAT_METRICS_ACCESS", "anyone");
    server.start_again().await;
    let response = server.send(server.request(Method::GET, "/metrics")).await;
    assert_eq!(response.status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_can_be_json() {
    let mut server = TestServer::start_with(
        ServerOptions::new()
            .admin("admin")
            .env("LANCHAT_LOG_FORMAT", "json"),
    )
    .await;
    // Stopping first waits for the whole log (and checks the shutdown lines too).
    server.stop().await;
    let log = server.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log output");
    for line in lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(value["level"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn route_labels_come_from_route_templates_only() {
    let server = TestServer::start().await;
    // Paths made of the API's own words, unauthenticated: none is a route.
    let words = [
        "users", "me", "ws", "login", "admin", "messages", "block", "read", "v1",
    ];
    let mut sent = 0;
    for a in words {
        for b in words {
            for method in [Method::GET, Method::POST] {
                let path = format!("/api/v1/{a}/{b}/{a}");
                let reply = server.send(server.request(method, &path)).await;
                assert!(reply.status >= 400, "{path}: {}", reply.status);
                sent += 1;
            }
        }
    }
    let (status, _) = server.get("/api/v1/no-such-thing", ANON).await;
    assert_eq!(status, 404);
    let response = server.send(server.request(Method::GET, "/metrics")).await;
    let samples = parse_exposition(&response.text);
    let routes: std::collections::BTreeSet<String> = samples
        .iter()
        .filter(|(series, _)| series.starts_with("lanchat_http_requests_total{"))
        .filter_map(|(series, _)| {
            let start = series.find("route=\"")? + "route=\"".len();
            let len = series[start..].find('"')?;
            Some(series[start..start + len].to_owned())
        })
        .collect();
    let openapi: Value = serde_json::from_str(
        &server
            .send(server.request(Method::GET, "/api/v1/openapi.json"))
            .await
            .text,
    )
    .expect("openapi");
    for route in &routes {
        assert!(
            route == "unmatched" || route == "static" || openapi["paths"].get(route).is_some(),
            "{route} is not a route template: {routes:?}"
        );
    }
    assert!(routes.contains("unmatched"), "{routes:?}");
    let unmatched: f64 = samples
        .iter()
        .filter(|(series, _)| {
            series.starts_with("lanchat_http_requests_total{")
                && series.contains("route=\"unmatched\"")
        })
        .map(|(_, value)| value)
        .sum();
    assert_eq!(unmatched, f64::from(sent + 1), "{routes:?}");
}
