//! The JSON body of a Stream commit notification (NOTIFY 609), written by
//! the broker and read by the client through this one type.
//!
//! `{"event":"committed","first_resource_offset":…,"last_resource_offset":…,
//! "first_area_offset":…,…,"batch_size":…}` in the spec's field order, or
//! `{"event":"watermark_advanced","previous":…,"watermark":…}`. Readers
//! ignore fields they do not know (the broker may add offsets) and take a
//! `null` or missing optional offset as absent; an unknown `event`, a
//! missing required field or malformed JSON is an error.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a STREAM NOTIFY says happened to its resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum CommitEvent {
    /// One or more batches were committed (debounced: several commits may
    /// be merged into one event).
    Committed(Committed),
    /// The resource's watermark moved.
    WatermarkAdvanced {
        /// The watermark before.
        previous: u64,
        /// The watermark now.
        watermark: u64,
    },
}

/// Offsets a commit (or a debounced run of commits) was given, first and
/// last on each axis; the resource axis is always present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// First resource offset.
    pub first_resource_offset: u64,
    /// Last resource offset.
    pub last_resource_offset: u64,
    /// First area offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_area_offset: Option<u64>,
    /// Last area offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_area_offset: Option<u64>,
    /// First realm offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_realm_offset: Option<u64>,
    /// Last realm offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_realm_offset: Option<u64>,
    /// First global offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_global_offset: Option<u64>,
    /// Last global offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_global_offset: Option<u64>,
    /// Records committed; when absent, the resource offsets' span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u64>,
}

impl Committed {
    /// Records committed (the resource span when the broker did not say).
    pub fn batch_size(&self) -> u64 {
        self.batch_size.unwrap_or_else(|| {
            self.last_resource_offset
                .saturating_sub(self.first_resource_offset)
                .saturating_add(1)
        })
    }
}

impl CommitEvent {
    /// The compact JSON body.
    pub fn to_json(&self) -> Bytes {
        // Plain structs of integers always serialize.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses a body.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> CommitEvent {
        CommitEvent::Committed(Committed {
            first_resource_offset: 3,
            last_resource_offset: 5,
            first_area_offset: Some(10),
            last_area_offset: Some(12),
            first_realm_offset: Some(20),
            last_realm_offset: Some(22),
            first_global_offset: Some(30),
            last_global_offset: Some(32),
            batch_size: Some(3),
        })
    }

    #[test]
    fn the_body_is_the_spec_example_in_its_field_order() {
        assert_eq!(
            committed().to_json(),
            &br#"{"event":"committed","first_resource_offset":3,"last_resource_offset":5,"first_area_offset":10,"last_area_offset":12,"first_realm_offset":20,"last_realm_offset":22,"first_global_offset":30,"last_global_offset":32,"batch_size":3}"#[..]
        );
        let w = CommitEvent::WatermarkAdvanced {
            previous: 1,
            watermark: 4,
        };
        assert_eq!(
            w.to_json(),
            &br#"{"event":"watermark_advanced","previous":1,"watermark":4}"#[..]
        );
        for e in [committed(), w] {
            assert_eq!(CommitEvent::from_json(&e.to_json()).unwrap(), e);
        }
    }

    #[test]
    fn readers_are_lenient_where_the_spec_allows_and_strict_elsewhere() {
        let minimal = CommitEvent::from_json(
            br#" {"event":"committed","first_resource_offset":7,"last_resource_offset":9,
                 "first_area_offset":null,"future_field":[1,{"x":2}]} "#,
        )
        .unwrap();
        let CommitEvent::Committed(c) = minimal else {
            panic!("committed");
        };
        assert_eq!((c.first_area_offset, c.batch_size()), (None, 3));
        for bad in [
            &br#"{"event":"deleted"}"#[..],
            br#"{"event":"committed","first_resource_offset":1}"#,
            br#"{"first_resource_offset":1,"last_resource_offset":1}"#,
            br#"{"event":"committed","first_resource_offset":-1,"last_resource_offset":1}"#,
            br#"{"event":"committed""#,
            b"[]",
            b"",
        ] {
            assert!(
                CommitEvent::from_json(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
