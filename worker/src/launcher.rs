//! The launcher (Sidekiq's launcher): turns a configuration into a running worker process
//! and back. [`run`] reads as the lifecycle: [`Worker::build`] (task table, Python host,
//! Redis — waited for with backoff —, metrics address, slot names) → [`Worker::register`]
//! (one RQ worker per slot) → [`Worker::spawn_services`] (heartbeat, maintenance,
//! scheduler, commands, lock keeper, metrics, watchdog, Sentinel watch, signals, grace
//! timer) →
//! [`Worker::run_slots`] (the fetcher and one processor per slot, until they drain) →
//! [`Worker::stop`] (exit phase, services joined, workers deregistered).

use crate::callbacks::Callbacks;
use crate::commands::Commands;
use crate::cron::Cron;
use crate::fetch::{FetchEnd, Fetcher};
use crate::followups::Followups;
use crate::heartbeat::Heartbeat;
use crate::maintenance::Maintenance;
use crate::metrics::{Labels, Metrics};
use crate::metrics_http::{self, MetricsEndpoint, Sources};
use crate::notify::Notifier;
use crate::processor::{self, ProcessorContext};
use crate::registration::{self, Identity};
use crate::runstate::RunServices;
use crate::scheduler::Scheduler;
use crate::sentinel_watch::SentinelWatch;
use crate::service;
use crate::shutdown::Shutdown;
use crate::signals::{GraceTimer, Signals};
use crate::slots::Slots;
use crate::tasks::python::{PythonHost, PythonTask};
use crate::tasks::table::TaskTable;
use crate::tasks::{Registry, Task};
use crate::watchdog::Watchdog;
use crate::webhooks::{WebhookSender, Webhooks};
use redis::aio::MultiplexedConnection;
use runq_common::config::{Config, QueueConfig};
use runq_common::connect::{self, SharedConnection};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

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
    #[error(transparent)]
    Python(#[from] crate::tasks::python::HostError),
    #[error("stopped by a signal while waiting for Redis")]
    StoppedWhileWaiting,
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
    let mut signals = Signals::install().map_err(LaunchError::Signals)?;
    let mut worker = Worker::build(config, &opts, registry, &mut signals).await?;
    worker.register().await?;
    worker.spawn_services(signals);
    let end = worker.run_slots().await;
    if end == FetchEnd::Drained {
        tracing::info!("queues are empty; burst mode done");
    }
    worker.stop().await;
    Ok(())
}

/// A worker process: what its slots share ([`ProcessorContext`]), its identity, and the
/// tracker its background services run on.
pub struct Worker {
    ctx: Arc<ProcessorContext>,
    burst: bool,
    identity: Identity,
    metrics_listener: Option<TcpListener>,
    webhook_sender: Option<WebhookSender>,
    python: Option<Arc<PythonHost>>,
    tracker: TaskTracker,
}

impl Worker {
    /// Everything that can fail before the worker registers: the task table (and the
    /// Python host, whose preloads must import), Redis (waited for), the metrics address,
    /// a free set of worker names.
    pub async fn build(
        config: Config,
        opts: &WorkerOptions,
        registry: Registry,
        signals: &mut Signals,
    ) -> Result<Worker, LaunchError> {
        let config = Arc::new(apply_options(config, opts)?);
        let shutdown = Shutdown::new();
        let queues = config.queue_names();
        let mut probe = wait_for_redis(&config, signals).await?;
        let python = match &config.python {
            Some(py) => Some(PythonHost::start(&config, py, shutdown.clone()).await?),
            None => None,
        };
        let python_task = python
            .as_ref()
            .map(|h| Arc::new(PythonTask::new(h.clone())) as Arc<dyn Task>);
        let table =
            TaskTable::build(&config, &registry, python_task).map_err(LaunchError::Tasks)?;
        let metrics_addr = config.worker.metrics_addr.trim().to_string();
        let metrics_listener = if metrics_addr.is_empty() {
            None
        } else {
            Some(metrics_http::bind(&metrics_addr).await.map_err(|source| {
                LaunchError::Metrics {
                    addr: metrics_addr.clone(),
                    source,
                }
            })?)
        };
        let known_tasks = registry
            .names()
            .into_iter()
            .map(str::to_string)
            .chain(config.tasks.keys().cloned());
        let metrics = Arc::new(Metrics::new(
            metrics_listener.is_some(),
            Labels::new(&queues, known_tasks),
        ));
        if let Some(host) = &python {
            host.report_to(metrics.clone());
        }
        let identity = Identity::discover(&mut probe, queues).await;
        let base = opts
            .name
            .clone()
            .unwrap_or_else(|| format!("runq.{}.{}", identity.hostname, identity.pid));
        let slots = Arc::new(Slots::new(slot_names(&base, config.worker.concurrency)));
        if let Some(taken) = registration::taken_names(&mut probe, &config.keys(), &slots.names)
            .await?
            .into_iter()
            .next()
        {
            return Err(LaunchError::NameTaken(taken));
        }
        let redis =
            SharedConnection::open(&config, config.redis.db.rq, config.worker.concurrency + 4)?;
        let run_services = Arc::new(RunServices::new(&config, metrics.clone())?);
        let (webhooks, webhook_sender) = Webhooks::new(metrics.clone());
        let followups = Followups {
            webhooks,
            callbacks: Callbacks::new(registry.callbacks(), python.clone()),
        };
        Ok(Worker {
            ctx: Arc::new(ProcessorContext {
                config,
                redis,
                table,
                run_services,
                slots,
                shutdown,
                metrics,
                followups,
            }),
            burst: opts.burst,
            identity,
            metrics_listener,
            webhook_sender: Some(webhook_sender),
            python,
            tracker: TaskTracker::new(),
        })
    }

    /// Registers one RQ worker per slot.
    pub async fn register(&self) -> Result<(), LaunchError> {
        let ctx = &self.ctx;
        let mut conn = ctx.redis.get().await?;
        let ttl = ctx.config.worker.heartbeat_secs * 3;
        registration::register(
            &mut conn,
            &ctx.config.keys(),
            &ctx.slots.names,
            &self.identity,
            ttl,
        )
        .await?;
        tracing::info!(
            workers = ctx.slots.len(),
            queues = %self.identity.queues.join(","),
            name = %ctx.slots.names[0],
            burst = self.burst,
            "runq-worker {} started (pid {})",
            env!("CARGO_PKG_VERSION"),
            self.identity.pid
        );
        Ok(())
    }

    /// Starts every background service; they run until the exit phase.
    pub fn spawn_services(&mut self, signals: Signals) {
        let ctx = self.ctx.clone();
        let (config, redis, slots) = (&ctx.config, &ctx.redis, &ctx.slots);
        let (tracker, shutdown) = (&self.tracker, &ctx.shutdown);
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        service::spawn(
            tracker,
            shutdown,
            Commands {
                config: config.clone(),
                slots: slots.clone(),
                subscribed: Some(subscribed_tx),
            },
        );
        service::spawn(tracker, shutdown, ctx.run_services.keeper.clone());
        service::spawn(
            tracker,
            shutdown,
            Heartbeat {
                config: config.clone(),
                redis: redis.clone(),
                slots: slots.clone(),
                identity: self.identity.clone(),
                damaged_logged: Default::default(),
            },
        );
        service::spawn(
            tracker,
            shutdown,
            Maintenance {
                config: config.clone(),
                redis: redis.clone(),
                followups: ctx.followups.clone(),
            },
        );
        if !config.cron.is_empty() && !self.burst {
            service::spawn(
                tracker,
                shutdown,
                Cron {
                    config: config.clone(),
                    redis: redis.clone(),
                },
            );
        }
        if let Some(sender) = self.webhook_sender.take() {
            service::spawn(tracker, shutdown, sender);
        }
        if config.worker.scheduler && !self.burst {
            service::spawn(
                tracker,
                shutdown,
                Scheduler {
                    config: config.clone(),
                    redis: redis.clone(),
                    identity: self.identity.clone(),
                },
            );
        }
        service::spawn(tracker, shutdown, signals);
        service::spawn(
            tracker,
            shutdown,
            GraceTimer {
                config: config.clone(),
                redis: redis.clone(),
                slots: slots.clone(),
            },
        );
        let notifier = Notifier::from_env();
        service::spawn(
            tracker,
            shutdown,
            Watchdog {
                notifier,
                redis: redis.clone(),
            },
        );
        if let Some(sentinels) = connect::sentinels(config).ok().flatten() {
            service::spawn(
                tracker,
                shutdown,
                SentinelWatch {
                    config: config.clone(),
                    sentinels,
                },
            );
        }
        if let Some(listener) = self.metrics_listener.take() {
            let sources = Sources {
                metrics: ctx.metrics.clone(),
                redis: redis.clone(),
                slots: slots.clone(),
                shutdown: shutdown.clone(),
                keys: config.keys(),
                queues: self.identity.queues.clone(),
            };
            service::spawn(
                tracker,
                shutdown,
                MetricsEndpoint {
                    listener,
                    sources: Arc::new(sources),
                },
            );
        }
        let status = format!(
            "{} slots on {}",
            slots.len(),
            self.identity.queues.join(",")
        );
        tracker.spawn(async move {
            if tokio::time::timeout(Duration::from_secs(5), subscribed_rx)
                .await
                .is_err()
            {
                tracing::warn!("not yet subscribed to the worker command channels after 5 s; commands may be missed until it is");
            }
            notifier.ready();
            notifier.status(&status);
        });
    }

    /// Runs the fetchers and one processor per slot until every slot has drained. A slot
    /// whose loop panicked (outside a job's execution, which catches its own panics) is
    /// cleared — its job, if any, is left to recovery — and started again.
    pub async fn run_slots(&self) -> FetchEnd {
        let ctx = &self.ctx;
        let (fetchers, handle) = Fetcher::lanes(
            ctx.config.clone(),
            ctx.redis.clone(),
            ctx.slots.clone(),
            ctx.shutdown.clone(),
            self.burst,
        );
        let lanes: Vec<_> = fetchers
            .into_iter()
            .map(|f| tokio::spawn(f.run()))
            .collect();
        let mut processors = tokio::task::JoinSet::new();
        let mut slot_of = std::collections::HashMap::new();
        for slot in 0..ctx.slots.len() {
            let task = processors.spawn(processor::run_slot(slot, ctx.clone(), handle.clone()));
            slot_of.insert(task.id(), slot);
        }
        while let Some(ended) = processors.join_next_with_id().await {
            let Err(e) = ended else { continue };
            let Some(slot) = slot_of.remove(&e.id()) else {
                continue;
            };
            tracing::error!(slot = %ctx.slots.names[slot], error = %e, "a slot's loop ended abnormally; its job (if any) is left to recovery");
            ctx.slots.clear(slot);
            if !ctx.shutdown.is_warm() {
                let task = processors.spawn(processor::run_slot(slot, ctx.clone(), handle.clone()));
                slot_of.insert(task.id(), slot);
            }
        }
        drop(handle);
        let mut end = FetchEnd::Drained;
        for lane in lanes {
            if lane.await.unwrap_or(FetchEnd::Stopped) == FetchEnd::Stopped {
                end = FetchEnd::Stopped;
            }
        }
        end
    }

    /// The exit phase: background services stop and are joined, the Python host is shut
    /// down, the workers deregister.
    pub async fn stop(self) {
        let ctx = &self.ctx;
        ctx.shutdown.begin_exit();
        self.tracker.close();
        self.tracker.wait().await;
        if let Some(host) = &self.python {
            host.stop().await;
        }
        let keys = ctx.config.keys();
        let deregistered = match ctx.redis.get().await {
            Ok(mut conn) => {
                registration::deregister(&mut conn, &keys, &ctx.slots.names, &self.identity.queues)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = deregistered {
            tracing::warn!(error = %e, "could not deregister the workers; their keys expire on their own");
        }
        tracing::info!("runq-worker stopped");
    }
}

/// Will waiting help? Not for a bad configuration, an untrusted server certificate or
/// refused credentials.
fn transient(e: &runq_common::Error) -> bool {
    use runq_common::Error;
    match e {
        Error::Config(_) | Error::ConfigRead { .. } | Error::UntrustedServer { .. } => false,
        Error::Redis { source, .. } => {
            !matches!(source.kind(), redis::ErrorKind::AuthenticationFailed)
                && source.code() != Some("WRONGPASS")
                && source.code() != Some("NOAUTH")
        }
        _ => true,
    }
}

/// Connects to Redis, waiting with backoff (1 s doubling to 30 s, one log line each)
/// while it is unreachable, as systemd services should; a stop signal ends the wait.
/// A configuration error (bad URL, unreadable CA file) fails at once.
async fn wait_for_redis(
    config: &Config,
    signals: &mut Signals,
) -> Result<MultiplexedConnection, LaunchError> {
    let mut backoff = Duration::from_secs(1);
    loop {
        match connect::ping(config, config.redis.db.rq).await {
            Ok(conn) => return Ok(conn),
            Err(e) if !transient(&e) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "Redis is not reachable; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = signals.recv() => return Err(LaunchError::StoppedWhileWaiting),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
