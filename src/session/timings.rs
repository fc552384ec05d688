//! Where a session's time went, phase by phase (`--timings`, `sbx bench`).

use std::time::{Duration, Instant};

/// Where a session's time went, phase by phase (phases may overlap: they run in parallel).
#[derive(Debug, Clone)]
pub struct Timings {
    start: Instant,
    pub phases: Vec<(&'static str, Duration, Duration)>,
    pub first_output: Option<Duration>,
}

impl Timings {
    pub fn new(start: Instant) -> Self {
        Timings {
            start,
            phases: Vec::new(),
            first_output: None,
        }
    }

    /// When the session started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records a phase that began at `began` and ends now.
    pub fn record(&mut self, name: &'static str, began: Instant) {
        self.phases
            .push((name, began.duration_since(self.start), began.elapsed()));
    }

    pub fn total(&self) -> Duration {
        self.start.elapsed()
    }

    /// The figures for `sbx bench`.
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: &Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
        serde_json::json!({
            "phases": self.phases.iter().map(|(n, at, took)| serde_json::json!({
                "name": n, "start_ms": ms(at), "took_ms": ms(took)
            })).collect::<Vec<_>>(),
            "first_output_ms": self.first_output.as_ref().map(ms),
            "total_ms": ms(&self.total()),
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::from("phase                 start      took\n");
        for (name, at, took) in &self.phases {
            out.push_str(&format!(
                "{name:<20} {:>7.1}ms {:>7.1}ms\n",
                at.as_secs_f64() * 1e3,
                took.as_secs_f64() * 1e3
            ));
        }
        if let Some(f) = self.first_output {
            out.push_str(&format!(
                "first output byte     {:>7.1}ms\n",
                f.as_secs_f64() * 1e3
            ));
        }
        out.push_str(&format!(
            "total                 {:>7.1}ms\n",
            self.total().as_secs_f64() * 1e3
        ));
        out
    }
}
