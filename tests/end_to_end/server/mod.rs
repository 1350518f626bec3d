//! The operator HTTP API, driven in-process through the router with a real
//! PostgreSQL behind it, and the `server` example run as a process.

mod helpers;
mod process;
mod routes;
mod tenants;
mod webhooks;
