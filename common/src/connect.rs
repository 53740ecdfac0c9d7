//! Redis access: where connections to each logical database come from (a fixed URL built
//! WEPPcloud style — the base URL with its DB path segment replaced — through a
//! deadpool-redis pool, or the master Redis Sentinel names now), the process-wide
//! [`SharedConnection`], and dedicated connections for blocking commands and pub/sub,
//! over TCP or TLS (`rediss://`).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::sentinel;
use crate::tls;
use deadpool_redis::{Manager, Pool, Runtime};
use redis::{self, aio::MultiplexedConnection, AsyncConnectionConfig, Client};
use std::time::Duration;

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

fn encode(s: &str) -> String {
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
    let redis_error = |source| Error::Redis {
        url: redacted(&url),
        source,
    };
    let client = match &config.redis.ca_file {
        Some(path) => {
            if !url.starts_with("rediss://") {
                return Err(Error::Config(format!(
                    "redis.ca_file is set but the redis url `{}` is not rediss:// (TLS)",
                    redacted(&url)
                )));
            }
            let root_cert = tls::read_ca_file(path)?;
            tls::install_crypto_provider();
            Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
            .map_err(redis_error)?
        }
        None => {
            if url.starts_with("rediss://") {
                tls::install_crypto_provider();
            }
            Client::open(url.as_str()).map_err(redis_error)?
        }
    };
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
/// the master the sentinels name. Also what to call it in messages.
pub async fn current_client(config: &Config, db: u16) -> Result<(Client, String)> {
    match &config.redis.sentinel {
        None => client(config, db),
        Some(s) => {
            let name = sentinel::describe(s, db);
            let mut sc = sentinel::client(config, s, db)?;
            let master = tokio::time::timeout(Duration::from_secs(10), sc.async_get_client())
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "no sentinel answered within 10 s",
                    )))
                })
                .map_err(|source| Error::Redis {
                    url: name.clone(),
                    source,
                })?;
            Ok((master, name))
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

/// A connection of its own, without response timeout, for blocking commands.
pub async fn dedicated(config: &Config, db: u16) -> Result<MultiplexedConnection> {
    let (client, url) = current_client(config, db).await?;
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
    let (client, url) = current_client(config, db).await?;
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&connection_config())
        .await
        .map_err(|source| connect_error(&url, source))?;
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
    fn passwords_are_redacted() {
        assert_eq!(redacted("redis://:pw@h:1/9"), "redis://***@h:1/9");
    }
}

/// Where [`SharedConnection`] gets connections: a pool at a fixed URL, or the master the
/// sentinels name (asked again for every new connection).
#[derive(Clone)]
enum Source {
    Fixed(Pool),
    Sentinel {
        client: std::sync::Arc<tokio::sync::Mutex<redis::sentinel::SentinelClient>>,
        name: String,
    },
}

/// One multiplexed connection shared by every task of a process (commands from many
/// tasks pipeline on it), re-created after an error — after a Sentinel failover, on the
/// new master.
#[derive(Clone)]
pub struct SharedConnection {
    source: Source,
    current: std::sync::Arc<tokio::sync::Mutex<Option<MultiplexedConnection>>>,
}

impl SharedConnection {
    /// Connections to logical database `db` (at most `max_size` opened at once).
    pub fn open(config: &Config, db: u16, max_size: usize) -> Result<Self> {
        let source = match &config.redis.sentinel {
            None => Source::Fixed(pool(config, db, max_size)?),
            Some(s) => Source::Sentinel {
                client: std::sync::Arc::new(tokio::sync::Mutex::new(sentinel::client(
                    config, s, db,
                )?)),
                name: sentinel::describe(s, db),
            },
        };
        Ok(SharedConnection {
            source,
            current: Default::default(),
        })
    }

    /// A handle on the live connection, connecting when there is none.
    pub async fn get(&self) -> Result<MultiplexedConnection> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            return Ok(c.clone());
        }
        let conn = match &self.source {
            Source::Fixed(pool) => deadpool_redis::Connection::take(pool.get().await?),
            Source::Sentinel { client, name } => {
                let master = {
                    let mut sc = client.lock().await;
                    tokio::time::timeout(Duration::from_secs(10), sc.async_get_client())
                        .await
                        .unwrap_or_else(|_| {
                            Err(redis::RedisError::from((
                                redis::ErrorKind::Io,
                                "no sentinel answered within 10 s",
                            )))
                        })
                        .map_err(|source| Error::Redis {
                            url: name.clone(),
                            source,
                        })?
                };
                master
                    .get_multiplexed_async_connection_with_config(&connection_config())
                    .await
                    .map_err(|source| connect_error(name, source))?
            }
        };
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the live connection after an error so the next `get` reconnects.
    pub async fn reset(&self) {
        *self.current.lock().await = None;
    }
}
