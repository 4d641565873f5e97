use std::fmt;
use std::str::FromStr;

/// A 256-bit perceptual hash. Bit `k` is bit `k` of the 256-bit big-endian number
/// whose hex form ThreatExchange prints (bit 255 first), so `bytes[31 - k / 8]`
/// holds it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Hash256(pub [u8; 32]);

impl Hash256 {
    pub fn set_bit(&mut self, k: usize) {
        self.0[31 - k / 8] |= 1 << (k % 8);
    }

    pub fn bit(&self, k: usize) -> bool {
        self.0[31 - k / 8] & (1 << (k % 8)) != 0
    }

    /// Number of differing bits.
    pub fn distance(&self, other: &Hash256) -> u32 {
        self.words().iter().zip(other.words().iter()).map(|(a, b)| (a ^ b).count_ones()).sum()
    }

    fn words(&self) -> [u64; 4] {
        let mut w = [0u64; 4];
        for (i, chunk) in self.0.chunks_exact(8).enumerate() {
            w[i] = u64::from_be_bytes(chunk.try_into().expect("8-byte chunk"));
        }
        w
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseHashError {
    #[error("a 256-bit hash has 64 hex digits, this has {0}")]
    Length(usize),
    #[error("not a hex number")]
    NotHex,
}

impl FromStr for Hash256 {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(ParseHashError::Length(s.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseHashError::NotHex)?;
        Ok(Hash256(out))
    }
}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_bit_order() {
        let mut h = Hash256::default();
        h.set_bit(255);
        h.set_bit(0);
        let s = h.to_hex();
        assert!(s.starts_with("80"), "{s}");
        assert!(s.ends_with("01"), "{s}");
        assert_eq!(s.parse::<Hash256>().unwrap(), h);
        assert!(h.bit(255) && h.bit(0) && !h.bit(1));
    }

    #[test]
    fn distance_counts_bits() {
        let a: Hash256 = "f".repeat(64).parse().unwrap();
        let b = Hash256::default();
        assert_eq!(a.distance(&b), 256);
        assert_eq!(a.distance(&a), 0);
    }

    #[test]
    fn bad_hex_is_an_error() {
        assert_eq!("abc".parse::<Hash256>(), Err(ParseHashError::Length(3)));
        assert_eq!("z".repeat(64).parse::<Hash256>(), Err(ParseHashError::NotHex));
    }
}
