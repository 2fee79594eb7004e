//! Server metrics for `/metrics`, kept with the Prometheus project's client
//! library (`prometheus-client`) and exposed in the OpenMetrics text format
//! (which Prometheus scrapes natively).
//!
//! Counters and histograms that code updates as things happen live here; values
//! that already exist elsewhere (open sockets, online users, events delivered,
//! writer statistics) are read at scrape time by a collector, so they cannot
//! drift.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use warp::http::Method;

use crate::db::writer::WriterStats;
use crate::hub::Hub;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets, in seconds: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets for the number of jobs in one write transaction (1 to the writer's
/// maximum batch of 512).
pub fn batch_size_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0])
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: Cow<'static, str>,
    route: Cow<'static, str>,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: Cow<'static, str>,
    route: Cow<'static, str>,
}

/// The metrics registry and the instruments code updates. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    messages_sent: Counter,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    delivery_latency: Histogram,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Builds the registry. `hub` and `writer` are read at each scrape.
    pub fn new(hub: Hub, writer: Arc<WriterStats>) -> Metrics {
        let mut registry = Registry::with_prefix("lanchat");
        let messages_sent = Counter::default();
        registry.register(
            "messages_sent",
            "Messages stored (sent over REST or WebSocket)",
            messages_sent.clone(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            http_requests.clone(),
        );
        let http_duration: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request (until the response head), by method and route",
            Unit::Seconds,
            http_duration.clone(),
        );
        let delivery_latency = latency_histogram();
        registry.register_with_unit(
            "delivery_latency",
            "Time from an event's commit to its write to a recipient's socket (one sample per socket write, for its oldest event)",
            Unit::Seconds,
            delivery_latency.clone(),
        );
        registry.register(
            "db_write_batch_size",
            "Write jobs committed per database transaction (group commit)",
            writer.batch_sizes.clone(),
        );
        registry.register_collector(Box::new(Live { hub, writer }));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                messages_sent,
                http_requests,
                http_duration,
                delivery_latency,
            }),
        }
    }

    /// Counts one stored message (call once per new message, not per recipient).
    pub fn record_message_sent(&self) {
        self.inner.messages_sent.inc();
    }

    /// Records the time between an event's commit and its write to a socket (once
    /// per socket write, for the oldest event in it).
    pub fn record_delivery_latency(&self, secs: f64) {
        if secs.is_finite() && secs >= 0.0 {
            self.inner.delivery_latency.observe(secs);
        }
    }

    /// Records one answered HTTP request.
    pub fn record_http(&self, method: &Method, path: &str, status: u16, elapsed: Duration) {
        let route = Cow::Borrowed(route_label(method, path));
        let method = method_label(method);
        self.inner
            .http_requests
            .get_or_create(&RequestLabels {
                method: method.clone(),
                route: route.clone(),
                status: status.to_string(),
            })
            .inc();
        self.inner
            .http_duration
            .get_or_create(&RouteLabels { method, route })
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition text.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)?;
        Ok(text)
    }
}

fn method_label(method: &Method) -> Cow<'static, str> {
    Cow::Borrowed(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    })
}

/// The label of every request that matched no route of the server.
pub const UNMATCHED: &str = "unmatched";
/// The label of the web client's files (every other `GET` outside `/api/`).
pub const STATIC: &str = "static";

/// One route of the server, as a template such as `/api/v1/users/{id}/block`.
struct RouteTemplate {
    label: String,
    segments: Vec<Segment>,
}

enum Segment {
    Literal(String),
    /// An integer parameter (the server's ids): other text does not match.
    Integer,
    /// Any other parameter (an invite code, an emoji).
    Any,
}

/// The server's routes, read from its own OpenAPI document (which documents
/// every route, the WebSocket, `/healthz` and `/metrics` included), so that
/// labels come from route templates only and cannot drift from the router.
struct RouteTable {
    routes: Vec<RouteTemplate>,
}

impl RouteTable {
    fn from_openapi(document: &'static serde_json::Value) -> RouteTable {
        let mut routes = Vec::new();
        if let Some(paths) = document["paths"].as_object() {
            for (path, item) in paths {
                // Parameters are listed on the path or its operations, inline or
                // as references to the shared ones.
                let resolve = |p: &'static serde_json::Value| -> &'static serde_json::Value {
                    match p["$ref"]
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/parameters/"))
                    {
                        Some(name) => &document["components"]["parameters"][name],
                        None => p,
                    }
                };
                let integer_params: Vec<&str> = std::iter::once(item)
                    .chain(item.as_object().into_iter().flat_map(|ops| ops.values()))
                    .filter_map(|op| op["parameters"].as_array())
                    .flatten()
                    .map(resolve)
                    .filter(|p| p["in"] == "path" && p["schema"]["type"] == "integer")
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                let segments = path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(|segment| {
                        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                            Some(name) if integer_params.contains(&name) => Segment::Integer,
                            Some(_) => Segment::Any,
                            None => Segment::Literal(segment.to_owned()),
                        }
                    })
                    .collect();
                routes.push(RouteTemplate {
                    label: path.clone(),
                    segments,
                });
            }
        }
        RouteTable { routes }
    }

    fn label(&self, method: &Method, path: &str) -> &str {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let found = self.routes.iter().find(|route| {
            route.segments.len() == segments.len()
                && route
                    .segments
                    .iter()
                    .zip(&segments)
                    .all(|(expected, got)| match expected {
                        Segment::Literal(text) => text == got,
                        Segment::Integer => got.parse::<i64>().is_ok(),
                        Segment::Any => !got.is_empty(),
                    })
        });
        match found {
            Some(route) => &route.label,
            None if (*method == Method::GET || *method == Method::HEAD)
                && path != "/api"
                && !path.starts_with("/api/") =>
            {
                STATIC
            }
            None => UNMATCHED,
        }
    }
}

fn route_table() -> &'static RouteTable {
    static TABLE: std::sync::OnceLock<RouteTable> = std::sync::OnceLock::new();
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        RouteTable::from_openapi(
            DOCUMENT.get_or_init(|| serde_json::from_str(crate::api::OPENAPI).unwrap_or_default()),
        )
    })
}

/// The route template a request matched (`/api/v1/users/17/block` →
/// `/api/v1/users/{id}/block`), [`STATIC`] for the web client, or [`UNMATCHED`]:
/// a bounded set of labels whatever paths clients send.
pub fn route_label(method: &Method, path: &str) -> &'static str {
    route_table().label(method, path)
}

/// Values read at scrape time.
struct Live {
    hub: Hub,
    writer: Arc<WriterStats>,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    fn gauge(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: i64,
    ) -> Result<(), fmt::Error> {
        let gauge = ConstGauge::new(value);
        let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }

    fn counter(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: u64,
    ) -> Result<(), fmt::Error> {
        let counter = ConstCounter::new(value);
        let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
        counter.encode(metric)
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.hub.stats();
        Self::gauge(
            &mut encoder,
            "websocket_connections",
            "Open WebSocket connections",
            i64::try_from(self.hub.open_connections()).unwrap_or(i64::MAX),
        )?;
        Self::gauge(
            &mut encoder,
            "online_users",
            "Users with at least one open WebSocket",
            i64::try_from(self.hub.online_users()).unwrap_or(i64::MAX),
        )?;
        Self::counter(
            &mut encoder,
            "events_delivered",
            "Events queued onto WebSocket connections",
            stats.events_delivered.load(Ordering::Relaxed),
        )?;
        Self::counter(
            &mut encoder,
            "slow_consumers_closed",
            "WebSocket connections closed because their outbound queue overflowed",
            stats.slow_consumers_closed.load(Ordering::Relaxed),
        )?;
        Self::counter(
            &mut encoder,
            "db_write_transactions",
            "Database write transactions (batches) run",
            self.writer.transactions.load(Ordering::Relaxed),
        )?;
        Self::counter(
            &mut encoder,
            "db_write_jobs",
            "Database write jobs run",
            self.writer.jobs.load(Ordering::Relaxed),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_by_template() {
        let label = |method: Method, path: &str| route_label(&method, path);
        assert_eq!(
            label(Method::PUT, "/api/v1/users/17/block"),
            "/api/v1/users/{id}/block"
        );
        assert_eq!(
            label(Method::DELETE, "/api/v1/admin/invites/X7KQ2M9P"),
            "/api/v1/admin/invites/{code}"
        );
        assert_eq!(
            label(Method::PUT, "/api/v1/messages/5/reactions/%F0%9F%91%8D"),
            "/api/v1/messages/{id}/reactions/{emoji}"
        );
        assert_eq!(label(Method::GET, "/api/v1/users/me"), "/api/v1/users/me");
        assert_eq!(label(Method::GET, "/api/v1/ws"), "/api/v1/ws");
        assert_eq!(label(Method::GET, "/healthz"), "/healthz");
        assert_eq!(label(Method::GET, "/"), STATIC);
        assert_eq!(label(Method::GET, "/some/spa/path"), STATIC);
        assert_eq!(label(Method::GET, "/apiary"), STATIC);
        for (method, path) in [
            (Method::GET, "/api/v1/users/abc"),
            (Method::GET, "/api/v1/users/me/ws/login"),
            (Method::GET, "/api/v1/a/b/c/d/e/f/g/h/i"),
            (Method::GET, "/api"),
            (Method::POST, "/index.html"),
            (Method::GET, "/api/v2/users"),
        ] {
            assert_eq!(label(method, path), UNMATCHED, "{path}");
        }
    }

    #[test]
    fn exposition_has_every_series() {
        let stats = Arc::new(WriterStats::default());
        stats.batch_sizes.observe(3.0);
        let metrics = Metrics::new(Hub::new(16), stats);
        metrics.record_message_sent();
        metrics.record_delivery_latency(0.002);
        metrics.record_http(
            &Method::GET,
            "/api/v1/users/3",
            200,
            Duration::from_millis(3),
        );
        let text = metrics.encode().expect("encode");
        for series in [
            "lanchat_messages_sent_total 1",
            "lanchat_http_requests_total{method=\"GET\",route=\"/api/v1/users/{id}\",status=\"200\"} 1",
            "lanchat_http_request_duration_seconds_bucket{",
            "lanchat_delivery_latency_seconds_count 1",
            "lanchat_db_write_batch_size_bucket{le=\"4.0\"} 1",
            "lanchat_websocket_connections 0",
            "lanchat_online_users 0",
            "lanchat_events_delivered_total 0",
            "lanchat_db_write_transactions_total 0",
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
