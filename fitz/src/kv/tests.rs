//! KV against scripted peers over the in-memory transport: what the embedded
//! broker cannot show (a broker without `KV_SCAN_EXCLUSIVE`, the legacy
//! uncorrelated regime, exact bytes on the wire).

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::{Message, ReplyBody, kv, types};
use fitz_testkit::peer::{CAP_ALL, CAP_CORRELATION, Peer, Request};
use futures_util::{FutureExt, TryStreamExt};
use tokio::task::JoinHandle;

use super::{Durability, ScanOptions, TxMode};
use crate::transport::memory;
use crate::{Client, ErrorKind, StaticToken};

async fn start(caps: u32) -> (Client, Peer) {
    let (connector, mut listener) = memory(1 << 20);
    let client = Client::builder("memory://kv", StaticToken::anonymous())
        .connector(connector)
        .build()
        .unwrap();
    let c = client.clone();
    let connecting = tokio::spawn(async move { c.connect().await });
    let mut peer = Peer::new(listener.accept().await.unwrap());
    peer.handshake(caps).await.unwrap();
    connecting.await.unwrap().unwrap();
    (client, peer)
}

fn ok(body: &impl ReplyBody) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(0);
    body.encode_body(&mut b);
    b.to_vec()
}

/// A KV resource served the way a broker pages it: at most `budget` bytes
/// of keys and values per page (at least one entry), honouring `limit`,
/// direction and (when `exclusive`) the trailing `start_exclusive` byte.
struct Resource {
    data: BTreeMap<Bytes, Bytes>,
    budget: usize,
    exclusive: bool,
    scans: Vec<kv::Scan>,
}

impl Resource {
    fn new(
        entries: impl IntoIterator<Item = (String, usize)>,
        budget: usize,
        exclusive: bool,
    ) -> Self {
        Self {
            data: entries
                .into_iter()
                .map(|(k, n)| (Bytes::from(k), Bytes::from(vec![b'v'; n])))
                .collect(),
            budget,
            exclusive,
            scans: Vec::new(),
        }
    }

    fn scan(&mut self, q: kv::Scan) -> kv::ScanOk {
        assert!(
            self.exclusive || q.start_exclusive.is_none(),
            "start_exclusive sent to a broker that did not advertise it"
        );
        let excl = q.start_exclusive == Some(true);
        let bound = |b: &Option<Bytes>, exclusive: bool| match b {
            None => Bound::Unbounded,
            Some(k) if exclusive => Bound::Excluded(k.clone()),
            Some(k) => Bound::Included(k.clone()),
        };
        let matching: Vec<(Bytes, Bytes)> = if q.reverse {
            let upper = bound(&q.start, excl);
            let lower = bound(&q.end, true);
            if matches!((&lower, &upper), (Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) if l >= u)
            {
                Vec::new()
            } else {
                self.data
                    .range((lower, upper))
                    .rev()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }
        } else {
            let lower = bound(&q.start, excl);
            let upper = bound(&q.end, true);
            if matches!((&lower, &upper), (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u)) if l >= u)
            {
                Vec::new()
            } else {
                self.data
                    .range((lower, upper))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }
        };
        let cap = q.limit.map_or(usize::MAX, |l| l as usize);
        let mut used = 0;
        let mut items = Vec::new();
        for (k, v) in &matching {
            if items.len() == cap || (!items.is_empty() && used + k.len() + v.len() > self.budget) {
                break;
            }
            used += k.len() + v.len();
            items.push((k.clone(), v.clone()));
        }
        self.scans.push(q);
        kv::ScanOk {
            has_more: items.len() < matching.len(),
            items,
        }
    }
}

/// Serves BEGIN, SCAN and ROLLBACK until the client goes away.
fn serve(mut peer: Peer, mut res: Resource) -> JoinHandle<Resource> {
    tokio::spawn(async move {
        while let Ok(req) = peer.read_request().await {
            let reply = match req.ty {
                types::KV_BEGIN => ok(&kv::BeginOk { tx_id: 9 }),
                types::KV_SCAN => ok(&res.scan(kv::Scan::decode(req.payload.clone()).unwrap())),
                types::KV_ROLLBACK => vec![0],
                other => panic!("unexpected request type {other}"),
            };
            if peer.reply(&req, &reply).await.is_err() {
                break;
            }
        }
        res
    })
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("k{i:02}")).collect()
}

async fn scan_all(client: &Client, options: ScanOptions) -> crate::Result<Vec<String>> {
    let mut tx = client.kv().begin("kv://t/s/r", TxMode::ReadOnly).await?;
    let got: Vec<String> = tx
        .scan(options)
        .map_ok(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
        .try_collect()
        .await?;
    tx.rollback().await?;
    Ok(got)
}

#[tokio::test]
async fn scans_resume_exactly_without_the_exclusive_capability() {
    // Mixed value sizes so pages are cut by bytes at varying places, yet
    // any two entries fit one page (what a reverse resume without the
    // capability needs; see the next test for when they do not).
    let entries: Vec<(String, usize)> = keys(30)
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k, 10 + (i % 4) * 10))
        .collect();
    let all = keys(30);
    let mut rev = all.clone();
    rev.reverse();
    for caps in [CAP_CORRELATION, CAP_ALL] {
        let exclusive = caps == CAP_ALL;
        let (client, peer) = start(caps).await;
        let server = serve(peer, Resource::new(entries.clone(), 100, exclusive));
        for page in [0, 1, 4] {
            let fwd = scan_all(&client, ScanOptions::all().page_size(page))
                .await
                .unwrap();
            assert_eq!(fwd, all, "forward, caps {caps}, page {page}");
            let back = scan_all(&client, ScanOptions::all().reverse().page_size(page))
                .await
                .unwrap();
            assert_eq!(back, rev, "reverse, caps {caps}, page {page}");
        }
        let got = scan_all(
            &client,
            ScanOptions::range("k05"..="k12").reverse().page_size(3),
        )
        .await
        .unwrap();
        assert_eq!(got, rev[17..25]);
        let got = scan_all(&client, ScanOptions::range("k05"..="k12").limit(5))
            .await
            .unwrap();
        assert_eq!(got, all[5..10]);
        client.close().await;
        let res = server.await.unwrap();
        let resumed = res.scans.iter().filter(|q| q.start.is_some()).count();
        assert!(resumed > 10, "pages were resumed: {resumed}");
        if !exclusive {
            // Forward resumes at the successor key, reverse ones at the
            // key itself (dropped locally): never the trailing byte.
            assert!(res.scans.iter().all(|q| q.start_exclusive.is_none()));
            assert!(
                res.scans
                    .iter()
                    .any(|q| !q.reverse && q.start.as_ref().is_some_and(|s| s.ends_with(&[0])))
            );
        } else {
            assert!(res.scans.iter().any(|q| q.start_exclusive == Some(true)));
        }
    }
}

#[tokio::test]
async fn a_reverse_resume_that_cannot_progress_fails_instead_of_looping() {
    // "k03" alone fills a page: resuming after "k04" returns just "k04"
    // again, then "k03" would need a page of its own after the dropped one.
    let mut entries: Vec<(String, usize)> = keys(6).into_iter().map(|k| (k, 10)).collect();
    entries[4].1 = 500;
    let (client, peer) = start(CAP_CORRELATION).await;
    let server = serve(peer, Resource::new(entries, 100, false));
    let e = scan_all(&client, ScanOptions::all().reverse())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    // Forward needs no such trick and gets through.
    let fwd = scan_all(&client, ScanOptions::all()).await.unwrap();
    assert_eq!(fwd, keys(6));
    client.close().await;
    server.await.unwrap();
}

#[tokio::test]
async fn scan_requests_have_the_documented_bytes() {
    let (client, mut peer) = start(CAP_ALL).await;
    let c = client.clone();
    let task = tokio::spawn(async move {
        let mut tx = c.kv().begin("kv://t/s/r", TxMode::ReadOnly).await.unwrap();
        let page = tx
            .scan_page(&ScanOptions::range("a".."z").resume_after("b").page_size(2))
            .await
            .unwrap();
        assert_eq!(page.len(), 0);
        // Dropped without rollback: the background ROLLBACK follows.
    });
    let begin = peer.read_request().await.unwrap();
    assert_eq!(
        &begin.payload[..],
        b"\0\0\0\x0akv://t/s/r\x00",
        "route, mode ReadOnly"
    );
    peer.reply(&begin, &ok(&kv::BeginOk { tx_id: 7 }))
        .await
        .unwrap();
    let scan = peer.read_request().await.unwrap();
    let mut want = BytesMut::new();
    want.put_u64(7);
    want.put_slice(b"\0\0\0\x0akv://t/s/r");
    want.put_slice(b"\x01\0\0\0\x01b"); // start "b"
    want.put_slice(b"\x01\0\0\0\x01z"); // end "z"
    want.put_slice(b"\x01\0\0\0\x02"); // limit 2
    want.put_slice(b"\x00\x01"); // forward, start_exclusive
    assert_eq!(&scan.payload[..], &want[..]);
    peer.reply(&scan, &ok(&kv::ScanOk::default()))
        .await
        .unwrap();
    task.await.unwrap();
    let rollback: Request = peer.read_request().await.unwrap();
    assert_eq!(rollback.ty, types::KV_ROLLBACK);
    assert_eq!(
        kv::Rollback::decode(rollback.payload.clone()).unwrap(),
        kv::Rollback {
            tx_id: 7,
            route: "kv://t/s/r".into()
        }
    );
    assert!(rollback.correlation.is_some(), "labelled like any request");
    peer.reply(&rollback, &[0]).await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn a_dropped_transaction_waits_its_turn_on_a_legacy_broker() {
    // Uncorrelated: one ROLLBACK on the wire at a time, answers in order.
    let (client, mut peer) = start(0).await;
    let c = client.clone();
    let task = tokio::spawn(async move {
        let a = c.kv().begin("kv://t/a/r", TxMode::ReadWrite).await.unwrap();
        let b = c.kv().begin("kv://t/b/r", TxMode::ReadWrite).await.unwrap();
        let explicit = a.rollback();
        tokio::pin!(explicit);
        // One poll submits the explicit ROLLBACK, ahead of the dropped one.
        assert!(explicit.as_mut().now_or_never().is_none());
        drop(b);
        explicit.await
    });
    for tx_id in [1, 2] {
        let begin = peer.read_request().await.unwrap();
        assert_eq!(begin.correlation, None);
        peer.reply(&begin, &ok(&kv::BeginOk { tx_id }))
            .await
            .unwrap();
    }
    let first = peer.read_request().await.unwrap();
    assert_eq!(first.ty, types::KV_ROLLBACK);
    // The second waits in its lane until the first is answered.
    let early =
        tokio::time::timeout(std::time::Duration::from_millis(50), peer.read_request()).await;
    assert!(early.is_err(), "a second ROLLBACK on the wire: {early:?}");
    peer.reply(&first, &[0]).await.unwrap();
    let second = peer.read_request().await.unwrap();
    assert_eq!(second.ty, types::KV_ROLLBACK);
    let ids: Vec<u64> = [&first, &second]
        .iter()
        .map(|r| kv::Rollback::decode(r.payload.clone()).unwrap().tx_id)
        .collect();
    assert_eq!(ids, [1, 2]);
    peer.reply(&second, &[0]).await.unwrap();
    task.await.unwrap().unwrap();
    // The detached ROLLBACK's answer is swallowed, and its entry goes.
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while client.debug_snapshot().await.unwrap().pending != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the detached request's entry stayed");
    assert_eq!(client.debug_snapshot().await.unwrap().tombstones, 0);
    client.close().await;
}

#[tokio::test]
async fn a_failed_commit_sends_no_rollback() {
    let (client, mut peer) = start(CAP_CORRELATION).await;
    let c = client.clone();
    let begun = tokio::spawn(async move { c.kv().begin("kv://t/c/r", TxMode::ReadWrite).await });
    let begin = peer.read_request().await.unwrap();
    peer.reply(&begin, &ok(&kv::BeginOk { tx_id: 3 }))
        .await
        .unwrap();
    let tx = begun.await.unwrap().unwrap();
    let committing = tokio::spawn(tx.commit(Durability::Sync));
    let commit = peer.read_request().await.unwrap();
    assert_eq!(commit.ty, types::KV_COMMIT);
    // The broker answered: it has discarded the transaction, so Drop must
    // not send a ROLLBACK for it.
    let mut err = BytesMut::new();
    fitz_protocol::WireError::coded(fitz_protocol::codes::KV_BACKEND, "disk").encode(&mut err);
    peer.reply(&commit, &err).await.unwrap();
    let e = committing.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Some(fitz_protocol::codes::KV_BACKEND));
    assert!(e.maybe_applied(), "a backend failure's outcome is unknown");
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(50), peer.read_request()).await;
    assert!(nothing.is_err(), "unexpected request: {nothing:?}");
    client.close().await;
}

/// Reads the PUT/INSERT and the COMMIT of a one-key write; both must be on
/// the wire before either is answered.
async fn write_and_commit_requests(peer: &mut Peer, tx_id: u64) -> (Request, Request) {
    let begin = peer.read_request().await.unwrap();
    assert_eq!(begin.ty, types::KV_BEGIN);
    let b = kv::Begin::decode(begin.payload.clone()).unwrap();
    assert_eq!(b.mode, TxMode::ReadWrite);
    peer.reply(&begin, &ok(&kv::BeginOk { tx_id }))
        .await
        .unwrap();
    let write = peer.read_request().await.unwrap();
    let commit = tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_request())
        .await
        .expect("the COMMIT waited for the write's answer")
        .unwrap();
    assert_eq!(commit.ty, types::KV_COMMIT);
    let c = kv::Commit::decode(commit.payload.clone()).unwrap();
    assert_eq!((c.tx_id, c.durability), (tx_id, Durability::Sync));
    (write, commit)
}

#[tokio::test]
async fn a_one_key_put_sends_its_commit_without_waiting_for_the_put() {
    let (client, mut peer) = start(CAP_CORRELATION).await;
    let c = client.clone();
    let putting =
        tokio::spawn(async move { c.kv().put("kv://t/one/r", "k", "v", Durability::Sync).await });
    let (write, commit) = write_and_commit_requests(&mut peer, 7).await;
    assert_eq!(write.ty, types::KV_PUT);
    let p = kv::Put::decode(write.payload.clone()).unwrap();
    assert_eq!(
        (p.tx_id, &p.key[..], &p.value[..]),
        (7, &b"k"[..], &b"v"[..])
    );
    peer.reply(&write, &[0]).await.unwrap();
    peer.reply(&commit, &[0]).await.unwrap();
    putting.await.unwrap().unwrap();
    client.close().await;
}

#[tokio::test]
async fn a_failed_one_key_write_reports_the_write_and_leaves_nothing_open() {
    let (client, mut peer) = start(CAP_CORRELATION).await;
    let c = client.clone();
    let inserting = tokio::spawn(async move {
        c.kv()
            .insert("kv://t/one/r", "k", "v", Durability::Sync)
            .await
    });
    let (write, commit) = write_and_commit_requests(&mut peer, 8).await;
    assert_eq!(write.ty, types::KV_INSERT);
    let mut exists = BytesMut::new();
    fitz_protocol::WireError::coded(fitz_protocol::codes::KV_KEY_EXISTS, "key exists")
        .encode(&mut exists);
    peer.reply(&write, &exists).await.unwrap();
    // The empty transaction behind it commits.
    peer.reply(&commit, &[0]).await.unwrap();
    let e = inserting.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Some(fitz_protocol::codes::KV_KEY_EXISTS));
    assert!(!e.maybe_applied());
    // Committed: no ROLLBACK follows.
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(50), peer.read_request()).await;
    assert!(nothing.is_err(), "unexpected request: {nothing:?}");
    client.close().await;
}

#[tokio::test]
async fn a_one_key_delete_works_on_a_legacy_broker() {
    // Uncorrelated: DELETE and COMMIT are different types, so both are on
    // the wire at once and are answered in order.
    let (client, mut peer) = start(0).await;
    let c = client.clone();
    let deleting =
        tokio::spawn(async move { c.kv().delete("kv://t/one/r", "k", Durability::Sync).await });
    let (write, commit) = write_and_commit_requests(&mut peer, 9).await;
    assert_eq!(write.ty, types::KV_DELETE);
    assert_eq!(write.correlation, None);
    peer.reply(&write, &[0]).await.unwrap();
    peer.reply(&commit, &[0]).await.unwrap();
    deleting.await.unwrap().unwrap();
    client.close().await;
}

#[tokio::test]
async fn a_one_key_put_dropped_after_its_begin_was_queued_still_ends_its_transaction() {
    // The PUT and the COMMIT ride in the BEGIN's command: the actor writes
    // them when the BEGIN's answer arrives, even though the caller is gone,
    // so the resource's lock is released instead of held until the broker's
    // idle timeout.
    let (client, mut peer) = start(CAP_CORRELATION).await;
    let c = client.clone();
    let putting =
        tokio::spawn(async move { c.kv().put("kv://t/one/r", "k", "v", Durability::Sync).await });
    let begin = peer.read_request().await.unwrap();
    assert_eq!(begin.ty, types::KV_BEGIN);
    putting.abort();
    assert!(putting.await.unwrap_err().is_cancelled());
    peer.reply(&begin, &ok(&kv::BeginOk { tx_id: 11 }))
        .await
        .unwrap();
    let wait = std::time::Duration::from_secs(5);
    let write = tokio::time::timeout(wait, peer.read_request())
        .await
        .expect("no PUT after the BEGIN")
        .unwrap();
    assert_eq!(write.ty, types::KV_PUT);
    let commit = tokio::time::timeout(wait, peer.read_request())
        .await
        .expect("no COMMIT after the PUT")
        .unwrap();
    assert_eq!(commit.ty, types::KV_COMMIT);
    assert_eq!(
        kv::Commit::decode(commit.payload.clone()).unwrap().tx_id,
        11
    );
    peer.reply(&write, &[0]).await.unwrap();
    peer.reply(&commit, &[0]).await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn a_one_key_put_whose_begin_fails_sends_nothing_more() {
    let (client, mut peer) = start(CAP_CORRELATION).await;
    let c = client.clone();
    let putting =
        tokio::spawn(async move { c.kv().put("kv://t/one/r", "k", "v", Durability::Sync).await });
    let begin = peer.read_request().await.unwrap();
    let mut conflict = BytesMut::new();
    fitz_protocol::WireError::coded(fitz_protocol::codes::KV_ISOLATION_CONFLICT, "locked")
        .encode(&mut conflict);
    peer.reply(&begin, &conflict).await.unwrap();
    let e = putting.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Some(fitz_protocol::codes::KV_ISOLATION_CONFLICT));
    // The next request on the wire is this marker, not a PUT or COMMIT.
    let c = client.clone();
    let marker = tokio::spawn(async move { c.kv().begin("kv://t/one/m", TxMode::ReadOnly).await });
    let next = peer.read_request().await.unwrap();
    assert_eq!(next.ty, types::KV_BEGIN);
    assert_eq!(
        &*kv::Begin::decode(next.payload.clone()).unwrap().route,
        "kv://t/one/m"
    );
    peer.reply(&next, &ok(&kv::BeginOk { tx_id: 12 }))
        .await
        .unwrap();
    drop(marker.await.unwrap().unwrap());
    client.close().await;
}
