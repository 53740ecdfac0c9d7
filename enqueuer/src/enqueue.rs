//! `runq enqueue FUNC [ARG ...]`: builds an RQ job and enqueues (or defers, or
//! schedules) it atomically; `--file` hands over to [`crate::batch`].

use crate::new_job::{build, EnqueueArgs};
use crate::CliError;
use runq_common::rq;
use runq_common::Config;

pub async fn run(config: &Config, a: EnqueueArgs) -> Result<(), CliError> {
    if let Some(path) = &a.file {
        return crate::batch::run(config, path, a.strict).await;
    }
    let job = build(config, &a)?;
    let mut conn = crate::connect(config).await?;
    let mut prep = crate::runstate::Prep::new(config);
    let writes = prep.writes([&job]);
    prep.before(&writes).await?;
    let status = rq::enqueue(&mut conn, &config.keys(), &job).await?;
    prep.after(&writes, |id| id == job.id).await?;
    println!(
        "{status}: {} on queue {} ({})",
        job.call.func_name, job.queue, job.serializer
    );
    println!("{}", job.id);
    Ok(())
}
