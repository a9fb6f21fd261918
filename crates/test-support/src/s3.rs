//! The development S3 server (SeaweedFS, started by `scripts/s3-server.sh`, which
//! `scripts/dev-services.sh` runs) and the settings that point a service at it. Tests
//! isolate themselves with a unique key prefix inside the shared test bucket.

/// The S3 endpoint `scripts/s3-server.sh` serves (`TEST_S3_ENDPOINT` overrides).
pub fn s3_endpoint() -> String {
    std::env::var("TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8333".to_owned())
}

/// The bucket `scripts/s3-server.sh` creates.
pub const S3_BUCKET: &str = "plangrep-test";
/// The development credentials `scripts/s3-server.sh` configures (checked by the server).
pub const S3_ACCESS_KEY_ID: &str = "plangrep-dev";
/// See [`S3_ACCESS_KEY_ID`].
pub const S3_SECRET_ACCESS_KEY: &str = "plangrep-dev-secret";
/// Any region works with SeaweedFS; requests are signed for this one.
pub const S3_REGION: &str = "us-east-1";

/// Settings (SPEC §7 names) for storage under `s3://plangrep-test/<prefix>` on the
/// development server.
pub fn s3_settings(prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PLANGREP_STORAGE_URL", format!("s3://{S3_BUCKET}/{prefix}")),
        ("AWS_ENDPOINT_URL", s3_endpoint()),
        ("AWS_REGION", S3_REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY.to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
    ]
}

/// Panics with instructions unless the development S3 server answers: S3 tests never
/// skip themselves silently.
pub async fn require_s3_server() {
    let endpoint = s3_endpoint();
    let authority = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();
    let connect = tokio::net::TcpStream::connect(authority.as_str());
    match tokio::time::timeout(std::time::Duration::from_secs(3), connect).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => panic!(
            "no S3 server answers at {endpoint} ({error}); run scripts/dev-services.sh (it starts SeaweedFS via scripts/s3-server.sh)"
        ),
        Err(_) => panic!(
            "the S3 server at {endpoint} does not accept connections; run scripts/dev-services.sh (it starts SeaweedFS via scripts/s3-server.sh)"
        ),
    }
}
