#!/usr/bin/env python3
"""Seeds corpus/<target>/ from the golden vectors in ../tests/golden.rs.

The fuzzer finds its way from random bytes too, but starting from real
frames gets it past the length prefixes and type codes at once.
"""
import hashlib
import pathlib
import re

here = pathlib.Path(__file__).resolve().parent
golden = (here.parent / "tests" / "golden.rs").read_text()
vectors = {
    int(n): bytes.fromhex(h)
    for n, h in re.findall(r'^const V(\d+): &str = "([0-9a-f ]+)";', golden, re.M)
}


def put(target, data):
    d = here / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def records(frame):
    """(type, payload) of each record in a frame body."""
    i = 0
    while i < len(frame):
        if frame[i] == 0xFF:
            ty, i = int.from_bytes(frame[i + 1:i + 3], "big"), i + 3
        else:
            ty, i = frame[i], i + 1
        n = int.from_bytes(frame[i:i + 2], "big")
        yield ty, frame[i + 2:i + 2 + n]
        i += 2 + n


for n, v in sorted(vectors.items()):
    if n == 100:  # a filter value, not a frame
        for sel in range(32):
            put("replies", bytes([sel]) + v)
        continue
    for chunk in (1, 7, 255):
        put("frames", bytes([chunk]) + v)
    for ty, payload in records(v[4:]):
        if ty in (2, 3):
            continue
        put("messages", (0x8000 | ty).to_bytes(2, "big") + payload)
        if payload[:1] in (b"\x00", b"\x01", b"\x02"):
            for sel in range(32):
                put("replies", bytes([sel]) + payload)
        put("routes", b"\n".join(re.findall(rb"[a-z]+://[ -~]*?(?=[\x00-\x1f]|$)", payload)))

for triple in (
    "rpc://*/orders/**\nrpc://acme/orders/*\nrpc://acme/orders/v1",
    "kv://**\nkv://a/*/c\nkv://a/b/c",
    "notice://**/x/**/y\nnotice://a/x/b/y\nnotice://x/q/y",
    "stream://R/**\nstream://*/*/*\nstream://R/A/X",
    "schedule://r/a/*/run\nschedule://r/a/j/run\nschedule://r/a/j/run",
):
    put("routes", triple.encode())
