//! Typed envelopes: a serde body, the aspect as discriminator, and metadata
//! with producer, causation and tx id; the publish helpers that write them.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::stream::{AppendOptions, Durability, StreamRecord};
use crate::{Client, Error};

/// The metadata of an envelope record, JSON in the record's metadata field.
///
/// The aspect is repeated here because READ items carry no discriminator.
/// The tx id is stored under `sync_tx`, the key the outbox's stream lanes
/// write, so records appended through an [`crate::sync::Outbox`] read as
/// envelopes too. Records without metadata, or whose metadata is not a JSON
/// object, read with every field `None`; unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EnvelopeMeta {
    /// The aspect (also the record's discriminator, which server-side
    /// filters match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect: Option<String>,
    /// Who wrote it (a [`Publisher`]'s producer name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    /// The record it was derived from, as `route#offset`
    /// ([`Publisher::publish_derived`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation: Option<String>,
    /// A transaction id unique per write: `<producer>/<random>` from a
    /// [`Publisher`], `<client id>/<seq>` from the outbox.
    #[serde(default, rename = "sync_tx", skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
}

impl EnvelopeMeta {
    /// Reads the metadata of a record (lenient: see the type's docs).
    pub fn from_metadata(metadata: Option<&Bytes>) -> Self {
        metadata
            .and_then(|m| serde_json::from_slice(m).ok())
            .unwrap_or_default()
    }
}

/// One record of a feed: its decoded body, its metadata and where it is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Envelope<T> {
    /// The body, decoded from JSON.
    pub body: T,
    /// Aspect, producer, causation, tx id.
    pub meta: EnvelopeMeta,
    /// The concrete route of the record.
    pub route: String,
    /// Its offset within its resource.
    pub offset: u64,
    /// Its offset on the feed selector's axis (equal to `offset` for an
    /// exact-resource feed): the feed's cursor moves past it.
    pub axis_offset: u64,
    /// When the broker created it, in milliseconds since the Unix epoch.
    pub created_at_millis: u64,
}

impl<T> Envelope<T> {
    /// `route#offset`: what a record derived from this one names as its
    /// causation.
    pub fn causation_id(&self) -> String {
        format!("{}#{}", self.route, self.offset)
    }
}

impl<T: DeserializeOwned> Envelope<T> {
    /// Decodes `record` read on an axis where it sits at `axis_offset`.
    /// A body that is not JSON of type `T` is an
    /// [`ErrorKind::Decode`](crate::ErrorKind::Decode) error.
    pub fn decode(record: &StreamRecord, axis_offset: u64) -> Result<Self, Error> {
        Ok(Self {
            body: record.json()?,
            meta: EnvelopeMeta::from_metadata(record.metadata()),
            route: record.route().to_owned(),
            offset: record.offset(),
            axis_offset,
            created_at_millis: record.created_at_millis(),
        })
    }
}

/// Writes envelope records: a JSON body, the aspect as discriminator and in
/// the metadata, this publisher as producer and a fresh tx id.
///
/// Each publish is one append session committed with
/// [`Durability::Sync`]. It is at-least-once like any stream append (an
/// answer lost after the commit leaves the record written, and a retry
/// writes it again); the tx id lets consumers tell. For exactly-once
/// appends queued offline use [`crate::sync::Outbox`] with
/// [`crate::sync::Mutation::Append`].
///
/// ```no_run
/// # async fn demo(client: fitz::Client) -> Result<(), fitz::Error> {
/// use fitz::sync::Publisher;
///
/// let orders = Publisher::new(client, "checkout");
/// let offset = orders
///     .publish("stream://shop/orders/o-1", "order.created", &serde_json::json!({"total": 12}))
///     .await?;
/// # let _ = offset; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Publisher {
    client: Client,
    producer: String,
}

impl Publisher {
    /// A publisher writing through `client` as `producer`.
    pub fn new(client: Client, producer: impl Into<String>) -> Self {
        Self {
            client,
            producer: producer.into(),
        }
    }

    /// The producer name it writes into every envelope.
    pub fn producer(&self) -> &str {
        &self.producer
    }

    /// Appends one envelope to the resource `route`; returns its offset.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped mid-way the append session is rolled back
    /// in the background, or (dropped after COMMIT was written) the record
    /// may be written.
    pub async fn publish<B: Serialize>(
        &self,
        route: &str,
        aspect: &str,
        body: &B,
    ) -> Result<u64, Error> {
        self.append(route, aspect, body, None).await
    }

    /// [`Publisher::publish`] naming `cause` (`route#offset`) as the
    /// causation of the new record.
    ///
    /// # Cancel safety
    ///
    /// As [`Publisher::publish`].
    pub async fn publish_derived<B: Serialize, C>(
        &self,
        route: &str,
        aspect: &str,
        body: &B,
        cause: &Envelope<C>,
    ) -> Result<u64, Error> {
        self.append(route, aspect, body, Some(cause.causation_id()))
            .await
    }

    /// The metadata bytes of a new envelope with `aspect` and `causation`.
    pub fn metadata(&self, aspect: &str, causation: Option<String>) -> Bytes {
        let meta = EnvelopeMeta {
            aspect: Some(aspect.to_owned()),
            producer: Some(self.producer.clone()),
            causation,
            tx: Some(format!("{}/{:032x}", self.producer, rand::random::<u128>())),
        };
        // A struct of strings always serializes.
        Bytes::from(serde_json::to_vec(&meta).unwrap_or_default())
    }

    async fn append<B: Serialize>(
        &self,
        route: &str,
        aspect: &str,
        body: &B,
        causation: Option<String>,
    ) -> Result<u64, Error> {
        let body = serde_json::to_vec(body)
            .map_err(|e| Error::invalid(format!("envelope body is not JSON: {e}")))?;
        let options = AppendOptions::new()
            .metadata(self.metadata(aspect, causation))
            .discriminator(aspect);
        let mut session = self.client.stream().begin(route).await?;
        let offset = session.append_with(body, options).await?;
        session.commit(Durability::Sync).await?;
        Ok(offset)
    }
}
