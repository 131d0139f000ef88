//! roster-ap: the AP backend. Every member accepts writes locally and converges with the others:
//! persistent nodes merge last-writer-wins on a hybrid logical clock (`model`, `hlc`); each member
//! owns the sessions of its clients and their ephemeral nodes and streams them to peers with a
//! per-owner version (Distro style, `member`); foca (SWIM) says who is alive (`membership`); a
//! periodic exchange of digests repairs what streaming missed. The protocol core (`model`,
//! `member`, `expiry`, `materialize`) does no I/O; `backend` and `transport` are the thin shell.
//! It knows nothing of wire protocols.

pub mod backend;
pub mod expiry;
pub mod hlc;
pub mod materialize;
pub mod member;
pub mod membership;
pub mod model;
pub mod proto;
pub mod transport;

pub use backend::{AP_CAPABILITIES, ApBackend, ApConfig, OpenError};
