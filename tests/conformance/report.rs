//! The result files: one JSON document per cell, shaped by the suite's
//! `result_schema` and `reporting` sections and the runner contract.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

/// One scenario's record.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub scenario_id: &'static str,
    pub title: &'static str,
    pub priority: &'static str,
    pub client: &'static str,
    pub transport: &'static str,
    pub auth_mode: &'static str,
    /// `pass` when every assertion held, else `fail`.
    pub verdict: &'static str,
    pub latency_ms: u64,
    pub evidence: Value,
    /// Why it failed (empty on a pass).
    pub notes: String,
}

/// Pass/fail counts and rates.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub p0_total: usize,
    pub p0_passed: usize,
    pub p1_total: usize,
    pub p1_passed: usize,
}

/// The document of one cell.
#[derive(Debug, Clone, Serialize)]
pub struct CellReport {
    pub client: &'static str,
    pub suite: &'static str,
    pub suite_version: &'static str,
    pub transport: &'static str,
    pub auth_mode: &'static str,
    /// `embedded` or `external`.
    pub broker: &'static str,
    pub endpoint: String,
    pub run_started_at: String,
    pub run_finished_at: String,
    pub p0_pass_rate: f64,
    pub p1_pass_rate: f64,
    /// `pass` when every scenario passed; `fail` otherwise (the suite fails
    /// on any P0 miss and warns on P1 misses; this runner fails on both).
    pub overall_status: &'static str,
    pub summary: Summary,
    pub scenarios: Vec<ScenarioResult>,
}

impl CellReport {
    /// Fills in the aggregates from `scenarios`.
    pub fn aggregate(&mut self) {
        let count = |prio: Option<&str>, pass: bool| {
            self.scenarios
                .iter()
                .filter(|s| prio.is_none_or(|p| s.priority == p))
                .filter(|s| !pass || s.verdict == "pass")
                .count()
        };
        let summary = Summary {
            total: count(None, false),
            passed: count(None, true),
            failed: count(None, false) - count(None, true),
            p0_total: count(Some("P0"), false),
            p0_passed: count(Some("P0"), true),
            p1_total: count(Some("P1"), false),
            p1_passed: count(Some("P1"), true),
        };
        let rate = |passed: usize, total: usize| {
            if total == 0 {
                1.0
            } else {
                passed as f64 / total as f64
            }
        };
        self.p0_pass_rate = rate(summary.p0_passed, summary.p0_total);
        self.p1_pass_rate = rate(summary.p1_passed, summary.p1_total);
        self.overall_status = if summary.failed == 0 { "pass" } else { "fail" };
        self.summary = summary;
    }

    /// Writes `results-<transport>-<auth>.json` into `dir`.
    pub fn write(&self, dir: &Path, file: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(file);
        let mut text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        text.push('\n');
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// An empty summary, before [`CellReport::aggregate`].
pub fn empty_summary() -> Summary {
    Summary {
        total: 0,
        passed: 0,
        failed: 0,
        p0_total: 0,
        p0_passed: 0,
        p1_total: 0,
        p1_passed: 0,
    }
}

/// Where the reports go: `$FITZ_CONFORMANCE_OUT`, else
/// `<target dir>/conformance`. The target directory is
/// `$CARGO_TARGET_DIR` when set, else found from this executable
/// (`<target>/<profile>/deps/conformance-…`), else `<workspace>/target`.
pub fn output_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FITZ_CONFORMANCE_OUT") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("conformance");
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe
            .ancestors()
            .find(|p| p.file_name().is_some_and(|n| n == "deps"))
        && let Some(target) = deps.parent().and_then(Path::parent)
    {
        return target.join("conformance");
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("conformance")
}

/// Now as an RFC 3339 UTC timestamp with milliseconds.
pub fn now_rfc3339() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
