//! Measurements of one benchmark run: median seconds over repeats, peak RSS (`VmHWM`, reset per
//! part through `/proc/self/clear_refs` where the kernel allows it) and the load average, printed
//! as a table or as JSON.

use std::time::Instant;

use serde::Serialize;

/// One timed part.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub part: String,
    /// `ours` (hand-written CPU kernels) or `candle` (candle's ops).
    pub kernels: &'static str,
    pub median_s: f64,
    pub samples_s: Vec<f64>,
    /// Peak resident memory while the part ran (or since start, see `rss_reset`), bytes.
    pub peak_rss_bytes: u64,
    pub rss_reset: bool,
    /// 1, 5 and 15 minute load averages just before the part ran.
    pub load_before: [f64; 3],
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: String,
    /// Where and in which dtype the networks ran.
    pub device: String,
    pub threads: usize,
    pub measurements: Vec<Measurement>,
    pub load_after: [f64; 3],
}

/// The 1/5/15-minute load averages (zeros where unavailable).
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (slot, field) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = field.parse().unwrap_or(0.0);
    }
    out
}

/// `VmHWM` of this process in bytes (0 where unavailable).
pub fn peak_rss() -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets `VmHWM` to the current RSS; false where the kernel refuses.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs `f` `warmup` times untimed and `repeats` times timed.
pub fn time<F>(warmup: usize, repeats: usize, mut f: F) -> anyhow::Result<(f64, Vec<f64>)>
where
    F: FnMut() -> anyhow::Result<()>,
{
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed().as_secs_f64());
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    };
    Ok((median, samples))
}

impl Report {
    /// A human-readable table; with both kernel sets measured, candle/ours ratios per part.
    pub fn table(&self) -> String {
        let mut s = format!(
            "fooocus bench: {} on {} ({} threads)\n{:<14} {:<7} {:>10} {:>10} {:>17}  samples\n",
            self.source,
            self.device,
            self.threads,
            "part",
            "kernels",
            "median s",
            "peak RSS",
            "load 1/5/15"
        );
        for m in &self.measurements {
            let samples: Vec<String> = m.samples_s.iter().map(|v| format!("{v:.3}")).collect();
            s += &format!(
                "{:<14} {:<7} {:>10.3} {:>8.2}GB {:>5.2}/{:>4.2}/{:>4.2}  {}\n",
                m.part,
                m.kernels,
                m.median_s,
                m.peak_rss_bytes as f64 / 1e9,
                m.load_before[0],
                m.load_before[1],
                m.load_before[2],
                samples.join(" ")
            );
        }
        for m in self.measurements.iter().filter(|m| m.kernels == "ours") {
            let base = self
                .measurements
                .iter()
                .find(|c| c.kernels == "candle" && c.part == m.part);
            if let Some(c) = base {
                s += &format!(
                    "{}: candle/ours = {:.2}×\n",
                    m.part,
                    c.median_s / m.median_s.max(1e-12)
                );
            }
        }
        let l = self.load_after;
        s += &format!("load average after: {:.2} {:.2} {:.2}\n", l[0], l[1], l[2]);
        s
    }
}
