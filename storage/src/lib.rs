//! tmp
pub use rocksdb;
