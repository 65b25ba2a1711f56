//! The end-to-end scenarios, once: their criterion group names, what the
//! report calls them, their round trips on the wire, and why the official
//! client is not measured in some cells. `e2e_latency` and `e2e_throughput`
//! name their groups from here, and write this table to
//! `target/perf/scenarios.json` for `bench/report.py`.

use crate::Transport;

/// One scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The criterion group (`<group>/<client>_<transport>` per cell).
    pub group: &'static str,
    /// What the report calls it.
    pub title: &'static str,
    /// Latency: protocol round trips per operation. Throughput: 0.
    pub round_trips: u32,
    /// Throughput: the parameter the group varies (payload bytes, calls in
    /// flight, records per session). Latency: 0.
    pub param: usize,
}

const fn lat(group: &'static str, title: &'static str, round_trips: u32) -> Scenario {
    Scenario {
        group,
        title,
        round_trips,
        param: 0,
    }
}

const fn tput(group: &'static str, title: &'static str, param: usize) -> Scenario {
    Scenario {
        group,
        title,
        round_trips: 0,
        param,
    }
}

/// KV BEGIN + PUT + COMMIT.
pub const LAT_KV: Scenario = lat("lat_kv_begin_put_commit", "KV begin + put + commit", 3);
/// KV GET in an open transaction.
pub const LAT_KV_GET: Scenario = lat("lat_kv_get", "KV get in an open transaction", 1);
/// Queue ENQUEUE + RESERVE + COMPLETE.
pub const LAT_QUEUE: Scenario = lat(
    "lat_queue_enqueue_reserve_complete",
    "Queue enqueue + reserve + complete",
    3,
);
/// An RPC call to a worker on a second client.
pub const LAT_RPC: Scenario = lat(
    "lat_rpc_call",
    "RPC call round trip (worker on a second client)",
    2,
);
/// Lease ACQUIRE + RELEASE.
pub const LAT_LEASE: Scenario = lat("lat_lease_acquire_release", "Lease acquire + release", 2);
/// A notice from publish to a second client's subscription.
pub const LAT_NOTICE: Scenario = lat(
    "lat_notice_publish_notify",
    "Notice publish → notify (second client)",
    1,
);
/// Stream BEGIN + APPEND + COMMIT.
pub const LAT_STREAM: Scenario = lat(
    "lat_stream_append_commit",
    "Stream begin + append + commit",
    3,
);
/// Schedule CREATE + CANCEL.
pub const LAT_SCHEDULE: Scenario = lat("lat_schedule_create_cancel", "Schedule create + cancel", 2);

/// Notice publishes of 32 B / 1 KiB to one subscriber.
pub const TPUT_NOTICE: [Scenario; 2] = [
    tput("tput_notice_32", "Notice publish 32 B → one subscriber", 32),
    tput(
        "tput_notice_1024",
        "Notice publish 1 KiB → one subscriber",
        1024,
    ),
];
/// RPC calls with 1, 16, 256 and 1,024 in flight.
pub const TPUT_RPC: [Scenario; 4] = [
    tput("tput_rpc_1", "RPC calls, 1 in flight", 1),
    tput("tput_rpc_16", "RPC calls, 16 in flight", 16),
    tput("tput_rpc_256", "RPC calls, 256 in flight", 256),
    tput("tput_rpc_1024", "RPC calls, 1 K in flight", 1024),
];
/// RPC calls with 256 in flight, the worker's client on a thread of its
/// own, so the bench thread runs the caller's client alone.
pub const TPUT_RPC_SPLIT: Scenario = tput(
    "tput_rpc_256_split",
    "RPC calls, 256 in flight, worker client on its own thread",
    256,
);
/// Queue enqueues, 256 in flight.
pub const TPUT_QUEUE: Scenario = tput("tput_queue_enqueue", "Queue enqueue, 256 in flight", 256);
/// Stream BEGIN, 100 appends, COMMIT.
pub const TPUT_STREAM: Scenario = tput(
    "tput_stream_append_100",
    "Stream begin + 100 appends + commit (records/s)",
    100,
);

/// Every latency scenario, in report order.
pub const LATENCY: [Scenario; 8] = [
    LAT_KV,
    LAT_KV_GET,
    LAT_QUEUE,
    LAT_RPC,
    LAT_LEASE,
    LAT_NOTICE,
    LAT_STREAM,
    LAT_SCHEDULE,
];

/// Every throughput scenario, in report order.
pub const THROUGHPUT: [Scenario; 9] = [
    TPUT_NOTICE[0],
    TPUT_NOTICE[1],
    TPUT_RPC[0],
    TPUT_RPC[1],
    TPUT_RPC[2],
    TPUT_RPC[3],
    TPUT_RPC_SPLIT,
    TPUT_QUEUE,
    TPUT_STREAM,
];

/// Most calls the official client can have in flight: its responses share
/// one 64-slot broadcast channel.
pub const OFFICIAL_RPC_WINDOW: usize = 64;

/// Why the official client is not measured in a throughput cell, if it is
/// not.
pub fn official_skipped(s: &Scenario, t: Transport) -> Option<&'static str> {
    const WINDOW: &str = "its RPC responses go through one 64-slot broadcast channel shared by \
        every call, so with more than 64 calls in flight calls fail with \
        Backpressure(\"RPC response stream is full\")";
    const NAGLE: &str = "over TCP the official client leaves Nagle's algorithm on and writes a \
        frame's length prefix and body separately, so each frame waits ~40 ms for the broker's \
        delayed ACK: 256 pipelined enqueues hit its 30 s request timeout and one batch of 100 \
        appends takes ~4.5 s";
    if s.group.starts_with("tput_rpc_") && s.param > OFFICIAL_RPC_WINDOW {
        return Some(WINDOW);
    }
    if (s.group == TPUT_QUEUE.group || s.group == TPUT_STREAM.group) && t == Transport::Tcp {
        return Some(NAGLE);
    }
    None
}

/// Writes the table to `target/perf/scenarios.json` (for the report).
pub fn write() {
    let row = |s: &Scenario, kind: &str| {
        let skipped: Vec<String> = Transport::ALL
            .iter()
            .filter_map(|t| {
                official_skipped(s, *t).map(|why| format!("\"{}\":{}", t.name(), json_str(why)))
            })
            .collect();
        format!(
            "{{\"kind\":\"{kind}\",\"group\":\"{}\",\"title\":{},\"round_trips\":{},\"param\":{},\"official_skipped\":{{{}}}}}",
            s.group,
            json_str(s.title),
            s.round_trips,
            s.param,
            skipped.join(",")
        )
    };
    let rows: Vec<String> = LATENCY
        .iter()
        .map(|s| row(s, "latency"))
        .chain(THROUGHPUT.iter().map(|s| row(s, "throughput")))
        .collect();
    crate::write_perf_json("scenarios.json", &format!("[{}]\n", rows.join(",\n")));
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
