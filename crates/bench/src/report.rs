//! The results: one row per figure, each beside the baseline measured in the same run, its
//! goal and whether this run met it; printed as a table and written as JSON.

use std::path::Path;

use serde::Serialize;

/// What a figure is compared with, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub value: f64,
    /// What the baseline does, in a few words.
    pub what: String,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Which part of the suite (`create`, `latency`, …).
    pub group: &'static str,
    pub case: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: Option<Baseline>,
    /// `value / baseline`, when there is a baseline.
    pub ratio: Option<f64>,
    /// The goal, in words (`ratio ≥ 0.6`, `≤ 25 ms`).
    pub goal: String,
    /// Whether this run met the goal; `None` for figures reported without one.
    pub met: Option<bool>,
    /// Percentiles, counts and other context.
    pub detail: String,
}

impl Row {
    /// A figure without a baseline.
    pub fn new(
        group: &'static str,
        case: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Self {
            group,
            case: case.into(),
            value,
            unit,
            baseline: None,
            ratio: None,
            goal: String::new(),
            met: None,
            detail: String::new(),
        }
    }

    /// Compares with `baseline`.
    pub fn against(mut self, value: f64, what: impl Into<String>) -> Self {
        self.ratio = (value > 0.0).then(|| self.value / value);
        self.baseline = Some(Baseline {
            value,
            what: what.into(),
        });
        self
    }

    /// Goal: a ratio to the baseline of at least `min`.
    pub fn ratio_at_least(mut self, min: f64) -> Self {
        self.goal = format!("ratio ≥ {min}");
        self.met = Some(self.ratio.is_some_and(|ratio| ratio >= min));
        self
    }

    /// Goal: a ratio to the baseline of at most `max` (for latencies).
    pub fn ratio_at_most(mut self, max: f64) -> Self {
        self.goal = format!("ratio ≤ {max}");
        self.met = Some(self.ratio.is_some_and(|ratio| ratio <= max));
        self
    }

    /// Goal: a value of at most `max` (in the row's unit).
    pub fn at_most(mut self, max: f64) -> Self {
        self.goal = format!("≤ {max} {}", self.unit);
        self.met = Some(self.value <= max);
        self
    }

    /// Goal: a value of at least `min` (in the row's unit).
    pub fn at_least(mut self, min: f64) -> Self {
        self.goal = format!("≥ {min} {}", self.unit);
        self.met = Some(self.value >= min);
        self
    }

    /// The goal is unmet, whatever the value, unless the sample was `complete` (a
    /// latency over the webhooks that arrived says nothing of one that never did).
    pub fn unmet_unless(mut self, complete: bool) -> Self {
        if !complete {
            self.met = Some(false);
        }
        self
    }

    /// A goal judged by the case itself.
    pub fn goal(mut self, goal: impl Into<String>, met: bool) -> Self {
        self.goal = goal.into();
        self.met = Some(met);
        self
    }

    /// Context shown beside the figure.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

/// A number as the table shows it: three significant digits, thousands grouped.
fn number(value: f64) -> String {
    if value.abs() >= 100.0 {
        let whole = value.round() as i64;
        let digits = whole.abs().to_string();
        let mut grouped = String::new();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if whole < 0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// The rows as a Markdown table (the form `docs/benchmarks.md` quotes).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| case | value | baseline (same run) | ratio | goal | met | detail |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let baseline = row.baseline.as_ref().map_or(String::from("–"), |b| {
            format!("{} {}: {}", number(b.value), row.unit, b.what)
        });
        let ratio = row.ratio.map_or(String::from("–"), |r| format!("{r:.2}"));
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        out.push_str(&format!(
            "| {} | {} {} | {} | {} | {} | {} | {} |\n",
            row.case,
            number(row.value),
            row.unit,
            baseline,
            ratio,
            if row.goal.is_empty() {
                "–"
            } else {
                &row.goal
            },
            met,
            row.detail
        ));
    }
    out
}

/// The machine-readable results.
#[derive(Serialize)]
struct Results<'a> {
    finished_at: String,
    smoke: bool,
    machine: Machine,
    rows: &'a [Row],
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    model: String,
    memory_gib: f64,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: f64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        model,
        memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
    }
}

/// Writes `rows` to `path` as JSON (creating its folder).
pub fn write_json(path: &Path, rows: &[Row], smoke: bool) -> std::io::Result<()> {
    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)?;
    }
    let results = Results {
        finished_at: plangrep_core::api::format_timestamp(chrono::Utc::now()),
        smoke,
        machine: machine(),
        rows,
    };
    std::fs::write(path, serde_json::to_vec_pretty(&results)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_judge_their_goals_and_render() {
        let row = Row::new("create", "c16", 300.0, "jobs/s")
            .against(500.0, "same SQL")
            .ratio_at_least(0.6);
        assert_eq!(row.ratio, Some(0.6));
        assert_eq!(row.met, Some(true));
        let complete = Row::new("latency", "p50", 5.0, "ms").at_most(8.0);
        assert_eq!(complete.unmet_unless(true).met, Some(true));
        let incomplete = Row::new("latency", "p50", 5.0, "ms").at_most(8.0);
        assert_eq!(incomplete.unmet_unless(false).met, Some(false));
        let row = Row::new("latency", "p99", 30.0, "ms").at_most(25.0);
        assert_eq!(row.met, Some(false));
        let rendered = table(&[row]);
        assert!(
            rendered.contains("| p99 | 30.0 ms | – | – | ≤ 25 ms | **no** |"),
            "{rendered}"
        );
        assert_eq!(number(1234567.0), "1,234,567");
        assert_eq!(number(2.5), "2.50");
    }
}
