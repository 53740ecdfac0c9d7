//! Redis Sentinel (`[redis.sentinel]`, RQ's `SENTINEL` settings), the way the Redis
//! "Sentinel clients" guidelines say to find the master: the sentinels are asked in turn
//! `SENTINEL GET-MASTER-ADDR-BY-NAME <name>` (each with short connect and response
//! timeouts); the first that names an address wins, and is asked first next time; the
//! server it names must answer `ROLE` as a master, else the next sentinel is asked. The
//! master's credentials, database and TLS come from `redis.url` / `redis.password` /
//! `redis.ca_file`, the sentinels' own from the section.
//!
//! `SENTINEL MASTERS` is not read: during a failover it still lists the old master
//! (flagged `failover_in_progress`, and still answering `ROLE` master until the sentinels
//! demote it) after `GET-MASTER-ADDR-BY-NAME` already names the promoted replica.
//!
//! A process remembers the master it uses ([`Sentinels::known`]). New connections go there
//! while it answers as a master; when a sentinel names another one ([`Sentinels::follow`],
//! called by the worker's Sentinel watch on `+switch-master` and by its poll) or the known
//! one fails and the sentinels name another, the process-wide master generation moves on
//! ([`crate::connect::master_generation`]) and every [`crate::connect::SharedConnection`]
//! reconnects to the new master at its next use.

use crate::config::{Config, SentinelConfig};
use crate::connect;
use crate::error::{Error, Result};
use crate::tls;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

/// How long a sentinel may take to accept a connection, and to answer a command.
pub const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the named master may take to accept a connection, and to answer `ROLE`.
pub const MASTER_TIMEOUT: Duration = Duration::from_secs(2);

/// A server's address as a sentinel names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Addr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A sentinel's answer: where the master is, the configuration epoch of that view (when
/// the sentinel tells it), and which sentinel said so (its index in `nodes`).
#[derive(Debug, Clone)]
pub struct Named {
    pub addr: Addr,
    pub epoch: Option<u64>,
    pub sentinel: usize,
}

/// Why asking one sentinel, or checking the server it named, did not give a master.
struct Failure {
    text: String,
    /// Refused credentials or an untrusted certificate: asking again will not help.
    fatal: Option<Error>,
}

impl Failure {
    fn new(text: String) -> Self {
        Failure { text, fatal: None }
    }
}

/// True for an error that retrying with the same settings cannot cure.
fn refused(e: &RedisError) -> bool {
    matches!(e.kind(), redis::ErrorKind::AuthenticationFailed)
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH"))
        || tls::is_untrusted_certificate(e)
}

struct Node {
    label: String,
    client: Client,
    /// A connection kept for the next question (dropped after an error).
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

struct State {
    /// The order in which the sentinels are asked.
    order: Vec<usize>,
    /// The master this process uses.
    known: Option<Named>,
}

struct Inner {
    master: String,
    nodes: Vec<Node>,
    /// `redis.url` and the credentials it may lack (the master's).
    base_url: String,
    username: Option<String>,
    password: Option<String>,
    /// `redis.ca_file`'s certificates.
    ca: Option<Vec<u8>>,
    state: Mutex<State>,
}

/// The sentinels of one `[redis.sentinel]` section, shared by everything in a process that
/// uses that section (one ask order, one known master).
#[derive(Clone)]
pub struct Sentinels(Arc<Inner>);

/// The process's sentinel sets, by configuration.
static SETS: LazyLock<Mutex<HashMap<String, Sentinels>>> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The client for `url` (`rediss://`: TLS trusting `ca` when given, the system's roots
/// otherwise).
pub(crate) fn client_for(url: &str, ca: Option<&[u8]>) -> std::result::Result<Client, RedisError> {
    if !url.starts_with("rediss://") {
        return Client::open(url);
    }
    tls::install_crypto_provider();
    match ca {
        Some(root) => Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root.to_vec()),
            },
        ),
        None => Client::open(url),
    }
}

impl Sentinels {
    /// The process's sentinels for `s` (built on first use).
    pub fn of(config: &Config, s: &SentinelConfig) -> Result<Sentinels> {
        let key = format!(
            "{s:?}|{}|{:?}|{:?}|{:?}",
            config.redis.url, config.redis.username, config.redis.password, config.redis.ca_file
        );
        if let Some(found) = lock(&SETS).get(&key) {
            return Ok(found.clone());
        }
        let built = Self::build(config, s)?;
        Ok(lock(&SETS).entry(key).or_insert(built).clone())
    }

    fn build(config: &Config, s: &SentinelConfig) -> Result<Sentinels> {
        let addrs = s
            .addrs()
            .map_err(|e| Error::Config(format!("redis.sentinel.nodes: {e}")))?;
        if addrs.is_empty() {
            return Err(Error::Config(
                "redis.sentinel.nodes needs at least one host:port".into(),
            ));
        }
        let ca = match &config.redis.ca_file {
            Some(path) => Some(tls::read_ca_file(path)?),
            None => None,
        };
        let scheme = if s.tls { "rediss" } else { "redis" };
        let auth = match (&s.username, &s.password) {
            (u, Some(p)) => format!(
                "{}:{}@",
                connect::encode(u.as_deref().unwrap_or("")),
                connect::encode(p)
            ),
            (Some(u), None) => format!("{}@", connect::encode(u)),
            (None, None) => String::new(),
        };
        let nodes = addrs
            .into_iter()
            .map(|(host, port)| {
                let addr = Addr { host, port };
                let url = format!("{scheme}://{auth}{addr}/");
                let client = client_for(&url, ca.as_deref()).map_err(|e| {
                    Error::Config(format!("redis.sentinel.nodes: sentinel {addr}: {e}"))
                })?;
                Ok(Node {
                    label: addr.to_string(),
                    client,
                    conn: Default::default(),
                })
            })
            .collect::<Result<Vec<Node>>>()?;
        // The master's URL must be usable for any address a sentinel names.
        connect::check_url(&config.redis.url).map_err(Error::Config)?;
        Ok(Sentinels(Arc::new(Inner {
            master: s.master.clone(),
            state: Mutex::new(State {
                order: (0..nodes.len()).collect(),
                known: None,
            }),
            nodes,
            base_url: config.redis.url.clone(),
            username: config.redis.username.clone(),
            password: config.redis.password.clone(),
            ca,
        })))
    }

    /// The name the sentinels monitor the master under.
    pub fn master_name(&self) -> &str {
        &self.0.master
    }

    /// How many sentinels there are.
    pub fn len(&self) -> usize {
        self.0.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.nodes.is_empty()
    }

    /// Sentinel `i` as `host:port`.
    pub fn label(&self, i: usize) -> &str {
        &self.0.nodes[i].label
    }

    fn labels(&self) -> String {
        self.0
            .nodes
            .iter()
            .map(|n| n.label.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The sentinels, in the order they are asked (the last one that answered first).
    pub fn order(&self) -> Vec<usize> {
        lock(&self.0.state).order.clone()
    }

    /// Sentinel `i` is asked first from now on.
    fn to_front(&self, i: usize) {
        let mut state = lock(&self.0.state);
        if let Some(at) = state.order.iter().position(|n| *n == i) {
            state.order.remove(at);
            state.order.insert(0, i);
        }
    }

    /// The master this process uses (None before the first lookup).
    pub fn known(&self) -> Option<Named> {
        lock(&self.0.state).known.clone()
    }

    /// How the master at `addr` is named in messages.
    pub fn describe_at(&self, addr: &Addr, db: u16) -> String {
        format!("sentinel master {} at {addr} (db {db})", self.0.master)
    }

    /// A client for logical database `db` of the server at `addr`, with the master's
    /// credentials and TLS.
    pub fn master_client(&self, addr: &Addr, db: u16) -> Result<Client> {
        let i = &self.0;
        let url = connect::url_with_db(
            &i.base_url,
            db,
            i.username.as_deref(),
            i.password.as_deref(),
        )?;
        let url = connect::url_at(&url, &addr.to_string());
        client_for(&url, i.ca.as_deref()).map_err(|source| Error::Redis {
            url: connect::redacted(&url),
            source,
        })
    }

    /// A connection of sentinel `i`, opened when there is none.
    async fn sentinel_conn(&self, i: usize) -> std::result::Result<MultiplexedConnection, Failure> {
        let node = &self.0.nodes[i];
        let mut slot = node.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(SENTINEL_TIMEOUT))
            .set_response_timeout(Some(SENTINEL_TIMEOUT));
        let opened = tokio::time::timeout(
            SENTINEL_TIMEOUT * 2,
            node.client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        match opened {
            Ok(Ok(c)) => {
                *slot = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => Err(self.sentinel_failure(i, e)),
            Err(_) => Err(Failure::new(format!(
                "sentinel {}: no connection within {SENTINEL_TIMEOUT:?}",
                node.label
            ))),
        }
    }

    fn sentinel_failure(&self, i: usize, e: RedisError) -> Failure {
        let label = &self.0.nodes[i].label;
        let text = format!("sentinel {label}: {e}");
        let fatal = refused(&e).then(|| {
            if tls::is_untrusted_certificate(&e) {
                Error::UntrustedServer {
                    url: format!("sentinel {label}"),
                    source: e,
                }
            } else {
                Error::Redis {
                    url: format!("sentinel {label}"),
                    source: e,
                }
            }
        });
        Failure { text, fatal }
    }

    /// Asks sentinel `i` where the master is (`Ok(None)`: it knows no master by the name).
    async fn ask_one(&self, i: usize) -> std::result::Result<Option<Named>, Failure> {
        let mut conn = self.sentinel_conn(i).await?;
        let drop_conn = || async { *self.0.nodes[i].conn.lock().await = None };
        let named: Option<(String, String)> = match redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.0.master)
            .query_async(&mut conn)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                drop_conn().await;
                return Err(self.sentinel_failure(i, e));
            }
        };
        let Some((host, port)) = named else {
            return Ok(None);
        };
        let port: u16 = port.parse().map_err(|_| {
            Failure::new(format!(
                "sentinel {}: names a master with port `{port}`",
                self.0.nodes[i].label
            ))
        })?;
        // The configuration epoch of that view: a sentinel that has not heard of a
        // failover yet names the old master with an older epoch. (Optional: a sentinel
        // user may be allowed GET-MASTER-ADDR-BY-NAME only.)
        let epoch = match redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(&self.0.master)
            .query_async::<HashMap<String, String>>(&mut conn)
            .await
        {
            Ok(fields) => fields.get("config-epoch").and_then(|e| e.parse().ok()),
            Err(e) => {
                if e.is_io_error() || e.is_timeout() {
                    drop_conn().await;
                }
                None
            }
        };
        Ok(Some(Named {
            addr: Addr { host, port },
            epoch,
            sentinel: i,
        }))
    }

    /// Asks sentinel `i` where the master is: its address, or None when it does not answer
    /// with one.
    pub async fn ask(&self, i: usize) -> Option<Named> {
        self.ask_one(i).await.ok().flatten()
    }

    /// Asks the sentinels in turn where the master is; the first that names an address
    /// wins (and is asked first next time). `ROLE` is not checked.
    pub async fn ask_in_turn(&self) -> Result<Named> {
        let mut reasons = Vec::new();
        for i in self.order() {
            match self.ask_one(i).await {
                Ok(Some(named)) => {
                    self.to_front(i);
                    return Ok(named);
                }
                Ok(None) => reasons.push(self.unknown_master(i)),
                Err(f) => reasons.push(f.text),
            }
        }
        Err(self.no_master(reasons))
    }

    fn unknown_master(&self, i: usize) -> String {
        format!(
            "sentinel {}: knows no master named `{}`",
            self.0.nodes[i].label, self.0.master
        )
    }

    fn no_master(&self, reasons: Vec<String>) -> Error {
        Error::NoMaster {
            master: self.0.master.clone(),
            sentinels: self.labels(),
            reasons: reasons.join("; "),
        }
    }

    /// Connects to logical database `db` of the server at `addr` and checks that it
    /// answers `ROLE` as a master. The connection has no response timeout (blocking
    /// commands and long scripts use it).
    async fn open_master(
        &self,
        addr: &Addr,
        db: u16,
    ) -> std::result::Result<MultiplexedConnection, Failure> {
        let at = || self.describe_at(addr, db);
        let client = self.master_client(addr, db).map_err(|e| Failure {
            text: e.to_string(),
            fatal: Some(e),
        })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(MASTER_TIMEOUT))
            .set_response_timeout(None);
        let failed = |e: RedisError| {
            let text = format!("{}: {e}", at());
            let fatal = refused(&e).then(|| {
                if tls::is_untrusted_certificate(&e) {
                    Error::UntrustedServer {
                        url: at(),
                        source: e,
                    }
                } else {
                    Error::Redis {
                        url: at(),
                        source: e,
                    }
                }
            });
            Failure { text, fatal }
        };
        let no_answer = || Failure::new(format!("{}: no answer within {MASTER_TIMEOUT:?}", at()));
        let mut conn = tokio::time::timeout(
            MASTER_TIMEOUT * 2,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| no_answer())?
        .map_err(failed)?;
        let role: redis::Value =
            tokio::time::timeout(MASTER_TIMEOUT, redis::cmd("ROLE").query_async(&mut conn))
                .await
                .map_err(|_| no_answer())?
                .map_err(failed)?;
        let role = match &role {
            redis::Value::Array(items) => items
                .first()
                .and_then(|r| redis::from_redis_value_ref::<String>(r).ok()),
            _ => None,
        };
        match role.as_deref() {
            Some("master") => Ok(conn),
            other => Err(Failure::new(format!(
                "{}: ROLE is {}, not master",
                at(),
                other.unwrap_or("unreadable")
            ))),
        }
    }

    /// Finds the master: asks the sentinels in turn, connects to the first address named
    /// and checks its `ROLE`, else asks the next sentinel. The sentinel whose answer is
    /// used is asked first next time.
    pub async fn lookup(&self, db: u16) -> Result<(Named, MultiplexedConnection)> {
        let mut reasons = Vec::new();
        // Set while every sentinel so far refused our credentials (or certificate).
        let mut refused_by_all: Option<Error> = None;
        let mut all_refused = true;
        for i in self.order() {
            let named = match self.ask_one(i).await {
                Ok(Some(named)) => named,
                Ok(None) => {
                    all_refused = false;
                    reasons.push(self.unknown_master(i));
                    continue;
                }
                Err(f) => {
                    match f.fatal {
                        Some(e) => refused_by_all = refused_by_all.or(Some(e)),
                        None => all_refused = false,
                    }
                    reasons.push(f.text);
                    continue;
                }
            };
            all_refused = false;
            match self.open_master(&named.addr, db).await {
                Ok(conn) => {
                    self.to_front(i);
                    return Ok((named, conn));
                }
                // The master refuses the credentials or its certificate is not trusted:
                // another sentinel's answer will not change that.
                Err(Failure { fatal: Some(e), .. }) => return Err(e),
                Err(f) => reasons.push(format!(
                    "sentinel {} names {}",
                    self.0.nodes[i].label, f.text
                )),
            }
        }
        match refused_by_all {
            Some(e) if all_refused => Err(e),
            _ => Err(self.no_master(reasons)),
        }
    }

    /// A connection to logical database `db` of the master: the one this process uses
    /// while it answers as a master, else the one the sentinels name now (which then
    /// becomes the process's master).
    pub async fn connect(&self, db: u16) -> Result<(MultiplexedConnection, Addr)> {
        if let Some(known) = self.known() {
            match self.open_master(&known.addr, db).await {
                Ok(conn) => return Ok((conn, known.addr)),
                Err(Failure { fatal: Some(e), .. }) => return Err(e),
                Err(f) => {
                    tracing::debug!(reason = %f.text, "the known master is not usable; asking the sentinels")
                }
            }
        }
        let (named, conn) = self.lookup(db).await?;
        let addr = named.addr.clone();
        self.adopt(named);
        Ok((conn, addr))
    }

    /// Makes `named` the master this process uses. When it is another server than before,
    /// logs the switch and moves the master generation on, so every shared connection
    /// reconnects. True when it switched.
    pub fn adopt(&self, named: Named) -> bool {
        let mut state = lock(&self.0.state);
        let previous = state.known.replace(named.clone());
        match previous {
            None => {
                tracing::debug!(master = %named.addr, name = %self.0.master, "redis master found");
                false
            }
            Some(p) if p.addr == named.addr => {
                // The same server; keep the newest epoch seen.
                if let Some(k) = state.known.as_mut() {
                    k.epoch = named.epoch.max(p.epoch);
                }
                false
            }
            Some(p) => {
                drop(state);
                tracing::warn!(
                    name = %self.0.master,
                    sentinel = %self.0.nodes[named.sentinel].label,
                    epoch = ?named.epoch,
                    "redis master is now {} (was {})",
                    named.addr,
                    p.addr
                );
                connect::next_master_generation();
                true
            }
        }
    }

    /// After a sentinel named `named` as the master: makes it the process's master when it
    /// is another server that answers `ROLE` as a master — unless `named` comes with an
    /// older configuration epoch than the master in use and that one still answers as a
    /// master (a sentinel that has not heard of the last failover yet). True when the
    /// process switched.
    pub async fn follow(&self, named: Named, db: u16) -> bool {
        let Some(known) = self.known() else {
            return match self.open_master(&named.addr, db).await {
                Ok(_) => self.adopt(named),
                Err(_) => false,
            };
        };
        if known.addr == named.addr {
            return self.adopt(named);
        }
        if let (Some(theirs), Some(ours)) = (named.epoch, known.epoch) {
            if theirs < ours && self.open_master(&known.addr, db).await.is_ok() {
                tracing::debug!(
                    sentinel = %self.0.nodes[named.sentinel].label,
                    named = %named.addr,
                    epoch = theirs,
                    master = %known.addr,
                    known_epoch = ours,
                    "a sentinel names an older master; staying"
                );
                return false;
            }
        }
        match self.open_master(&named.addr, db).await {
            Ok(_) => self.adopt(named),
            Err(f) => {
                tracing::debug!(
                    sentinel = %self.0.nodes[named.sentinel].label,
                    reason = %f.text,
                    "a sentinel names another master, which is not usable yet; staying on {}",
                    known.addr
                );
                false
            }
        }
    }

    /// A pub/sub connection to sentinel `i` (for `+switch-master`).
    pub async fn subscriber(&self, i: usize) -> Result<redis::aio::PubSub> {
        let node = &self.0.nodes[i];
        let failed = |source| Error::Redis {
            url: format!("sentinel {}", node.label),
            source,
        };
        tokio::time::timeout(SENTINEL_TIMEOUT * 2, node.client.get_async_pubsub())
            .await
            .map_err(|_| {
                failed(RedisError::from((
                    redis::ErrorKind::Io,
                    "no connection within the sentinel timeout",
                )))
            })?
            .map_err(failed)
    }

    /// The master a sentinel event names when it is about this master: `+switch-master`
    /// (`<name> <old-ip> <old-port> <new-ip> <new-port>`) and `+promoted-slave`
    /// (`slave <ip>:<port> <ip> <port> @ <name> <master-ip> <master-port>`, the replica
    /// just promoted).
    pub fn event_names(&self, channel: &str, payload: &str) -> Option<Addr> {
        let words: Vec<&str> = payload.split_whitespace().collect();
        let (name, host, port) = match channel {
            "+switch-master" if words.len() >= 5 => (words[0], words[3], words[4]),
            "+promoted-slave" if words.len() >= 8 && words[4] == "@" => {
                (words[5], words[2], words[3])
            }
            _ => return None,
        };
        if name != self.0.master {
            return None;
        }
        Some(Addr {
            host: host.to_string(),
            port: port.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinels(master: &str) -> Sentinels {
        let mut config = Config::default();
        let s = SentinelConfig {
            master: master.into(),
            nodes: vec!["127.0.0.1:1".into(), "[::1]:2".into(), "h:3".into()],
            username: None,
            password: Some("s p".into()),
            tls: false,
        };
        config.redis.url = "redis://u:pw@ignored:6379/0?protocol=resp2".into();
        config.redis.sentinel = Some(s.clone());
        Sentinels::of(&config, &s).unwrap()
    }

    #[test]
    fn events_name_the_new_master() {
        let s = sentinels("mymaster");
        assert_eq!(
            s.event_names("+switch-master", "mymaster 127.0.0.1 6379 127.0.0.1 6380"),
            Some(Addr {
                host: "127.0.0.1".into(),
                port: 6380
            })
        );
        assert_eq!(
            s.event_names("+switch-master", "other 127.0.0.1 6379 127.0.0.1 6380"),
            None
        );
        assert_eq!(
            s.event_names(
                "+promoted-slave",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379"
            ),
            Some(Addr {
                host: "127.0.0.1".into(),
                port: 6380
            })
        );
        assert_eq!(
            s.event_names("+sdown", "master mymaster 127.0.0.1 6379"),
            None
        );
    }

    #[test]
    fn the_master_client_takes_the_urls_credentials_and_db() {
        let s = sentinels("m1");
        let c = s
            .master_client(
                &Addr {
                    host: "10.0.0.2".into(),
                    port: 6380,
                },
                9,
            )
            .unwrap();
        let info = c.get_connection_info();
        assert_eq!(
            info.addr(),
            &redis::ConnectionAddr::Tcp("10.0.0.2".into(), 6380)
        );
        assert_eq!(info.redis_settings().db(), 9);
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert_eq!(s.label(1), "[::1]:2");
        assert_eq!(s.order(), vec![0, 1, 2]);
        s.to_front(2);
        assert_eq!(s.order(), vec![2, 0, 1]);
        assert!(Sentinels::of(
            &Config::default(),
            &SentinelConfig {
                master: "m".into(),
                nodes: vec!["nope".into()],
                username: None,
                password: None,
                tls: false,
            }
        )
        .is_err());
    }

    #[test]
    fn adopting_another_master_moves_the_generation() {
        let s = sentinels("m2");
        let at = |port| Named {
            addr: Addr {
                host: "127.0.0.1".into(),
                port,
            },
            epoch: Some(port as u64),
            sentinel: 0,
        };
        let g = connect::master_generation();
        assert!(!s.adopt(at(10)));
        assert!(!s.adopt(at(10)));
        assert_eq!(connect::master_generation(), g);
        assert!(s.adopt(at(11)));
        assert!(connect::master_generation() > g);
        assert_eq!(s.known().map(|k| k.addr.port), Some(11));
    }
}
