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
//! Memory: 32 bytes for the hash + 16 tables × (2 + 4) bytes = 128 bytes per hash, plus
//! 4 MiB of bucket offsets.

use crate::Hash256;

const TABLES: usize = 16;
const BUCKETS: usize = 1 << 16;
/// Beyond this half-chunk probe radius, enumerating keys costs more than a scan.
const MAX_PROBE_RADIUS: u32 = 3;

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

/// Per-thread scratch for [`HashIndex::search`]: one bit per banked hash (the largest
/// index searched on this thread; 1.25 MiB at 10 M) and the ids marked by the current
/// query, so clearing costs what the query touched.
#[derive(Default)]
struct Seen {
    marks: Vec<u64>,
    touched: Vec<u32>,
}

thread_local! {
    static SEEN: std::cell::RefCell<Seen> = std::cell::RefCell::new(Seen::default());
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
        let t = radius / 8;
        let rho = t / 2;
        if rho > MAX_PROBE_RADIUS {
            return self.scan(query, radius);
        }
        let masks = probe_masks_cached(rho);
        let q = words(query);
        // A hash near the query passes the filter in several tables; each is verified
        // once. On clustered banks a query gathers tens of thousands of such repeats, and
        // a per-thread "seen" bitmap (cleared through the list of what it marked) beats
        // sorting them away.
        SEEN.with_borrow_mut(|seen| {
            let words_needed = self.hashes.len().div_ceil(64);
            if seen.marks.len() < words_needed {
                seen.marks.resize(words_needed, 0);
            }
            let mut hits: Vec<Hit> = Vec::new();
            for (ti, table) in self.tables.iter().enumerate() {
                let (qk, qo) = (q[ti], q[ti ^ 1]);
                for &mask in masks {
                    let key = (qk ^ mask) as usize;
                    let budget = t - mask.count_ones();
                    let (s, e) = (table.offsets[key] as usize, table.offsets[key + 1] as usize);
                    for (i, &other) in table.others[s..e].iter().enumerate() {
                        if (other ^ qo).count_ones() > budget {
                            continue;
                        }
                        let id = table.ids[s + i];
                        let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
                        if seen.marks[word] & bit != 0 {
                            continue;
                        }
                        seen.marks[word] |= bit;
                        seen.touched.push(id);
                        let distance = self.hashes[id as usize].distance(query);
                        if distance <= radius {
                            hits.push(Hit { distance, id });
                        }
                    }
                }
            }
            for id in seen.touched.drain(..) {
                seen.marks[(id / 64) as usize] = 0;
            }
            hits.sort_unstable();
            hits
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

fn probe_masks_cached(rho: u32) -> &'static [u16] {
    use std::sync::OnceLock;
    static MASKS: [OnceLock<Vec<u16>>; MAX_PROBE_RADIUS as usize + 1] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    MASKS[rho as usize].get_or_init(|| probe_masks(rho))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so failures reproduce.
    pub(crate) struct Rng(u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub fn hash(&mut self) -> Hash256 {
            let mut b = [0u8; 32];
            for c in b.chunks_exact_mut(8) {
                c.copy_from_slice(&self.next().to_le_bytes());
            }
            Hash256(b)
        }
        /// `h` with `bits` distinct random bits flipped.
        pub fn near(&mut self, h: &Hash256, bits: u32) -> Hash256 {
            let mut out = *h;
            let mut flipped = std::collections::HashSet::new();
            while flipped.len() < bits as usize {
                let k = (self.next() % 256) as usize;
                if flipped.insert(k) {
                    out.0[k / 8] ^= 1 << (k % 8);
                }
            }
            out
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
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut hashes: Vec<Hash256> = (0..20_000).map(|_| rng.hash()).collect();
        let queries: Vec<Hash256> = (0..200).map(|_| rng.hash()).collect();
        // Plant neighbours at every distance around the queries, including the edge.
        for (i, q) in queries.iter().enumerate() {
            let d = (i as u32 * 7) % 48;
            hashes.push(rng.near(q, d));
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
        let mut rng = Rng(42);
        let centres: Vec<Hash256> = (0..4).map(|_| rng.hash()).collect();
        let mut hashes = Vec::new();
        for c in &centres {
            for i in 0..3000 {
                hashes.push(rng.near(c, (i % 40) as u32));
            }
        }
        hashes.extend((0..2000).map(|_| rng.hash()));
        let index = HashIndex::build(hashes.clone());
        let mut queries: Vec<Hash256> = centres.iter().map(|c| rng.near(c, 20)).collect();
        queries.extend(centres.iter().map(|c| rng.near(c, 60)));
        queries.extend((0..20).map(|_| rng.hash()));
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
        let mut rng = Rng(7);
        let hashes: Vec<Hash256> = (0..500).map(|_| rng.hash()).collect();
        let index = HashIndex::build(hashes.clone());
        let q = rng.hash();
        assert_eq!(index.search(&q, 128), linear_scan(&hashes, &q, 128));
    }

    #[test]
    fn empty_index_finds_nothing() {
        let index = HashIndex::build(Vec::new());
        assert!(index.search(&Hash256::default(), 31).is_empty());
    }
}
