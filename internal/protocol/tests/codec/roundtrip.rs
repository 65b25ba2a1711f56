//! Property tests: encode → decode is the identity for every message, push,
//! reply body and error envelope; framing and labelling survive arbitrary
//! splits; every decoder survives arbitrary bytes; route matching agrees with
//! a brute-force reference.

use std::collections::BTreeSet;
use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use fitz_protocol::frame::{FrameDecoder, encode_frame_with};
use fitz_protocol::record::{
    Records, decode_single_record, encode_raw_record, label_id, put_label,
};
use fitz_protocol::reply::RouteOnly;
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::rpc::RpcId;
use fitz_protocol::types::{self, CORRELATE, CORRELATED, SERVER_HELLO};
use fitz_protocol::{
    Capabilities, ClientMessage, EncodeError, LabelledRecords, Reader, ReplyBody, ServerPush, Side,
    Str, WireError, control, decode_reply, decode_reply_with, encode_error, encode_ok, kv, lease,
    notice, queue, rpc, schedule, stream,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

// ---------------------------------------------------------------------------
// Field strategies
// ---------------------------------------------------------------------------

fn text() -> BoxedStrategy<Str> {
    // Empty strings get their own weight: they make items minimal-sized,
    // which is where item-count bounds go wrong.
    prop_oneof![
        1 => Just(String::new()),
        3 => "[a-z0-9:/*.-]{0,24}",
        1 => ".{0,12}",
    ]
    .prop_map(Str::from)
    .boxed()
}

fn blob() -> BoxedStrategy<Bytes> {
    vec(any::<u8>(), 0..48).prop_map(Bytes::from).boxed()
}

fn rpc_id() -> impl Strategy<Value = RpcId> {
    any::<[u8; 16]>().prop_map(RpcId)
}

fn route_only<const T: u16>() -> impl Strategy<Value = RouteOnly<T>> {
    text().prop_map(|route| RouteOnly { route })
}

fn durability() -> impl Strategy<Value = kv::Durability> {
    prop_oneof![Just(kv::Durability::Buffered), Just(kv::Durability::Sync)]
}

// ---------------------------------------------------------------------------
// Client → broker messages
// ---------------------------------------------------------------------------

fn kv_messages() -> impl Strategy<Value = ClientMessage> {
    let mode = prop_oneof![Just(kv::TxMode::ReadOnly), Just(kv::TxMode::ReadWrite)];
    prop_oneof![
        (text(), mode).prop_map(|(route, mode)| kv::Begin { route, mode }.into()),
        (any::<u64>(), text(), durability()).prop_map(|(tx_id, route, durability)| {
            kv::Commit {
                tx_id,
                route,
                durability,
            }
            .into()
        }),
        (any::<u64>(), text()).prop_map(|(tx_id, route)| kv::Rollback { tx_id, route }.into()),
        (any::<u64>(), text(), blob()).prop_map(|(tx_id, route, key)| kv::Get {
            tx_id,
            route,
            key
        }
        .into()),
        (any::<u64>(), text(), blob(), blob()).prop_map(|(tx_id, route, key, value)| {
            kv::Put {
                tx_id,
                route,
                key,
                value,
            }
            .into()
        }),
        (any::<u64>(), text(), blob(), blob()).prop_map(|(tx_id, route, key, value)| {
            kv::Insert {
                tx_id,
                route,
                key,
                value,
            }
            .into()
        }),
        (any::<u64>(), text(), blob()).prop_map(|(tx_id, route, key)| kv::Delete {
            tx_id,
            route,
            key
        }
        .into()),
        (any::<u64>(), text(), blob(), blob()).prop_map(|(tx_id, route, start, end)| {
            kv::DeleteRange {
                tx_id,
                route,
                start,
                end,
            }
            .into()
        }),
        (
            any::<u64>(),
            text(),
            proptest::option::of(blob()),
            proptest::option::of(blob()),
            proptest::option::of(any::<u32>()),
            any::<bool>(),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(
                |(tx_id, route, start, end, limit, reverse, start_exclusive)| {
                    kv::Scan {
                        tx_id,
                        route,
                        start,
                        end,
                        limit,
                        reverse,
                        start_exclusive,
                    }
                    .into()
                }
            ),
        route_only::<{ types::KV_SUBSCRIBE }>().prop_map(Into::into),
        route_only::<{ types::KV_UNSUBSCRIBE }>().prop_map(Into::into),
    ]
}

fn queue_messages() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (text(), blob(), proptest::option::of(any::<u64>())).prop_map(
            |(route, body, delay_seconds)| {
                queue::Enqueue {
                    route,
                    body,
                    delay_seconds,
                }
                .into()
            }
        ),
        (
            text(),
            any::<u64>(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(route, lease_seconds, batch_size, wait_seconds)| {
                queue::Reserve {
                    route,
                    lease_seconds,
                    batch_size,
                    wait_seconds,
                }
                .into()
            }),
        (text(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(route, message_id, lease_token, lease_seconds)| {
                queue::Extend {
                    route,
                    message_id,
                    lease_token,
                    lease_seconds,
                }
                .into()
            }
        ),
        (text(), any::<u64>(), any::<u64>()).prop_map(|(route, message_id, lease_token)| {
            queue::Complete {
                route,
                message_id,
                lease_token,
            }
            .into()
        }),
        route_only::<{ types::QUEUE_SUBSCRIBE }>().prop_map(Into::into),
        route_only::<{ types::QUEUE_UNSUBSCRIBE }>().prop_map(Into::into),
    ]
}

fn rpc_request() -> impl Strategy<Value = rpc::Request> {
    (
        rpc_id(),
        text(),
        blob(),
        proptest::option::of(0..=rpc::MAX_BUDGET_MS),
    )
        .prop_map(|(id, route, body, budget_ms)| rpc::Request {
            id,
            route,
            body,
            budget_ms,
        })
}

fn rpc_response() -> impl Strategy<Value = rpc::Response> {
    (rpc_id(), any::<u64>(), any::<bool>(), blob()).prop_map(|(id, sequence, end, body)| {
        rpc::Response {
            id,
            sequence,
            end,
            body,
        }
    })
}

fn rpc_messages() -> impl Strategy<Value = ClientMessage> {
    let reason = prop_oneof![
        Just(rpc::CancelReason::Explicit),
        Just(rpc::CancelReason::CallerDeadline)
    ];
    prop_oneof![
        (text(), any::<u32>(), proptest::option::of(0u8..=1)).prop_map(
            |(pattern, max_concurrent, extension_flags)| {
                rpc::SubscribeWorker {
                    pattern,
                    max_concurrent,
                    extension_flags,
                }
                .into()
            }
        ),
        route_only::<{ types::RPC_UNSUBSCRIBE_WORKER }>().prop_map(Into::into),
        rpc_request().prop_map(Into::into),
        rpc_response().prop_map(Into::into),
        (rpc_id(), reason).prop_map(|(id, reason)| rpc::Cancel::Caller { id, reason }.into()),
        rpc_id().prop_map(|id| rpc::Cancel::CleanupDone { id }.into()),
    ]
}

fn list_cursor() -> impl Strategy<Value = lease::ListCursor> {
    (any::<u64>(), any::<u32>()).prop_map(|(snapshot_id, offset)| lease::ListCursor {
        snapshot_id,
        offset,
    })
}

fn lease_messages() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (
            text(),
            text(),
            any::<u64>(),
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(route, owner, ttl_secs, wait_seconds)| {
                lease::Acquire {
                    route,
                    owner,
                    ttl_secs,
                    wait_seconds,
                }
                .into()
            }),
        (text(), text(), any::<u64>(), any::<u64>()).prop_map(
            |(route, owner, fencing_token, ttl_secs)| {
                lease::Renew {
                    route,
                    owner,
                    fencing_token,
                    ttl_secs,
                }
                .into()
            }
        ),
        (text(), text(), any::<u64>()).prop_map(|(route, owner, fencing_token)| {
            lease::Release {
                route,
                owner,
                fencing_token,
            }
            .into()
        }),
        route_only::<{ types::LEASE_QUERY }>().prop_map(Into::into),
        route_only::<{ types::LEASE_SUBSCRIBE }>().prop_map(Into::into),
        route_only::<{ types::LEASE_UNSUBSCRIBE }>().prop_map(Into::into),
        (text(), proptest::option::of(list_cursor()), any::<u32>()).prop_map(
            |(pattern, cursor, limit)| {
                lease::List {
                    pattern,
                    cursor,
                    limit,
                }
                .into()
            }
        ),
    ]
}

fn notice_messages() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (text(), blob()).prop_map(|(route, payload)| notice::Publish { route, payload }.into()),
        route_only::<{ types::NOTICE_SUBSCRIBE }>().prop_map(Into::into),
        any::<u64>().prop_map(|sub_id| notice::Unsubscribe { sub_id }.into()),
        Just(notice::UnsubscribeAll.into()),
    ]
}

fn filter_clause() -> impl Strategy<Value = stream::FilterClause> {
    prop_oneof![
        text().prop_map(stream::FilterClause::Equals),
        text().prop_map(stream::FilterClause::NotEquals),
        text().prop_map(stream::FilterClause::StartsWith),
        vec(text(), 0..4).prop_map(stream::FilterClause::AnyOf),
    ]
}

fn filter_set() -> impl Strategy<Value = stream::FilterSet> {
    vec(filter_clause(), 0..5).prop_map(|clauses| stream::FilterSet { clauses })
}

fn stream_messages() -> impl Strategy<Value = ClientMessage> {
    let opt = || proptest::option::of(any::<u64>());
    prop_oneof![
        (text(), proptest::option::of(blob())).prop_map(|(route, ingest_metadata)| {
            stream::Begin {
                route,
                ingest_metadata,
            }
            .into()
        }),
        (
            any::<u64>(),
            any::<u64>(),
            blob(),
            proptest::option::of(blob()),
            proptest::option::of(text()),
        )
            .prop_map(
                |(session_id, expected_offset, body, metadata, discriminator)| {
                    stream::Append {
                        session_id,
                        expected_offset,
                        body,
                        metadata,
                        discriminator,
                    }
                    .into()
                }
            ),
        (any::<u64>(), durability()).prop_map(|(session_id, durability)| {
            stream::Commit {
                session_id,
                durability,
            }
            .into()
        }),
        any::<u64>().prop_map(|session_id| stream::Rollback { session_id }.into()),
        (
            text(),
            any::<u64>(),
            any::<u64>(),
            opt(),
            proptest::option::of(filter_set().prop_map(|f| f.to_bytes())),
            opt(),
            opt(),
        )
            .prop_map(
                |(selector, from_offset, limit, max_bytes, filter, fp, wm)| {
                    stream::Read {
                        selector,
                        from_offset,
                        limit,
                        max_bytes,
                        filter,
                        cursor_fingerprint: fp,
                        captured_watermark: wm,
                    }
                    .into()
                }
            ),
        route_only::<{ types::STREAM_LAST }>().prop_map(Into::into),
        route_only::<{ types::STREAM_GET_METADATA }>().prop_map(Into::into),
        route_only::<{ types::STREAM_SUBSCRIBE }>().prop_map(Into::into),
        route_only::<{ types::STREAM_UNSUBSCRIBE }>().prop_map(Into::into),
    ]
}

fn schedule_entry() -> impl Strategy<Value = schedule::Entry> {
    let mode = prop_oneof![
        Just(schedule::DeliveryMode::Broadcast),
        Just(schedule::DeliveryMode::Single)
    ];
    (text(), text(), mode, blob()).prop_map(|(route, cron, mode, payload)| schedule::Entry {
        route,
        cron,
        mode,
        payload,
    })
}

fn schedule_messages() -> impl Strategy<Value = ClientMessage> {
    let opt = || proptest::option::of(any::<u64>());
    prop_oneof![
        schedule_entry().prop_map(|entry| schedule::Create { entry }.into()),
        route_only::<{ types::SCHEDULE_CANCEL }>().prop_map(Into::into),
        (opt(), opt()).prop_map(|(offset, limit)| schedule::List { offset, limit }.into()),
        route_only::<{ types::SCHEDULE_SUBSCRIBE }>().prop_map(Into::into),
        route_only::<{ types::SCHEDULE_UNSUBSCRIBE }>().prop_map(Into::into),
        vec(schedule_entry(), 0..4).prop_map(|entries| schedule::CreateBatch { entries }.into()),
        (proptest::option::of(text()), opt()).prop_map(|(continuation, limit)| {
            schedule::ListV2 {
                continuation,
                limit,
            }
            .into()
        }),
    ]
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        blob().prop_map(|token| control::Connect { token }.into()),
        text().prop_map(|service_name| control::SessionMetadata { service_name }.into()),
        kv_messages().boxed(),
        queue_messages().boxed(),
        rpc_messages().boxed(),
        lease_messages().boxed(),
        notice_messages().boxed(),
        stream_messages().boxed(),
        schedule_messages().boxed(),
    ]
}

// ---------------------------------------------------------------------------
// Broker pushes
// ---------------------------------------------------------------------------

fn server_push() -> impl Strategy<Value = ServerPush> {
    let signal = prop_oneof![
        Just(rpc::SignalReason::Explicit),
        Just(rpc::SignalReason::CallerDeadline),
        Just(rpc::SignalReason::CallerDisconnected),
        Just(rpc::SignalReason::BrokerDeadline),
    ];
    let status = prop_oneof![
        Just(rpc::CancelStatus::QueuedRemoved),
        Just(rpc::CancelStatus::Forwarded),
        Just(rpc::CancelStatus::Unsupported),
        Just(rpc::CancelStatus::AlreadyCancelled),
        Just(rpc::CancelStatus::Unknown),
        Just(rpc::CancelStatus::ForwardFailed),
    ];
    prop_oneof![
        (any::<u16>(), any::<u32>()).prop_map(|(version, caps)| {
            control::ServerHello {
                version,
                capabilities: Capabilities(caps),
            }
            .into()
        }),
        (any::<u64>(), text(), any::<u64>()).prop_map(|(sub_id, route, mutation_count)| {
            kv::Notify {
                sub_id,
                route,
                mutation_count,
            }
            .into()
        }),
        (any::<u64>(), text(), blob()).prop_map(|(sub_id, route, payload)| {
            queue::Notify {
                sub_id,
                route,
                payload,
            }
            .into()
        }),
        rpc_request().prop_map(Into::into),
        rpc_response().prop_map(Into::into),
        (rpc_id(), signal)
            .prop_map(|(id, reason)| rpc::Lifecycle::WorkerSignal { id, reason }.into()),
        (rpc_id(), status)
            .prop_map(|(id, status)| rpc::Lifecycle::CallerResult { id, status }.into()),
        (any::<u64>(), text()).prop_map(|(sub_id, route)| lease::Notify { sub_id, route }.into()),
        (any::<u64>(), text(), blob()).prop_map(|(sub_id, route, payload)| {
            notice::Notify {
                sub_id,
                route,
                payload,
            }
            .into()
        }),
        (any::<u64>(), text(), blob()).prop_map(|(sub_id, route, payload)| {
            stream::Notify {
                sub_id,
                route,
                payload,
            }
            .into()
        }),
        (any::<u64>(), text(), blob()).prop_map(|(sub_id, route, payload)| {
            schedule::Notify {
                sub_id,
                route,
                payload,
            }
            .into()
        }),
    ]
}

/// Samples `strategy` until it has shown every type in `want`, so a variant
/// forgotten in a strategy fails loudly instead of silently going untested.
fn assert_covers<T: Debug>(
    strategy: impl Strategy<Value = T>,
    ty: impl Fn(&T) -> u16,
    want: BTreeSet<u16>,
) {
    let mut runner = TestRunner::deterministic();
    let mut seen = BTreeSet::new();
    for _ in 0..20_000 {
        seen.insert(ty(&strategy.new_tree(&mut runner).unwrap().current()));
        if seen == want {
            return;
        }
    }
    let missing: Vec<_> = want.difference(&seen).collect();
    panic!("strategy never produced types {missing:?}");
}

#[test]
fn strategies_cover_every_message_type() {
    let client: BTreeSet<u16> = types::ALL
        .iter()
        .copied()
        .filter(|&t| ClientMessage::accepts(t))
        .collect();
    assert_eq!(client.len(), 51);
    assert_covers(client_message(), ClientMessage::message_type, client);
    let push: BTreeSet<u16> = (0..=u16::MAX).filter(|&t| ServerPush::accepts(t)).collect();
    assert_eq!(push.len(), 10);
    assert_covers(server_push(), ServerPush::message_type, push);
}

// ---------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------

fn wire_error() -> impl Strategy<Value = WireError> {
    prop_oneof![
        (
            prop_oneof![
                proptest::sample::select(fitz_protocol::codes::ALL),
                any::<u32>()
            ],
            text()
        )
            .prop_map(|(code, msg)| WireError::coded(code, msg)),
        text().prop_map(WireError::uncoded),
        (any::<u32>(), text()).prop_map(|(code, msg)| WireError::stream(code, msg)),
    ]
}

/// True when a status-1 body reads consistently both as coded and as
/// uncoded: the protocol itself cannot tell the two apart, so only the bytes
/// (not the envelope) are guaranteed to survive.
fn ambiguous(encoded: &[u8]) -> bool {
    let rest = &encoded[1..];
    let u32_at = |i: usize| {
        rest.get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    encoded[0] == 1
        && rest.len() >= 8
        && u32_at(0) == Some(rest.len() - 4)
        && u32_at(4) == Some(rest.len() - 8)
}

fn one_record(buf: BytesMut) -> fitz_protocol::Record {
    let mut it = Records::new(buf.freeze());
    let rec = it.next().expect("a record").expect("well-formed");
    assert!(it.next().is_none());
    rec
}

/// Success and error replies of `R` both survive encode → decode.
fn check_reply<R>(value: &R, err: &WireError) -> Result<(), TestCaseError>
where
    R: ReplyBody + PartialEq + Debug,
{
    let mut buf = BytesMut::new();
    encode_ok(&mut buf, value).unwrap();
    let rec = one_record(buf);
    prop_assert_eq!(rec.ty, R::TYPE);
    prop_assert_eq!(&decode_reply::<R>(rec.payload).unwrap().unwrap(), value);

    let mut buf = BytesMut::new();
    encode_error(&mut buf, R::TYPE, err).unwrap();
    let rec = one_record(buf);
    let back = decode_reply::<R>(rec.payload.clone()).unwrap().unwrap_err();
    if ambiguous(&rec.payload) {
        let mut again = BytesMut::new();
        back.encode(&mut again);
        prop_assert_eq!(&again[..], &rec.payload[..]);
    } else {
        prop_assert_eq!(&back, err);
    }
    Ok(())
}

fn stream_record(global: bool) -> impl Strategy<Value = stream::Record> {
    let opt = || proptest::option::of(any::<u64>());
    let gopt = proptest::option::of(any::<u64>()).prop_map(move |v| v.filter(|_| global));
    (
        any::<u64>(),
        opt(),
        opt(),
        gopt,
        blob(),
        proptest::option::of(blob()),
        any::<u64>(),
    )
        .prop_map(
            |(resource_offset, area_offset, realm_offset, global_offset, body, metadata, at)| {
                stream::Record {
                    resource_offset,
                    area_offset,
                    realm_offset,
                    global_offset,
                    body,
                    metadata,
                    created_at: at,
                }
            },
        )
}

/// A page whose global-only fields are set only when `global`.
fn read_page(global: bool) -> impl Strategy<Value = stream::ReadPage> {
    let gopt = move || proptest::option::of(any::<u64>()).prop_map(move |v| v.filter(|_| global));
    let opt = || proptest::option::of(any::<u64>());
    let reason = prop_oneof![
        Just(stream::FilterReason::Unspecified),
        Just(stream::FilterReason::ServerFilter),
        Just(stream::FilterReason::Permission),
        Just(stream::FilterReason::Projection),
    ];
    let record = stream_record(global);
    let kind = prop_oneof![
        record.prop_map(stream::ItemKind::Event),
        (any::<u64>(), reason.clone())
            .prop_map(|(offset, reason)| stream::ItemKind::Filtered { offset, reason }),
        (any::<u64>(), any::<u64>(), reason).prop_map(|(from_offset, to_offset, reason)| {
            stream::ItemKind::FilteredRange {
                from_offset,
                to_offset,
                reason,
            }
        }),
    ];
    let item = (text(), kind).prop_map(|(route, kind)| stream::Item { route, kind });
    (
        vec(item, 0..4),
        any::<u64>(),
        opt(),
        opt(),
        gopt(),
        any::<bool>(),
        gopt(),
        gopt(),
    )
        .prop_map(
            |(items, lr, la, lm, lg, has_more, fp, wm)| stream::ReadPage {
                items,
                last_resource_offset: lr,
                last_area_offset: la,
                last_realm_offset: lm,
                last_global_offset: lg,
                has_more,
                cursor_fingerprint: fp,
                captured_watermark: wm,
            },
        )
}

fn lease_info() -> impl Strategy<Value = lease::LeaseInfo> {
    (
        text(),
        text(),
        any::<u64>(),
        text(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(
            |(route, owner, holder_incarnation, acquired_at, expires_in_secs, renewals)| {
                lease::LeaseInfo {
                    route,
                    owner,
                    holder_incarnation,
                    acquired_at,
                    expires_in_secs,
                    renewals,
                }
            },
        )
}

proptest! {
    #[test]
    fn kv_replies_round_trip(
        tx_id in any::<u64>(),
        value in proptest::option::of(blob()),
        items in vec((blob(), blob()), 0..5),
        has_more in any::<bool>(),
        sub_id in any::<u64>(),
        err in wire_error(),
    ) {
        check_reply(&kv::BeginOk { tx_id }, &err)?;
        check_reply(&kv::CommitOk::default(), &err)?;
        check_reply(&kv::RollbackOk::default(), &err)?;
        check_reply(&kv::GetOk { value }, &err)?;
        check_reply(&kv::PutOk::default(), &err)?;
        check_reply(&kv::InsertOk::default(), &err)?;
        check_reply(&kv::DeleteOk::default(), &err)?;
        check_reply(&kv::DeleteRangeOk::default(), &err)?;
        check_reply(&kv::ScanOk { items, has_more }, &err)?;
        check_reply(&kv::SubscribeReply { sub_id }, &err)?;
        check_reply(&kv::UnsubscribeOk::default(), &err)?;
    }

    #[test]
    fn queue_replies_round_trip(
        message_id in any::<u64>(),
        sub_id in any::<u64>(),
        wildcard in any::<bool>(),
        items in vec((text(), any::<u64>(), any::<u64>(), blob()), 0..5),
        err in wire_error(),
    ) {
        check_reply(&queue::EnqueueOk { message_id }, &err)?;
        check_reply(&queue::ExtendOk::default(), &err)?;
        check_reply(&queue::CompleteOk::default(), &err)?;
        check_reply(&queue::SubscribeReply { sub_id }, &err)?;
        check_reply(&queue::UnsubscribeOk::default(), &err)?;

        // RESERVE: the request shape decides whether items carry routes.
        let ok = queue::ReserveOk {
            items: items
                .into_iter()
                .map(|(route, message_id, lease_token, body)| queue::ReservedItem {
                    route: wildcard.then_some(route),
                    message_id,
                    lease_token,
                    body,
                })
                .collect(),
        };
        let mut buf = BytesMut::new();
        ok.encode_reply(&mut buf).unwrap();
        let rec = one_record(buf);
        prop_assert_eq!(rec.ty, types::QUEUE_RESERVE);
        let back = decode_reply_with(rec.payload, |r| queue::ReserveOk::decode_body(r, wildcard));
        prop_assert_eq!(back.unwrap().unwrap(), ok);
    }

    #[test]
    fn rpc_lease_notice_replies_round_trip(
        token in any::<u64>(),
        kind in 0u8..4,
        holder in proptest::option::of((text(), any::<u64>())),
        waiters in any::<u32>(),
        sub_id in any::<u64>(),
        items in vec(lease_info(), 0..3),
        next in proptest::option::of(list_cursor()),
        err in wire_error(),
    ) {
        check_reply(&rpc::SubscribeWorkerOk, &err)?;
        check_reply(&rpc::UnsubscribeWorkerOk::default(), &err)?;

        let kind = [
            lease::AcquireKind::Acquired,
            lease::AcquireKind::AlreadyHeld,
            lease::AcquireKind::Queued,
            lease::AcquireKind::AlreadyQueued,
        ][usize::from(kind)];
        check_reply(&lease::AcquireOk { kind, fencing_token: token }, &err)?;
        check_reply(&lease::RenewOk { fencing_token: token }, &err)?;
        check_reply(&lease::ReleaseOk::default(), &err)?;
        let holder = holder.map(|(owner, ttl_remaining_secs)| lease::Holder {
            owner,
            ttl_remaining_secs,
        });
        check_reply(&lease::QueryOk { holder, waiters }, &err)?;
        check_reply(&lease::SubscribeReply { sub_id }, &err)?;
        check_reply(&lease::UnsubscribeOk::default(), &err)?;
        check_reply(&lease::ListOk { items, next }, &err)?;

        check_reply(&notice::SubscribeReply { sub_id }, &err)?;
        check_reply(&notice::UnsubscribeOk::default(), &err)?;
        check_reply(&notice::UnsubscribeAllOk::default(), &err)?;
    }

    #[test]
    fn stream_replies_round_trip(
        session_id in any::<u64>(),
        data in blob(),
        id in proptest::option::of(any::<u64>()),
        last in proptest::option::of(stream_record(false)),
        meta in (
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            any::<[u64; 3]>(),
            proptest::option::of(any::<u64>()),
            any::<[u64; 2]>(),
        ),
        err in wire_error(),
    ) {
        check_reply(&stream::BeginOk { session_id, data: data.clone() }, &err)?;
        check_reply(&stream::AppendOk { data: data.clone() }, &err)?;
        check_reply(&stream::CommitOk { data: data.clone() }, &err)?;
        check_reply(&stream::RollbackOk::default(), &err)?;
        check_reply(&stream::ReadOk { id, data: data.clone() }, &err)?;
        check_reply(&stream::LastOk { record: last }, &err)?;
        let (first_offset, last_offset, [record_count, max_batch_events, max_batch_bytes],
             ttl_seconds, [area_watermark, realm_watermark]) = meta;
        check_reply(&stream::MetadataOk {
            metadata: stream::Metadata {
                first_offset,
                last_offset,
                record_count,
                max_batch_events,
                max_batch_bytes,
                ttl_seconds,
                area_watermark,
                realm_watermark,
            },
        }, &err)?;
        check_reply(&stream::SubscribeReply { id, data }, &err)?;
        check_reply(&stream::UnsubscribeOk::default(), &err)?;
    }

    #[test]
    fn read_pages_round_trip_in_their_scope(
        (global, page) in any::<bool>().prop_flat_map(|g| (Just(g), read_page(g))),
    ) {
        let mut buf = BytesMut::new();
        page.encode(&mut buf, global);
        prop_assert_eq!(stream::ReadPage::decode(buf.freeze(), global).unwrap(), page);
    }

    #[test]
    fn read_page_inside_read_reply_round_trips(page in read_page(true)) {
        let mut data = BytesMut::new();
        page.encode(&mut data, true);
        let mut buf = BytesMut::new();
        encode_ok(&mut buf, &stream::ReadOk { id: None, data: data.freeze() }).unwrap();
        let rec = one_record(buf);
        let ok = decode_reply::<stream::ReadOk>(rec.payload).unwrap().unwrap();
        prop_assert_eq!(stream::ReadPage::decode(ok.data, true).unwrap(), page);
    }

    #[test]
    fn schedule_replies_round_trip(
        total_count in any::<u64>(),
        entries in vec(schedule_entry(), 0..3),
        has_more in any::<bool>(),
        continuation in proptest::option::of(text()),
        sub_id in any::<u64>(),
        err in wire_error(),
    ) {
        check_reply(&schedule::CreateOk::default(), &err)?;
        check_reply(&schedule::CancelOk::default(), &err)?;
        check_reply(&schedule::ListOk { total_count, entries: entries.clone() }, &err)?;
        check_reply(&schedule::SubscribeReply { sub_id }, &err)?;
        check_reply(&schedule::UnsubscribeOk::default(), &err)?;
        check_reply(&schedule::CreateBatchOk::default(), &err)?;
        check_reply(&schedule::ListV2Ok { has_more, continuation, entries }, &err)?;
    }

    #[test]
    fn filter_sets_round_trip(set in filter_set()) {
        prop_assert_eq!(stream::FilterSet::decode(set.to_bytes()).unwrap(), set);
    }

    #[test]
    fn wire_errors_round_trip_in_every_envelope(err in wire_error()) {
        let mut buf = BytesMut::new();
        err.encode(&mut buf);
        let bytes = buf.freeze();
        let back = WireError::decode(bytes.clone()).unwrap();
        if ambiguous(&bytes) {
            let mut again = BytesMut::new();
            back.encode(&mut again);
            prop_assert_eq!(&again[..], &bytes[..]);
        } else {
            prop_assert_eq!(back, err);
        }
    }

    #[test]
    fn registered_codes_always_read_back_coded(
        code in proptest::sample::select(fitz_protocol::codes::ALL),
        msg in text(),
    ) {
        let err = WireError::coded(code, msg);
        let mut buf = BytesMut::new();
        err.encode(&mut buf);
        prop_assert_eq!(WireError::decode(buf.freeze()).unwrap(), err);
    }

    // -----------------------------------------------------------------------
    // Messages and pushes
    // -----------------------------------------------------------------------

    #[test]
    fn client_messages_round_trip(msg in client_message(), id in proptest::option::of(1u64..)) {
        let mut buf = BytesMut::new();
        encode_frame_with::<EncodeError>(&mut buf, 1 << 20, |b| {
            if let Some(id) = id {
                put_label(b, CORRELATE, id);
            }
            msg.encode_record(b)
        })
        .unwrap();
        let frame = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        let mut it = LabelledRecords::new(frame, Side::Broker);
        let l = it.next().unwrap().unwrap();
        prop_assert!(it.next().is_none());
        prop_assert_eq!(l.correlation, id);
        prop_assert_eq!(l.record.ty, msg.message_type());
        prop_assert_eq!(ClientMessage::decode(l.record.ty, l.record.payload).unwrap(), msg);
    }

    #[test]
    fn server_pushes_round_trip(push in server_push()) {
        let mut buf = BytesMut::new();
        push.encode_record(&mut buf).unwrap();
        let rec = one_record(buf);
        prop_assert_eq!(rec.ty, push.message_type());
        prop_assert_eq!(ServerPush::decode(rec.ty, rec.payload).unwrap(), push);
    }

    // -----------------------------------------------------------------------
    // Framing
    // -----------------------------------------------------------------------

    #[test]
    fn frames_survive_arbitrary_splits(
        bodies in vec(vec(any::<u8>(), 1..300), 0..12),
        cuts in vec(1usize..64, 1..64),
    ) {
        let mut wire = BytesMut::new();
        for body in &bodies {
            encode_frame_with::<EncodeError>(&mut wire, 1024, |b| {
                b.extend_from_slice(body);
                Ok(())
            })
            .unwrap();
        }
        let decoder = FrameDecoder::new(1024);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut rest = &wire[..];
        let mut cut = cuts.iter().cycle();
        while !rest.is_empty() {
            let n = (*cut.next().unwrap()).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                out.push(frame.to_vec());
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, bodies);
    }

    #[test]
    fn labels_attach_to_their_records(
        side_is_broker in any::<bool>(),
        recs in vec(
            (proptest::option::of(1u64..), 0u16..800, vec(any::<u8>(), 0..20)),
            1..12,
        ),
    ) {
        let side = if side_is_broker { Side::Broker } else { Side::Client };
        let label_ty = if side_is_broker { CORRELATE } else { CORRELATED };
        // Keep only frames the side accepts: no label types as records, no
        // labelled hello, and on the broker side no repeated type (labels count).
        let mut seen = BTreeSet::new();
        let mut want = Vec::new();
        for (label, ty, payload) in recs {
            if ty == CORRELATE || ty == CORRELATED {
                continue;
            }
            let label = label.filter(|_| !(side == Side::Client && ty == SERVER_HELLO));
            if side == Side::Broker {
                if seen.contains(&ty) || (label.is_some() && seen.contains(&label_ty)) {
                    continue;
                }
                seen.insert(ty);
                if label.is_some() {
                    seen.insert(label_ty);
                }
            }
            want.push((label, ty, Bytes::from(payload)));
        }
        prop_assume!(!want.is_empty());
        let mut frame = BytesMut::new();
        for (label, ty, payload) in &want {
            if let Some(id) = label {
                put_label(&mut frame, label_ty, *id);
            }
            encode_raw_record(&mut frame, *ty, payload).unwrap();
        }
        let got: Vec<_> = LabelledRecords::new(frame.freeze(), side)
            .map(|l| l.map(|l| (l.correlation, l.record.ty, l.record.payload)))
            .collect::<Result<_, _>>()
            .unwrap();
        prop_assert_eq!(got, want);
    }

    // -----------------------------------------------------------------------
    // Arbitrary input never panics, and what decodes re-encodes stably
    // -----------------------------------------------------------------------

    #[test]
    fn frame_and_record_readers_survive_garbage(
        bytes in vec(any::<u8>(), 0..256),
        cut in 1usize..32,
        max in 0usize..512,
    ) {
        let decoder = FrameDecoder::new(max);
        let mut buf = BytesMut::new();
        'feed: for chunk in bytes.chunks(cut) {
            buf.extend_from_slice(chunk);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => prop_assert!(!frame.is_empty() && frame.len() <= max),
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
        let b = Bytes::from(bytes);
        let _ = Records::new(b.clone()).count();
        let _ = Records::lenient(b.clone()).count();
        let _ = decode_single_record(b.clone());
        let _ = label_id(&b);
        for side in [Side::Broker, Side::Client] {
            for l in LabelledRecords::new(b.clone(), side) {
                let Ok(l) = l else { break };
                let _ = ClientMessage::decode(l.record.ty, l.record.payload.clone());
                let _ = ServerPush::decode(l.record.ty, l.record.payload);
            }
        }
    }

    #[test]
    fn message_decoders_survive_garbage_and_reencode_stably(
        ty in prop_oneof![proptest::sample::select(types::ALL), any::<u16>()],
        payload in vec(any::<u8>(), 0..96),
    ) {
        let payload = Bytes::from(payload);
        if let Ok(msg) = ClientMessage::decode(ty, payload.clone()) {
            let mut buf = BytesMut::new();
            msg.encode_record(&mut buf).unwrap();
            let rec = one_record(buf);
            prop_assert_eq!(ClientMessage::decode(rec.ty, rec.payload).unwrap(), msg);
        }
        if let Ok(push) = ServerPush::decode(ty, payload) {
            let mut buf = BytesMut::new();
            push.encode_record(&mut buf).unwrap();
            let rec = one_record(buf);
            prop_assert_eq!(ServerPush::decode(rec.ty, rec.payload).unwrap(), push);
        }
    }

    #[test]
    fn reply_decoders_survive_garbage_and_reencode_stably(payload in vec(any::<u8>(), 0..96)) {
        let p = Bytes::from(payload);
        every_reply_reencodes(&p)?;
        for wildcard in [false, true] {
            if let Ok(out) = decode_reply_with(p.clone(), |r| queue::ReserveOk::decode_body(r, wildcard)) {
                let mut buf = BytesMut::new();
                match &out {
                    Ok(ok) => ok.encode_reply(&mut buf).unwrap(),
                    Err(e) => encode_error(&mut buf, types::QUEUE_RESERVE, e).unwrap(),
                }
                let rec = one_record(buf);
                let again = decode_reply_with(rec.payload, |r| queue::ReserveOk::decode_body(r, wildcard));
                prop_assert_eq!(again.unwrap(), out);
            }
        }
        for global in [false, true] {
            if let Ok(page) = stream::ReadPage::decode(p.clone(), global) {
                let mut buf = BytesMut::new();
                page.encode(&mut buf, global);
                prop_assert_eq!(stream::ReadPage::decode(buf.freeze(), global).unwrap(), page);
            }
        }
        if let Ok(set) = stream::FilterSet::decode(p.clone()) {
            prop_assert_eq!(stream::FilterSet::decode(set.to_bytes()).unwrap(), set);
        }
        if let Ok(e) = WireError::decode(p) {
            let mut buf = BytesMut::new();
            e.encode(&mut buf);
            prop_assert_eq!(WireError::decode(buf.freeze()).unwrap(), e);
        }
    }

    #[test]
    fn filter_decoder_survives_marked_garbage(body in vec(any::<u8>(), 0..64)) {
        // Garbage behind a valid marker reaches the clause parser.
        let mut b = stream::FILTER_MARKER.to_vec();
        b.extend_from_slice(&body);
        if let Ok(set) = stream::FilterSet::decode(Bytes::from(b)) {
            prop_assert_eq!(stream::FilterSet::decode(set.to_bytes()).unwrap(), set);
        }
    }

    #[test]
    fn route_functions_survive_garbage(a in ".{0,40}", b in "[a-z*/:]{0,40}", n in 0usize..6) {
        for s in [a.as_str(), b.as_str()] {
            let _ = route::shape(s);
            let _ = route::split(s);
            let _ = route::path_of(s);
            let _ = route::stream_selector(s);
            let _ = route::prefix(s, n);
            for scheme in Scheme::ALL {
                let _ = route::validate_pattern(s, scheme);
                let _ = route::validate_concrete(s, scheme);
            }
        }
        let _ = route::matches(&a, &b);
        let _ = route::matches(&b, &a);
        let _ = route::covers(&a, &b);
        let _ = route::covers(&b, &a);
        let _ = route::matches_path(&a, &b);
    }
}

/// Decodes `p` as every `ReplyBody` type; whatever decodes must re-encode to
/// something that decodes to the same value.
fn every_reply_reencodes(p: &Bytes) -> Result<(), TestCaseError> {
    macro_rules! each {
        ($($t:ty),* $(,)?) => {$(
            if let Ok(out) = decode_reply::<$t>(p.clone()) {
                let mut buf = BytesMut::new();
                match &out {
                    Ok(ok) => encode_ok(&mut buf, ok).unwrap(),
                    Err(e) => encode_error(&mut buf, <$t as ReplyBody>::TYPE, e).unwrap(),
                }
                let rec = one_record(buf);
                prop_assert_eq!(decode_reply::<$t>(rec.payload).unwrap(), out);
            }
        )*};
    }
    each!(
        kv::BeginOk,
        kv::CommitOk,
        kv::RollbackOk,
        kv::GetOk,
        kv::PutOk,
        kv::InsertOk,
        kv::DeleteOk,
        kv::DeleteRangeOk,
        kv::ScanOk,
        kv::SubscribeReply,
        kv::UnsubscribeOk,
        queue::EnqueueOk,
        queue::ExtendOk,
        queue::CompleteOk,
        queue::SubscribeReply,
        queue::UnsubscribeOk,
        rpc::SubscribeWorkerOk,
        rpc::UnsubscribeWorkerOk,
        lease::AcquireOk,
        lease::RenewOk,
        lease::ReleaseOk,
        lease::QueryOk,
        lease::SubscribeReply,
        lease::UnsubscribeOk,
        lease::ListOk,
        notice::SubscribeReply,
        notice::UnsubscribeOk,
        notice::UnsubscribeAllOk,
        stream::BeginOk,
        stream::AppendOk,
        stream::CommitOk,
        stream::RollbackOk,
        stream::ReadOk,
        stream::LastOk,
        stream::MetadataOk,
        stream::SubscribeReply,
        stream::UnsubscribeOk,
        schedule::CreateOk,
        schedule::CancelOk,
        schedule::ListOk,
        schedule::SubscribeReply,
        schedule::UnsubscribeOk,
        schedule::CreateBatchOk,
        schedule::ListV2Ok,
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

/// Brute-force reference: `**` tries every split, `*` eats exactly one segment.
fn reference_match(p: &[&str], r: &[&str]) -> bool {
    match p.split_first() {
        None => r.is_empty(),
        Some((&"**", rest)) => (0..=r.len()).any(|k| reference_match(rest, &r[k..])),
        Some((&seg, rest)) => match r.split_first() {
            Some((&rs, r_rest)) => (seg == "*" || seg == rs) && reference_match(rest, r_rest),
            None => false,
        },
    }
}

fn literal() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&["a", "b", "c"][..])
}

fn pattern_segments() -> impl Strategy<Value = Vec<&'static str>> {
    vec(
        proptest::sample::select(&["a", "b", "c", "*", "**"][..]),
        1..7,
    )
}

fn route_segments() -> impl Strategy<Value = Vec<&'static str>> {
    vec(literal(), 1..8)
}

fn join(scheme: &str, segs: &[&str]) -> String {
    format!("{scheme}://{}", segs.join("/"))
}

/// A strategy for concrete routes `inner` matches: each `*` becomes one
/// literal and each `**` zero to three.
fn instantiate(pattern: Vec<&'static str>) -> impl Strategy<Value = Vec<&'static str>> {
    let parts: Vec<_> = pattern
        .into_iter()
        .map(|seg| match seg {
            "*" => vec(literal(), 1..=1).boxed(),
            "**" => vec(literal(), 0..=3).boxed(),
            lit => Just(vec![lit]).boxed(),
        })
        .collect();
    parts.prop_map(|v| v.concat())
}

/// A pattern at least as general as `inner`, usually: literals may become
/// `*`, and any segment may be swallowed by a `**`.
fn generalize(inner: Vec<&'static str>) -> impl Strategy<Value = Vec<&'static str>> {
    let n = inner.len();
    vec(0u8..4, n).prop_map(move |choices| {
        let mut out: Vec<&'static str> = Vec::new();
        for (seg, c) in inner.iter().zip(choices) {
            let next = match (c, *seg) {
                (0, s) => s,
                (1, "**") => "**",
                (1, _) => "*",
                _ => "**",
            };
            if !(next == "**" && out.last() == Some(&"**")) {
                out.push(next);
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn matches_agrees_with_reference(p in pattern_segments(), r in route_segments()) {
        let want = reference_match(&p, &r);
        prop_assert_eq!(route::matches(&join("rpc", &p), &join("rpc", &r)), want);
        prop_assert_eq!(route::matches_path(&p.join("/"), &r.join("/")), want);
        // Matching never crosses schemes.
        prop_assert!(!route::matches(&join("rpc", &p), &join("notice", &r)));
    }

    #[test]
    fn matches_accepts_every_instantiation(
        (p, r) in pattern_segments().prop_flat_map(|p| (Just(p.clone()), instantiate(p))),
    ) {
        prop_assert!(route::matches(&join("kv", &p), &join("kv", &r)));
    }

    #[test]
    fn covers_is_sound(
        (outer, inner, routes) in pattern_segments()
            .prop_flat_map(|inner| (generalize(inner.clone()), Just(inner)))
            .prop_flat_map(|(outer, inner)| {
                let routes = vec(instantiate(inner.clone()), 1..8);
                (Just(outer), Just(inner), routes)
            }),
        other in pattern_segments(),
    ) {
        for o in [&outer, &other] {
            if route::covers(&join("notice", o), &join("notice", &inner)) {
                for r in &routes {
                    prop_assert!(
                        route::matches(&join("notice", o), &join("notice", r)),
                        "{:?} covers {:?} but not {:?}", o, inner, r
                    );
                }
            }
        }
        prop_assert!(route::covers(&join("notice", &inner), &join("notice", &inner)));
        prop_assert!(!route::covers(&join("notice", &outer), &join("kv", &inner)));
    }
}

#[test]
fn generalized_patterns_are_usually_covered() {
    // Guards `covers_is_sound` against passing vacuously.
    let mut runner = TestRunner::deterministic();
    let strategy =
        pattern_segments().prop_flat_map(|inner| (generalize(inner.clone()), Just(inner)));
    let mut covered = 0;
    for _ in 0..1000 {
        let (outer, inner) = strategy.new_tree(&mut runner).unwrap().current();
        covered += usize::from(route::covers(&join("kv", &outer), &join("kv", &inner)));
    }
    assert!(
        covered > 500,
        "only {covered} of 1000 generalisations covered"
    );
}

#[test]
fn reader_primitives_never_overrun() {
    // Every primitive on every short buffer must fail cleanly, not panic.
    for len in 0..20 {
        let data = Bytes::from(vec![0xFFu8; len]);
        let mut r = Reader::new(data.clone());
        let _ = r.u64();
        let mut r = Reader::new(data.clone());
        let _ = r.uuid();
        let mut r = Reader::new(data.clone());
        let _ = r.str();
        let mut r = Reader::new(data.clone());
        let _ = r.count(1);
        let mut r = Reader::new(data);
        let _ = r.opt(Reader::bytes);
    }
}
