//! The cross-language conformance suite (CS-001 … CS-018 of
//! `docs/clients/cross-language-conformance-suite.yaml` in cntryl/fitz)
//! for `fitz`, over the matrix {tcp, ws} × {anonymous, jwt}.
//!
//! Runs against the embedded brokers, or the external pair named by the
//! `FITZ_BROKER_*` variables. Each cell writes
//! `<target>/conformance/results-<transport>-<auth>.json` with a verdict,
//! evidence and latency per scenario; the process exits non-zero when any
//! scenario of any cell failed.
//!
//! Selecting: `FITZ_CONFORMANCE_CELLS=tcp-anonymous,ws-jwt` (default: all
//! four), and positional arguments — a cell name or a scenario id
//! (`cargo test -p fitz-tests --test conformance -- CS-010 ws-jwt`). Any
//! other positional argument is a test-name filter: the runner does nothing
//! unless it is a part of "conformance".
#![forbid(unsafe_code)]

mod report;
mod scenarios;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fitz_tests::{Brokers, Transport};

use report::{CellReport, ScenarioResult};
use support::{Auth, Cx, Ev, suite_transport};

/// No scenario takes anywhere near this; past it the scenario fails.
const SCENARIO_LIMIT: Duration = Duration::from_secs(90);

const CELLS: [(Transport, Auth); 4] = [
    (Transport::Tcp, Auth::Anonymous),
    (Transport::Tcp, Auth::Jwt),
    (Transport::Ws, Auth::Anonymous),
    (Transport::Ws, Auth::Jwt),
];

fn cell_name(t: Transport, a: Auth) -> String {
    format!("{}-{}", t.name(), a.name())
}

struct Selection {
    cells: Vec<(Transport, Auth)>,
    scenarios: Option<Vec<String>>,
}

/// What to run, from the environment and the arguments; `None` when a test
/// filter excludes the runner.
fn select() -> Option<Selection> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // `cargo test -- --list`: one "test" per cell.
        for (t, a) in CELLS {
            println!("conformance::{}: test", cell_name(t, a));
        }
        return None;
    }
    let positional: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let env_cells = std::env::var("FITZ_CONFORMANCE_CELLS").ok();
    let wanted_cells: Vec<String> = positional
        .iter()
        .filter(|a| CELLS.iter().any(|(t, au)| cell_name(*t, *au) == ***a))
        .map(|a| a.to_string())
        .chain(
            env_cells
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|c| !c.is_empty() && *c != "all")
                .map(str::to_owned),
        )
        .collect();
    let wanted_scenarios: Vec<String> = positional
        .iter()
        .filter(|a| a.len() == 6 && a.starts_with("CS-"))
        .map(|a| a.to_string())
        .collect();
    let others: Vec<&&String> = positional
        .iter()
        .filter(|a| {
            !wanted_scenarios.contains(a) && !CELLS.iter().any(|(t, au)| cell_name(*t, *au) == ***a)
        })
        .collect();
    if !others.is_empty() && !others.iter().any(|f| "conformance".contains(f.as_str())) {
        println!("conformance: filtered out");
        return None;
    }
    for c in &wanted_cells {
        if !CELLS.iter().any(|(t, a)| cell_name(*t, *a) == *c) {
            eprintln!("conformance: unknown cell {c:?} (tcp|ws)-(anonymous|jwt)");
            std::process::exit(2);
        }
    }
    let cells = CELLS
        .into_iter()
        .filter(|(t, a)| wanted_cells.is_empty() || wanted_cells.contains(&cell_name(*t, *a)))
        .collect();
    Some(Selection {
        cells,
        scenarios: (!wanted_scenarios.is_empty()).then_some(wanted_scenarios),
    })
}

fn main() {
    let Some(selection) = select() else { return };
    // The brokers run on their own runtime so that the scenarios' runtime
    // holds only client work (CS-018 counts its tasks).
    let broker_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("conformance-brokers")
        .enable_all()
        .build()
        .expect("broker runtime");
    let brokers = Arc::new(broker_rt.block_on(Brokers::start()).expect("brokers start"));
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("conformance-clients")
        .enable_all()
        .build()
        .expect("client runtime");
    let out = report::output_dir();
    let external = brokers.is_external();
    println!(
        "conformance: {} broker, {} cell(s), reports in {}",
        if external { "external" } else { "embedded" },
        selection.cells.len(),
        out.display()
    );

    let mut failed = 0;
    for (t, a) in &selection.cells {
        let cx = Arc::new(Cx {
            transport: *t,
            auth: *a,
            brokers: brokers.clone(),
        });
        let mut report = CellReport {
            client: "fitz-rs",
            suite: "fitz-cross-language-client-conformance",
            suite_version: "1.0",
            transport: suite_transport(*t),
            auth_mode: a.suite_name(),
            broker: if external { "external" } else { "embedded" },
            endpoint: cx.url().to_owned(),
            run_started_at: report::now_rfc3339(),
            run_finished_at: String::new(),
            p0_pass_rate: 0.0,
            p1_pass_rate: 0.0,
            overall_status: "fail",
            summary: report::empty_summary(),
            scenarios: Vec::new(),
        };
        println!("\n{}", cell_name(*t, *a));
        for scenario in scenarios::all() {
            if let Some(only) = &selection.scenarios
                && !only.iter().any(|id| id == scenario.id)
            {
                continue;
            }
            let result = client_rt.block_on(run(&cx, &scenario));
            println!(
                "  {} {:<4} {:>6} ms  {}{}",
                result.scenario_id,
                result.verdict,
                result.latency_ms,
                result.title,
                if result.notes.is_empty() {
                    String::new()
                } else {
                    format!("\n        {}", result.notes)
                }
            );
            report.scenarios.push(result);
        }
        report.run_finished_at = report::now_rfc3339();
        report.aggregate();
        failed += report.summary.failed;
        let file = format!("results-{}.json", cell_name(*t, *a));
        match report.write(&out, &file) {
            Ok(path) => println!(
                "  {}: {}/{} passed (P0 {:.0}%, P1 {:.0}%) -> {}",
                report.overall_status,
                report.summary.passed,
                report.summary.total,
                report.p0_pass_rate * 100.0,
                report.p1_pass_rate * 100.0,
                path.display()
            ),
            Err(e) => {
                eprintln!("conformance: cannot write {file}: {e}");
                failed += 1;
            }
        }
    }
    drop(client_rt);
    broker_rt.block_on(brokers.shutdown());
    if failed > 0 {
        eprintln!("\nconformance: {failed} scenario(s) failed");
        std::process::exit(1);
    }
    println!("\nconformance: all scenarios passed");
}

/// Runs one scenario in its own task (a panic is a failure, not the end of
/// the run) within [`SCENARIO_LIMIT`].
async fn run(cx: &Arc<Cx>, scenario: &scenarios::Scenario) -> ScenarioResult {
    let ev = Ev::default();
    let started = Instant::now();
    let task = tokio::spawn((scenario.run)(cx.clone(), ev.clone()));
    let abort = task.abort_handle();
    let outcome = match tokio::time::timeout(SCENARIO_LIMIT, task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(why))) => Err(why),
        Ok(Err(join)) => Err(match join.try_into_panic() {
            Ok(panic) => format!(
                "panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
            ),
            Err(e) => format!("task failed: {e}"),
        }),
        Err(_) => {
            abort.abort();
            Err(format!("did not finish within {SCENARIO_LIMIT:?}"))
        }
    };
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    ScenarioResult {
        scenario_id: scenario.id,
        title: scenario.title,
        priority: scenario.priority,
        client: "fitz-rs",
        transport: suite_transport(cx.transport),
        auth_mode: scenario.auth_mode.unwrap_or(cx.auth.suite_name()),
        verdict: if outcome.is_ok() { "pass" } else { "fail" },
        latency_ms,
        evidence: ev.take(),
        notes: outcome.err().unwrap_or_default(),
    }
}
