//! `--baseline FILE.json`: each workload's figures as ratios to a saved run (the `--json`
//! output of an earlier `taskq-bench`), so a change is judged within one session's noise
//! instead of against numbers from another day.

use std::collections::HashMap;

use serde_json::Value;

/// The figures compared, with how to read their ratio.
const FIGURES: [(&str, &str); 5] = [
    ("tasks_per_second", "tasks/s"),
    ("p50_ms", "p50"),
    ("p99_ms", "p99"),
    ("process_cpu_us_per_task", "cpu/t"),
    ("redis_cpu_us_per_task", "redis/t"),
];

/// A saved run's rows, by workload.
#[derive(Debug)]
pub(crate) struct Baseline {
    path: String,
    rows: HashMap<String, Value>,
}

impl Baseline {
    /// Reads a saved `taskq-bench --json` report.
    pub(crate) fn load(path: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read the baseline {path}: {err}"))?;
        let report: Value = serde_json::from_str(&text).map_err(|err| {
            format!("the baseline {path} is not taskq-bench --json output: {err}")
        })?;
        let rows = report["rows"]
            .as_array()
            .ok_or_else(|| format!("the baseline {path} has no \"rows\""))?
            .iter()
            .filter_map(|row| Some((row["workload"].as_str()?.to_owned(), row.clone())))
            .collect();
        Ok(Self {
            path: path.to_owned(),
            rows,
        })
    }

    /// `row`'s figures divided by the baseline's, for the workloads and figures both have.
    pub(crate) fn ratios(&self, row: &Value) -> Option<Vec<(&'static str, f64)>> {
        let old = self.rows.get(row["workload"].as_str()?)?;
        Some(
            FIGURES
                .iter()
                .filter_map(|(field, label)| {
                    let (new, old) = (row[field].as_f64()?, old[field].as_f64()?);
                    (old > 0.0).then(|| (*label, new / old))
                })
                .collect(),
        )
    }

    /// One line per workload: `w2 vs baseline: tasks/s 1.12x, cpu/t 0.91x, ...`.
    pub(crate) fn report(&self, rows: &[Value]) -> String {
        let mut lines = vec![format!(
            "ratios to {} (above 1: more throughput, or more time and CPU):",
            self.path
        )];
        for row in rows {
            let workload = row["workload"].as_str().unwrap_or("?");
            match self.ratios(row) {
                Some(ratios) if !ratios.is_empty() => {
                    let figures: Vec<String> = ratios
                        .iter()
                        .map(|(label, ratio)| format!("{label} {ratio:.2}x"))
                        .collect();
                    lines.push(format!("{workload:<8} {}", figures.join(", ")));
                }
                _ => lines.push(format!("{workload:<8} not in the baseline")),
            }
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_divide_the_new_figures_by_the_saved_ones() {
        let dir = std::env::temp_dir().join(format!("taskq-bench-baseline-{}", std::process::id()));
        std::fs::write(
            &dir,
            r#"{"rows": [{"workload": "w2", "tasks_per_second": 100000.0, "process_cpu_us_per_task": 8.0, "p50_ms": null}]}"#,
        )
        .unwrap();
        let baseline = Baseline::load(dir.to_str().unwrap()).unwrap();
        let row = serde_json::json!({"workload": "w2", "tasks_per_second": 150000.0, "process_cpu_us_per_task": 6.0});
        assert_eq!(
            baseline.ratios(&row).unwrap(),
            vec![("tasks/s", 1.5), ("cpu/t", 0.75)]
        );
        let other = serde_json::json!({"workload": "w3", "tasks_per_second": 1.0});
        assert!(baseline.ratios(&other).is_none());
        assert!(baseline
            .report(&[row, other])
            .contains("w3       not in the baseline"));
        assert!(Baseline::load("/nonexistent/taskq.json").is_err());
        std::fs::remove_file(dir).unwrap();
    }
}
