//! The metrics endpoint: a minimal HTTP/1.1 responder on `worker.metrics_addr` for
//! `GET /metrics` (queue depths and slot gauges refreshed, then the registry as
//! OpenMetrics text) and `GET /healthz` (200 `ok` while Redis answers PING and the worker
//! is not shutting down, 503 otherwise). Anything else is 404. One request per connection.

use crate::metrics::Metrics;
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::slots::Slots;
use runq_common::connect::SharedConnection;
use runq_common::Keys;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a scrape or health check waits for Redis before answering without it.
const REDIS_WAIT: Duration = Duration::from_secs(2);
/// How long a client gets to send its request head.
const READ_WAIT: Duration = Duration::from_secs(10);
/// Request heads longer than this are refused.
const MAX_HEAD: usize = 8192;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// What the endpoint reads besides the registry.
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub redis: SharedConnection,
    pub slots: Arc<Slots>,
    pub shutdown: Shutdown,
    pub keys: Keys,
    pub queues: Vec<String>,
}

/// Binds the endpoint's address (before the worker registers, so a bad address fails
/// the start).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The endpoint as a service: serves requests until the process exits.
pub struct MetricsEndpoint {
    pub listener: TcpListener,
    pub sources: Arc<Sources>,
}

impl Service for MetricsEndpoint {
    const NAME: &'static str = "metrics endpoint";

    async fn run(self, shutdown: Shutdown) {
        serve(self.listener, self.sources, shutdown).await
    }
}

async fn serve(listener: TcpListener, sources: Arc<Sources>, shutdown: Shutdown) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics endpoint listening (/metrics, /healthz)");
    }
    loop {
        let stream = tokio::select! {
            _ = shutdown.exiting() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            if let Err(e) = respond(stream, &sources).await {
                tracing::debug!(error = %e, "metrics endpoint: connection failed");
            }
        });
    }
}

async fn respond(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_WAIT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let (status, content_type, body) = match request_target(&head) {
        Some(("GET", "/metrics")) => {
            refresh(sources).await;
            ("200 OK", OPENMETRICS, sources.metrics.encode())
        }
        Some(("GET", "/healthz")) => match health(sources).await {
            Ok(()) => ("200 OK", TEXT, "ok\n".to_string()),
            Err(why) => ("503 Service Unavailable", TEXT, format!("{why}\n")),
        },
        Some(_) => ("404 Not Found", TEXT, "not found\n".to_string()),
        None => ("400 Bad Request", TEXT, "bad request\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the end of the request head (`\r\n\r\n`), at most [`MAX_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_HEAD {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Method and path (query string dropped) of the request line.
fn request_target(head: &str) -> Option<(&str, &str)> {
    let mut parts = head.lines().next()?.split_whitespace();
    let method = parts.next()?;
    let target = parts.next()?;
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    Some((method, target.split('?').next().unwrap_or(target)))
}

/// Updates the scrape-time gauges: busy slots, and queue depths when Redis answers in
/// time (otherwise the last values stay).
async fn refresh(sources: &Sources) {
    sources
        .metrics
        .set_slots(sources.slots.busy_count(), sources.slots.len());
    let lengths = tokio::time::timeout(REDIS_WAIT, async {
        let mut conn = sources.redis.get().await.ok()?;
        let mut pipe = redis::pipe();
        for q in &sources.queues {
            pipe.cmd("LLEN").arg(sources.keys.queue(q));
        }
        pipe.query_async::<Vec<i64>>(&mut conn).await.ok()
    })
    .await;
    match lengths {
        Ok(Some(lengths)) => {
            for (q, n) in sources.queues.iter().zip(lengths) {
                sources.metrics.set_queue_depth(q, n);
            }
        }
        _ => tracing::debug!("metrics scrape: Redis did not answer LLEN; queue depths are stale"),
    }
}

/// Ok while the worker runs and Redis answers PING; otherwise why not.
async fn health(sources: &Sources) -> Result<(), String> {
    if sources.shutdown.is_warm() {
        return Err("stopping: the worker is shutting down".into());
    }
    let ping = tokio::time::timeout(REDIS_WAIT, async {
        let mut conn = sources.redis.get().await.map_err(|e| e.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    match ping {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            // A broken connection is replaced, as the watchdog does.
            sources.redis.reset().await;
            Err(format!("redis: {e}"))
        }
        Err(_) => Err(format!("redis: no answer to PING within {REDIS_WAIT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_is_parsed() {
        assert_eq!(
            request_target("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_target("GET /healthz?verbose=1 HTTP/1.0\r\n\r\n"),
            Some(("GET", "/healthz"))
        );
        assert_eq!(request_target("garbage\r\n\r\n"), None);
        assert_eq!(request_target(""), None);
    }
}
