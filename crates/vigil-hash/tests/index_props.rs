//! Property: the index returns exactly the linear scan's match set, for any bank, any
//! query and any radius, including banks dense with near-duplicates.

use proptest::prelude::*;
use vigil_hash::index::linear_scan;
use vigil_hash::{Hash256, HashIndex};

fn hash() -> impl Strategy<Value = Hash256> {
    prop::array::uniform32(any::<u8>()).prop_map(Hash256)
}

/// `base` with the listed bits flipped.
fn flipped(base: &Hash256, bits: &[u8]) -> Hash256 {
    let mut h = *base;
    for &k in bits {
        h.0[k as usize / 8] ^= 1 << (k % 8);
    }
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn index_equals_linear_scan(
        centre in hash(),
        randoms in prop::collection::vec(hash(), 0..300),
        near in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 0..300),
        query_flips in prop::collection::vec(any::<u8>(), 0..40),
        radius in 0u32..70,
    ) {
        let mut bank = randoms;
        bank.extend(near.iter().map(|bits| flipped(&centre, bits)));
        let index = HashIndex::build(bank.clone());
        let query = flipped(&centre, &query_flips);
        prop_assert_eq!(index.search(&query, radius), linear_scan(&bank, &query, radius));
    }
}
