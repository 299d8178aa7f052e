//! Every Rust snippet of the Markdown pages (build.rs), compiled with only the dependencies
//! README lists. Compiling this crate is the check; `tests/run.rs` runs the programs.
#![allow(
    unused,
    dead_code,
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_code
)]

include!(concat!(env!("OUT_DIR"), "/snippets.rs"));

#[cfg(test)]
mod tests {
    /// The `[dependencies]` block README tells users to add is this crate's own (but for the
    /// path to this checkout): a snippet that needs another crate fails to compile here.
    #[test]
    fn readme_dependencies_are_this_crates() {
        let readme = include_str!("../../../README.md");
        let manifest = include_str!("../Cargo.toml");
        let block = readme
            .split("```toml\n[dependencies]\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("README has a ```toml [dependencies] block");
        let ours = manifest
            .split("[dependencies]\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("Cargo.toml has [dependencies]");
        let names = |text: &str| -> Vec<String> {
            let mut names: Vec<String> = text
                .lines()
                .filter_map(|l| l.split_once(" = ").map(|(name, _)| name.trim().to_owned()))
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(block), names(ours));
        for line in block
            .lines()
            .filter(|l| !l.starts_with("synckit-awareness"))
        {
            let line = line.split("  #").next().unwrap_or(line).trim();
            assert!(
                ours.contains(line),
                "README's `{line}` differs from Cargo.toml"
            );
        }
    }
}
