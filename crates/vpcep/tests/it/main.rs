//! Integration tests: the real server on a loopback port 0, each test with its own data
//! directory, driven over HTTP with requests signed like the official SDK signs them.

mod api;
mod cli;
mod cluster;
mod dataplane;
mod demo;
mod durability;
mod edge;
mod kernel;
mod machines;
mod netns;
mod support;
mod tls;
