//! The ubackup puller as a library: the pull engine that every worker (and
//! the tests) calls. The binary `ubackup-puller` adds the command line.

pub mod pull;
pub mod config;
