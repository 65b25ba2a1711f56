//! A sans-IO harness that drives whole sessions through the broker's real
//! handshake, dispatch and engines without sockets: for the session-layer
//! fuzz target (`internal/broker/fuzz`) and its regression tests. Not a
//! stable API; compiled for tests and with the `fuzzing` feature only.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::control::Connect;
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::kv::TxMode;
use fitz_protocol::record::{LabelledRecords, Side, put_label};
use fitz_protocol::{Message, types};

use crate::clock::Clock;
use crate::config::Config;
use crate::connection;
use crate::session::{Session, Transport};
use crate::shared::Shared;

/// An anonymous, memory-backed broker core on a manual clock, plus one
/// bystander session that must stay served whatever other sessions do.
pub struct Harness {
    shared: Arc<Shared>,
    bystander: Session,
    next_id: u64,
}

/// What one fuzzed session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Frames handled.
    pub frames: usize,
    /// Why the broker closed the session, if it did before the input ended.
    pub closed: Option<String>,
    /// Bytes the broker sent the session.
    pub sent: usize,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A fresh broker core.
    pub fn new() -> Harness {
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let shared = match Shared::new(Config::default(), clock) {
            Ok(s) => s,
            Err(e) => unreachable_storage(&e),
        };
        let bystander = match open(&shared) {
            Some(s) => s,
            None => unreachable_storage(&"the bystander's CONNECT was refused"),
        };
        Harness {
            shared,
            bystander,
            next_id: 0,
        }
    }

    /// Interprets `input` as a script of up to three interleaved sessions
    /// (see [`Op`]): bytes are appended to a session's input and every frame
    /// they complete is handled as the connection task would, through the
    /// real handshake, dispatch and engines; every frame the broker sends
    /// back must be well formed. At the end every session ends (its cleanup
    /// runs) and the clock moves 31 s, so expiries run too.
    pub fn run(&mut self, input: &[u8]) -> Outcome {
        let mut sessions: [Option<Live>; SESSIONS] = Default::default();
        let mut out = Outcome {
            frames: 0,
            closed: None,
            sent: 0,
        };
        let mut rest = input;
        while let Some((op, tail)) = Op::next(rest) {
            rest = tail;
            match op {
                Op::Feed { session, bytes } => {
                    let live = match &mut sessions[session] {
                        Some(live) => live,
                        slot => match open(&self.shared) {
                            Some(s) => slot.insert(Live {
                                session: s,
                                input: BytesMut::new(),
                            }),
                            None => continue,
                        },
                    };
                    live.input.extend_from_slice(bytes);
                    self.pump(live, &mut out);
                    if live.session.is_closed() {
                        if let Some(reason) = live.session.close_reason() {
                            out.closed = Some(reason.to_string());
                        }
                        if let Some(live) = sessions[session].take() {
                            self.end(&live.session);
                        }
                    }
                }
                Op::End { session } => {
                    if let Some(live) = sessions[session].take() {
                        self.end(&live.session);
                    }
                }
                Op::Advance { secs } => {
                    self.shared.clock.advance(Duration::from_secs(secs));
                    for live in sessions.iter().flatten() {
                        out.sent += drain(&live.session);
                    }
                }
            }
        }
        for live in sessions.into_iter().flatten() {
            self.end(&live.session);
        }
        self.shared.clock.advance(Duration::from_secs(31));
        drain(&self.bystander);
        out
    }

    /// Handles every whole frame of `live`'s input.
    fn pump(&self, live: &mut Live, out: &mut Outcome) {
        let decoder = FrameDecoder::new(self.shared.config.max_frame);
        loop {
            let frame = match decoder.decode(&mut live.input) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    live.session.close(format!("frame error: {e}"));
                    return;
                }
            };
            out.frames += 1;
            live.session.begin_inline();
            let records = LabelledRecords::new(frame, Side::Broker);
            if let Err(reason) = connection::handle_records(&self.shared, &live.session, records) {
                live.session.close(reason);
            }
            connection::commit_deferred(&self.shared, &live.session);
            let _ = live.session.end_inline();
            out.sent += drain(&live.session);
            if live.session.is_closed() {
                return;
            }
        }
    }

    /// What the connection task does when a session ends.
    fn end(&self, session: &Session) {
        session.close("fuzz session ended");
        self.shared.sessions.lock().remove(&session.id());
        self.shared.engines.session_closed(session);
        drain(session);
    }

    /// True when the bystander session's next request is answered.
    pub fn bystander_served(&mut self) -> bool {
        self.next_id += 1;
        let id = self.next_id;
        let mut frame = BytesMut::new();
        put_label(&mut frame, types::CORRELATE, id);
        // A request that leaves no state behind.
        let query = fitz_protocol::lease::Query::new("lease://fuzz/bystander/l");
        if query.encode_record(&mut frame).is_err() {
            return false;
        }
        self.bystander.begin_inline();
        let records = LabelledRecords::new(frame.freeze(), Side::Broker);
        if connection::handle_records(&self.shared, &self.bystander, records).is_err() {
            return false;
        }
        connection::commit_deferred(&self.shared, &self.bystander);
        let _ = self.bystander.end_inline();
        let (batch, _) = self.bystander.take_batch();
        replies(&batch).any(|correlation| correlation == Some(id))
    }

    /// KV transactions open on the broker (a closed session leaves none).
    pub fn open_transactions(&self) -> usize {
        self.shared.engines.kv.stats().transactions
    }
}

/// Sessions a script interleaves.
const SESSIONS: usize = 3;

struct Live {
    session: Session,
    input: BytesMut,
}

/// One step of a [`Harness::run`] script. Each starts with a byte `b`:
///
/// * `b % 8 < 6`: feed session `(b >> 3) % 3` (opened with an anonymous
///   CONNECT on first use) the next `n` bytes, `n` from the following
///   big-endian `u16` (fewer if the input ends);
/// * `b % 8 == 6`: end session `(b >> 3) % 3`;
/// * `b % 8 == 7`: move the clock by the next byte's value in seconds.
#[derive(Debug)]
pub enum Op<'a> {
    /// Bytes for a session.
    Feed {
        /// Which session.
        session: usize,
        /// Its next input bytes.
        bytes: &'a [u8],
    },
    /// A session ends.
    End {
        /// Which session.
        session: usize,
    },
    /// Time passes.
    Advance {
        /// Seconds.
        secs: u64,
    },
}

impl<'a> Op<'a> {
    /// The next step of `input` and what follows it.
    pub fn next(input: &'a [u8]) -> Option<(Op<'a>, &'a [u8])> {
        let (&b, rest) = input.split_first()?;
        let session = usize::from(b >> 3) % SESSIONS;
        Some(match b % 8 {
            6 => (Op::End { session }, rest),
            7 => {
                let (&secs, rest) = rest.split_first()?;
                (
                    Op::Advance {
                        secs: u64::from(secs),
                    },
                    rest,
                )
            }
            _ => {
                let (len, rest) = rest.split_first_chunk::<2>()?;
                let n = usize::from(u16::from_be_bytes(*len)).min(rest.len());
                let (bytes, rest) = rest.split_at(n);
                (Op::Feed { session, bytes }, rest)
            }
        })
    }

    /// Encodes a feed step (for seeds and tests).
    pub fn feed(session: usize, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![u8::try_from(session % SESSIONS).unwrap_or(0) << 3];
        v.extend_from_slice(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
        v.extend_from_slice(&bytes[..bytes.len().min(usize::from(u16::MAX))]);
        v
    }
}

/// A CONNECT (empty token) through the real handshake.
fn open(shared: &Arc<Shared>) -> Option<Session> {
    let mut frame = BytesMut::new();
    Connect {
        token: Bytes::new(),
    }
    .encode_record(&mut frame)
    .ok()?;
    let (session, rest) =
        connection::handshake(shared, frame.freeze(), Transport::Tcp, None).ok()?;
    if connection::handle_records(shared, &session, rest).is_err() {
        return None;
    }
    Some(session)
}

/// Takes what the broker queued for `session`, checks every frame parses as
/// labelled records, and returns its size.
fn drain(session: &Session) -> usize {
    let (batch, _) = session.take_batch();
    let n = batch.len();
    replies(&batch).for_each(drop);
    n
}

/// The correlation labels of every record in a batch of prefixed frames.
/// Panics on a malformed frame: the broker must never send one.
fn replies(batch: &Bytes) -> impl Iterator<Item = Option<u64>> + '_ {
    let mut frames = BytesMut::from(&batch[..]);
    let decoder = FrameDecoder::new(usize::MAX);
    std::iter::from_fn(move || match decoder.decode(&mut frames) {
        Ok(Some(frame)) => Some(frame),
        Ok(None) => None,
        Err(e) => broken(&e),
    })
    .flat_map(|frame| {
        LabelledRecords::new(frame, Side::Client).map(|r| match r {
            Ok(l) => l.correlation,
            Err(e) => broken(&e),
        })
    })
}

#[allow(clippy::panic)] // The harness exists to turn a broken invariant into a crash.
fn broken(e: &dyn std::fmt::Display) -> ! {
    panic!("the broker sent a malformed frame: {e}")
}

#[allow(clippy::panic)] // Memory storage and anonymous auth cannot fail.
fn unreachable_storage(e: &dyn std::fmt::Display) -> ! {
    panic!("fuzz harness setup failed: {e}")
}

/// A TCP frame around `records`, for seeds and tests.
pub fn tcp_frame(records: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::with_capacity(4 + records.len());
    b.put_u32(u32::try_from(records.len()).unwrap_or(u32::MAX));
    b.put_slice(records);
    b.to_vec()
}

/// Realistic scripts for the fuzzer's starting corpus: every domain's
/// requests, a worker and a caller on two sessions, partial frames, time.
pub fn seeds() -> Vec<Vec<u8>> {
    use fitz_protocol::{kv, lease, notice, queue, rpc, schedule, stream};

    fn req(id: u64, m: &impl Message) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_label(&mut b, types::CORRELATE, id);
        let _ = m.encode_record(&mut b);
        tcp_frame(&b)
    }
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let kv_route = "kv://fuzz/a/r";
    let mut seeds = Vec::new();

    let mut s = Op::feed(
        0,
        &req(
            1,
            &kv::Begin {
                route: kv_route.into(),
                mode: TxMode::ReadWrite,
            },
        ),
    );
    s.extend(Op::feed(
        0,
        &req(
            2,
            &kv::Put {
                tx_id: 1,
                route: kv_route.into(),
                key: b("k"),
                value: b("v"),
            },
        ),
    ));
    s.extend(Op::feed(
        0,
        &req(
            3,
            &kv::Commit {
                tx_id: 1,
                route: kv_route.into(),
                durability: kv::Durability::Sync,
            },
        ),
    ));
    seeds.push(s);

    let q = "queue://fuzz/a/q";
    let reserve = queue::Reserve {
        route: q.into(),
        lease_seconds: 30,
        batch_size: Some(4),
        wait_seconds: Some(5),
    };
    let mut s = Op::feed(
        0,
        &req(
            1,
            &queue::Enqueue {
                route: q.into(),
                body: b("job"),
                delay_seconds: None,
            },
        ),
    );
    s.extend(Op::feed(1, &req(1, &reserve)));
    s.extend(vec![7, 40]);
    s.extend(Op::feed(1, &req(2, &reserve)));
    seeds.push(s);

    let r = "rpc://fuzz/a/echo";
    let mut s = Op::feed(
        0,
        &req(
            1,
            &rpc::SubscribeWorker {
                pattern: r.into(),
                max_concurrent: 4,
                extension_flags: None,
            },
        ),
    );
    s.extend(Op::feed(
        1,
        &req(
            1,
            &rpc::Request {
                id: rpc::RpcId([7; 16]),
                route: r.into(),
                body: b("hi"),
                budget_ms: Some(1000),
            },
        ),
    ));
    s.extend(vec![6]);
    seeds.push(s);

    let l = "lease://fuzz/a/l";
    let acquire = |owner: &str, wait| lease::Acquire {
        route: l.into(),
        owner: owner.into(),
        ttl_secs: 10,
        wait_seconds: wait,
    };
    let mut s = Op::feed(0, &req(1, &acquire("a", None)));
    s.extend(Op::feed(1, &req(1, &acquire("b", Some(20)))));
    s.extend(vec![7, 11]);
    seeds.push(s);

    let n = "notice://fuzz/a/n";
    let mut s = Op::feed(
        0,
        &req(
            1,
            &notice::Subscribe {
                route: "notice://fuzz/a/*".into(),
            },
        ),
    );
    let mut rec = BytesMut::new();
    let _ = notice::Publish {
        route: n.into(),
        payload: b("x"),
    }
    .encode_record(&mut rec);
    s.extend(Op::feed(1, &tcp_frame(&rec)));
    seeds.push(s);

    let st = "stream://fuzz/a/s";
    let mut s = Op::feed(
        0,
        &req(
            1,
            &stream::Begin {
                route: st.into(),
                ingest_metadata: None,
            },
        ),
    );
    s.extend(Op::feed(
        0,
        &req(
            2,
            &stream::Append {
                session_id: 1,
                expected_offset: 0,
                body: b("e"),
                metadata: None,
                discriminator: Some("d".into()),
            },
        ),
    ));
    s.extend(Op::feed(
        0,
        &req(
            3,
            &stream::Commit {
                session_id: 1,
                durability: kv::Durability::Sync,
            },
        ),
    ));
    s.extend(Op::feed(
        1,
        &req(
            1,
            &stream::Read {
                selector: st.into(),
                from_offset: 0,
                limit: 10,
                max_bytes: None,
                filter: None,
                cursor_fingerprint: None,
                captured_watermark: None,
            },
        ),
    ));
    seeds.push(s);

    seeds.push(Op::feed(
        0,
        &req(
            1,
            &schedule::Create {
                entry: schedule::Entry {
                    route: "schedule://fuzz/a/s/op".into(),
                    cron: "*/5 * * * *".into(),
                    mode: schedule::DeliveryMode::Broadcast,
                    payload: b("p"),
                },
            },
        ),
    ));

    // A frame split across two feeds, then a garbage frame.
    let whole = req(
        1,
        &kv::Begin {
            route: kv_route.into(),
            mode: TxMode::ReadOnly,
        },
    );
    let mut s = Op::feed(2, &whole[..5]);
    s.extend(Op::feed(2, &whole[5..]));
    s.extend(Op::feed(2, &tcp_frame(&[0xde, 0xad, 0, 1, 0])));
    seeds.push(s);
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_served_and_cleaned_up() {
        let mut h = Harness::new();
        for seed in seeds() {
            let out = h.run(&seed);
            assert!(out.frames > 0 && out.sent > 0, "{out:?}");
            assert!(h.bystander_served());
            assert_eq!(h.open_transactions(), 0);
        }
    }

    #[test]
    fn violations_close_only_the_offending_session() {
        let mut h = Harness::new();
        for bad in [
            vec![0xFF, 0xFF, 0xFF, 0xFF],
            tcp_frame(&[0, 20, 0, 0]),
            tcp_frame(&[0xde, 0xad, 0xbe, 0xef, 0, 0]),
        ] {
            let out = h.run(&Op::feed(1, &bad));
            assert!(out.closed.is_some(), "{bad:?}");
            assert!(h.bystander_served());
        }
    }

    /// Writes [`seeds`] into `FITZ_FUZZ_SEEDS_DIR` when it is set (the fuzz
    /// runner's first step); does nothing otherwise.
    #[test]
    fn write_seed_corpus() {
        let Some(dir) = std::env::var_os("FITZ_FUZZ_SEEDS_DIR") else {
            return;
        };
        for (i, seed) in seeds().into_iter().enumerate() {
            std::fs::write(std::path::Path::new(&dir).join(format!("seed-{i}")), seed).unwrap();
        }
    }

    /// Inputs the session fuzzer found, kept as regressions
    /// (`internal/broker/fuzz/regressions/`).
    #[test]
    fn fuzzer_findings_stay_fixed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut h = Harness::new();
        for entry in entries.flatten() {
            let input = std::fs::read(entry.path()).unwrap();
            h.run(&input);
            assert!(h.bystander_served(), "{}", entry.path().display());
            assert_eq!(h.open_transactions(), 0, "{}", entry.path().display());
        }
    }
}
