//! CPU time per process over a phase, read from `/proc`: what one operation cost each part
//! of the machine (the services, PostgreSQL, RabbitMQ, and the bench itself as the "load
//! driver": its clients, its webhook receivers and the SQL baseline's pool). This is how
//! the report says where a throughput gap goes when both cores are busy.
//!
//! PostgreSQL counts every `postgres` process and the CPU of the backends that exited
//! (the postmaster's reaped children); RabbitMQ counts `beam.smp`. On a machine where
//! other clients use them, their work lands here too.

use std::fs;

/// `/proc` counts CPU time in ticks of `USER_HZ`, which Linux fixes at 100.
const TICKS_PER_SECOND: f64 = 100.0;

/// The processes whose CPU is measured: the services by pid, the servers by name.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    services: Vec<(&'static str, Option<u32>)>,
}

/// CPU seconds used so far by each part, in a fixed order.
#[derive(Debug, Clone)]
pub struct CpuTimes(Vec<(&'static str, f64)>);

impl CpuMeter {
    /// Measures the `services` (name, pid) besides PostgreSQL, RabbitMQ and this process.
    pub fn new(services: Vec<(&'static str, Option<u32>)>) -> Self {
        Self { services }
    }

    /// Each part's CPU seconds now.
    pub fn now(&self) -> CpuTimes {
        let mut parts: Vec<(&'static str, f64)> = self
            .services
            .iter()
            .map(|&(name, pid)| {
                let used = pid
                    .and_then(|pid| times(&pid.to_string()))
                    .unwrap_or_default();
                (name, used.own)
            })
            .collect();
        let (postgres, rabbitmq) = servers();
        parts.push(("PostgreSQL", postgres));
        parts.push(("RabbitMQ", rabbitmq));
        parts.push((
            "load driver",
            times("self").map(|used| used.own).unwrap_or_default(),
        ));
        CpuTimes(parts)
    }
}

impl CpuTimes {
    /// `CPU per job: api-gateway 0.21, …, RabbitMQ 0.46 ms (1.92 ms in all)`: what each
    /// part used since `earlier`, per operation, leaving out parts under 5 µs.
    pub fn per_operation(&self, earlier: &CpuTimes, operations: u64, operation: &str) -> String {
        let operations = operations.max(1) as f64;
        let spent: Vec<(&str, f64)> = self
            .0
            .iter()
            .zip(&earlier.0)
            .map(|(&(name, now), &(_, then))| (name, (now - then).max(0.0) * 1e3 / operations))
            .collect();
        let total: f64 = spent.iter().map(|(_, ms)| ms).sum();
        let parts: Vec<String> = spent
            .iter()
            .filter(|(_, ms)| *ms >= 0.005)
            .map(|(name, ms)| format!("{name} {ms:.2}"))
            .collect();
        format!(
            "CPU per {operation}: {} ms ({total:.2} ms in all)",
            parts.join(", ")
        )
    }
}

/// CPU seconds of one process: its own, and that of its children it reaped.
#[derive(Debug, Default, Clone, Copy)]
struct Times {
    own: f64,
    reaped: f64,
}

/// `/proc/<process>/stat`'s times, with the parent's pid.
fn times_and_parent(process: &str) -> Option<(Times, u32)> {
    let stat = fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the rest follows the
    // last ')': state, ppid, …, utime and stime (fields 14, 15), cutime and cstime.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |index: usize| fields.get(index)?.parse::<f64>().ok();
    let times = Times {
        own: (number(11)? + number(12)?) / TICKS_PER_SECOND,
        reaped: (number(13)? + number(14)?) / TICKS_PER_SECOND,
    };
    Some((times, fields.get(1)?.parse().ok()?))
}

fn times(process: &str) -> Option<Times> {
    times_and_parent(process).map(|(times, _)| times)
}

fn command(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|comm| comm.trim_end().to_owned())
        .unwrap_or_default()
}

/// CPU seconds of PostgreSQL (its processes, and the backends that exited) and of
/// RabbitMQ.
fn servers() -> (f64, f64) {
    let (mut postgres, mut rabbitmq) = (0.0, 0.0);
    let Ok(entries) = fs::read_dir("/proc") else {
        return (postgres, rabbitmq);
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        match command(pid).as_str() {
            "postgres" => {
                let Some((used, parent)) = times_and_parent(&pid.to_string()) else {
                    continue;
                };
                postgres += used.own;
                // The postmaster (its parent is not PostgreSQL) holds its exited children.
                if command(parent) != "postgres" {
                    postgres += used.reaped;
                }
            }
            "beam.smp" => rabbitmq += times(&pid.to_string()).map_or(0.0, |used| used.own),
            _ => {}
        }
    }
    (postgres, rabbitmq)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn the_report_divides_each_parts_cpu_by_the_operations() {
        let before = CpuTimes(vec![
            ("api-gateway", 1.0),
            ("PostgreSQL", 2.0),
            ("RabbitMQ", 3.0),
        ]);
        let after = CpuTimes(vec![
            ("api-gateway", 1.5),
            ("PostgreSQL", 2.002),
            ("RabbitMQ", 4.0),
        ]);
        assert_eq!(
            after.per_operation(&before, 1000, "job"),
            "CPU per job: api-gateway 0.50, RabbitMQ 1.00 ms (1.50 ms in all)"
        );
    }

    #[test]
    fn a_process_that_works_is_seen_working() {
        let meter = CpuMeter::new(vec![("this test", Some(std::process::id()))]);
        let before = meter.now();
        let own = |times: &CpuTimes| times.0[0].1;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut x = 0u64;
        while own(&meter.now()) <= own(&before) {
            assert!(
                Instant::now() < deadline,
                "no CPU time seen in /proc/<pid>/stat"
            );
            for _ in 0..100_000 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            }
            std::hint::black_box(x);
        }
        let load_driver = |times: &CpuTimes| times.0.last().map(|part| part.1).unwrap();
        assert!(load_driver(&meter.now()) > 0.0);
    }
}
