//! SERVER_HELLO capability bits.

use std::fmt;

/// The capability set a broker advertises in SERVER_HELLO. Unknown bits are
/// kept but ignored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// Bit 0: requests may be labelled with CORRELATE.
    pub const CORRELATION: Self = Self(1 << 0);
    /// Bit 1: the broker accepts SESSION_METADATA.
    pub const SESSION_METADATA: Self = Self(1 << 1);
    /// Bit 2: KV SCAN accepts the trailing `start_exclusive` byte.
    pub const KV_SCAN_EXCLUSIVE: Self = Self(1 << 2);
    /// Bit 3: RPC registration/budget extensions, RPC_CANCEL and RPC_LIFECYCLE.
    pub const RPC_CANCELLATION: Self = Self(1 << 3);
    /// No capabilities: a legacy broker.
    pub const NONE: Self = Self(0);
    /// Every capability this protocol crate knows.
    pub const ALL: Self = Self(0b1111);

    /// True when every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two sets.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.with(rhs)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::CORRELATION, "CORRELATION"),
            (Self::SESSION_METADATA, "SESSION_METADATA"),
            (Self::KV_SCAN_EXCLUSIVE, "KV_SCAN_EXCLUSIVE"),
            (Self::RPC_CANCELLATION, "RPC_CANCELLATION"),
        ];
        let mut list = f.debug_set();
        for (bit, name) in names {
            if self.contains(bit) {
                list.entry(&format_args!("{name}"));
            }
        }
        let unknown = self.0 & !Self::ALL.0;
        if unknown != 0 {
            list.entry(&format_args!("{unknown:#x}"));
        }
        list.finish()
    }
}
