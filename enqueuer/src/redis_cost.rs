//! What a stretch of work cost Redis, from two snapshots of `INFO commandstats` and
//! `INFO cpu`: commands executed (scripts' inner commands included, as Redis counts them)
//! and server CPU time (user + system), per job. `runq bench` reports it next to jobs/s.

use std::collections::BTreeMap;

/// One snapshot of the server's counters.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Calls per command name.
    pub calls: BTreeMap<String, u64>,
    /// `used_cpu_user + used_cpu_sys`, seconds.
    pub cpu_secs: f64,
}

impl Snapshot {
    pub async fn take<C: redis::aio::ConnectionLike + Send>(
        conn: &mut C,
    ) -> redis::RedisResult<Snapshot> {
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(conn)
            .await?;
        let cpu: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
        Ok(Snapshot::parse(&stats, &cpu))
    }

    fn parse(stats: &str, cpu: &str) -> Snapshot {
        let calls = stats
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_string(), calls))
            })
            .collect();
        let field = |name: &str| -> f64 {
            cpu.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        Snapshot {
            calls,
            cpu_secs: field("used_cpu_user") + field("used_cpu_sys"),
        }
    }
}

/// The cost between two snapshots, for `jobs` jobs.
#[derive(Debug, Clone)]
pub struct Cost {
    pub commands_per_job: f64,
    pub cpu_us_per_job: f64,
    /// The commands that cost most, per job, largest first.
    pub top: Vec<(String, f64)>,
}

impl Cost {
    /// The INFO calls the snapshots themselves made are left out.
    pub fn between(before: &Snapshot, after: &Snapshot, jobs: u64) -> Cost {
        let jobs = jobs.max(1) as f64;
        let mut per: Vec<(String, f64)> = after
            .calls
            .iter()
            .map(|(name, n)| {
                let was = before.calls.get(name).copied().unwrap_or(0);
                (name.clone(), n.saturating_sub(was) as f64 / jobs)
            })
            .filter(|(name, n)| *n > 0.0 && name != "info")
            .collect();
        per.sort_by(|a, b| b.1.total_cmp(&a.1));
        Cost {
            commands_per_job: per.iter().map(|(_, n)| n).sum(),
            cpu_us_per_job: (after.cpu_secs - before.cpu_secs).max(0.0) * 1e6 / jobs,
            top: per,
        }
    }

    /// `34.0 commands/job, 91 µs Redis CPU/job (hset 7.0, expire 7.0, ...)`.
    pub fn line(&self) -> String {
        let top: Vec<String> = self
            .top
            .iter()
            .take(8)
            .map(|(n, c)| format!("{n} {c:.2}"))
            .collect();
        format!(
            "{:.1} commands/job, {:.0} µs Redis CPU/job ({})",
            self.commands_per_job,
            self.cpu_us_per_job,
            top.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_per_job_and_leave_info_out() {
        let before = Snapshot::parse(
            "# Commandstats\r\ncmdstat_hset:calls=10,usec=5\r\ncmdstat_info:calls=3,usec=1\r\n",
            "used_cpu_sys:1.5\r\nused_cpu_user:2.5\r\n",
        );
        let after = Snapshot::parse(
            "cmdstat_hset:calls=30,usec=9\r\ncmdstat_evalsha:calls=10,usec=9\r\ncmdstat_info:calls=9,usec=1\r\n",
            "used_cpu_sys:1.6\r\nused_cpu_user:2.6\r\n",
        );
        let c = Cost::between(&before, &after, 10);
        assert!((c.commands_per_job - 3.0).abs() < 1e-9, "{c:?}");
        assert!((c.cpu_us_per_job - 20_000.0).abs() < 1.0, "{c:?}");
        assert_eq!(c.top[0], ("hset".to_string(), 2.0));
    }
}
