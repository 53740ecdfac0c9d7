//! The launcher: turns a configuration into a running worker process — checks Redis,
//! registers one RQ worker per slot, starts the fetcher, processors, heartbeat and
//! command listener — and owns shutdown: first SIGTERM/SIGINT (or an RQ `shutdown`
//! command) stops claiming and lets running jobs finish within the grace period; a
//! second signal, or the grace running out, cancels them and returns them to a safe state.

use crate::commands;
use crate::fetch::Fetcher;
use crate::heartbeat;
use crate::maintenance;
use crate::metrics::Metrics;
use crate::metrics_http;
use crate::processor::{self, ProcessorContext};
use crate::registration::{self, Identity};
use crate::run::keeper::LockKeeper;
use crate::run::RunServices;
use crate::scheduler;
use crate::shutdown::Shutdown;
use crate::slots::Slots;
use crate::tasks::table::TaskTable;
use crate::tasks::Registry;
use runq_common::config::{Config, QueueConfig};
use runq_common::connect::{self, SharedConnection};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Command-line choices that override the configuration.
#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Queues in priority order.
    pub queues: Option<Vec<String>>,
    pub concurrency: Option<usize>,
    /// Exit when the queues are empty.
    pub burst: bool,
    /// Base worker name; slots are `<name>` (one slot) or `<name>-<n>`.
    pub name: Option<String>,
}

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Common(#[from] runq_common::Error),
    #[error("there exists an active worker named {0} (its key has no `death` field); pick another --name")]
    NameTaken(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot listen on metrics address `{addr}`: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("{0}")]
    Tasks(String),
}

/// Applies the command-line options to the configuration.
pub fn apply_options(mut config: Config, opts: &WorkerOptions) -> runq_common::Result<Config> {
    if let Some(queues) = &opts.queues {
        config.queues = queues
            .iter()
            .map(|name| {
                config
                    .queues
                    .iter()
                    .find(|q| &q.name == name)
                    .cloned()
                    .unwrap_or_else(|| QueueConfig::named(name))
            })
            .collect();
    }
    if let Some(c) = opts.concurrency {
        config.worker.concurrency = c;
    }
    config.validate()?;
    Ok(config)
}

fn slot_names(base: &str, n: usize) -> Vec<String> {
    if n == 1 {
        vec![base.to_string()]
    } else {
        (1..=n).map(|i| format!("{base}-{i}")).collect()
    }
}

/// Runs the worker until it is told to stop (or, with `burst`, until the queues are empty).
pub async fn run(
    config: Config,
    opts: WorkerOptions,
    registry: Registry,
) -> Result<(), LaunchError> {
    let config = Arc::new(apply_options(config, &opts)?);
    let table = TaskTable::build(&config, &registry).map_err(LaunchError::Tasks)?;
    let keys = config.keys();
    let queues = config.queue_names();
    let mut probe = connect::ping(&config, config.redis.db.rq).await?;
    let metrics_addr = config.worker.metrics_addr.trim().to_string();
    let metrics_listener =
        if metrics_addr.is_empty() {
            None
        } else {
            Some(metrics_http::bind(&metrics_addr).await.map_err(|source| {
                LaunchError::Metrics {
                    addr: metrics_addr.clone(),
                    source,
                }
            })?)
        };
    let metrics = Arc::new(Metrics::new(metrics_listener.is_some()));

    let identity = Identity::discover(&mut probe, queues.clone()).await;
    let base = opts
        .name
        .clone()
        .unwrap_or_else(|| format!("runq.{}.{}", identity.hostname, identity.pid));
    let slots = Arc::new(Slots::new(slot_names(&base, config.worker.concurrency)));
    if let Some(taken) = registration::taken_names(&mut probe, &keys, &slots.names)
        .await?
        .into_iter()
        .next()
    {
        return Err(LaunchError::NameTaken(taken));
    }
    let ttl = config.worker.heartbeat_secs * 3;
    registration::register(&mut probe, &keys, &slots.names, &identity, ttl).await?;
    tracing::info!(
        workers = slots.len(),
        queues = %queues.join(","),
        name = %base,
        burst = opts.burst,
        "runq-worker {} started (pid {})",
        env!("CARGO_PKG_VERSION"),
        identity.pid
    );

    let shutdown = Shutdown::new();
    let background = CancellationToken::new();
    let redis = SharedConnection::new(connect::pool(
        &config,
        config.redis.db.rq,
        config.worker.concurrency + 4,
    )?);

    let run_services = Arc::new(run_services(&config, metrics.clone())?);
    let keeper = tokio::spawn(run_services.keeper.clone().run(background.clone()));

    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let commands = tokio::spawn(commands::run(
        config.clone(),
        slots.clone(),
        shutdown.clone(),
        background.clone(),
        subscribed_tx,
    ));
    let _ = tokio::time::timeout(Duration::from_secs(5), subscribed_rx).await;
    let heartbeat = tokio::spawn(heartbeat::run(
        config.clone(),
        redis.clone(),
        slots.clone(),
        identity.clone(),
        background.clone(),
    ));
    let maintenance = tokio::spawn(maintenance::run(
        config.clone(),
        redis.clone(),
        background.clone(),
    ));
    let scheduler = if config.worker.scheduler && !opts.burst {
        Some(tokio::spawn(scheduler::run(
            config.clone(),
            redis.clone(),
            identity.clone(),
            background.clone(),
        )))
    } else {
        None
    };

    let metrics_server = metrics_listener.map(|listener| {
        let sources = metrics_http::Sources {
            metrics: metrics.clone(),
            redis: redis.clone(),
            slots: slots.clone(),
            shutdown: shutdown.clone(),
            keys: keys.clone(),
            queues: queues.clone(),
        };
        tokio::spawn(metrics_http::serve(
            listener,
            Arc::new(sources),
            background.clone(),
        ))
    });

    let signals = spawn_signal_handler(shutdown.clone())?;
    let grace = spawn_grace_timer(
        config.clone(),
        redis.clone(),
        slots.clone(),
        shutdown.clone(),
    );

    let (fetcher, handle) = Fetcher::new(
        config.clone(),
        redis.clone(),
        slots.clone(),
        shutdown.clone(),
        opts.burst,
    );
    let drained = fetcher.drained.clone();
    let fetch_task = tokio::spawn(fetcher.run());
    let ctx = Arc::new(ProcessorContext {
        config: config.clone(),
        redis: redis.clone(),
        table,
        run_services,
        slots: slots.clone(),
        shutdown: shutdown.clone(),
        metrics,
    });
    let mut processors = tokio::task::JoinSet::new();
    for slot in 0..slots.len() {
        processors.spawn(processor::run_slot(slot, ctx.clone(), handle.clone()));
    }
    drop(handle);
    let notifier = crate::notify::Notifier::from_env();
    notifier.ready();
    notifier.status(&format!("{} slots on {}", slots.len(), queues.join(",")));
    let watchdog = tokio::spawn(watchdog(
        notifier,
        redis.clone(),
        shutdown.clone(),
        background.clone(),
    ));
    while let Some(r) = processors.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "a slot ended abnormally");
        }
    }
    let _ = fetch_task.await;
    if drained.load(std::sync::atomic::Ordering::SeqCst) {
        tracing::info!("queues are empty; burst mode done");
    }
    background.cancel();
    let _ = watchdog.await;
    signals.abort();
    grace.abort();
    let _ = heartbeat.await;
    let _ = maintenance.await;
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    let _ = commands.await;
    let _ = keeper.await;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    match redis.get().await {
        Ok(mut conn) => {
            if let Err(e) = registration::deregister(&mut conn, &keys, &slots.names, &queues).await
            {
                tracing::warn!(error = %e, "could not deregister the workers; their keys expire on their own");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not deregister the workers; their keys expire on their own")
        }
    }
    tracing::info!("runq-worker stopped");
    Ok(())
}

/// Connections and shared state for NoDb run state (DB 0, 2, 13, 15); connected lazily.
fn run_services(config: &Config, metrics: Arc<Metrics>) -> Result<RunServices, LaunchError> {
    let db = &config.redis.db;
    let pool = |n: u16| -> Result<SharedConnection, LaunchError> {
        Ok(SharedConnection::new(connect::pool(config, n, 4)?))
    };
    let lock_db = pool(db.lock)?;
    Ok(RunServices {
        keeper: LockKeeper::new(pool(db.lock)?, metrics),
        lock_db,
        status_db: pool(db.status)?,
        cache_db: pool(db.nodb_cache)?,
        loglevel_db: pool(db.log_level)?,
        documents: Default::default(),
        runs_dir: config.worker.runs_dir.clone(),
    })
}

/// First SIGTERM/SIGINT: warm shutdown. A second one (at least 1 s later, as RQ does, to
/// absorb duplicates from process managers): cold shutdown.
fn spawn_signal_handler(shutdown: Shutdown) -> Result<tokio::task::JoinHandle<()>, LaunchError> {
    let mut term = signal(SignalKind::terminate()).map_err(LaunchError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(LaunchError::Signals)?;
    Ok(tokio::spawn(async move {
        let mut first: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            match first {
                None if !shutdown.is_warm() => {
                    tracing::info!(
                        "warm shutdown requested: finishing running jobs, taking no new ones"
                    );
                    first = Some(Instant::now());
                    shutdown.begin_warm();
                }
                None => {
                    first = Some(Instant::now());
                    tracing::info!("cold shutdown requested: cancelling running jobs");
                    shutdown.begin_cold();
                }
                Some(t) if t.elapsed() >= Duration::from_secs(1) => {
                    tracing::info!("cold shutdown requested: cancelling running jobs");
                    shutdown.begin_cold();
                }
                Some(_) => tracing::debug!("ignoring a duplicate signal within 1 s of the first"),
            }
        }
    }))
}

/// Once warm shutdown starts: mark busy workers as RQ does, then go cold when the grace
/// period runs out.
fn spawn_grace_timer(
    config: Arc<Config>,
    redis: SharedConnection,
    slots: Arc<Slots>,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        shutdown.warm().await;
        let busy: Vec<String> = slots
            .running()
            .iter()
            .map(|(i, _)| slots.names[*i].clone())
            .collect();
        if !busy.is_empty() {
            if let Ok(mut conn) = redis.get().await {
                let _ =
                    registration::mark_shutdown_requested(&mut conn, &config.keys(), &busy).await;
            }
        }
        let grace = Duration::from_secs(config.worker.shutdown_grace_secs);
        tokio::select! {
            _ = tokio::time::sleep(grace) => {
                if slots.busy_count() > 0 {
                    tracing::warn!("shutdown grace of {grace:?} ran out; cancelling running jobs");
                }
                shutdown.begin_cold();
            }
            _ = shutdown.cold() => {}
        }
    })
}

/// systemd watchdog: pings only while Redis answers on the worker's shared connection;
/// sends STOPPING once shutdown begins (and keeps pinging through the drain).
async fn watchdog(
    notifier: crate::notify::Notifier,
    redis: SharedConnection,
    shutdown: Shutdown,
    stop: CancellationToken,
) {
    let every = notifier.watchdog_interval();
    let mut stopping_sent = false;
    loop {
        let tick = every.unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            biased;
            _ = shutdown.warm(), if !stopping_sent => {
                notifier.stopping();
                stopping_sent = true;
                continue;
            }
            _ = stop.cancelled() => {
                // Exiting: STOPPING goes out even when the drain was too quick to see.
                if !stopping_sent {
                    notifier.stopping();
                }
                return;
            }
            _ = tokio::time::sleep(tick) => {}
        }
        if every.is_none() {
            continue;
        }
        let healthy = match redis.get().await {
            Ok(mut conn) => redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok(),
            Err(_) => false,
        };
        if healthy {
            notifier.watchdog();
        } else {
            tracing::warn!("Redis does not answer; withholding the systemd watchdog ping");
            redis.reset().await;
        }
    }
}
