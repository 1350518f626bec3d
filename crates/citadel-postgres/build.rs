//! Rebuilds the crate when a migration changes, because `sqlx::migrate!()`
//! embeds the files at compile time and cannot tell cargo to watch them on
//! stable Rust.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
