//! The `vpcep` binary's library half: configuration, wiring of the planes, the status
//! controller and the admin commands, so integration tests can run the real thing
//! in-process on port 0.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod controller;
pub mod demo;
pub mod gateway;
pub mod lock;
pub mod objects;
pub mod output;
pub mod serve;
pub mod testbed;
pub mod tls;
