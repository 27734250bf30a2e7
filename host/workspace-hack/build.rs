//! Empty: it exists so that this crate's build-dependencies, and their
//! features, are part of every build that includes the crate.

fn main() {}
