//! JSON payloads (feature `serde`, on by default): the one place where the
//! `*_json` helpers of every domain encode values and decode payloads, so
//! they all fail the same way.
//!
//! | direction | fails when | error |
//! |---|---|---|
//! | [`encode`]: the caller's value → a body | `Serialize` fails (a map with non-string keys, a failing custom impl) | [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument); nothing was sent |
//! | [`decode`]: a received body → the caller's type | the body is not JSON, or not JSON of that type | [`ErrorKind::Decode`](crate::ErrorKind::Decode); the message itself arrived intact |
//!
//! Decoding is not a protocol error: the broker delivered exactly what was
//! stored or sent, and the bytes merely disagree with the type the caller
//! asked for. Nor is it an invalid argument: nothing the caller passed was
//! wrong, the data is. Hence a kind of its own.

use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Serialises `value` as a JSON body.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| {
        Error::invalid(format!(
            "the value cannot be encoded as JSON ({}): {e}",
            std::any::type_name::<T>()
        ))
        .with_source(e)
    })
}

/// Parses `payload` as JSON of type `T`. `what` names the payload in the
/// error message ("the body of message 7 from queue://…"); it is only
/// formatted when decoding fails.
pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8], what: impl fmt::Display) -> Result<T> {
    serde_json::from_slice(payload).map_err(|e| {
        Error::decode(format!(
            "{what} is not JSON of type {}: {e}",
            std::any::type_name::<T>()
        ))
        .with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::error::Error as _;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::ErrorKind;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Invoice {
        number: u64,
        total: f64,
    }

    #[test]
    fn values_round_trip() {
        let invoice = Invoice {
            number: 7,
            total: 12.5,
        };
        let body = encode(&invoice).unwrap();
        assert_eq!(&body[..], br#"{"number":7,"total":12.5}"#);
        let back: Invoice = decode(&body, "the body").unwrap();
        assert_eq!(back, invoice);
        // Unsized values encode too.
        assert_eq!(&encode("hi").unwrap()[..], br#""hi""#);
        assert_eq!(&encode(&[1, 2][..]).unwrap()[..], b"[1,2]");
    }

    #[test]
    fn an_unserialisable_value_is_an_invalid_argument() {
        // JSON object keys must be strings.
        let mut map = BTreeMap::new();
        map.insert((1, 2), "pair keys");
        let e = encode(&map).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.message().contains("cannot be encoded as JSON"), "{e}");
        assert!(!e.is_retryable());
        assert!(!e.maybe_applied());
        assert!(e.source().is_some());
    }

    #[test]
    fn a_payload_of_another_shape_is_a_decode_error() {
        for payload in [&b"not json"[..], br#"{"number":"seven"}"#, b""] {
            let e = decode::<Invoice>(
                payload,
                format_args!("record {} of {}", 3, "stream://a/b/c"),
            )
            .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Decode);
            assert!(
                e.message()
                    .starts_with("record 3 of stream://a/b/c is not JSON of type"),
                "{e}"
            );
            assert!(e.message().contains("Invoice"), "{e}");
            assert!(!e.is_retryable());
            assert!(!e.maybe_applied());
            assert!(e.source().is_some());
        }
    }
}
