//! `runq bench-locks`: NoDb lock latency on the configured Redis — uncontended acquire
//! (`SET NX EX` + flag, one script) and release (compare-token-and-delete + flag), each
//! as p50/p99, and the cost of the batched renewal per held lock.

use crate::CliError;
use clap::Args;
use runq_common::nodb::lock::{self, Lease, TokenCheck};
use runq_common::Config;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchLocksArgs {
    /// Acquire/release cycles to time.
    #[arg(long, default_value_t = 2000)]
    pub cycles: usize,
    /// Locks held at once for the renewal measurement.
    #[arg(long, default_value_t = 100)]
    pub held: usize,
    /// Run id used for the benchmark's lock keys (cleared before and after).
    #[arg(long, default_value = "runq-bench-locks")]
    pub runid: String,
}

pub async fn run(config: &Config, a: BenchLocksArgs) -> Result<(), CliError> {
    if a.cycles == 0 || a.held == 0 {
        return Err(CliError::Usage(
            "--cycles and --held must be at least 1".into(),
        ));
    }
    let mut conn = runq_common::connect::ping(config, config.redis.db.lock).await?;
    lock::clear_locks(&mut conn, &a.runid, None).await?;
    let mut acquire = Vec::with_capacity(a.cycles);
    let mut release = Vec::with_capacity(a.cycles);
    for _ in 0..a.cycles {
        let lease = Lease::new(&a.runid, "climate.nodb", 60);
        let t = Instant::now();
        if let Some(holder) = lock::try_acquire(&mut conn, &lease).await? {
            return Err(CliError::Other(format!(
                "{} is held ({}); pick another --runid",
                lease.key,
                holder.describe()
            )));
        }
        acquire.push(t.elapsed());
        let t = Instant::now();
        let answer = lock::release(&mut conn, &lease).await?;
        release.push(t.elapsed());
        if answer != TokenCheck::Ok {
            return Err(CliError::Other(format!(
                "release of {} said {answer:?}",
                lease.key
            )));
        }
    }
    let leases: Vec<Lease> = (0..a.held)
        .map(|i| Lease::new(&a.runid, &format!("doc-{i}.nodb"), 60))
        .collect();
    for l in &leases {
        lock::try_acquire(&mut conn, l).await?;
    }
    let refs: Vec<&Lease> = leases.iter().collect();
    let rounds = 50;
    let t = Instant::now();
    for _ in 0..rounds {
        let answers = lock::renew(&mut conn, &refs).await?;
        if answers.iter().any(|x| *x != TokenCheck::Ok) {
            return Err(CliError::Other("a renewal was refused".into()));
        }
    }
    let per_batch = t.elapsed() / rounds;
    lock::clear_locks(&mut conn, &a.runid, None).await?;
    println!(
        "acquire (uncontended): p50 {} p99 {} over {} cycles",
        micros(percentile(&mut acquire, 0.50)),
        micros(percentile(&mut acquire, 0.99)),
        a.cycles
    );
    println!(
        "release (compare-and-delete): p50 {} p99 {}",
        micros(percentile(&mut release, 0.50)),
        micros(percentile(&mut release, 0.99))
    );
    println!(
        "renewal: {} per batch of {} locks = {} per held lock (one batch every TTL/3)",
        micros(per_batch),
        a.held,
        micros(per_batch / a.held as u32)
    );
    Ok(())
}

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}
