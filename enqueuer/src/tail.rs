//! `runq tail RUNID [CHANNEL]`: live status lines of a run from DB 2 — one channel
//! (`<runid>:<channel>`) or all of them (`<runid>:*`), each line prefixed with its
//! channel when several are followed. Runs until interrupted or `--count` lines.

use crate::CliError;
use clap::Args;
use futures_util::StreamExt;
use runq_common::nodb::lock::glob_escape;
use runq_common::nodb::{rundir, status};
use runq_common::Config;
use std::io::Write;

#[derive(Args, Debug)]
pub struct TailArgs {
    pub runid: String,
    /// One channel suffix (`climate`, `wepp` ...); all of the run's channels without it.
    pub channel: Option<String>,
    /// Exit after this many lines.
    #[arg(long)]
    pub count: Option<u64>,
}

pub async fn run(config: &Config, a: TailArgs) -> Result<(), CliError> {
    rundir::validate_runid(&a.runid).map_err(CliError::Usage)?;
    let mut pubsub = runq_common::connect::pubsub(config, config.redis.db.status).await?;
    match &a.channel {
        Some(c) => pubsub.subscribe(status::channel(&a.runid, c)).await?,
        None => {
            pubsub
                .psubscribe(format!("{}:*", glob_escape(&a.runid)))
                .await?
        }
    }
    eprintln!(
        "runq: following {} (Ctrl-C to stop)",
        match &a.channel {
            Some(c) => status::channel(&a.runid, c),
            None => format!("{}:*", a.runid),
        }
    );
    let mut seen = 0u64;
    let mut messages = pubsub.on_message();
    let stdout = std::io::stdout();
    loop {
        let msg = tokio::select! {
            m = messages.next() => m,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(msg) = msg else {
            return Err(CliError::Other("the status subscription was lost".into()));
        };
        let line = String::from_utf8_lossy(msg.get_payload_bytes()).to_string();
        let mut out = stdout.lock();
        let written = if a.channel.is_some() {
            writeln!(out, "{line}")
        } else {
            writeln!(out, "{} {line}", msg.get_channel_name())
        };
        if written.and_then(|_| out.flush()).is_err() {
            return Ok(()); // stdout closed (e.g. piped into head)
        }
        seen += 1;
        if a.count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
    }
}
