//! The daily log: each date folder keeps `log.jsonl` (one [`LogEntry`] per line, oldest first,
//! appended on each save) and `log.html`, regenerated from it newest first and written atomically.
//! A torn or foreign line in `log.jsonl` is skipped, never fatal.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::a1111::{fmt_float, to_a1111};
use super::atomic::write_atomic;
use super::error::{Result, StoreError};
use super::metadata::{model_stem, ImageMetadata};
use super::naming::{parse_image_name, LOG_HTML};

/// The per-day list of saved images the HTML is built from.
pub const LOG_JSONL: &str = "log.jsonl";

/// One saved image in the day's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The image's file name inside the date folder.
    pub file: String,
    /// Its parameters (logged whether or not they were embedded in the file).
    pub metadata: ImageMetadata,
}

/// Appends `entry` to `day_dir/log.jsonl`, first ending a torn last line if a crash left one.
pub fn append_entry(day_dir: &Path, entry: &LogEntry) -> Result<()> {
    let path = day_dir.join(LOG_JSONL);
    let io = |e| StoreError::io("append to", &path, e);
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    let mut line = String::new();
    let len = file.metadata().map_err(io)?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1)).map_err(io)?;
        file.read_exact(&mut last).map_err(io)?;
        if last[0] != b'\n' {
            line.push('\n');
        }
    }
    line.push_str(&serde_json::to_string(entry).unwrap_or_default());
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)
}

/// The entries of `day_dir/log.jsonl`, oldest first; unreadable lines are skipped, a missing
/// file gives none.
pub fn read_entries(day_dir: &Path) -> Result<Vec<LogEntry>> {
    let path = day_dir.join(LOG_JSONL);
    let text = match std::fs::read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io("read", &path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<LogEntry>(line).ok())
        .collect())
}

/// Records `entry` in the day's log and rewrites `log.html` (newest first).
pub fn log_image(day_dir: &Path, date: &str, entry: &LogEntry) -> Result<()> {
    append_entry(day_dir, entry)?;
    let entries = read_entries(day_dir)?;
    write_atomic(
        &day_dir.join(LOG_HTML),
        render_html(date, &entries).as_bytes(),
    )
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            _ => out.push(c),
        }
    }
    out
}

/// The inline style of `log.html` (allowed by its hash in the page's Content-Security-Policy).
pub const STYLE: &str = r#"
:root { color-scheme: light dark; --bg: #f4f4f1; --fg: #1c1c1e; --muted: #6d6d73; --card: #ffffff; --line: #dcdcd8; --accent: #3b6fd8; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #131315; --fg: #e6e6e9; --muted: #9797a0; --card: #1d1d21; --line: #303036; --accent: #7fa6ff; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 1.5rem; background: var(--bg); color: var(--fg); font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
header { display: flex; align-items: baseline; gap: 1rem; margin-bottom: 1.25rem; }
header h1 { font-size: 1.2rem; font-weight: 600; margin: 0; }
header span { color: var(--muted); }
article { display: flex; flex-wrap: wrap; gap: 1.25rem; background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 1rem; margin-bottom: 1rem; }
figure { margin: 0; flex: 0 1 400px; }
figure img { display: block; width: 100%; max-width: 400px; height: auto; border-radius: 6px; }
figcaption { margin-top: .4rem; color: var(--muted); font-size: 12px; word-break: break-all; }
table { flex: 1 1 340px; align-self: flex-start; border-collapse: collapse; }
th { text-align: left; vertical-align: top; white-space: nowrap; font-weight: 500; color: var(--muted); padding: .2rem 1rem .2rem 0; }
td { padding: .2rem 0; white-space: pre-wrap; word-break: break-word; }
button { margin-top: .5rem; font: inherit; font-size: 12px; color: var(--accent); background: none; border: 1px solid var(--line); border-radius: 6px; padding: .25rem .6rem; cursor: pointer; }
"#;

/// The inline script of `log.html` (allowed by its hash, like [`STYLE`]).
pub const SCRIPT: &str = r#"
document.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-parameters]');
  if (!button || !navigator.clipboard) return;
  navigator.clipboard.writeText(button.dataset.parameters).then(() => {
    const label = button.textContent;
    button.textContent = 'Copied';
    setTimeout(() => { button.textContent = label; }, 1200);
  });
});
"#;

/// The (label, value) rows shown for one image.
fn rows(m: &ImageMetadata) -> Vec<(&'static str, String)> {
    let mut rows = vec![("Prompt", m.prompt.clone())];
    if !m.negative_prompt.is_empty() {
        rows.push(("Negative prompt", m.negative_prompt.clone()));
    }
    if !m.styles.is_empty() {
        rows.push(("Styles", m.styles.join(", ")));
    }
    rows.push(("Performance", m.performance.clone()));
    rows.push(("Steps", m.steps.to_string()));
    rows.push(("Resolution", format!("{} × {}", m.width, m.height)));
    rows.push(("Guidance scale", fmt_float(m.guidance_scale)));
    rows.push(("Sharpness", fmt_float(m.sharpness)));
    rows.push((
        "ADM guidance",
        format!(
            "{} / {} until {}",
            fmt_float(m.adm_scaler_positive),
            fmt_float(m.adm_scaler_negative),
            fmt_float(m.adm_scaler_end)
        ),
    ));
    rows.push(("CFG mimicking", fmt_float(m.adaptive_cfg)));
    rows.push(("CLIP skip", m.clip_skip.to_string()));
    let with_hash = |name: &str, hash: &Option<String>| match hash {
        Some(h) => format!("{} [{h}]", model_stem(name)),
        None => model_stem(name).to_string(),
    };
    rows.push(("Base model", with_hash(&m.base_model, &m.base_model_hash)));
    if let Some(refiner) = &m.refiner_model {
        rows.push((
            "Refiner",
            format!(
                "{}, switch at {}",
                with_hash(refiner, &m.refiner_model_hash),
                fmt_float(m.refiner_switch)
            ),
        ));
    }
    if !m.loras.is_empty() {
        let loras: Vec<String> = m
            .loras
            .iter()
            .map(|l| format!("{} : {}", model_stem(&l.name), fmt_float(l.weight)))
            .collect();
        rows.push(("LoRAs", loras.join("\n")));
    }
    if let Some(vae) = &m.vae {
        rows.push(("VAE", model_stem(vae).to_string()));
    }
    rows.push(("Sampler", m.sampler.clone()));
    rows.push(("Scheduler", m.scheduler.clone()));
    rows.push(("Seed", m.seed.to_string()));
    rows.push(("Version", m.version.clone()));
    rows
}

/// The day's `log.html`: `entries` are oldest first and shown newest first. Entries whose file
/// name is not one of ours are left out.
pub fn render_html(date: &str, entries: &[LogEntry]) -> String {
    let date = escape_html(date);
    let shown: Vec<&LogEntry> = entries
        .iter()
        .rev()
        .filter(|e| parse_image_name(&e.file).is_some())
        .collect();
    let mut html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>fooocus-rs · {date}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <header><h1>{date}</h1><span>{} image{}, newest first</span></header>\n",
        shown.len(),
        if shown.len() == 1 { "" } else { "s" }
    );
    for entry in shown {
        let file = escape_html(&entry.file);
        html.push_str(&format!(
            "<article id=\"{file}\">\n<figure><a href=\"{file}\"><img src=\"{file}\" alt=\"\" loading=\"lazy\"></a>\
             <figcaption>{file}</figcaption>\n\
             <button type=\"button\" data-parameters=\"{}\">Copy parameters</button></figure>\n<table>\n",
            escape_html(&to_a1111(&entry.metadata))
        ));
        for (label, value) in rows(&entry.metadata) {
            html.push_str(&format!(
                "<tr><th>{label}</th><td>{}</td></tr>\n",
                escape_html(&value)
            ));
        }
        html.push_str("</table>\n</article>\n");
    }
    html.push_str(&format!("<script>{SCRIPT}</script>\n</body>\n</html>\n"));
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file: &str, prompt: &str) -> LogEntry {
        LogEntry {
            file: file.into(),
            metadata: ImageMetadata {
                prompt: prompt.into(),
                base_model: "base.safetensors".into(),
                ..ImageMetadata::default()
            },
        }
    }

    #[test]
    fn newest_first_and_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path();
        log_image(
            day,
            "2024-03-05",
            &entry("2024-03-05_07-08-09_1111.png", "first"),
        )
        .unwrap();
        log_image(
            day,
            "2024-03-05",
            &entry(
                "2024-03-05_07-08-10_2222.png",
                "<script>alert('x')</script> & co",
            ),
        )
        .unwrap();
        let html = std::fs::read_to_string(day.join(LOG_HTML)).unwrap();
        let second = html.find("2024-03-05_07-08-10_2222.png").unwrap();
        let first = html.find("2024-03-05_07-08-09_1111.png").unwrap();
        assert!(second < first, "newest entry must come first");
        assert!(!html.contains("<script>alert"));
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co"));
        assert!(html.contains("2 images, newest first"));
        let leftovers: Vec<_> = std::fs::read_dir(day)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn torn_and_foreign_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir.path();
        std::fs::write(
            day.join(LOG_JSONL),
            "{\"file\":\"2024-03-05_07-08-09_1111.png\",\"meta",
        )
        .unwrap();
        append_entry(day, &entry("2024-03-05_07-08-10_2222.png", "ok")).unwrap();
        append_entry(day, &entry("../../etc/passwd", "evil")).unwrap();
        let entries = read_entries(day).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].metadata.prompt, "ok");
        let html = render_html("2024-03-05", &entries);
        assert!(!html.contains("passwd"));
        assert!(html.contains("1 image, newest first"));
    }
}
