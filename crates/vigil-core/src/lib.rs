//! Shared types of the Vigil pipeline. Every stage speaks in these: a [`Frame`] comes
//! out of media, [`FrameSignals`] collect what hashing and inference found in it, and
//! fusion turns signals into a [`Verdict`]. Nothing here carries pixels out of the
//! process: only [`Frame`] holds pixels, and it is never serialised.
#![forbid(unsafe_code)]

pub mod alert;
pub mod bank_update;
pub mod cpu;
mod frame;
pub mod ids;
pub mod redact;
pub mod seeded;
mod signals;

pub use alert::{
    Alert, AlertContext, AlertEvent, AlertOrigin, EvidenceFrame, Explanation, InterruptCommand, InterruptWithdrawal,
    ModelRef,
};
pub use bank_update::{BankUpdate, BankUpdateOp, ScopeKind};
pub use frame::{Frame, StreamId};
pub use seeded::SeededRng;
pub use signals::{AgeEstimate, BankMatch, Detection, FaceSignal, FrameSignals, PdqSignal, Unscanned, Verdict};
