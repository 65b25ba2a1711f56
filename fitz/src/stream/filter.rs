//! Server-side READ filters over the append discriminator.

use bytes::Bytes;
use fitz_protocol::Str;
use fitz_protocol::stream::{FilterClause, FilterSet};

/// A READ filter: clauses over the discriminator each record was appended
/// with (see [`super::AppendOptions::discriminator`]), all of which must
/// hold. A record without a discriminator is matched as the empty string.
///
/// Records the filter rejects are not dropped silently: the page carries a
/// [`super::Filtered`] marker for them, so a reader's cursor still moves past
/// them. An empty filter (the default) reads everything and is sent as no
/// filter at all.
///
/// ```
/// use fitz::stream::Filter;
///
/// let filter = Filter::new()
///     .starts_with("order.")
///     .not_equals("order.audit");
/// assert!(filter.matches("order.created"));
/// assert!(!filter.matches("order.audit"));
/// assert!(!filter.matches("invoice.created"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    set: FilterSet,
}

impl Filter {
    /// A filter with no clauses: it matches every record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds: the discriminator equals `value`.
    #[must_use]
    pub fn equals(self, value: impl Into<String>) -> Self {
        self.with(FilterClause::Equals(str_of(value)))
    }

    /// Adds: the discriminator differs from `value`.
    #[must_use]
    pub fn not_equals(self, value: impl Into<String>) -> Self {
        self.with(FilterClause::NotEquals(str_of(value)))
    }

    /// Adds: the discriminator starts with `prefix`.
    #[must_use]
    pub fn starts_with(self, prefix: impl Into<String>) -> Self {
        self.with(FilterClause::StartsWith(str_of(prefix)))
    }

    /// Adds: the discriminator equals one of `values` (none given: the
    /// clause matches nothing).
    #[must_use]
    pub fn any_of<I, S>(self, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.with(FilterClause::AnyOf(
            values.into_iter().map(str_of).collect(),
        ))
    }

    /// True when the filter has no clause.
    pub fn is_empty(&self) -> bool {
        self.set.clauses.is_empty()
    }

    /// Evaluates the filter locally, as the broker does, against a
    /// discriminator (`""` for a record appended without one).
    pub fn matches(&self, discriminator: &str) -> bool {
        self.set.matches(discriminator)
    }

    fn with(mut self, clause: FilterClause) -> Self {
        self.set.clauses.push(clause);
        self
    }

    /// The READ `filter` field: `None` for an empty filter (protocol §9.11).
    pub(crate) fn to_wire(&self) -> Option<Bytes> {
        (!self.is_empty()).then(|| self.set.to_bytes())
    }
}

fn str_of(value: impl Into<String>) -> Str {
    Str::from(value.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_versioned_codec() {
        assert_eq!(Filter::new().to_wire(), None);
        let f = Filter::new().equals("a").any_of(["b", "c"]);
        let wire = f.to_wire().unwrap();
        assert_eq!(
            &wire[..],
            &[
                0x00, 0xF1, 0, 0, 0, 2, // marker, two clauses
                0, 0, 0, 0, 1, b'a', // Equals "a"
                3, 0, 0, 0, 2, 0, 0, 0, 1, b'b', 0, 0, 0, 1, b'c', // AnyOf [b, c]
            ][..]
        );
        assert_eq!(
            FilterSet::decode(wire).unwrap().clauses.len(),
            2,
            "round trip"
        );
    }

    #[test]
    fn clauses_are_conjunctive_and_missing_is_empty() {
        let f = Filter::new().not_equals("").starts_with("p");
        assert!(f.matches("proj"));
        assert!(!f.matches(""));
        assert!(!Filter::new().any_of(Vec::<String>::new()).matches("x"));
        assert!(Filter::new().matches(""));
    }
}
