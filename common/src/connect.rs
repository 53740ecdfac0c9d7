//! Redis access: one deadpool-redis pool per logical database, URLs built WEPPcloud
//! style (the base URL with its DB path segment replaced), and dedicated connections
//! for blocking commands and pub/sub, over TCP or TLS (`rediss://`).

use crate::config::Config;
use crate::error::{Error, Result};
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

/// A pool of multiplexed connections to one logical database.
pub fn pool(config: &Config, db: u16, max_size: usize) -> Result<Pool> {
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

/// A connection of its own, without response timeout, for blocking commands.
pub async fn dedicated(config: &Config, db: u16) -> Result<MultiplexedConnection> {
    let (client, url) = client(config, db)?;
    client
        .get_multiplexed_async_connection_with_config(&connection_config())
        .await
        .map_err(|source| connect_error(&url, source))
}

/// A pub/sub connection.
pub async fn pubsub(config: &Config, db: u16) -> Result<redis::aio::PubSub> {
    let (client, url) = client(config, db)?;
    client
        .get_async_pubsub()
        .await
        .map_err(|source| connect_error(&url, source))
}

/// Checks that Redis answers, with an error naming the (redacted) URL.
pub async fn ping(config: &Config, db: u16) -> Result<MultiplexedConnection> {
    let mut conn = dedicated(config, db).await?;
    let url = url_with_db(&config.redis.url, db, None, None)?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|source| connect_error(&url, source))?;
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

/// One multiplexed connection shared by every task of a process (commands from many
/// tasks pipeline on it), re-created from the pool after an error.
#[derive(Clone)]
pub struct SharedConnection {
    pool: Pool,
    current: std::sync::Arc<tokio::sync::Mutex<Option<MultiplexedConnection>>>,
}

impl SharedConnection {
    pub fn new(pool: Pool) -> Self {
        SharedConnection {
            pool,
            current: Default::default(),
        }
    }

    /// A handle on the live connection, connecting when there is none.
    pub async fn get(&self) -> Result<MultiplexedConnection> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref() {
            return Ok(c.clone());
        }
        let conn = deadpool_redis::Connection::take(self.pool.get().await?);
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the live connection after an error so the next `get` reconnects.
    pub async fn reset(&self) {
        *self.current.lock().await = None;
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}
