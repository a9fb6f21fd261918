//! One module per command group; each turns parsed arguments into API calls and output.

pub mod deliveries;
pub mod jobs;
pub mod projects;
pub mod run;
pub mod webhooks;
