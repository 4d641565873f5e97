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

/// A bank of random hashes plus near-duplicates of `centre` (one per list of flips).
fn bank_around(centre: &Hash256, randoms: Vec<Hash256>, near: &[Vec<u8>]) -> Vec<Hash256> {
    let mut bank = randoms;
    bank.extend(near.iter().map(|bits| flipped(centre, bits)));
    bank
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
        let bank = bank_around(&centre, randoms, &near);
        let index = HashIndex::build(bank.clone());
        let query = flipped(&centre, &query_flips);
        prop_assert_eq!(index.search(&query, radius), linear_scan(&bank, &query, radius));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A batch (a frame's variants, several streams' frames) gets, query by query, the
    /// linear scan's answer at that query's own radius: with repeated queries at
    /// different radii, queries sharing buckets, and radii past the probing limit.
    #[test]
    fn batch_equals_linear_scan_per_query(
        centre in hash(),
        randoms in prop::collection::vec(hash(), 0..200),
        near in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 0..300),
        batch in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..40), 0u32..70), 0..12),
        repeat in any::<prop::sample::Index>(),
    ) {
        let bank = bank_around(&centre, randoms, &near);
        let index = HashIndex::build(bank.clone());
        let mut queries: Vec<(Hash256, u32)> =
            batch.iter().map(|(bits, radius)| (flipped(&centre, bits), *radius)).collect();
        if !queries.is_empty() {
            let (again, _) = queries[repeat.index(queries.len())];
            queries.push((again, 31));
        }
        let answers = index.search_batch(&queries);
        prop_assert_eq!(answers.len(), queries.len());
        for ((query, radius), answer) in queries.iter().zip(&answers) {
            prop_assert_eq!(answer, &linear_scan(&bank, query, *radius));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A budget never changes an answer, only whether there is one: a search gets the
    /// unbudgeted answer within a budget of the distances it counted, and stops within
    /// any smaller budget having computed no more than it; a stopped search leaves the
    /// next one exact.
    #[test]
    fn a_budget_stops_a_search_or_changes_nothing(
        centre in hash(),
        randoms in prop::collection::vec(hash(), 0..200),
        near in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 0..300),
        batch in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..40), 0u32..70), 1..12),
        cut in any::<prop::sample::Index>(),
    ) {
        let bank = bank_around(&centre, randoms, &near);
        let index = HashIndex::build(bank.clone());
        let queries: Vec<(Hash256, u32)> =
            batch.iter().map(|(bits, radius)| (flipped(&centre, bits), *radius)).collect();
        let (answers, distances) = index.search_batch_within(&queries, usize::MAX).unwrap();
        prop_assert_eq!(&answers, &index.search_batch(&queries));
        prop_assert_eq!(index.search_batch_within(&queries, distances), Ok((answers.clone(), distances)));
        if distances > 0 {
            let budget = cut.index(distances);
            let over = index.search_batch_within(&queries, budget).unwrap_err();
            prop_assert!(over.distances <= budget);
        }
        for ((query, radius), answer) in queries.iter().zip(&answers) {
            prop_assert_eq!(answer, &linear_scan(&bank, query, *radius));
        }
    }
}
