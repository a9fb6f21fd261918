//! System tests: all three services run in-process on port 0 against the real PostgreSQL
//! and RabbitMQ, each test with its own database and RabbitMQ prefix, driven only through
//! the public HTTP API and real webhook receivers, like a customer would.

mod api_key_cache;
mod bad_input;
mod cli;
mod conformance;
mod contract;
mod dead_letters;
mod edge;
mod fault;
mod helpers;
mod idempotency;
mod internal_auth;
mod lifecycle;
mod limits;
mod observability;
mod openapi;
mod otlp;
mod pipeline;
mod reflection;
mod resources;
mod secret_rotation;
mod shared_rate_limits;
mod trace_context;
mod uploads;
mod walking_skeleton;
mod webhook_failures;
mod webhooks;
