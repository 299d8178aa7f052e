//! Runs Node.js test files in `web/` (real y-websocket providers) with the relay binary and
//! the given environment; fails with their output when they fail or overrun.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

pub fn target_dir() -> PathBuf {
    // examples/relay -> the workspace's target/
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// Fails with what to do when `npm ci` has not run in `web/`.
pub fn assert_node_modules() {
    assert!(
        web_dir().join("node_modules/y-websocket/package.json").is_file(),
        "examples/relay/web/node_modules is missing: run `make test` (or `npm ci --prefix examples/relay/web`)"
    );
}

/// `node --test` on `files` (one at a time) with `envs`; returns its output.
pub async fn run(files: &[&str], envs: &[(&str, String)], deadline: Duration) -> String {
    let started = Instant::now();
    let mut child = Command::new("node")
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
        .args(files)
        .current_dir(web_dir())
        .env("RELAY_BIN", env!("CARGO_BIN_EXE_synckit-relay"))
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start `node` (is Node.js >= 18 on PATH?): {e}"));
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stdout = stdout
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    let stderr = stderr
        .map(|t| t.join().unwrap_or_default())
        .unwrap_or_default();
    let output = format!("--- node stdout ---\n{stdout}\n--- node stderr ---\n{stderr}");
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!("the Node.js tests {files:?} failed ({status}):\n{output}"),
        None => panic!("the Node.js tests {files:?} did not finish within {deadline:?}:\n{output}"),
    }
    println!("{output}");
    println!("node tests took {:.1} s", started.elapsed().as_secs_f64());
    output
}

fn read_all(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}
