//! Turns every ```rust block of the top-level README.md into a module of this crate, the way
//! rustdoc reads it: lines starting with `# ` are part of the code (hidden in the rendered
//! README); a block without `fn main` becomes the body of a function.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    println!("cargo:rerun-if-changed={}", readme_path.display());
    let readme = std::fs::read_to_string(&readme_path).expect("read README.md");

    let mut out = String::new();
    let mut mains = Vec::new();
    let mut block: Option<Vec<String>> = None;
    let mut index = 0;
    for line in readme.lines() {
        match &mut block {
            None if line.starts_with("```rust") => block = Some(Vec::new()),
            None => {}
            Some(_) if line.starts_with("```") => {
                index += 1;
                let code = block.take().unwrap_or_default().join("\n");
                let name = format!("snippet_{index}");
                if code.contains("fn main()") {
                    mains.push(name.clone());
                    writeln!(
                        out,
                        "pub mod {name} {{\n{code}\n\
                         pub fn run_main() -> Result<(), Box<dyn std::error::Error>> {{ main() }}\n}}"
                    )
                    .unwrap();
                } else {
                    writeln!(out, "pub mod {name} {{\npub fn body() {{\n{code}\n}}\n}}").unwrap();
                }
            }
            Some(lines) => {
                let code = match line.strip_prefix("# ") {
                    Some(hidden) => hidden,
                    None if line == "#" => "",
                    None => line,
                };
                lines.push(code.to_owned());
            }
        }
    }
    assert!(index > 0, "README.md has no rust snippets");
    writeln!(
        out,
        "/// The snippets that are whole programs, by name.\n\
         pub const MAINS: &[(&str, fn() -> Result<(), Box<dyn std::error::Error>>)] = &[{}];",
        mains
            .iter()
            .map(|m| format!("(\"{m}\", {m}::run_main)"))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("snippets.rs");
    std::fs::write(dest, out).expect("write snippets.rs");
}
