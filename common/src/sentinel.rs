//! Redis Sentinel (`[redis.sentinel]`, RQ's `SENTINEL` settings): asking the sentinels
//! which server is the master now (redis-rs's `SentinelClient`, which also checks the
//! server's `ROLE`), with the master's credentials, database and TLS taken from
//! `redis.url` / `redis.password` / `redis.ca_file` and the sentinels' own from the section.

use crate::config::{Config, SentinelConfig};
use crate::error::{Error, Result};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{ConnectionAddr, TlsMode};

/// How the master is named in messages: `sentinel master mymaster (db 9)`.
pub fn describe(s: &SentinelConfig, db: u16) -> String {
    format!(
        "sentinel master {} (db {db}, via {})",
        s.master,
        s.nodes.join(",")
    )
}

/// A client that finds the master of `s` for logical database `db`.
pub fn client(config: &Config, s: &SentinelConfig, db: u16) -> Result<SentinelClient> {
    let bad = |e: redis::RedisError| Error::Config(format!("redis.sentinel: {e}"));
    let sentinel_tls = s.tls;
    let master_tls = config.redis.url.starts_with("rediss://");
    let addrs: Vec<ConnectionAddr> = s
        .addrs()
        .map_err(|e| Error::Config(format!("redis.sentinel.nodes: {e}")))?
        .into_iter()
        .map(|(host, port)| {
            if sentinel_tls {
                ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host, port)
            }
        })
        .collect();
    let (username, password) = master_credentials(config);
    let mut b = SentinelClientBuilder::new(addrs, &s.master, SentinelServerType::Master)
        .map_err(bad)?
        .set_client_to_redis_db(i64::from(db));
    if let Some(u) = username {
        b = b.set_client_to_redis_username(u);
    }
    if let Some(p) = password {
        b = b.set_client_to_redis_password(p);
    }
    if let Some(u) = &s.username {
        b = b.set_client_to_sentinel_username(u);
    }
    if let Some(p) = &s.password {
        b = b.set_client_to_sentinel_password(p);
    }
    if master_tls || sentinel_tls {
        crate::tls::install_crypto_provider();
    }
    if master_tls {
        b = b.set_client_to_redis_tls_mode(TlsMode::Secure);
    }
    if sentinel_tls {
        b = b.set_client_to_sentinel_tls_mode(TlsMode::Secure);
    }
    if let Some(path) = &config.redis.ca_file {
        let root = crate::tls::read_ca_file(path)?;
        let certs = || redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root.clone()),
        };
        if master_tls {
            b = b.set_client_to_redis_certificates(certs());
        }
        if sentinel_tls {
            b = b.set_client_to_sentinel_certificates(certs());
        }
    }
    b.build().map_err(bad)
}

/// The master's username and password: `redis.url`'s, else `redis.username`/`password`.
fn master_credentials(config: &Config) -> (Option<String>, Option<String>) {
    let url = &config.redis.url;
    let userinfo = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(u, _)| u.to_string());
    match userinfo {
        Some(u) => {
            let (user, pass) = match u.split_once(':') {
                Some((user, pass)) => (user.to_string(), Some(pass.to_string())),
                None => (u.clone(), None),
            };
            let user = (!user.is_empty()).then_some(user);
            (user, pass.map(|p| crate::connect::decode_percent(&p)))
        }
        None => (config.redis.username.clone(), config.redis.password.clone()),
    }
}
