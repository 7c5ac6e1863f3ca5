//! The ubackup puller as a library: the pull engine that every worker (and
//! the tests) calls. The binary `ubackup-puller` adds the command line.

pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod pull;
pub mod queue;

pub mod basis;
pub mod certs;
pub mod lifecycle;
pub mod manifest;
pub use node::metrics;
pub mod node;
pub mod retention;
