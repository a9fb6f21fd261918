//! The system-test crate: everything lives under `system/`.
