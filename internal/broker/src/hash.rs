//! The broker's keyed fast hash for maps on the request path (RPC engine
//! state, the route registry): SipHash was a quarter of the RPC engine's
//! time, and route lookups hashed client-chosen strings with it.

use std::hash::{BuildHasher, Hasher, RandomState};

/// A fast keyed hash (folded 64×64→128 multiplies over 8-byte words) with
/// a random seed per map. Caller UUIDs are chosen by clients, so the seed
/// keeps colliding keys from being precomputed; the other keys are broker
/// counters.
#[derive(Clone, Copy)]
pub(crate) struct Seeded(u64);

impl Default for Seeded {
    fn default() -> Self {
        Seeded(RandomState::new().hash_one(0x5EED_u64) | 1)
    }
}

impl BuildHasher for Seeded {
    type Hasher = Folded;
    fn build_hasher(&self) -> Folded {
        Folded(self.0)
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Folded(u64);

impl Folded {
    #[inline]
    pub(crate) fn mix(&mut self, word: u64) {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let x = u128::from(self.0 ^ word) * u128::from(K);
        self.0 = (x as u64) ^ ((x >> 64) as u64);
    }
}

impl Hasher for Folded {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            // The length keeps "ab" and "ab\0" apart.
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(n.into());
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.mix(n.into());
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = *self;
        h.mix(0x2D35_8DCC_AA6C_78A5);
        h.0
    }
}
