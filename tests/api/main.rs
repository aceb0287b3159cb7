//! One integration binary: every test spawns the app on 127.0.0.1:0 in dev
//! mode (in-process Cosmos emulator, local Altinn platform) and talks HTTP.

mod architecture;
mod auth;
mod compat;
mod console;
mod contract;
mod cosmosdb_server;
mod delivery;
mod fail_closed;
mod feeds;
mod hardening;
mod hardening_round_two;
mod health;
mod helpers;
mod instance;
mod logs;
mod publish;
mod push_filters;
mod query;
mod read;
mod secrets;
mod subscriptions;
mod traces;
