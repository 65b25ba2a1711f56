#!/usr/bin/env python3
"""Builds docs/PERF.md and target/perf/summary.json from what the benches wrote.

Inputs, all under ROOT/target: criterion's estimates
(criterion/**/new/{benchmark,estimates}.json); the scenario table the e2e
benches write from bench/src/scenarios.rs (perf/scenarios.json); allocation
counts (perf/alloc_codec.json, perf/alloc_client_core.json); the machine
facts scripts/bench.sh records (perf/machine.json); the interleaved
comparison with NATS and Redis and the memory figures (perf/versus.json,
written by bench/benches/versus). Narrative comes from
bench/PERF.notes.md, appended verbatim.

Usage: report.py ROOT   (the workspace root)
"""

import glob
import json
import os
import sys

TRANSPORTS = ["tcp", "ws"]

# The client-core rows: benchmark id and how the report names it.
CLIENT_CORE = [
    ("correlation_map/insert_and_lookup_1k_in_flight", "correlation: file + complete, 1 K in flight"),
    ("notify_dispatch/one_of_1k_subscriptions", "dispatch a NOTIFY to one of 1 K subscriptions"),
    ("round_trip/memory_current_thread", "request round trip, in-memory peer (current-thread)"),
    ("round_trip/memory_multi_thread_2", "request round trip, in-memory peer (2 workers)"),
    ("route/validate_concrete", "route validation (concrete)"),
    ("route/validate_pattern", "route validation (pattern)"),
    ("route/match_wildcard", "wildcard match (hit)"),
    ("route/match_miss", "wildcard match (miss)"),
]


def load_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def load_criterion(crit_dir):
    """Median (and its interval) and throughput of every benchmark, by id."""
    out = {}
    for bj in glob.glob(os.path.join(crit_dir, "**", "new", "benchmark.json"), recursive=True):
        b = load_json(bj, None)
        e = load_json(os.path.join(os.path.dirname(bj), "estimates.json"), None)
        if b is None or e is None:
            continue
        out[b["full_id"]] = {
            "median_ns": e["median"]["point_estimate"],
            "throughput": b.get("throughput"),
        }
    return out


class Results:
    def __init__(self, criterion):
        self.r = criterion

    def ns(self, key):
        r = self.r.get(key)
        return None if r is None else r["median_ns"]

    def us(self, key):
        ns = self.ns(key)
        return None if ns is None else ns / 1000.0

    def per_s(self, key):
        r = self.r.get(key)
        if r is None or not r["throughput"] or r["throughput"].get("Elements") is None:
            return None
        return r["throughput"]["Elements"] / (r["median_ns"] / 1e9)

    def keys(self):
        return self.r.keys()


def fmt(v, digits=1):
    if v is None:
        return "—"
    if v >= 10000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def row(scenario, unit, ours, official=None, vs_official=None, vs_raw=None, **extra):
    r = {"scenario": scenario, "unit": unit, "ours": ours, "official": official,
         "ratio_vs_official": vs_official, "ratio_vs_raw": vs_raw}
    r.update(extra)
    return r


def header(machine):
    return [
        "# Performance",
        "",
        "Written by `scripts/bench.sh` (short profile); do not edit by hand — the "
        "narrative sections below the generated tables are kept in "
        "`bench/PERF.notes.md` and appended verbatim.",
        "",
        f"**Machine:** {machine.get('cores', '?')} cores, {machine.get('cpu', '?')}; "
        f"{machine.get('kernel', '')}; rustc {machine.get('rustc', '?')}. "
        f"**Load** (1-min average) before: {machine.get('load_before', '?')}, "
        f"after: {machine.get('load_after', '?')}. Run: {machine.get('date', '?')}, "
        f"{machine.get('duration_s', '?')} s.",
        "",
        "Arrangement (identical for ours, the official client `cntryl-fitz 0.2.0` and "
        "the raw peers): the embedded broker (or raw echo server) on its own "
        "2-worker tokio runtime, as a separate process would be; every client of a "
        "scenario on one current-thread runtime driven by the benchmark thread; "
        "loopback, `TCP_NODELAY`. Medians of criterion samples.",
        "",
    ]


def baseline(res, summary):
    """The raw echo peers: the wire's limit each protocol number is set against."""
    lines = ["## Baseline: the wire's limit", "",
             "| transport | ping-pong 32 B (µs) | ping-pong 1 KiB (µs) | pipelined echo 32 B, 256 in flight (msg/s) |",
             "|---|---:|---:|---:|"]
    raw = {}
    for t in TRANSPORTS:
        p32 = res.us(f"raw_pingpong/{t}_32")
        p1k = res.us(f"raw_pingpong/{t}_1024")
        pipe = res.per_s(f"raw_pipelined/{t}_32")
        raw[t] = {"pingpong_32_us": p32, "pipelined_32": pipe}
        lines.append(f"| {t} | {fmt(p32)} | {fmt(p1k)} | {fmt(pipe)} |")
        summary += [row(f"raw_pingpong_32/{t}", "us", p32),
                    row(f"raw_pingpong_1024/{t}", "us", p1k),
                    row(f"raw_pipelined_32/{t}", "ops/s", pipe)]
    return lines + [""], raw


def latency(res, scenarios, raw, summary):
    lines = ["## Latency, one request in flight (µs per operation, lower is better)", "",
             "`vs official` = official ÷ ours (higher is better for us; ≥ 1 means never "
             "slower). `per RT vs raw` = ours ÷ (round trips × raw ping-pong 32 B on the "
             "same transport): the cost of one protocol round trip through client and "
             "broker relative to a bare echo (target ≤ 1.5 on TCP).", "",
             "| scenario | RTs | transport | ours | official | vs official | per RT vs raw |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for s in scenarios:
        for t in TRANSPORTS:
            ours = res.us(f"{s['group']}/ours_{t}")
            off = res.us(f"{s['group']}/official_{t}")
            base = raw[t]["pingpong_32_us"]
            vs_off = ratio(off, ours)
            vs_raw = ratio(ours, None if base is None else base * s["round_trips"])
            lines.append(f"| {s['title']} | {s['round_trips']} | {t} | {fmt(ours)} | {fmt(off)} "
                         f"| {fmt(vs_off, 2)} | {fmt(vs_raw, 2)} |")
            summary.append(row(f"{s['group']}/{t}", "us", ours, off, vs_off, vs_raw,
                               round_trips=s["round_trips"]))
    return lines + [""]


def throughput(res, scenarios, raw, summary):
    lines = ["## Throughput (operations per second, higher is better)", "",
             "`vs official` = ours ÷ official (target ≥ 3). `vs raw` = per-operation "
             "time ours ÷ raw pipelined echo of 32 B with 256 in flight on the same "
             "transport (how far from the wire's limit; 1.0 would be the bare echo).", "",
             "| scenario | transport | ours | official | vs official | vs raw |",
             "|---|---|---:|---:|---:|---:|"]
    reasons = []
    for s in scenarios:
        for t in TRANSPORTS:
            ours = res.per_s(f"{s['group']}/ours_{t}")
            off = res.per_s(f"{s['group']}/official_{t}")
            vs_off = ratio(ours, off)
            vs_raw = ratio(raw[t]["pipelined_32"], ours)
            why = s["official_skipped"].get(t)
            extra = {}
            off_cell = fmt(off)
            if why and off is None:
                if why not in reasons:
                    reasons.append(why)
                off_cell = f"n/a {'¹²³⁴'[reasons.index(why)]}"
                extra["official_not_measured"] = why
            lines.append(f"| {s['title']} | {t} | {fmt(ours)} | {off_cell} | {fmt(vs_off, 2)} | {fmt(vs_raw, 2)} |")
            summary.append(row(f"{s['group']}/{t}", "ops/s", ours, off, vs_off, vs_raw, **extra))
    lines.append("")
    for i, why in enumerate(reasons):
        lines += [f"{'¹²³⁴'[i]} Not measured with the official client: {why}.", ""]
    return lines


def micro(res, codec_allocs, core_allocs, summary):
    lines = ["## Hot paths (micro)", "",
             "| message | bytes | encode (ns) | decode (ns) | allocations per encode | allocations per decode |",
             "|---|---:|---:|---:|---:|---:|"]
    allocs = {(a["message"], a["bytes"]): a for a in codec_allocs}
    for msg in sorted({k.split("/")[1] for k in res.keys() if k.startswith("encode/")}):
        for size in (32, 1024):
            enc, dec = res.ns(f"encode/{msg}/{size}"), res.ns(f"decode/{msg}/{size}")
            if enc is None and dec is None:
                continue
            a = allocs.get((msg, size), {})
            lines.append(f"| {msg} | {size} | {fmt(enc)} | {fmt(dec)} | {fmt(a.get('encode'), 2)} | {fmt(a.get('decode'), 2)} |")
            summary += [row(f"encode/{msg}/{size}", "ns", enc, allocations=a.get("encode")),
                        row(f"decode/{msg}/{size}", "ns", dec, allocations=a.get("decode"))]
    lines += ["", "| client core / routes | ns per op | allocations per op |", "|---|---:|---:|"]
    per_op = {a["scenario"]: a["allocations"] for a in core_allocs}
    for key, label in CLIENT_CORE:
        ns, al = res.ns(key), per_op.get(key)
        lines.append(f"| {label} | {fmt(ns)} | {fmt(al, 2)} |")
        summary.append(row(key, "ns", ns, allocations=al))
    return lines + [""]


def targets(summary, raw):
    def find(name):
        return next((s for s in summary if s["scenario"] == name), {})

    def verdict(ok):
        return "—" if ok is None else ("met" if ok else "**missed**")

    lines = ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    tput = [s for s in summary if s["scenario"].startswith("tput_") and s["ratio_vs_official"] is not None]
    if tput:
        worst = min(tput, key=lambda s: s["ratio_vs_official"])
        missed = [f"{s['scenario']} {s['ratio_vs_official']:.2f}×" for s in tput if s["ratio_vs_official"] < 3]
        lines.append(f"| ≥ 3× official throughput everywhere comparable | worst {worst['scenario']} "
                     f"{worst['ratio_vs_official']:.2f}×" + (f"; below 3×: {', '.join(missed)}" if missed else "")
                     + f" | {verdict(not missed)} |")
    lat = [s for s in summary if s["scenario"].startswith("lat_") and s["ratio_vs_official"] is not None]
    if lat:
        worst = min(lat, key=lambda s: s["ratio_vs_official"])
        lines.append(f"| never slower than official on latency | worst {worst['scenario']} "
                     f"{worst['ratio_vs_official']:.2f}× | {verdict(worst['ratio_vs_official'] >= 1)} |")
    g = find("lat_kv_get/tcp")
    if g.get("ratio_vs_raw") is not None:
        lines.append(f"| one request round trip ≤ 1.5× raw TCP ping-pong (KV get in tx) | {g['ours']:.1f} µs vs raw "
                     f"{raw['tcp']['pingpong_32_us']:.1f} µs = {g['ratio_vs_raw']:.2f}× | {verdict(g['ratio_vs_raw'] <= 1.5)} |")
    decs = [s["allocations"] for s in summary if s["scenario"].startswith("decode/") and s.get("allocations") is not None]
    if decs:
        lines.append(f"| decode: 0 heap allocations per frame | max {max(decs):.2f} | {verdict(max(decs) == 0)} |")
    encs = [s for s in summary if s["scenario"].startswith("encode/") and s["scenario"].endswith("/32") and s["ours"] is not None]
    if encs:
        worst = max(encs, key=lambda s: s["ours"])
        lines.append(f"| encode ≤ 50 ns for a 32 B message | slowest {worst['scenario']} {worst['ours']:.1f} ns | {verdict(worst['ours'] <= 50)} |")
    g = find("tput_rpc_256/tcp")
    if g.get("ours") is not None:
        lines.append(f"| pipelined RPC ≥ 300 k calls/s, 256 in flight | {g['ours']:,.0f} calls/s (TCP) | {verdict(g['ours'] >= 300_000)} |")
    return lines + [""]


def median(xs):
    xs = sorted(xs)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def better_ratio(ours, other, higher_is_better):
    """ours vs other, higher is better for us (≥ 1: at least as good)."""
    if ours is None or other is None or ours == 0 or other == 0:
        return None
    return ours / other if higher_is_better else other / ours


def per_round(values, side, versus, higher):
    a, b = values.get(side, []), values.get(versus, [])
    return [r for r in (better_ratio(x, y, higher) for x, y in zip(a, b)) if r is not None]


def rfmt(r):
    return f"{r:.2f}" if r >= 0.1 else f"{r:.3f}"


def spread(rs):
    if not rs:
        return "—"
    return f"{rfmt(median(rs))} ({rfmt(min(rs))}–{rfmt(max(rs))})"


PLACEMENT_TITLES = {
    "unpinned": "Unpinned (scheduler's choice)",
    "client_core0_servers_core1": "Client on core 0, every server on core 1 (`taskset`)",
}


def versus(v, summary):
    """The interleaved comparison with NATS and Redis, and the memory figures."""
    if not v:
        return []
    lines = ["## Against NATS and Redis", "",
             f"`bench/benches/versus` (`scripts/bench.sh versus`): {v.get('rounds')} rounds, "
             f"{v.get('window_ms')} ms per side and round (after a warm-up of a fifth of that), "
             f"sides measured back to back in alternating order; load {v.get('load_before')} → "
             f"{v.get('load_after')}, {v.get('duration_s')} s. Every server is a child process on "
             "loopback: our broker (release binary, in-memory storage), `nats-server` (core, with "
             "a WebSocket listener), `redis-server` (`--save \"\" --appendonly no`), the raw echo "
             "peers. Clients: ours, `async-nats` / `redis` (the competitors' own Rust clients), the "
             "official `cntryl-fitz`, all on one current-thread runtime in the bench process.",
             "",
             "Ratios are computed per round and reported as median (min–max); **higher is better "
             "for us, ≥ 1.0 means at least as good** (rates: ours ÷ theirs; latencies: theirs ÷ "
             "ours). `vs raw` is ours against the raw echo on the same transport (ping-pong for "
             "latencies, 256 pipelined echoes for rates): the share of the wire's limit reached.",
             ""]
    for name, why in (v.get("skipped") or {}).items():
        lines += [f"Not measured: {name}: {why}.", ""]
    for p in v.get("placements", []):
        lines += [f"### {PLACEMENT_TITLES.get(p['placement'], p['placement'])}", "",
                  "| scenario | transport | unit | ours | competitor | vs competitor | official | vs official | raw | vs raw |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        notes = []
        for r in p["rows"]:
            vals, higher = r["values"], r["higher_is_better"]
            med = {k: median([x for x in xs if x is not None]) for k, xs in vals.items()}
            vs_c = per_round(vals, "ours", "competitor", higher)
            vs_o = per_round(vals, "ours", "official", higher)
            vs_r = per_round(vals, "ours", "raw", higher)
            comp = f"{r['competitor']} {fmt(med.get('competitor'))}"
            lines.append(f"| {r['title']} | {r['transport']} | {r['unit']} | {fmt(med.get('ours'))} | {comp} "
                         f"| {spread(vs_c)} | {fmt(med.get('official'))} | {spread(vs_o)} "
                         f"| {fmt(med.get('raw'))} | {spread(vs_r)} |")
            for side, why in (r.get("not_measured") or {}).items():
                note = f"{r['id']}/{r['transport']} {side}: {why}"
                if note not in notes:
                    notes.append(note)
            summary.append(row(
                f"versus/{p['placement']}/{r['id']}/{r['transport']}", r["unit"], med.get("ours"),
                med.get("official"), median(vs_o), None,
                # Higher is better here, unlike ratio_vs_raw of the criterion rows.
                raw_share=median(vs_r), raw_value=med.get("raw"),
                placement=p["placement"], competitor=r["competitor"],
                competitor_value=med.get("competitor"),
                ratio_vs_competitor=median(vs_c),
                ratio_vs_competitor_min=min(vs_c) if vs_c else None,
                ratio_vs_competitor_max=max(vs_c) if vs_c else None,
                ratio_vs_competitor_rounds=vs_c, higher_is_better=higher))
        lines.append("")
        if notes:
            lines += ["Not measured: " + "; ".join(notes) + ".", ""]
    lines += [
        "**What each side guarantees** (so the rows compare like with like, or say where "
        "they do not): a NATS core publish is fire-and-forget — no acknowledgement from the "
        "server, at-most-once delivery, a slow consumer is cut off — while a Fitz publish "
        "waits for the broker's acknowledgement (256 awaiting at once here). NATS "
        "request/reply and a Fitz RPC call are both one request and one reply through the "
        "broker; the Fitz call is tracked by the broker (cancellation, deadlines, worker "
        "capacity). Redis runs here with no persistence at all (`--save \"\" --appendonly "
        "no`): a SET is acknowledged once it is in memory, and a GET reads the latest value. "
        "A Fitz KV write is a transaction — BEGIN takes the resource's lock, PUT, COMMIT "
        "applies atomically (buffered durability, in-memory storage here) — three round "
        "trips against one, and a Fitz read is a get inside an open read-only transaction "
        "(a consistent snapshot). Pub/sub keeps at most 4,096 messages published and not "
        "yet received for ours and NATS (both subscription buffers are larger), 48 for the "
        "official client (its buffer holds 64), so no side drops. `async-nats` "
        "buffers publishes until a flush, so its publisher flushes whenever the window is full "
        "and once at the end; and since nats-server drops what is published before it has "
        "processed a SUB (a flush only writes it), each NATS window starts once a probe "
        "message has come through.",
        ""]
    m = v.get("memory")
    if m:
        lines += memory(m, summary)
    return lines


def memory(m, summary):
    subs, sessions = m.get("subscriptions", 10000), m.get("sessions", 1000)
    bsubs = m.get("broker_subscriptions", 1000)
    conns = (m.get("client_ours") or {}).get("connections", 10)
    lines = ["### Memory (resident set size, `VmRSS`)", "",
             f"Client: a child process opens {conns} connections, then makes {subs:,} "
             f"subscriptions ({subs // conns:,} per connection: our broker admits 1,024 per "
             "session), reading its own `/proc/self/status` before and after. Server: the "
             f"child's `/proc/<pid>/status` before and after {sessions:,} idle connected "
             f"sessions, and before and after {bsubs:,} subscriptions on one of them. RSS counts "
             "pages touched, so these are upper bounds, read once.", "",
             "| figure | Fitz | NATS | Redis |", "|---|---:|---:|---:|"]

    def client(key):
        c = m.get(key) or {}
        if "subscribed_kib" not in c:
            return None, None
        return c["connected_kib"] - c["start_kib"], c["subscribed_kib"] - c["connected_kib"]

    def kib(v):
        return "—" if v is None else f"{v:,.0f} KiB"

    oc, os_ = client("client_ours")
    nc, ns = client("client_nats")
    lines.append(f"| client: {conns} connections | {kib(oc)} | {kib(nc)} | — |")
    lines.append(f"| client: {subs:,} subscriptions | {kib(os_)} | {kib(ns)} | — |")
    b = {k: m.get(f"broker_{k}") or {} for k in ("fitz", "nats", "redis")}

    def per_k(d, key, made, per):
        v, n = d.get(key), d.get(made)
        if v is None or not n:
            return None
        return v * per / n

    sess = {k: per_k(b[k], "sessions_delta_kib", "sessions_opened", 1000) for k in b}
    sub = {k: per_k(b[k], "subscriptions_delta_kib", "subscriptions_made", 1000) for k in b}
    lines.append(f"| server: per 1 k idle sessions | {kib(sess['fitz'])} | {kib(sess['nats'])} | {kib(sess['redis'])} |")
    lines.append(f"| server: per 1 k subscriptions | {kib(sub['fitz'])} | {kib(sub['nats'])} | — |")
    summary += [row("memory/client_10k_subscriptions", "KiB", os_, competitor="NATS", competitor_value=ns),
                row("memory/broker_per_1k_sessions", "KiB", sess["fitz"], competitor="NATS",
                    competitor_value=sess["nats"], redis_value=sess["redis"]),
                row("memory/broker_per_1k_subscriptions", "KiB", sub["fitz"], competitor="NATS",
                    competitor_value=sub["nats"])]
    return lines + [""]


def main(root):
    perf = os.path.join(root, "target", "perf")
    res = Results(load_criterion(os.path.join(root, "target", "criterion")))
    scenarios = load_json(os.path.join(perf, "scenarios.json"), [])
    summary = []
    lines = header(load_json(os.path.join(perf, "machine.json"), {}))
    section, raw = baseline(res, summary)
    lines += section
    lines += latency(res, [s for s in scenarios if s["kind"] == "latency"], raw, summary)
    lines += throughput(res, [s for s in scenarios if s["kind"] == "throughput"], raw, summary)
    lines += micro(res, load_json(os.path.join(perf, "alloc_codec.json"), []),
                   load_json(os.path.join(perf, "alloc_client_core.json"), []), summary)
    lines += targets(summary, raw)
    lines += versus(load_json(os.path.join(perf, "versus.json"), None), summary)
    notes = os.path.join(root, "bench", "PERF.notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            lines += [f.read().rstrip(), ""]
    os.makedirs(perf, exist_ok=True)
    with open(os.path.join(perf, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    with open(os.path.join(root, "docs", "PERF.md"), "w") as f:
        f.write("\n".join(lines))
    print(f"wrote docs/PERF.md and target/perf/summary.json ({len(summary)} rows)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
