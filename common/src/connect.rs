//! Redis access: where connections to each logical database come from (a fixed URL built
//! WEPPcloud style — the base URL with its DB path segment replaced — through a
//! deadpool-redis pool, or the master Redis Sentinel names, [`crate::sentinel`]), the
//! process-wide [`SharedConnection`], and dedicated connections for blocking commands and
//! pub/sub, over TCP or TLS (`rediss://`).
//!
//! With Sentinel, the process's **master generation** ([`master_generation`]) counts the
//! switches to another master: a [`SharedConnection`] made under an older generation is
//! replaced at its next use, and holders of dedicated or pub/sub connections watch
//! [`master_moved`] to reconnect.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::sentinel::{self, Sentinels};
use crate::tls;
use deadpool_redis::{Manager, Pool, Runtime};
use redis::{self, aio::MultiplexedConnection, AsyncConnectionConfig, Client};
use std::sync::LazyLock;
use std::time::Duration;
use tokio::sync::watch;

/// The process's master generation (moved on by [`next_master_generation`]).
static GENERATION: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::Sender::new(0));

/// How many times this process has switched to another master (Sentinel failovers).
pub fn master_generation() -> u64 {
    *GENERATION.borrow()
}

/// Returns once the process has switched to another master since generation `since`.
pub async fn master_moved(since: u64) {
    let mut rx = GENERATION.subscribe();
    // The sender is a static: it is never dropped.
    let _ = rx.wait_for(|g| *g != since).await;
}

/// The process now uses another master: every connection made before is stale.
pub(crate) fn next_master_generation() {
    GENERATION.send_modify(|g| *g += 1);
}

/// The process's sentinels when the configuration names some.
pub fn sentinels(config: &Config) -> Result<Option<Sentinels>> {
    config
        .redis
        .sentinel
        .as_ref()
        .map(|s| Sentinels::of(config, s))
        .transpose()
}

/// Checks that `url` is a Redis URL runq can use: `redis://` or `rediss://` with a host.
pub fn check_url(url: &str) -> std::result::Result<(), String> {
    let shown = redacted(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "redis url `{shown}` has no scheme (redis:// or rediss://)"
        ));
    };
    if !matches!(scheme, "redis" | "rediss") {
        return Err(format!(
            "redis url `{shown}`: scheme must be redis:// or rediss://"
        ));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("redis url `{shown}` has no host"));
    }
    Ok(())
}

/// Undoes `%XX` escapes (URL userinfo).
pub fn decode_percent(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces the DB path segment of `base` and injects credentials the URL lacks.
pub fn url_with_db(
    base: &str,
    db: u16,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<String> {
    check_url(base).map_err(Error::Config)?;
    let (scheme, rest) = base.split_once("://").unwrap_or(("redis", base));
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let authority = rest.split('/').next().unwrap_or("");
    let authority = if authority.contains('@') || password.is_none() {
        authority.to_string()
    } else {
        format!(
            "{}:{}@{authority}",
            encode(username.unwrap_or("")),
            encode(password.unwrap_or(""))
        )
    };
    let mut url = format!("{scheme}://{authority}/{db}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    Ok(url)
}

/// Percent-encodes URL userinfo.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `url` (as [`url_with_db`] makes it) with its `host:port` replaced by `host_port`.
pub(crate) fn url_at(url: &str, host_port: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("redis", url));
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let userinfo = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    format!("{scheme}://{userinfo}{host_port}{tail}")
}

/// The URL with any password masked, for logs and errors.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(None)
}

/// A failed connection or command, naming the (redacted) URL, with a hint when the
/// server's TLS certificate is not trusted.
fn connect_error(url: &str, source: redis::RedisError) -> Error {
    let url = redacted(url);
    if tls::is_untrusted_certificate(&source) {
        Error::UntrustedServer { url, source }
    } else {
        Error::Redis { url, source }
    }
}

/// Opens a client for one logical database of the configured Redis. A `rediss://` URL
/// connects over TLS (rustls), trusting `redis.ca_file` when set and the system's roots
/// otherwise.
pub fn client(config: &Config, db: u16) -> Result<(Client, String)> {
    let url = url_with_db(
        &config.redis.url,
        db,
        config.redis.username.as_deref(),
        config.redis.password.as_deref(),
    )?;
    let ca = match &config.redis.ca_file {
        Some(path) => {
            if !url.starts_with("rediss://") {
                return Err(Error::Config(format!(
                    "redis.ca_file is set but the redis url `{}` is not rediss:// (TLS)",
                    redacted(&url)
                )));
            }
            Some(tls::read_ca_file(path)?)
        }
        None => None,
    };
    let client = sentinel::client_for(&url, ca.as_deref()).map_err(|source| Error::Redis {
        url: redacted(&url),
        source,
    })?;
    Ok((client, url))
}

/// A pool of multiplexed connections to one logical database at a fixed URL.
fn pool(config: &Config, db: u16, max_size: usize) -> Result<Pool> {
    let (client, url) = client(config, db)?;
    // The client's connection info carries the TLS parameters (CA roots) along.
    let manager =
        Manager::new_with_config(client.get_connection_info().clone(), connection_config())
            .map_err(|source| Error::Redis {
                url: redacted(&url),
                source,
            })?;
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| Error::Pool(e.to_string()))
}

/// A client for the server holding logical database `db` now: the configured URL, or
/// the master the sentinels name (checked to answer `ROLE` as a master). Also what to
/// call it in messages.
pub async fn current_client(config: &Config, db: u16) -> Result<(Client, String)> {
    match sentinels(config)? {
        None => client(config, db),
        Some(s) => {
            let (_, addr) = s.connect(db).await?;
            Ok((s.master_client(&addr, db)?, s.describe_at(&addr, db)))
        }
    }
}

/// The URL of the server holding logical database `db` now, credentials included (for
/// processes that connect themselves: the Python task host's jobs).
pub async fn current_url(config: &Config, db: u16) -> Result<String> {
    let (client, _) = current_client(config, db).await?;
    let info = client.get_connection_info();
    let (scheme, host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(h, p) => ("redis", h.clone(), *p),
        redis::ConnectionAddr::TcpTls { host, port, .. } => ("rediss", host.clone(), *port),
        other => return Err(Error::Config(format!("cannot name {other:?} as a URL"))),
    };
    let r = info.redis_settings();
    let auth = match (r.username(), r.password()) {
        (_, None) => String::new(),
        (u, Some(p)) => format!("{}:{}@", encode(u.unwrap_or("")), encode(p)),
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(format!("{scheme}://{auth}{host}:{port}/{}", r.db()))
}

/// A connection of its own, without response timeout, for blocking commands. (With
/// Sentinel, its holder should reconnect when [`master_moved`].)
pub async fn dedicated(config: &Config, db: u16) -> Result<MultiplexedConnection> {
    if let Some(s) = sentinels(config)? {
        return Ok(s.connect(db).await?.0);
    }
    let (client, url) = client(config, db)?;
    client
        .get_multiplexed_async_connection_with_config(&connection_config())
        .await
        .map_err(|source| connect_error(&url, source))
}

/// A pub/sub connection.
pub async fn pubsub(config: &Config, db: u16) -> Result<redis::aio::PubSub> {
    let (client, url) = current_client(config, db).await?;
    client
        .get_async_pubsub()
        .await
        .map_err(|source| connect_error(&url, source))
}

/// Checks that Redis answers, with an error naming the (redacted) URL; refuses a Redis
/// Cluster, which RQ's key layout cannot use (its keys carry no hash tags, and one job's
/// keys and its queue's would live on different nodes).
pub async fn ping(config: &Config, db: u16) -> Result<MultiplexedConnection> {
    let (mut conn, url) = match sentinels(config)? {
        Some(s) => {
            let (conn, addr) = s.connect(db).await?;
            (conn, s.describe_at(&addr, db))
        }
        None => {
            let (client, url) = client(config, db)?;
            let conn = client
                .get_multiplexed_async_connection_with_config(&connection_config())
                .await
                .map_err(|source| connect_error(&url, source))?;
            (conn, url)
        }
    };
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut conn)
        .await
        .map_err(|source| connect_error(&url, source))?;
    if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
        return Err(Error::Config(format!(
            "redis at {}: Redis Cluster is not supported (RQ's keys have no hash tags, so one job's keys cannot live on one node); use one Redis, or Sentinel for failover",
            redacted(&url)
        )));
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_segment_is_replaced() {
        assert_eq!(
            url_with_db("redis://h:1/3", 9, None, None).unwrap(),
            "redis://h:1/9"
        );
        assert_eq!(
            url_with_db("redis://h:1", 0, None, Some("p@ss")).unwrap(),
            "redis://:p%40ss@h:1/0"
        );
        assert_eq!(
            url_with_db("rediss://u:p@h/2?x=1", 9, None, Some("other")).unwrap(),
            "rediss://u:p@h/9?x=1"
        );
        assert!(url_with_db("http://h", 0, None, None).is_err());
    }

    #[test]
    fn the_address_is_replaced() {
        assert_eq!(
            url_at("redis://h:1/9", "10.0.0.2:6380"),
            "redis://10.0.0.2:6380/9"
        );
        assert_eq!(
            url_at("rediss://u:p%40@h:1/9?x=1", "[::1]:7"),
            "rediss://u:p%40@[::1]:7/9?x=1"
        );
        assert_eq!(url_at("redis://h?x", "a:1"), "redis://a:1?x");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redacted("redis://:pw@h:1/9"), "redis://***@h:1/9");
    }
}

/// Where [`SharedConnection`] gets connections: a pool at a fixed URL, or the master the
/// sentinels name.
#[derive(Clone)]
enum Source {
    Fixed(Pool),
    Sentinel { sentinels: Sentinels, db: u16 },
}

/// One multiplexed connection shared by every task of a process (commands from many
/// tasks pipeline on it), re-created after an error, and — with Sentinel — as soon as the
/// process switches to another master (the connection's master generation is old).
#[derive(Clone)]
pub struct SharedConnection {
    source: Source,
    /// The live connection and the master generation it was made under.
    current: std::sync::Arc<tokio::sync::Mutex<Option<(MultiplexedConnection, u64)>>>,
}

impl SharedConnection {
    /// Connections to logical database `db` (at most `max_size` opened at once).
    pub fn open(config: &Config, db: u16, max_size: usize) -> Result<Self> {
        let source = match sentinels(config)? {
            None => Source::Fixed(pool(config, db, max_size)?),
            Some(sentinels) => Source::Sentinel { sentinels, db },
        };
        Ok(SharedConnection {
            source,
            current: Default::default(),
        })
    }

    /// A handle on the live connection, connecting when there is none or when it was made
    /// for a master the process no longer uses.
    pub async fn get(&self) -> Result<MultiplexedConnection> {
        let mut current = self.current.lock().await;
        // Read before connecting: a switch while connecting makes this one stale.
        let generation = master_generation();
        if let Some((c, made)) = current.as_ref() {
            if *made == generation {
                return Ok(c.clone());
            }
        }
        *current = None;
        let conn = match &self.source {
            Source::Fixed(pool) => deadpool_redis::Connection::take(pool.get().await?),
            Source::Sentinel { sentinels, db } => sentinels.connect(*db).await?.0,
        };
        *current = Some((conn.clone(), generation));
        Ok(conn)
    }

    /// Drops the live connection after an error so the next `get` reconnects.
    pub async fn reset(&self) {
        *self.current.lock().await = None;
    }
}
