//! The command-line grammar (clap derive): the global connection flags and every
//! subcommand of SPEC §8. Usage errors are clap's own and exit with code 2.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use plangrep_core::webhook::WebhookSecret;

/// `plangrep`: the Plangrep job platform from the terminal.
#[derive(Debug, Parser)]
#[command(
    name = "plangrep",
    version,
    about = "The Plangrep job platform from the terminal",
    after_help = "Exit codes: 0 success, 1 API error (its code is printed), 2 usage, \
                  3 a job that ended failed/cancelled/expired under `watch` or `run`."
)]
pub struct Cli {
    /// Connection and output flags, accepted before or after the subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Base URL of the API.
    #[arg(
        long,
        global = true,
        env = "PLANGREP_API_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub api_url: String,
    /// API key (`pgk_live_…`).
    #[arg(long, global = true, env = "PLANGREP_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print JSON on stdout (for scripts) instead of human text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list and read projects.
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Create, upload to, watch and read jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The whole product in one command: create a job, upload with progress, complete,
    /// watch, print a summary.
    Run(RunArgs),
    /// A job's webhook delivery log, and redelivery.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// A local verifying webhook receiver, and verification of a saved request.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

/// `plangrep projects …`.
#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create a project (it starts `provisioning`).
    Create {
        /// The project's name (unique in the organization).
        name: String,
        /// Wait until the project is `ready` (or `failed`).
        #[arg(long)]
        wait: bool,
    },
    /// List projects.
    List(PageArgs),
    /// Show one project.
    Get {
        /// Project id (`proj_…`).
        project: String,
    },
}

/// Pagination of list commands.
#[derive(Debug, Args)]
pub struct PageArgs {
    /// Page size (1–500).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub limit: Option<u16>,
    /// Continue after a previous page (its `nextCursor`).
    #[arg(long)]
    pub cursor: Option<String>,
}

/// `plangrep jobs …`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Create a job in a ready project.
    Create(CreateJobArgs),
    /// Show one job.
    Get {
        /// Job id (`job_…`).
        job: String,
    },
    /// List a project's jobs, newest first.
    List {
        /// Project id (`proj_…`).
        #[arg(long)]
        project: String,
        /// Only jobs in this status.
        #[arg(long)]
        status: Option<String>,
        /// Only jobs with this external id.
        #[arg(long)]
        external_id: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Cancel a non-terminal job.
    Cancel {
        /// Job id.
        job: String,
    },
    /// Resume a job blocked on credits.
    Resume {
        /// Job id.
        job: String,
    },
    /// A new webhook signing secret (shown once); the old one keeps signing for the
    /// overlap (default 24 h).
    RotateSecret {
        /// Job id.
        job: String,
    },
    /// The job's status history, oldest first.
    Events {
        /// Job id.
        job: String,
    },
    /// Close the upload window (the job moves on to preflight).
    Complete {
        /// Job id.
        job: String,
    },
    /// Follow the job's status changes until it ends.
    Watch {
        /// Job id.
        job: String,
    },
    /// The v1 result of a completed job.
    Result {
        /// Job id.
        job: String,
        /// Save the result to this file instead of printing it.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Upload files (one request per file, streamed from disk, sha256 checked).
    Upload(UploadArgs),
}

/// `plangrep jobs create`.
#[derive(Debug, Args)]
pub struct CreateJobArgs {
    /// Project id (`proj_…`).
    #[arg(long)]
    pub project: String,
    /// Your own reference, echoed back.
    #[arg(long)]
    pub external_id: Option<String>,
    /// Where status changes are pushed (signed webhooks).
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// Idempotency-Key (default: a fresh one per invocation, reused on retries).
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `plangrep jobs upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Job id.
    pub job: String,
    /// Files to upload.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Classification of every file.
    #[arg(long, value_enum)]
    pub classification: Option<Classification>,
    /// Close the upload window afterwards.
    #[arg(long)]
    pub complete: bool,
}

/// `plangrep run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Files to upload.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Project id (`proj_…`), ready.
    #[arg(long)]
    pub project: String,
    /// Your own reference, echoed back.
    #[arg(long)]
    pub external_id: Option<String>,
    /// Where status changes are pushed (signed webhooks).
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// Classification of every file.
    #[arg(long, value_enum)]
    pub classification: Option<Classification>,
}

/// What a file is (SPEC §4).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Classification {
    Plans,
    Specifications,
    Documents,
    Addenda,
    Mixed,
    Other,
}

impl Classification {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plans => "plans",
            Self::Specifications => "specifications",
            Self::Documents => "documents",
            Self::Addenda => "addenda",
            Self::Mixed => "mixed",
            Self::Other => "other",
        }
    }
}

/// `plangrep deliveries …`.
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Every webhook delivery of a job and its attempts.
    List {
        /// Job id.
        job: String,
    },
    /// A fresh attempt of one delivery, now.
    Redeliver {
        /// Delivery id (`dlv_…`).
        delivery: String,
    },
}

/// `plangrep webhooks …`.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Run a local receiver that verifies and prints every delivery.
    Listen(ListenArgs),
    /// Verify one saved raw HTTP request read from stdin.
    Verify(VerifyArgs),
}

/// `plangrep webhooks listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The job's signing secret (`whsec_…`).
    #[arg(long, env = "PLANGREP_WEBHOOK_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: WebhookSecret,
    /// HTTP status to answer every delivery with (e.g. 500 to watch retries).
    #[arg(long, default_value_t = 204, value_parser = clap::value_parser!(u16).range(200..=599))]
    pub status: u16,
    /// Save every request, raw, into this directory (readable by `webhooks verify`).
    #[arg(long)]
    pub save_dir: Option<PathBuf>,
    /// Accepted clock difference for `webhook-timestamp`, in seconds.
    #[arg(long, default_value_t = plangrep_core::webhook::DEFAULT_TOLERANCE_SECONDS)]
    pub tolerance: i64,
}

/// `plangrep webhooks verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The job's signing secret (`whsec_…`).
    #[arg(long, env = "PLANGREP_WEBHOOK_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub secret: WebhookSecret,
    /// Accepted clock difference for `webhook-timestamp`, in seconds.
    #[arg(long, default_value_t = plangrep_core::webhook::DEFAULT_TOLERANCE_SECONDS)]
    pub tolerance: i64,
    /// Check the signature only, not the timestamp's age (for old saved requests).
    #[arg(long)]
    pub ignore_timestamp: bool,
}

fn parse_secret(text: &str) -> Result<WebhookSecret, String> {
    WebhookSecret::parse(text).map_err(|error| error.to_string())
}
