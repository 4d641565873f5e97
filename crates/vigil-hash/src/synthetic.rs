//! Synthetic hashes for tests and `vigil bench`: uniform random 256-bit hashes and
//! near-duplicates, from a seeded generator so every run sees the same bank.

use crate::Hash256;
use vigil_core::SeededRng;

pub fn random_hash(rng: &mut SeededRng) -> Hash256 {
    let mut h = Hash256::default();
    rng.fill(&mut h.0);
    h
}

/// `h` with exactly `bits` distinct random bits flipped.
pub fn flip_exactly(rng: &mut SeededRng, h: &Hash256, bits: u32) -> Hash256 {
    let mut out = *h;
    let mut flipped = [false; 256];
    let mut left = bits.min(256);
    while left > 0 {
        let k = rng.below(256);
        if !flipped[k] {
            flipped[k] = true;
            out.0[k / 8] ^= 1 << (k % 8);
            left -= 1;
        }
    }
    out
}

/// `h` with between `min_bits` and `max_bits` bits flipped, uniformly many.
pub fn flip_between(rng: &mut SeededRng, h: &Hash256, min_bits: u32, max_bits: u32) -> Hash256 {
    let span = max_bits.saturating_sub(min_bits) as usize;
    let bits = min_bits.saturating_add(rng.below(span.saturating_add(1)) as u32);
    flip_exactly(rng, h, bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_land_at_the_asked_distance() {
        let mut rng = SeededRng::new(3);
        let h = random_hash(&mut rng);
        for bits in [0, 1, 31, 200, 256] {
            assert_eq!(flip_exactly(&mut rng, &h, bits).distance(&h), bits);
        }
        for _ in 0..100 {
            let d = flip_between(&mut rng, &h, 10, 30).distance(&h);
            assert!((10..=30).contains(&d), "{d}");
        }
    }
}
