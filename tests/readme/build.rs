//! Turns every ```rust block of the project's Markdown pages (README.md, CHANGELOG.md,
//! docs/*.md, examples/relay/README.md) into a module of this crate, the way rustdoc reads it:
//! lines starting with `# ` are part of the code (hidden in the rendered page); a block
//! without `fn main` becomes the body of a function.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The pages whose snippets are compiled, relative to the repository root.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![
        root.join("README.md"),
        root.join("CHANGELOG.md"),
        root.join("examples/relay/README.md"),
    ];
    let docs = root.join("docs");
    println!("cargo:rerun-if-changed={}", docs.display());
    let mut guides: Vec<PathBuf> = std::fs::read_dir(&docs)
        .expect("read docs/")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    guides.sort();
    pages.extend(guides);
    pages.retain(|page| page.is_file());
    pages
}

/// A Rust identifier for a page: `docs/access.md` → `docs_access`.
fn module_name(root: &Path, page: &Path) -> String {
    let relative = page.strip_prefix(root).unwrap_or(page).with_extension("");
    relative
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = String::new();
    let mut mains = Vec::new();
    let mut total = 0;
    for page in pages(&root) {
        println!("cargo:rerun-if-changed={}", page.display());
        let text = std::fs::read_to_string(&page).expect("read a Markdown page");
        let prefix = module_name(&root, &page);
        let mut block: Option<Vec<String>> = None;
        let mut index = 0;
        for line in text.lines() {
            match &mut block {
                None if line.starts_with("```rust") => block = Some(Vec::new()),
                None => {}
                Some(_) if line.starts_with("```") => {
                    index += 1;
                    let code = block.take().unwrap_or_default().join("\n");
                    let name = format!("{prefix}_snippet_{index}");
                    if code.contains("fn main()") {
                        mains.push(name.clone());
                        writeln!(
                            out,
                            "pub mod {name} {{\n{code}\n\
                             pub fn run_main() -> Result<(), Box<dyn std::error::Error>> {{ main() }}\n}}"
                        )
                        .unwrap();
                    } else {
                        writeln!(out, "pub mod {name} {{\npub fn body() {{\n{code}\n}}\n}}")
                            .unwrap();
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
        total += index;
    }
    assert!(total > 0, "the Markdown pages have no rust snippets");
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
