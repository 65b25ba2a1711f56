//! The key prefix reserved for the SDK's own bookkeeping in KV resources.
//!
//! The offline-first layer (`fitz::sync`, feature `sync`) keeps its
//! exactly-once markers under [`RESERVED_PREFIX`] (`\0sync/<client id>`)
//! in every resource it writes. So that ordinary code never sees or erases
//! them, the SDK treats the prefix specially everywhere, with or without the
//! `sync` feature:
//!
//! * [`Transaction::scan`](super::Transaction::scan) and
//!   [`Transaction::scan_page`](super::Transaction::scan_page) never return
//!   a key starting with the prefix: they are dropped from the broker's
//!   replies and a page they left short is completed past them, so limits,
//!   pages and resuming count visible keys only (see
//!   [`ScanOptions`](super::ScanOptions) for the one visible trace).
//! * [`Transaction::delete_range`](super::Transaction::delete_range) is sent
//!   as the (at most two) parts of the range that lie outside the prefix.
//!
//! Point operations (`get`, `put`, `insert`, `delete`) are not filtered: the
//! sync layer reads and writes its markers with them.

/// The key prefix reserved for the SDK's own bookkeeping: the sync layer's
/// exactly-once markers (`\0sync/<client id>`, feature `sync`). So that
/// ordinary code never sees or erases them, the SDK treats the prefix
/// specially everywhere, with or without the `sync` feature:
///
/// * [`Transaction::scan`](super::Transaction::scan) and
///   [`Transaction::scan_page`](super::Transaction::scan_page) never return
///   a key under it; limits, pages and resuming count visible keys only
///   (see [`ScanOptions`](super::ScanOptions) for the one trace it leaves).
/// * [`Transaction::delete_range`](super::Transaction::delete_range) is sent
///   as the (at most two) parts of its range outside the prefix.
///
/// Point operations (`get`, `put`, `insert`, `delete`) are not filtered:
/// the sync layer reads and writes its markers with them.
pub const RESERVED_PREFIX: &[u8] = b"\0sync/";

/// The first key after every key starting with [`RESERVED_PREFIX`].
pub(crate) const RESERVED_END: &[u8] = b"\0sync0";

/// The ranges a delete of `[start, end)` may touch without entering the
/// reserved prefix: the range itself, or its parts before and after
/// `[RESERVED_PREFIX, RESERVED_END)`. Empty ranges are left out.
pub(crate) fn split_around_reserved(start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut push = |s: &[u8], e: &[u8]| {
        if s < e {
            out.push((s.to_vec(), e.to_vec()));
        }
    };
    if end <= RESERVED_PREFIX || start >= RESERVED_END {
        push(start, end);
    } else {
        push(start, RESERVED_PREFIX);
        push(RESERVED_END, end);
    }
    out
}

/// True when `key` is under [`RESERVED_PREFIX`].
pub(crate) fn is_reserved(key: &[u8]) -> bool {
    // The first byte alone rules out nearly every key, cheaply (scans test
    // every key they receive).
    key.first() == Some(&0) && key.starts_with(RESERVED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_around_reserved_never_covers_the_prefix() {
        // Entirely before / after.
        assert_eq!(
            split_around_reserved(b"a", b"b"),
            vec![(b"a".to_vec(), b"b".to_vec())]
        );
        assert_eq!(
            split_around_reserved(b"\0", b"\0sync"),
            vec![(b"\0".to_vec(), b"\0sync".to_vec())]
        );
        // Everything: split in two.
        assert_eq!(
            split_around_reserved(b"", b"\xff"),
            vec![
                (b"".to_vec(), RESERVED_PREFIX.to_vec()),
                (RESERVED_END.to_vec(), b"\xff".to_vec())
            ]
        );
        // Inside the prefix: nothing.
        assert!(split_around_reserved(b"\0sync/a", b"\0sync/z").is_empty());
        // Every key under the prefix is outside every piece.
        let marker = b"\0sync/abc";
        for (s, e) in split_around_reserved(b"", b"\xff\xff") {
            assert!(!(s.as_slice() <= &marker[..] && &marker[..] < e.as_slice()));
        }
    }
}
