//! roster-gateway: Roster's protocol front ends — the ZooKeeper wire protocol (`zk`) and the HTTP
//! port (`http`) — and the assembly of a node (`server`) behind the `roster` binary. Front ends
//! call the backend only through `roster_core::backend::Backend`; they know nothing of which
//! consistency engine runs.

pub mod admin;
pub mod config;
pub mod http;
pub mod server;
pub mod telemetry;
pub mod zk;
