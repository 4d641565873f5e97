//! Exact Hamming-radius search over 256-bit hashes: multi-index hashing with a tight
//! filter, laid out so a query reads a few hundred short contiguous runs of memory.
//!
//! Why it is exact: split the hash into 8 chunks of 32 bits. If `d(q, h) <= r`, some
//! chunk differs by at most `t = r / 8` bits (else the total would exceed `r`). That
//! chunk's two 16-bit halves differ by `d_a + d_b <= t`, so one half differs by at most
//! `rho = t / 2`. There is one table per 16-bit half (16 tables), bucketed by the half's
//! value; each entry also stores the *other* half of its chunk. A query enumerates every
//! key within `rho` of its own half, and keeps an entry only when
//! `d(key) + d(other half) <= t` — the chunk-distance test, done on 2 bytes stored in the
//! bucket itself. Survivors are verified on the full hash. For `r = 31` at 10 M random
//! hashes that is 272 bucket runs of ~150 two-byte entries each, then a few hundred full
//! comparisons, instead of 10 M.
//!
//! The bucket filter counts four entries per step in one 64-bit word (SWAR), and a
//! search loads each table's bucket bounds and bucket starts in tight passes before it
//! scans, so their cache misses overlap; a batch of queries (a frame's variants, or
//! frames from many streams) does this over the whole batch and searches identical
//! queries once ([`HashIndex::search_batch`]).
//!
//! Where the hashes come from someone who may pack them around a query (the console's
//! allowlist), [`HashIndex::search_batch_within`] counts the full-hash distances a
//! search computes and stops at a budget, whatever the index holds.
//!
//! Memory: 32 bytes for the hash + 16 tables × (2 + 4) bytes = 128 bytes per hash, plus
//! 4 MiB of bucket offsets.

use crate::Hash256;

const TABLES: usize = 16;
const BUCKETS: usize = 1 << 16;
/// Beyond this half-chunk probe radius, enumerating keys costs more than a scan.
const MAX_PROBE_RADIUS: u32 = 3;
/// Queries searched together at most (a probe names its query in 16 bits).
const MAX_BATCH: usize = 1024;
/// Candidate capacity a thread keeps per batch slot between searches.
const KEEP_CANDIDATES: usize = 1 << 16;

struct Table {
    /// Bucket `k` holds entries `offsets[k]..offsets[k + 1]`.
    offsets: Vec<u32>,
    /// The other 16-bit half of the entry's 32-bit chunk.
    others: Vec<u16>,
    ids: Vec<u32>,
}

pub struct HashIndex {
    hashes: Vec<Hash256>,
    tables: Vec<Table>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Per-thread scratch for searches: one "seen" bit per banked hash (the largest index
/// searched on this thread; 1.25 MiB at 10 M) and the ids marked by the current query,
/// so clearing costs what the query touched; per table, the batch's bucket probes with
/// their bounds and filter survivors; and each query's unverified candidates.
#[derive(Default)]
struct Scratch {
    marks: Vec<u64>,
    touched: Vec<u32>,
    probes: Vec<Probe>,
    bounds: Vec<(u32, u32)>,
    survivors: Vec<(u16, u32)>,
    candidates: Vec<Vec<u32>>,
}

/// One bucket probe: the key, the query (position in the batch) and how many bits the
/// entry's other half may still differ by.
#[derive(Clone, Copy)]
struct Probe {
    key: u16,
    query: u16,
    budget: u16,
}

/// A search stopped before it verified more candidates than its budget allowed
/// ([`HashIndex::search_batch_within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the search needs more than {budget} distance computations (stopped after {distances})")]
pub struct OverBudget {
    pub budget: usize,
    /// Full-hash distances computed before it stopped (at most `budget`).
    pub distances: usize,
}

/// One result: the position of the hash in the input order, and its distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Hit {
    pub distance: u32,
    pub id: u32,
}

#[inline]
fn words(h: &Hash256) -> [u16; TABLES] {
    let mut w = [0u16; TABLES];
    for (i, pair) in h.0.chunks_exact(2).enumerate() {
        w[i] = u16::from_be_bytes([pair[0], pair[1]]);
    }
    w
}

/// All 16-bit masks of at most `radius` set bits, fewest bits first.
fn probe_masks(radius: u32) -> Vec<u16> {
    let mut masks: Vec<u16> = (0..=u16::MAX).filter(|m| m.count_ones() <= radius).collect();
    masks.sort_by_key(|m| m.count_ones());
    masks
}

impl HashIndex {
    /// Builds the index; ids are positions in `hashes`. Panics above `u32::MAX` hashes.
    pub fn build(hashes: Vec<Hash256>) -> HashIndex {
        assert!(hashes.len() < u32::MAX as usize, "too many hashes for one index");
        let all_words: Vec<[u16; TABLES]> = hashes.iter().map(words).collect();
        let tables = (0..TABLES)
            .map(|t| {
                let mut offsets = vec![0u32; BUCKETS + 1];
                for w in &all_words {
                    offsets[w[t] as usize + 1] += 1;
                }
                for k in 0..BUCKETS {
                    offsets[k + 1] += offsets[k];
                }
                let mut fill = offsets.clone();
                let mut others = vec![0u16; hashes.len()];
                let mut ids = vec![0u32; hashes.len()];
                for (id, w) in all_words.iter().enumerate() {
                    let slot = &mut fill[w[t] as usize];
                    others[*slot as usize] = w[t ^ 1];
                    ids[*slot as usize] = id as u32;
                    *slot += 1;
                }
                Table { offsets, others, ids }
            })
            .collect();
        HashIndex { hashes, tables }
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn hash(&self, id: u32) -> &Hash256 {
        &self.hashes[id as usize]
    }

    /// Bytes held by the index (hashes, tables, offsets).
    pub fn memory_bytes(&self) -> usize {
        let per_table = |t: &Table| t.offsets.capacity() * 4 + t.others.capacity() * 2 + t.ids.capacity() * 4;
        self.hashes.capacity() * 32 + self.tables.iter().map(per_table).sum::<usize>()
    }

    /// Every hash within `radius` of `query`, nearest first (ties by id).
    pub fn search(&self, query: &Hash256, radius: u32) -> Vec<Hit> {
        self.search_unique(&[(*query, radius)], usize::MAX, &mut 0).and_then(|mut a| a.pop()).unwrap_or_default()
    }

    /// Searches several queries together, each with its own radius; answer `i` is what
    /// [`HashIndex::search`] gives for query `i`. A frame's dihedral and crop variants,
    /// or frames from many streams, share the work:
    /// - identical queries (a symmetric frame's coinciding dihedral hashes, streams
    ///   showing the same content) are searched once, at the widest radius asked;
    /// - each table's bucket bounds, bucket starts and survivors' ids for the whole
    ///   batch are loaded in tight passes, so their cache misses overlap.
    ///
    /// Reading a bucket probed by several queries only once was tried (sort a table's
    /// probes by key): the sort cost more than the shared reads saved (0.8-1.0x with fair
    /// timing). Candidates are kept per query and verified through the seen-bitmap, so a
    /// clustered bank costs each query only its own repeats.
    pub fn search_batch(&self, queries: &[(Hash256, u32)]) -> Vec<Vec<Hit>> {
        self.search_batch_within(queries, usize::MAX).map(|(answers, _)| answers).unwrap_or_default()
    }

    /// [`HashIndex::search_batch`], with the full-hash distances it computed (one per
    /// distinct candidate and query), and stopped once it would compute more than
    /// `budget` of them. Whatever the index holds (a bank of near-duplicates around the
    /// query included), no more than `budget` distances are computed; a search that can
    /// already tell from its candidates that it would exceed the budget stops before
    /// verifying any.
    pub fn search_batch_within(
        &self,
        queries: &[(Hash256, u32)],
        budget: usize,
    ) -> Result<(Vec<Vec<Hit>>, usize), OverBudget> {
        let mut unique: Vec<(Hash256, u32)> = Vec::with_capacity(queries.len());
        let mut position: std::collections::HashMap<Hash256, usize> = std::collections::HashMap::new();
        let slots: Vec<usize> = queries
            .iter()
            .map(|&(hash, radius)| {
                let i = *position.entry(hash).or_insert_with(|| {
                    unique.push((hash, 0));
                    unique.len() - 1
                });
                unique[i].1 = unique[i].1.max(radius);
                i
            })
            .collect();
        let mut distances = 0;
        let mut answers: Vec<Vec<Hit>> = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(MAX_BATCH) {
            match self.search_unique(chunk, budget, &mut distances) {
                Some(a) => answers.extend(a),
                None => return Err(OverBudget { budget, distances }),
            }
        }
        let answers = queries
            .iter()
            .zip(slots)
            .map(|(&(_, radius), i)| answers[i].iter().copied().filter(|h| h.distance <= radius).collect())
            .collect();
        Ok((answers, distances))
    }

    /// The answers, with the distances computed added to `distances`; `None` when that
    /// would pass `budget` (then nothing more is computed).
    fn search_unique(&self, queries: &[(Hash256, u32)], budget: usize, distances: &mut usize) -> Option<Vec<Vec<Hit>>> {
        let mut answers = vec![Vec::new(); queries.len()];
        let mut indexed: Vec<(usize, [u16; TABLES], u32)> = Vec::with_capacity(queries.len());
        for (i, (hash, radius)) in queries.iter().enumerate() {
            if (radius / 8) / 2 > MAX_PROBE_RADIUS {
                if budget.saturating_sub(*distances) < self.hashes.len() {
                    return None;
                }
                *distances += self.hashes.len();
                answers[i] = self.scan(hash, *radius);
            } else {
                indexed.push((i, words(hash), radius / 8));
            }
        }
        if indexed.is_empty() {
            return Some(answers);
        }
        SCRATCH.with_borrow_mut(|s| {
            let Scratch { marks, touched, probes, bounds, survivors, candidates } = s;
            // Normally empty; after a search that unwound midway, its marks must not hide
            // matches from the next one.
            for id in touched.drain(..) {
                marks[(id / 64) as usize] = 0;
            }
            survivors.clear();
            candidates.iter_mut().for_each(Vec::clear);
            let words_needed = self.hashes.len().div_ceil(64);
            if marks.len() < words_needed {
                marks.resize(words_needed, 0);
            }
            if candidates.len() < indexed.len() {
                candidates.resize_with(indexed.len(), Vec::new);
            }
            for (ti, table) in self.tables.iter().enumerate() {
                probes.clear();
                for (j, (_, q, t)) in indexed.iter().enumerate() {
                    for &mask in probe_masks_cached(t / 2) {
                        let budget = t - mask.count_ones();
                        probes.push(Probe { key: q[ti] ^ mask, query: j as u16, budget: budget as u16 });
                    }
                }
                // One tight pass over the bounds: independent loads, overlapped.
                bounds.clear();
                bounds
                    .extend(probes.iter().map(|p| (table.offsets[p.key as usize], table.offsets[p.key as usize + 1])));
                // And a second over each bucket's first line, for the same reason.
                let mut touch = 0u16;
                for &(start, _) in bounds.iter() {
                    touch ^= table.others.get(start as usize).copied().unwrap_or(0);
                }
                std::hint::black_box(touch);
                for (p, &(start, stop)) in probes.iter().zip(bounds.iter()) {
                    let (start, stop) = (start as usize, stop as usize);
                    let qo = indexed[p.query as usize].1[ti ^ 1];
                    filter_bucket(&table.others[start..stop], qo, p.budget as u32, |i| {
                        survivors.push((p.query, (start + i) as u32))
                    });
                }
                // Survivors' ids in one pass too: each is a miss in a 40 MB array.
                for &(query, pos) in survivors.iter() {
                    candidates[query as usize].push(table.ids[pos as usize]);
                }
                survivors.clear();
                // A hash lies in one bucket per table and a query probes distinct keys,
                // so after `ti + 1` tables a query holds at least `len / (ti + 1)`
                // distinct candidates, each one distance to compute: stop as soon as
                // that alone passes the budget (a cluster around the query).
                let at_least: usize = candidates[..indexed.len()].iter().map(|c| c.len().div_ceil(ti + 1)).sum();
                if at_least > budget.saturating_sub(*distances) {
                    candidates.iter_mut().for_each(Vec::clear);
                    return None;
                }
            }
            // A hash near a query passes the filter in several tables; each is verified
            // once. On clustered banks a query gathers tens of thousands of such
            // repeats, and the bitmap (cleared through what it marked) beats sorting.
            for (j, (i, _, _)) in indexed.iter().enumerate() {
                let (query, radius) = &queries[*i];
                let hits = &mut answers[*i];
                let mut touch = 0u8;
                for &id in &candidates[j] {
                    touch ^= self.hashes[id as usize].0[0];
                }
                std::hint::black_box(touch);
                for &id in &candidates[j] {
                    let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
                    if marks[word] & bit != 0 {
                        continue;
                    }
                    if *distances >= budget {
                        for id in touched.drain(..) {
                            marks[(id / 64) as usize] = 0;
                        }
                        candidates.iter_mut().for_each(Vec::clear);
                        return None;
                    }
                    *distances += 1;
                    marks[word] |= bit;
                    touched.push(id);
                    let distance = self.hashes[id as usize].distance(query);
                    if distance <= *radius {
                        hits.push(Hit { distance, id });
                    }
                }
                candidates[j].clear();
                if candidates[j].capacity() > KEEP_CANDIDATES {
                    // One query into a dense cluster should not pin its memory for ever.
                    candidates[j].shrink_to(KEEP_CANDIDATES);
                }
                for id in touched.drain(..) {
                    marks[(id / 64) as usize] = 0;
                }
                hits.sort_unstable();
            }
            Some(answers)
        })
    }

    /// The reference answer: compare with every hash.
    pub fn scan(&self, query: &Hash256, radius: u32) -> Vec<Hit> {
        linear_scan(&self.hashes, query, radius)
    }
}

/// Every hash in `hashes` within `radius` of `query`, nearest first (ties by id).
pub fn linear_scan(hashes: &[Hash256], query: &Hash256, radius: u32) -> Vec<Hit> {
    let mut hits: Vec<Hit> = hashes
        .iter()
        .enumerate()
        .filter_map(|(id, h)| {
            let distance = h.distance(query);
            (distance <= radius).then_some(Hit { distance, id: id as u32 })
        })
        .collect();
    hits.sort_unstable();
    hits
}

/// Calls `keep(i)` for each `others[i]` within `budget` bits of `qo`. Four entries per
/// step, SWAR: baseline x86-64 has no popcount instruction, and counting the four
/// 16-bit lanes of one word at once makes this loop, where a query spends most of its
/// time, about three times cheaper than one `count_ones` per entry.
#[inline]
fn filter_bucket(others: &[u16], qo: u16, budget: u32, mut keep: impl FnMut(usize)) {
    const LANES: u64 = 0x0001_0001_0001_0001;
    const HIGH: u64 = 0x8000 * LANES;
    let (query4, budget4) = (qo as u64 * LANES, HIGH | (budget as u64 * LANES));
    let mut chunks = others.chunks_exact(4);
    for (c, four) in chunks.by_ref().enumerate() {
        let word = four[0] as u64 | (four[1] as u64) << 16 | (four[2] as u64) << 32 | (four[3] as u64) << 48;
        // Each lane is 0x8000 + budget - count: its high bit stays set iff count <= budget
        // (no lane borrows, since a count is at most 16).
        let mut within = (budget4 - lane_popcounts(word ^ query4)) & HIGH;
        while within != 0 {
            keep(c * 4 + within.trailing_zeros() as usize / 16);
            within &= within - 1;
        }
    }
    let tail = chunks.remainder();
    let base = others.len() - tail.len();
    for (i, &other) in tail.iter().enumerate() {
        if (other ^ qo).count_ones() <= budget {
            keep(base + i);
        }
    }
}

/// The popcount of each 16-bit lane of `x`, in that lane.
#[inline]
fn lane_popcounts(x: u64) -> u64 {
    let x = x - ((x >> 1) & 0x5555_5555_5555_5555);
    let x = (x & 0x3333_3333_3333_3333) + ((x >> 2) & 0x3333_3333_3333_3333);
    let x = (x + (x >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    (x + (x >> 8)) & 0x001f_001f_001f_001f
}

fn probe_masks_cached(rho: u32) -> &'static [u16] {
    use std::sync::OnceLock;
    static MASKS: [OnceLock<Vec<u16>>; MAX_PROBE_RADIUS as usize + 1] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    MASKS[rho as usize].get_or_init(|| probe_masks(rho))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::synthetic::{flip_exactly, random_hash};
    use vigil_core::SeededRng;

    #[test]
    fn bucket_filter_agrees_with_count_ones_in_every_lane_and_the_tail() {
        let mut rng = SeededRng::new(99);
        for len in [0usize, 1, 3, 4, 5, 8, 63, 257] {
            let others: Vec<u16> = (0..len).map(|_| rng.next_u64() as u16).collect();
            for _ in 0..50 {
                // Queries a few bits from an entry, so every budget keeps some.
                let qo = others.get(rng.next_u64() as usize % len.max(1)).copied().unwrap_or(0)
                    ^ (rng.next_u64() as u16 & 0x0111);
                for budget in 0..=7 {
                    let mut kept = Vec::new();
                    filter_bucket(&others, qo, budget, |i| kept.push(i));
                    let expected: Vec<usize> = (0..len).filter(|&i| (others[i] ^ qo).count_ones() <= budget).collect();
                    assert_eq!(kept, expected, "len {len} budget {budget}");
                }
            }
        }
    }

    #[test]
    fn probe_masks_count() {
        assert_eq!(probe_masks(0).len(), 1);
        assert_eq!(probe_masks(1).len(), 17);
        assert_eq!(probe_masks(2).len(), 137);
    }

    #[test]
    fn matches_linear_scan_on_random_bank_with_planted_neighbours() {
        let mut rng = SeededRng::new(0x1234_5678_9abc_def1);
        let mut hashes: Vec<Hash256> = (0..20_000).map(|_| random_hash(&mut rng)).collect();
        let queries: Vec<Hash256> = (0..200).map(|_| random_hash(&mut rng)).collect();
        // Plant neighbours at every distance around the queries, including the edge.
        for (i, q) in queries.iter().enumerate() {
            let d = (i as u32 * 7) % 48;
            hashes.push(flip_exactly(&mut rng, q, d));
        }
        let index = HashIndex::build(hashes.clone());
        for radius in [0, 8, 15, 31, 32, 40, 47] {
            for q in &queries {
                assert_eq!(index.search(q, radius), linear_scan(&hashes, q, radius), "radius {radius}");
            }
        }
    }

    #[test]
    fn matches_linear_scan_on_adversarial_clustered_bank() {
        // Thousands of near-duplicates around a few centres, and queries near and far.
        let mut rng = SeededRng::new(42);
        let centres: Vec<Hash256> = (0..4).map(|_| random_hash(&mut rng)).collect();
        let mut hashes = Vec::new();
        for c in &centres {
            for i in 0..3000 {
                hashes.push(flip_exactly(&mut rng, c, (i % 40) as u32));
            }
        }
        hashes.extend((0..2000).map(|_| random_hash(&mut rng)));
        let index = HashIndex::build(hashes.clone());
        let mut queries: Vec<Hash256> = centres.iter().map(|c| flip_exactly(&mut rng, c, 20)).collect();
        queries.extend(centres.iter().map(|c| flip_exactly(&mut rng, c, 60)));
        queries.extend((0..20).map(|_| random_hash(&mut rng)));
        for q in &queries {
            let got = index.search(q, 31);
            assert_eq!(got, linear_scan(&hashes, q, 31));
        }
        assert!(!index.search(&centres[0], 31).is_empty());
        // The per-thread "seen" marks: a smaller index searched between two searches of
        // the big one, and the same query twice, give the scan's answer every time.
        let small_bank: Vec<Hash256> = hashes.iter().step_by(7).copied().collect();
        let small = HashIndex::build(small_bank.clone());
        for q in &queries {
            assert_eq!(index.search(q, 31), linear_scan(&hashes, q, 31));
            assert_eq!(small.search(q, 31), linear_scan(&small_bank, q, 31));
            assert_eq!(index.search(q, 31), linear_scan(&hashes, q, 31));
        }
    }

    #[test]
    fn large_radius_falls_back_to_exact_scan() {
        let mut rng = SeededRng::new(7);
        let hashes: Vec<Hash256> = (0..500).map(|_| random_hash(&mut rng)).collect();
        let index = HashIndex::build(hashes.clone());
        let q = random_hash(&mut rng);
        assert_eq!(index.search(&q, 128), linear_scan(&hashes, &q, 128));
    }

    #[test]
    fn a_budget_bounds_the_distances_computed_and_changes_no_answer() {
        let mut rng = SeededRng::new(11);
        let centre = random_hash(&mut rng);
        // Half a cluster of near-duplicates around the centre, half random.
        let mut hashes: Vec<Hash256> = (0..5000).map(|i| flip_exactly(&mut rng, &centre, i % 20)).collect();
        hashes.extend((0..5000).map(|_| random_hash(&mut rng)));
        let index = HashIndex::build(hashes.clone());
        let far: Vec<(Hash256, u32)> = (0..8).map(|_| (random_hash(&mut rng), 31)).collect();
        let (answers, distances) = index.search_batch_within(&far, usize::MAX).unwrap();
        assert_eq!(answers, index.search_batch(&far));
        assert!(distances < 100, "unrelated queries verify few candidates: {distances}");
        assert_eq!(index.search_batch_within(&far, distances), Ok((answers, distances)), "a budget just enough");
        let near = [(flip_exactly(&mut rng, &centre, 3), 31), (random_hash(&mut rng), 31)];
        let (answers, all) = index.search_batch_within(&near, usize::MAX).unwrap();
        assert!(all >= 5000, "every near-duplicate is verified: {all}");
        assert_eq!(answers[0], linear_scan(&hashes, &near[0].0, 31));
        for budget in [0, 1, 100, 4999, all - 1] {
            let over = index.search_batch_within(&near, budget).unwrap_err();
            assert!(over.distances <= budget, "{over}");
        }
        // The seen-marks and candidates of a stopped search leave the next one exact.
        assert_eq!(index.search_batch(&near), answers);
        // The scan fallback (radius past the index's reach) is charged the whole index.
        assert!(index.search_batch_within(&[(centre, 128)], 9_999).is_err());
        assert_eq!(index.search_batch_within(&[(centre, 128)], 10_000).unwrap().1, 10_000);
    }

    #[test]
    fn empty_index_finds_nothing() {
        let index = HashIndex::build(Vec::new());
        assert!(index.search(&Hash256::default(), 31).is_empty());
    }
}
