//! The README is run: every ```sh block is executed as written, with `fooocus` on the PATH, a
//! configuration over the tiny fixtures (`FOOOCUS_CONFIG`), the repository's `fixtures/` linked
//! into the working folder, and a server over them started as the README says. A block is left
//! out only when the line before it is `<!-- readme-test: not run (reason) -->`. `curl` is
//! wrapped to aim `localhost:7865` at the test's server, to put an image saved by an earlier
//! example in place of the README's example file name, and to log each answer's status: every
//! call must succeed, the first (the submit example) with 200.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// One ```sh block of the README.
struct Block {
    /// 1-based line of its opening fence.
    line: usize,
    text: String,
    /// Why it is not run, when it is not.
    skipped: Option<String>,
}

fn sh_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    let mut previous = "";
    for (i, line) in readme.lines().enumerate() {
        match current.as_mut() {
            Some(_) if line.starts_with("```") => blocks.extend(current.take()),
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            None if line.trim() == "```sh" => {
                let skipped = previous
                    .trim()
                    .strip_prefix("<!-- readme-test: not run")
                    .map(|r| r.trim_end_matches("-->").trim().to_owned());
                current = Some(Block {
                    line: i + 1,
                    text: String::new(),
                    skipped,
                });
            }
            None => {}
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    blocks
}

/// `curl` for the blocks: the real one, aimed at the test's server, logging `STATUS ARGS`.
const CURL_WRAPPER: &str = r#"#!/usr/bin/env bash
args=()
for a in "$@"; do
  a="${a//localhost:7865/127.0.0.1:$FOOOCUS_TEST_PORT}"
  [ -n "$EXAMPLE_IMAGE" ] && a="${a//2025-01-31\/2025-01-31_10-11-12_1234.png/$EXAMPLE_IMAGE}"
  args+=("$a")
done
out=$("$REAL_CURL" -w '\n@@%{http_code}' "${args[@]}")
rc=$?
printf '%s\n' "${out%$'\n'@@*}"
line="${args[*]}"
echo "${out##*@@} ${line//$'\n'/ }" >> "$CURL_LOG"
exit $rc
"#;

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    })
}

/// A bin folder holding `fooocus` (this build) and the `curl` wrapper.
fn bin_folder(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fooocus"), bin.join("fooocus")).unwrap();
    let curl = bin.join("curl");
    std::fs::write(&curl, CURL_WRAPPER).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&curl, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Starts `fooocus` as the README does (plus a free port, no browser, no downloads) and returns
/// it with its port.
fn start_server(config: &Path) -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fooocus"))
        .arg("--config")
        .arg(config)
        .args(["--no-browser", "--no-download", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("the server ended before saying where it runs");
        };
        if let Some(url) = line.split("running at ").nth(1) {
            let port = url.trim_end_matches(|c: char| !c.is_ascii_digit());
            break port.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, port)
}

/// Kills the server when the test ends, passed or not.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_readme_examples_work_as_written() {
    if !common::require_tool("curl", "apt-get install curl") {
        return;
    }
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap();
    let blocks = sh_blocks(&readme);
    let run: Vec<&Block> = blocks.iter().filter(|b| b.skipped.is_none()).collect();
    assert!(run.len() >= 2, "the README has too few runnable sh blocks");
    for b in blocks.iter().filter(|b| b.skipped.is_some()) {
        eprintln!("README line {}: not run ({:?})", b.line, b.skipped);
    }

    let dir = tempfile::tempdir().unwrap();
    let config = common::write_tiny_config(dir.path());
    // The examples run where a clone's `fixtures/` is at hand, as in the repository's root.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    std::os::unix::fs::symlink(&fixtures, dir.path().join("fixtures")).unwrap();
    let bin = bin_folder(dir.path());
    let curl_log = dir.path().join("curl.log");
    let (server, port) = start_server(&config);
    let _stop = Stop(server);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for block in run {
        let example = saved_image(&dir.path().join("outputs")).unwrap_or_default();
        let out = Command::new("bash")
            .args(["-eo", "pipefail", "-c", &block.text])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("FOOOCUS_CONFIG", &config)
            .env("FOOOCUS_TEST_PORT", port.to_string())
            .env("REAL_CURL", which("curl").unwrap())
            .env("CURL_LOG", &curl_log)
            .env("EXAMPLE_IMAGE", example)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "README block at line {} failed ({}):\n{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            block.line,
            out.status,
            block.text
        );
        eprintln!("README block at line {}: ok", block.line);
    }
    check_curl_answers(&std::fs::read_to_string(&curl_log).unwrap_or_default());
}

/// `YYYY-MM-DD/<file>` of an image saved under `outputs`, if there is one.
fn saved_image(outputs: &Path) -> Option<String> {
    let day = std::fs::read_dir(outputs)
        .ok()?
        .flatten()
        .find(|e| fooocus::store::naming::is_date_folder(&e.file_name().to_string_lossy()))?;
    let image = std::fs::read_dir(day.path())
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.ends_with(".png"))?;
    Some(format!("{}/{image}", day.file_name().to_string_lossy()))
}

/// Every logged call answered 2xx, the first (`POST /api/generate`) with 200.
fn check_curl_answers(log: &str) {
    let calls: Vec<(&str, &str)> = log
        .lines()
        .map(|l| l.split_once(' ').unwrap_or((l, "")))
        .collect();
    assert!(!calls.is_empty(), "the README made no curl call");
    let (first_status, first_args) = calls[0];
    assert!(first_args.contains("/api/generate"), "{first_args}");
    assert_eq!(
        first_status, "200",
        "the first example answered {first_status}"
    );
    for (status, args) in calls {
        assert!(status.starts_with('2'), "`curl {args}` answered {status}");
    }
}
