//! Operations against the real binary: `/metrics` (format, series, route
//! normalisation, access modes), `/healthz`, and JSON logs.

mod admin_support;

use admin_support::{ADMIN_PASSWORD, Server, create_user, data_dir_with_admin};
use reqwest::StatusCode;

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
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&data_dir_with_admin(tmp.path()), &[]).await;
    let health: serde_json::Value = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("healthz")
        .json()
        .await
        .expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["db"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    // A write (a new session) and a request with an id in its path.
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let (status, _) = server.get("/api/v1/users/424242", &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = server.get("/some/page/of/the/web/client", &admin).await;
    assert!(status.is_success() || status == StatusCode::NOT_FOUND);

    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.expect("text");
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
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_access_modes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = data_dir_with_admin(tmp.path());
    create_user(&data_dir, "bob", "bob password 1", false);

    let server = Server::start(&data_dir, &[("LANCHAT_METRICS_ACCESS", "off")]).await;
    let (status, body) = server
        .call(reqwest::Method::GET, "/metrics", None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    server.stop();

    let server = Server::start(&data_dir, &[("LANCHAT_METRICS_ACCESS", "admins")]).await;
    let (status, _) = server
        .call(reqwest::Method::GET, "/metrics", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let bob = server.login("bob", "bob password 1").await;
    let (status, body) = server.get("/metrics", &bob).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let response = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    parse_exposition(&response.text().await.expect("text"));
    server.stop();

    let server = Server::start(&data_dir, &[("LANCHAT_METRICS_ACCESS", "anyone")]).await;
    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(response.status(), StatusCode::OK);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_can_be_json() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        &data_dir_with_admin(tmp.path()),
        &[("LANCHAT_LOG_FORMAT", "json")],
    )
    .await;
    let log = server.log_text();
    server.stop();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log output");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(value["level"].is_string(), "{line}");
    }
}
