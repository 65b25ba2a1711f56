//! CONNECT authentication, permissions, route families, token expiry.

use std::time::{Duration, UNIX_EPOCH};

use crate::support::{ALL, Kind, RawClient, SECRET, code, now_secs, token, token_with};
use bytes::Bytes;
use fitz_broker::{AuthConfig, Broker, Clock};
use fitz_protocol::control::Connect;
use fitz_protocol::kv::{self, BeginOk, GetOk, TxMode};
use fitz_protocol::notice::{self, Notify, SubscribeReply};
use fitz_protocol::{Message, WireError, codes, types};
use serde_json::json;

both_transports!(
    official_client_test_token_is_accepted,
    bad_tokens_close_with_a_reason,
    scoped_token_gets_unauthorized_errors_and_stays_open,
    coarse_scopes_and_custom_claims,
    route_families_isolate_state,
    anonymous_accepts_any_token,
);

async fn refused(broker: &Broker, kind: Kind, token: &str) -> Option<String> {
    let mut c = RawClient::open(broker, kind).await;
    c.send(
        None,
        &Connect {
            token: Bytes::copy_from_slice(token.as_bytes()),
        },
    )
    .await;
    let reason = c.expect_closed().await;
    if kind == Kind::Ws {
        let r = reason.clone().unwrap_or_default();
        assert!(r.starts_with("connect failed: "), "{r}");
    }
    reason
}

async fn official_client_test_token_is_accepted(kind: Kind) {
    let broker = crate::support::jwt().await;
    let (mut c, hello) = RawClient::connect(&broker, kind, &token("dev", ALL)).await;
    assert_eq!(hello.version, 1);
    c.ok::<_, BeginOk>(&kv::Begin {
        route: "kv://r/a/x".into(),
        mode: TxMode::ReadWrite,
    })
    .await;
    let info = &broker.sessions()[0];
    assert_eq!((info.family, info.subject.as_deref()), (1, Some("tests")));
}

async fn bad_tokens_close_with_a_reason(kind: Kind) {
    let broker = crate::support::jwt().await;
    let now = now_secs();
    let claims = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = json!({"aud": "fitz", "sub": "t", "tid": "dev", "exp": now + 3600, "iat": now, "permissions": ALL});
        f(&mut c);
        c
    };
    let cases: Vec<(String, &str)> = vec![
        (token_with("other-secret", claims(&|_| {})), "invalid token"),
        (
            token_with(SECRET, claims(&|c| c["exp"] = json!(now - 60))),
            "token expired",
        ),
        (
            token_with(SECRET, claims(&|c| c["aud"] = json!("someone-else"))),
            "invalid token",
        ),
        (
            token_with(SECRET, claims(&|c| c["tid"] = json!("unmapped"))),
            "not mapped",
        ),
        (
            token_with(
                SECRET,
                claims(&|c| {
                    c.as_object_mut().unwrap().remove("tid");
                }),
            ),
            "missing route family claim",
        ),
        (
            token_with(
                SECRET,
                claims(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
            "invalid token",
        ),
        (
            token_with(SECRET, claims(&|c| c["nbf"] = json!(now + 600))),
            "not yet valid",
        ),
        (
            token_with(
                SECRET,
                claims(&|c| {
                    c.as_object_mut().unwrap().remove("permissions");
                }),
            ),
            "no permissions",
        ),
        (
            token_with(SECRET, claims(&|c| c["permissions"] = json!(["bogus"]))),
            "no usable permission",
        ),
        ("not-a-jwt".to_string(), "invalid token"),
        (String::new(), "missing token"),
    ];
    for (t, why) in cases {
        let reason = refused(&broker, kind, &t).await;
        if kind == Kind::Ws {
            assert!(reason.unwrap_or_default().contains(why), "{why}");
        }
    }
    assert_eq!(broker.sessions_opened(), 0);
}

async fn scoped_token_gets_unauthorized_errors_and_stays_open(kind: Kind) {
    let broker = crate::support::jwt().await;
    let t = token(
        "dev",
        &[
            "kv://prod/**#read",
            "notice://prod/**#read",
            "notice://prod/out/*#write",
        ],
    );
    let (mut c, _) = RawClient::connect(&broker, kind, &t).await;
    let rw = kv::Begin {
        route: "kv://prod/a/x".into(),
        mode: TxMode::ReadWrite,
    };
    assert_eq!(code(&c.fails(&rw).await), codes::KV_UNAUTHORIZED);
    let other_realm = kv::Begin {
        route: "kv://dev/a/x".into(),
        mode: TxMode::ReadOnly,
    };
    assert_eq!(code(&c.fails(&other_realm).await), codes::KV_UNAUTHORIZED);
    let ro = c
        .ok::<_, BeginOk>(&kv::Begin {
            route: "kv://prod/a/x".into(),
            mode: TxMode::ReadOnly,
        })
        .await
        .tx_id;
    c.ok::<_, GetOk>(&kv::Get {
        tx_id: ro,
        route: "kv://prod/a/x".into(),
        key: Bytes::new(),
    })
    .await;
    // AC-KV-010: a write by a read-only session is 1011 (not 1005).
    let put = kv::Put {
        tx_id: ro,
        route: "kv://prod/a/x".into(),
        key: Bytes::new(),
        value: Bytes::new(),
    };
    assert_eq!(code(&c.fails(&put).await), codes::KV_UNAUTHORIZED);
    // Watches need read over every route the pattern can match.
    c.ok::<_, kv::SubscribeReply>(&kv::Subscribe::new("kv://prod/*/*"))
        .await;
    assert_eq!(
        code(&c.fails(&kv::Subscribe::new("kv://*/a/x")).await),
        codes::KV_UNAUTHORIZED
    );
    // Notice: subscribe covered / not covered; publish needs write.
    c.ok::<_, SubscribeReply>(&notice::Subscribe::new("notice://prod/**"))
        .await;
    assert_eq!(
        code(&c.fails(&notice::Subscribe::new("notice://**")).await),
        codes::NOTICE_UNAUTHORIZED
    );
    let denied = notice::Publish {
        route: "notice://prod/in/x".into(),
        payload: Bytes::new(),
    };
    assert_eq!(code(&c.fails(&denied).await), codes::NOTICE_UNAUTHORIZED);
    c.send(None, &denied).await;
    let l = c.next_record().await;
    assert_eq!((l.correlation, l.record.ty), (None, types::NOTICE_PUBLISH));
    assert_eq!(
        WireError::decode(l.record.payload).unwrap().code(),
        Some(codes::NOTICE_UNAUTHORIZED)
    );
    c.send(
        None,
        &notice::Publish {
            route: "notice://prod/out/x".into(),
            payload: Bytes::new(),
        },
    )
    .await;
    let n = Notify::decode(c.next_of_type(types::NOTICE_NOTIFY).await.record.payload).unwrap();
    assert_eq!(&*n.route, "notice://prod/out/x");
    // Other domains use their own unauthorized codes.
    let q = fitz_protocol::queue::Enqueue {
        route: "queue://prod/a/q".into(),
        body: Bytes::new(),
        delay_seconds: None,
    };
    assert_eq!(code(&c.fails(&q).await), codes::QUEUE_UNAUTHORIZED);
    let s = fitz_protocol::stream::Last::new("stream://prod/a/s");
    let e = c.fails(&s).await;
    assert_eq!(
        (e.envelope, e.code),
        (fitz_protocol::Envelope::Stream, codes::STREAM_UNAUTHORIZED)
    );
    assert_eq!(broker.session_count(), 1, "still open");
}

async fn coarse_scopes_and_custom_claims(kind: Kind) {
    let broker = Broker::builder()
        .auth(
            AuthConfig::jwt_hs256(SECRET)
                .custom_claim("fitz")
                .family_map([("dev", 1)]),
        )
        .start()
        .await
        .unwrap();
    let now = now_secs();
    let base = json!({"aud": "fitz", "tid": "dev", "exp": now + 60});
    let with = |extra: serde_json::Value| {
        let mut c = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        token_with(SECRET, c)
    };
    // `scp` string with a resource-server prefix.
    let (mut c, _) =
        RawClient::connect(&broker, kind, &with(json!({"scp": "openid api/kv.read"}))).await;
    c.ok::<_, BeginOk>(&kv::Begin {
        route: "kv://any/a/x".into(),
        mode: TxMode::ReadOnly,
    })
    .await;
    let rw = kv::Begin {
        route: "kv://any/a/x".into(),
        mode: TxMode::ReadWrite,
    };
    assert_eq!(code(&c.fails(&rw).await), codes::KV_UNAUTHORIZED);
    // The custom claim comes first, even when `permissions` is present.
    let t =
        with(json!({"fitz": {"permissions": ["kv://**#write"]}, "permissions": ["kv://**#read"]}));
    let (mut c, _) = RawClient::connect(&broker, kind, &t).await;
    c.ok::<_, BeginOk>(&rw).await;
    // Roles before scope.
    let t = with(json!({"roles": ["notice.write"], "scope": "kv.read"}));
    let (mut c, _) = RawClient::connect(&broker, kind, &t).await;
    let ro = kv::Begin {
        route: "kv://any/a/x".into(),
        mode: TxMode::ReadOnly,
    };
    assert_eq!(code(&c.fails(&ro).await), codes::KV_UNAUTHORIZED);
}

async fn route_families_isolate_state(kind: Kind) {
    let broker = crate::support::jwt().await;
    let (mut dev, _) = RawClient::connect(&broker, kind, &token("dev", ALL)).await;
    let (mut acme, _) = RawClient::connect(&broker, kind, &token("acme", ALL)).await;
    let route = "kv://shared/area/res";
    // The same route is a different resource per family: no lock conflict, no shared data.
    let a = dev
        .ok::<_, BeginOk>(&kv::Begin {
            route: route.into(),
            mode: TxMode::ReadWrite,
        })
        .await
        .tx_id;
    let b = acme
        .ok::<_, BeginOk>(&kv::Begin {
            route: route.into(),
            mode: TxMode::ReadWrite,
        })
        .await
        .tx_id;
    dev.ok::<_, kv::PutOk>(&kv::Put {
        tx_id: a,
        route: route.into(),
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"dev"),
    })
    .await;
    dev.ok::<_, kv::CommitOk>(&kv::Commit {
        tx_id: a,
        route: route.into(),
        durability: kv::Durability::Buffered,
    })
    .await;
    let got = acme
        .ok::<_, GetOk>(&kv::Get {
            tx_id: b,
            route: route.into(),
            key: Bytes::from_static(b"k"),
        })
        .await;
    assert_eq!(got.value, None);
    // Notices never cross families, even with identical patterns.
    acme.ok::<_, SubscribeReply>(&notice::Subscribe::new("notice://**"))
        .await;
    dev.ok::<_, SubscribeReply>(&notice::Subscribe::new("notice://**"))
        .await;
    dev.send(
        None,
        &notice::Publish {
            route: "notice://x".into(),
            payload: Bytes::new(),
        },
    )
    .await;
    dev.next_of_type(types::NOTICE_NOTIFY).await;
    acme.expect_quiet().await;
    let mut families: Vec<u32> = broker.sessions().iter().map(|s| s.family).collect();
    families.sort_unstable();
    assert_eq!(families, [1, 2]);
}

async fn anonymous_accepts_any_token(kind: Kind) {
    let broker = crate::support::anon().await;
    for t in ["", "anonymous", "garbage.not.jwt", &token("nobody", &[])] {
        let (mut c, _) = RawClient::connect(&broker, kind, t).await;
        c.ok::<_, BeginOk>(&kv::Begin {
            route: "kv://r/a/x".into(),
            mode: TxMode::ReadOnly,
        })
        .await;
    }
    assert!(broker.sessions().iter().all(|s| s.family == 1));
}

#[tokio::test]
async fn token_expiring_mid_session_refuses_requests_but_keeps_the_session() {
    let start = UNIX_EPOCH + Duration::from_secs(now_secs());
    let clock = Clock::manual(start);
    let broker = crate::support::jwt_with_clock(clock.clone()).await;
    let exp = now_secs() + 60;
    let t = token_with(
        SECRET,
        json!({"aud": "fitz", "tid": "dev", "exp": exp, "permissions": ALL}),
    );
    let (mut c, _) = RawClient::connect(&broker, Kind::Tcp, &t).await;
    let tx = c
        .ok::<_, BeginOk>(&kv::Begin {
            route: "kv://r/a/x".into(),
            mode: TxMode::ReadWrite,
        })
        .await
        .tx_id;
    clock.advance(Duration::from_secs(61));
    let begin = kv::Begin {
        route: "kv://r/a/y".into(),
        mode: TxMode::ReadOnly,
    };
    assert_eq!(code(&c.fails(&begin).await), codes::KV_UNAUTHORIZED);
    // Session-owned operations still work: the open transaction can be rolled back.
    c.ok::<_, kv::RollbackOk>(&kv::Rollback {
        tx_id: tx,
        route: "kv://r/a/x".into(),
    })
    .await;
    assert_eq!(broker.session_count(), 1);
    // A new connection with the same token is refused by the broker clock.
    let reason = refused(&broker, Kind::Ws, &t).await;
    assert!(reason.unwrap_or_default().contains("expired"));
}

#[tokio::test]
async fn invalid_auth_configuration_is_rejected_at_start() {
    let empty_map = AuthConfig::jwt_hs256(SECRET).family_map(Vec::<(String, u32)>::new());
    assert!(Broker::builder().auth(empty_map).start().await.is_err());
    let family_zero = AuthConfig::jwt_hs256(SECRET).family_map([("dev", 0)]);
    assert!(Broker::builder().auth(family_zero).start().await.is_err());
    assert!(
        Broker::builder()
            .auth(AuthConfig::jwt_hs256(""))
            .start()
            .await
            .is_err()
    );
}
