//! What the benchmarks share: percentiles of samples, and running one measurement in a child
//! process of the benchmark itself (so each chain starts from a fresh process and its peak
//! memory is its own).

/// The `p`-th quantile (0.0 to 1.0) of `values`, nearest rank.
pub fn percentile<T: PartialOrd + Copy>(values: &[T], p: f64) -> T {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    sorted[((sorted.len() as f64 - 1.0) * p.clamp(0.0, 1.0)).round() as usize]
}

/// ADD and DEL latencies (ms) as the benchmarks' children report them: median and p90.
pub fn latency_summary(add_ms: &[f64], del_ms: &[f64]) -> serde_json::Map<String, serde_json::Value> {
    let mut summary = serde_json::Map::new();
    for (key, samples) in [("add", add_ms), ("del", del_ms)] {
        summary.insert(format!("{key}_median_ms"), percentile(samples, 0.5).into());
        summary.insert(format!("{key}_p90_ms"), percentile(samples, 0.9).into());
    }
    summary
}

/// The sizes (N) a benchmark was asked for on its command line, else `default`.
pub fn sizes(args: &[String], default: usize) -> Vec<usize> {
    if args.is_empty() {
        vec![default]
    } else {
        args.iter().map(|a| a.parse().expect("N is a number")).collect()
    }
}

/// Runs this benchmark's own executable with `args` and returns the JSON it prints.
pub fn run_child(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(args)
        .output()
        .expect("run the benchmark child");
    assert!(out.status.success(), "benchmark child {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the child prints JSON")
}

#[cfg(test)]
mod tests {
    #[test]
    fn nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(super::percentile(&v, 0.5), 3.0);
        assert_eq!(super::percentile(&v, 0.9), 5.0);
        assert_eq!(super::percentile(&[7u32], 0.99), 7);
    }
}
