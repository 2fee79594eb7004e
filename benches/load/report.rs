//! The printed report: per workload, lanchat's figure beside the limit's and the
//! ratio; the targets of issue 5 at the end; optionally everything as JSON.

use std::fmt::Write as _;

use serde::Serialize;

/// One line of a workload's table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub metric: String,
    pub lanchat: Option<String>,
    pub limit: Option<String>,
    /// lanchat ÷ limit, when both are numbers that compare.
    pub ratio: Option<f64>,
}

/// A target of issue 5, checked on this run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub target: String,
    pub detail: String,
    /// `None`: could not be decided (a side did not run or failed).
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub title: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub checks: Vec<Check>,
    /// Raw figures, for the JSON output.
    pub data: serde_json::Value,
    /// The two figure columns' headings.
    pub columns: (&'static str, &'static str),
}

impl Section {
    pub fn new(title: impl Into<String>) -> Section {
        Section {
            title: title.into(),
            rows: Vec::new(),
            notes: Vec::new(),
            checks: Vec::new(),
            data: serde_json::Value::Null,
            columns: ("lanchat", "limit"),
        }
    }

    pub fn row(
        &mut self,
        metric: impl Into<String>,
        lanchat: Option<String>,
        limit: Option<String>,
        ratio: Option<f64>,
    ) {
        self.rows.push(Row {
            metric: metric.into(),
            lanchat,
            limit,
            ratio: ratio.filter(|r| r.is_finite()),
        });
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn check(
        &mut self,
        target: impl Into<String>,
        detail: impl Into<String>,
        met: Option<bool>,
    ) {
        self.checks.push(Check {
            target: target.into(),
            detail: detail.into(),
            met,
        });
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n== {} ==", self.title);
        if !self.rows.is_empty() {
            let _ = writeln!(
                out,
                "  {:<30} {:>18} {:>18} {:>8}",
                "", self.columns.0, self.columns.1, "ratio"
            );
            for row in &self.rows {
                let _ = writeln!(
                    out,
                    "  {:<30} {:>18} {:>18} {:>8}",
                    row.metric,
                    row.lanchat.as_deref().unwrap_or("-"),
                    row.limit.as_deref().unwrap_or("-"),
                    row.ratio
                        .map(|r| format!("{r:.2}"))
                        .unwrap_or_else(|| "-".into()),
                );
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "  {note}");
        }
        for check in &self.checks {
            let _ = writeln!(
                out,
                "  target {}: {} [{}]",
                check.target,
                check.detail,
                verdict(check.met)
            );
        }
        out
    }
}

pub fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "MET",
        Some(false) => "NOT MET",
        None => "n/a",
    }
}

/// The whole run.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub machine: serde_json::Value,
    pub sizes: serde_json::Value,
    pub sections: Vec<Section>,
}

impl Report {
    pub fn add(&mut self, section: Section) {
        print!("{}", section.render());
        self.sections.push(section);
    }

    pub fn summary(&self) -> String {
        let mut out = String::from("\n== Targets of issue 5 ==\n");
        let mut any = false;
        for section in &self.sections {
            for check in &section.checks {
                any = true;
                let _ = writeln!(
                    out,
                    "  {:<8} {:<44} {}",
                    verdict(check.met),
                    check.target,
                    check.detail
                );
            }
        }
        if !any {
            out.push_str("  (no target was checked in this run)\n");
        }
        out
    }
}

/// The machine, for the record: cores, memory, CPU model, kernel.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": kernel.trim(),
    })
}
