//! Inputs that once broke the codec, kept so the fixes stay fixed. Each test
//! says what was wrong and how it was found.

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::{WireWrite, decode_reply, encode_ok, lease};

/// Lease LIST pages bounded their item count by a 36-byte minimum item, but an
/// item is `str, str, u64, str, u64, u32` = 32 bytes when its strings are
/// empty, so valid pages with short strings were rejected as hostile counts.
/// Found by review while writing the property tests.
#[test]
fn lease_list_page_with_minimal_items_decodes() {
    let item = lease::LeaseInfo {
        route: "".into(),
        owner: "".into(),
        holder_incarnation: 1,
        acquired_at: "".into(),
        expires_in_secs: 2,
        renewals: 3,
    };
    for n in 1..4 {
        let page = lease::ListOk {
            items: vec![item.clone(); n],
            next: None,
        };
        let mut buf = BytesMut::new();
        encode_ok(&mut buf, &page).unwrap();
        let payload = buf.freeze().slice(5..);
        assert_eq!(payload.len(), 1 + 4 + 32 * n + 1);
        assert_eq!(decode_reply::<lease::ListOk>(payload).unwrap(), Ok(page));
    }

    // The bound must still stop a count the remaining bytes cannot hold.
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_count(2);
    body.put_str_field("");
    body.put_str_field("");
    body.put_u64(1);
    body.put_str_field("");
    body.put_u64(2);
    body.put_u32(3);
    body.put_u8(0);
    assert!(decode_reply::<lease::ListOk>(Bytes::from(body.to_vec())).is_err());
}

/// Every decoder that bounds an item count by a minimum item size must
/// accept items of exactly that size, for several items in a row; the lease
/// bug above was such a bound set too high. One case per `Reader::count` use.
#[test]
fn count_bounds_accept_minimal_items() {
    use fitz_protocol::{
        Message, Reader, ReplyBody, decode_reply_with, kv, queue, schedule, stream,
    };

    fn reply<R: ReplyBody + PartialEq + std::fmt::Debug>(v: R) {
        let mut buf = BytesMut::new();
        encode_ok(&mut buf, &v).unwrap();
        let rec = fitz_protocol::Records::new(buf.freeze())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(decode_reply::<R>(rec.payload).unwrap(), Ok(v));
    }

    for n in 1..4 {
        reply(kv::ScanOk {
            items: vec![(Bytes::new(), Bytes::new()); n],
            has_more: false,
        });

        for wildcard in [false, true] {
            let ok = queue::ReserveOk {
                items: vec![
                    queue::ReservedItem {
                        route: wildcard.then(|| "".into()),
                        message_id: 0,
                        lease_token: 0,
                        body: Bytes::new(),
                    };
                    n
                ],
            };
            let mut body = BytesMut::new();
            ok.encode_body(&mut body);
            let mut r = Reader::new(body.freeze());
            assert_eq!(queue::ReserveOk::decode_body(&mut r, wildcard).unwrap(), ok);
            assert!(r.is_empty());
            let mut reply = BytesMut::new();
            ok.encode_reply(&mut reply).unwrap();
            let rec = fitz_protocol::Records::new(reply.freeze())
                .next()
                .unwrap()
                .unwrap();
            let back =
                decode_reply_with(rec.payload, |r| queue::ReserveOk::decode_body(r, wildcard));
            assert_eq!(back.unwrap(), Ok(ok));
        }

        let page = stream::ReadPage {
            items: vec![
                stream::Item {
                    route: "".into(),
                    kind: stream::ItemKind::Filtered {
                        offset: 0,
                        reason: stream::FilterReason::Unspecified,
                    },
                };
                n
            ],
            ..stream::ReadPage::default()
        };
        for global in [false, true] {
            let mut b = BytesMut::new();
            page.encode(&mut b, global);
            assert_eq!(stream::ReadPage::decode(b.freeze(), global).unwrap(), page);
        }

        let batch = schedule::CreateBatch {
            entries: vec![
                schedule::Entry {
                    route: "".into(),
                    cron: "".into(),
                    mode: schedule::DeliveryMode::Broadcast,
                    payload: Bytes::new(),
                };
                n
            ],
        };
        assert_eq!(
            schedule::CreateBatch::decode(batch.to_payload()).unwrap(),
            batch
        );

        for clause in [
            stream::FilterClause::Equals("".into()),
            stream::FilterClause::AnyOf(vec!["".into(); n]),
            stream::FilterClause::AnyOf(Vec::new()),
        ] {
            let set = stream::FilterSet {
                clauses: vec![clause; n],
            };
            assert_eq!(stream::FilterSet::decode(set.to_bytes()).unwrap(), set);
        }
    }
}
