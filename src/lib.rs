//! lanchat: a self-hosted messenger for office LANs in one binary.
//!
//! Layers, top to bottom: `cli` parses the command line and dispatches; `server`
//! wires the pieces and runs; `api` holds thin HTTP/WebSocket handlers; the domain
//! modules (`users`, `auth`, `chat`, `settings`) are plain functions over SQLite;
//! `db` owns storage (the group-committing writer and the read pool); `hub` routes
//! realtime events to sockets.

pub mod admin;
pub mod api;
pub mod attachments;
pub mod auth;
pub mod backup;
pub mod chat;
pub mod cli;
pub mod config;
pub mod datadir;
pub mod db;
pub mod disk;
pub mod error;
pub mod hub;
pub mod mdns;
pub mod metrics;
pub mod net;
pub mod search;
pub mod server;
pub mod settings;
pub mod state;
pub mod static_files;
pub mod tls;
pub mod transfers;
pub mod users;
