//! The data layer (being written).
