//! The engine `cargo test` runs: seeds (built in, then `corpus/TARGET/`), then mutants of
//! the pool until the time budget is spent. Deterministic for a seed; a mutant the target
//! accepts (it parsed) joins the pool, so later mutants start from inputs that get deep.
//! A panic or a case slower than [`SLOW_CASE`] is a finding: the input is saved and reported.

use crate::mutate::{mutate, object_keys, Rng};
use std::cell::RefCell;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One input surface.
pub struct Target {
    pub name: &'static str,
    /// Real inputs to start from (configs, requests, replies); `corpus/NAME/` adds to them.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens spliced into inputs.
    pub dictionary: &'static [&'static [u8]],
    /// Runs one input: must not panic, and asserts the target's invariants when it parsed.
    /// True when the input was accepted.
    pub run: fn(&[u8]) -> bool,
}

/// A case that takes this long twice in a row is a finding: the parsers are all linear, and
/// the largest input takes well under a second in a debug build (twice, so that a busy
/// machine alone does not make one).
pub const SLOW_CASE: Duration = Duration::from_secs(5);
/// Accepted mutants kept to mutate further, and the largest kept.
const POOL_LIMIT: usize = 512;
const POOL_INPUT_LIMIT: usize = 8 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub time: Duration,
    /// Stops after this many cases even with time left (exact reproduction of a run).
    pub cases: Option<u64>,
    pub seed: u64,
}

impl Budget {
    /// `BERTH_FUZZ_SECS` (default `default_secs`), `BERTH_FUZZ_CASES`, `BERTH_FUZZ_SEED`.
    pub fn from_env(default_secs: f64) -> Budget {
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let secs = var("BERTH_FUZZ_SECS").and_then(|v| v.parse::<f64>().ok()).unwrap_or(default_secs);
        Budget {
            time: Duration::from_secs_f64(secs.max(0.0)),
            cases: var("BERTH_FUZZ_CASES").and_then(|v| v.parse().ok()),
            seed: var("BERTH_FUZZ_SEED").and_then(|v| v.parse().ok()).unwrap_or(0x00be_27f0_22ed),
        }
    }
}

/// Mutants run after the seeds even when the time budget is spent.
const MIN_MUTANTS: u64 = 100;

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub cases: u64,
    pub accepted: u64,
    pub seeds: usize,
    pub pool: usize,
    pub elapsed: Duration,
}

impl Report {
    /// One line on what ran, with the seed that replays it.
    pub fn summary(&self, seed: u64) -> String {
        format!(
            "{} cases in {:.1} s ({} accepted, {} seeds, pool {}, seed {seed})",
            self.cases,
            self.elapsed.as_secs_f64(),
            self.accepted,
            self.seeds,
            self.pool
        )
    }
}

/// What went wrong on one input.
#[derive(Debug)]
pub struct Finding {
    pub target: &'static str,
    pub what: String,
    pub input: Vec<u8>,
    pub saved: Option<PathBuf>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = String::from_utf8_lossy(&self.input[..self.input.len().min(2048)]).into_owned();
        write!(f, "fuzz target {}: {} on input {:?}", self.target, self.what, shown)?;
        if let Some(path) = &self.saved {
            write!(f, " (saved as {}; copy it into corpus/{}/ once fixed)", path.display(), self.target)?;
        }
        Ok(())
    }
}

/// The checked-in corpus of every target.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Built-in seeds, then the files of `corpus/NAME/` in name order: one input per file, or
/// one per line, in hex, in a `.hex` file (AFL++'s queue, thousands of inputs, in one file).
pub fn seeds_of(target: &Target) -> Vec<Vec<u8>> {
    let mut seeds = (target.seeds)();
    let dir = corpus_dir().join(target.name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    files.sort();
    for file in files {
        let Ok(bytes) = std::fs::read(&file) else { continue };
        if file.extension().is_some_and(|e| e == "hex") {
            seeds.extend(String::from_utf8_lossy(&bytes).lines().filter_map(unhex));
        } else {
            seeds.push(bytes);
        }
    }
    seeds
}

fn unhex(line: &str) -> Option<Vec<u8>> {
    let line = line.trim();
    line.len().is_multiple_of(2).then_some(())?;
    (0..line.len()).step_by(2).map(|i| u8::from_str_radix(line.get(i..i + 2)?, 16).ok()).collect()
}

/// Fuzzes `target` within `budget`.
pub fn fuzz(target: &Target, budget: Budget) -> Result<Report, Finding> {
    install_quiet_hook();
    let started = Instant::now();
    let seeds = seeds_of(target);
    let keys = object_keys(&seeds);
    let mut report = Report { seeds: seeds.len(), ..Report::default() };
    for seed in &seeds {
        report.accepted += u64::from(run_one(target, seed)?);
        report.cases += 1;
    }
    let mut pool = seeds;
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let mut rng = Rng::new(budget.seed ^ berth_util::hash::fnv1a64([target.name.as_bytes()]));
    // A few mutants whatever the clock says: on a loaded machine the seeds alone can use the
    // budget, and a run that mutates nothing proves nothing.
    let at_least = report.cases + MIN_MUTANTS;
    let more_time = |cases: u64| started.elapsed() < budget.time || cases < at_least;
    while more_time(report.cases) && budget.cases.is_none_or(|max| report.cases < max) {
        let parent = pool[rng.below(pool.len())].clone();
        let input = mutate(&mut rng, &parent, &pool, target.dictionary, &keys);
        report.cases += 1;
        if run_one(target, &input)? {
            report.accepted += 1;
            // Oversized inputs are tried once; grown further they would slow every case.
            if input.len() > POOL_INPUT_LIMIT {
                continue;
            }
            if pool.len() < POOL_LIMIT {
                pool.push(input);
            } else {
                let at = rng.below(pool.len());
                pool[at] = input;
            }
        }
    }
    report.pool = pool.len();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Runs one input, turning a panic or a slow case into a finding.
pub fn run_one(target: &Target, input: &[u8]) -> Result<bool, Finding> {
    let started = Instant::now();
    QUIET.with(|q| *q.borrow_mut() = Some(String::new()));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let message = QUIET.with(|q| q.borrow_mut().take()).unwrap_or_default();
    let what = match outcome {
        Err(_) => format!("panicked: {message}"),
        Ok(_) if started.elapsed() > SLOW_CASE && slow_again(target, input) => format!("took {:?}", started.elapsed()),
        Ok(accepted) => return Ok(accepted),
    };
    Err(Finding { target: target.name, what, input: input.to_vec(), saved: save_finding(target.name, input) })
}

fn slow_again(target: &Target, input: &[u8]) -> bool {
    let started = Instant::now();
    let _ = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    started.elapsed() > SLOW_CASE
}

fn save_finding(target: &str, input: &[u8]) -> Option<PathBuf> {
    let dir = std::env::temp_dir().join("berth-fuzz-findings").join(target);
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{:016x}", berth_util::hash::fnv1a64([input])));
    std::fs::write(&path, input).ok()?;
    Some(path)
}

thread_local! {
    /// While a case runs on this thread: its panic message, instead of the default hook's print.
    static QUIET: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let quiet = QUIET.with(|q| {
                let mut q = q.borrow_mut();
                if let Some(message) = q.as_mut() {
                    *message = format!("{info}");
                }
                q.is_some()
            });
            if !quiet {
                default(info);
            }
        }));
    });
}

/// For the test of each target: fuzzes it within the budget from the environment (default
/// `default_secs`), prints what ran, and panics with the finding if there is one.
pub fn check(target: &Target, default_secs: f64) -> Report {
    let budget = Budget::from_env(default_secs);
    match fuzz(target, budget) {
        Ok(report) => {
            // Straight to stderr, past the test harness's capture: CI's log shows what ran.
            let _ = writeln!(std::io::stderr(), "fuzz {}: {}", target.name, report.summary(budget.seed));
            report
        }
        Err(finding) => panic!("{finding}"),
    }
}
