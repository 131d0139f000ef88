//! roster-zab: the ZooKeeper Atomic Broadcast backend: the standalone server (a quorum of one:
//! the prep → sync (group commit) → final request pipeline) and the ensemble member, the
//! transaction log and snapshots as files (in the storage engine for the simulations), the epochs in the engine, recovery, session expiry
//! and the container manager. It knows nothing of wire protocols.

pub mod ensemble;
pub mod pipeline;
pub mod quorum;

mod segments;

mod snapshotter;
pub mod standalone;
pub mod txnlog;

pub use ensemble::{Ensemble, EnsembleConfig, MemberAddr};
pub use snapshotter::SnapshotPolicy;
pub use standalone::{OpenError, Standalone, ZabConfig};
