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

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest bucket when `keys` are hashed into as many buckets as
    /// there are keys (a fair hash: about 7 for 4,096 keys).
    fn worst_bucket(seed: Seeded, keys: &[Vec<u8>]) -> usize {
        let mut buckets = vec![0usize; keys.len().next_power_of_two()];
        let mask = buckets.len() - 1;
        for k in keys {
            let mut h = seed.build_hasher();
            h.write(k);
            buckets[(h.finish() as usize) & mask] += 1;
        }
        buckets.into_iter().max().unwrap_or(0)
    }

    /// Key families an attacker would try against a multiply-fold hash
    /// whose only secret is its starting state: counters, one bit moved
    /// through a word, the top bit of each word flipped together with a
    /// later word (the difference a `× K` carries most predictably),
    /// UUID-like keys differing in one byte, prefixed routes.
    fn families() -> Vec<Vec<Vec<u8>>> {
        let n = 4096u64;
        // Distinct keys only (a repeated key is one key in a map).
        let distinct = |keys: Vec<Vec<u8>>| {
            let set: std::collections::BTreeSet<Vec<u8>> = keys.into_iter().collect();
            set.into_iter().collect::<Vec<_>>()
        };
        let words = |a: u64, b: u64| [a.to_le_bytes(), b.to_le_bytes()].concat();
        vec![
            (0..n).map(|i| i.to_le_bytes().to_vec()).collect(),
            (0..n).map(|i| words(i, 0)).collect(),
            (0..n).map(|i| words(0, i)).collect(),
            (0..n).map(|i| words(1 << (i % 64), i / 64)).collect(),
            (0..n)
                .map(|i| words(i ^ (1 << 63), i.wrapping_mul(1 << 63)))
                .collect(),
            distinct(
                (0..n)
                    .map(|i| {
                        let mut id = [0x5Au8; 16];
                        id[(i % 16) as usize] = (i / 16) as u8;
                        id.to_vec()
                    })
                    .collect(),
            ),
            (0..n)
                .map(|i| format!("rpc://realm/area/r{i}").into_bytes())
                .collect(),
        ]
    }

    #[test]
    fn structured_key_families_spread_under_every_seed() {
        for seed in [1u64, 3, 0x9E37_79B9_7F4A_7C15 | 1, u64::MAX, 0x5EED] {
            for (f, keys) in families().iter().enumerate() {
                let worst = worst_bucket(Seeded(seed), keys);
                assert!(
                    worst <= 12,
                    "seed {seed:#x}, family {f}: a bucket of {worst}"
                );
            }
        }
    }

    #[test]
    fn the_seed_changes_which_keys_collide() {
        // Two random seeds put the same keys in different buckets: a set
        // of keys colliding under one is not a set colliding under another.
        let keys: Vec<Vec<u8>> = (0..4096u64).map(|i| i.to_le_bytes().to_vec()).collect();
        let (a, b) = (Seeded::default(), Seeded::default());
        let same = keys
            .iter()
            .filter(|k| {
                let (mut x, mut y) = (a.build_hasher(), b.build_hasher());
                x.write(k);
                y.write(k);
                x.finish() & 4095 == y.finish() & 4095
            })
            .count();
        assert!(
            same < 64,
            "{same} of 4,096 keys in the same bucket under both seeds"
        );
    }
}
