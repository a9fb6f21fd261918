//! Rebuilds the crate when a migration is added: `sqlx::migrate!` embeds the files it
//! finds, but only a build script makes cargo notice a new one.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
