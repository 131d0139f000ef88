//! roster-gateway: Roster's protocol front ends — the ZooKeeper wire protocol (`zk`), the HTTP
//! port (`http`) and the gRPC port (`grpc`), the last two serving the native API (`api`) — and
//! the assembly of a node (`server`) behind the `roster` binary. Front ends call the backend only
//! through `roster_core::backend::Backend`; they know nothing of which consistency engine runs.

pub mod admin;
pub mod api;
pub mod cli;
pub mod config;
pub mod eureka;
pub mod grpc;
pub mod http;
pub mod nacos;
pub mod server;
pub mod telemetry;
pub mod zk;
