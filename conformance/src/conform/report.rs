//! What a run found: every check as pass, fail or skip with its reason and the section of the
//! CNI spec (containernetworking/cni SPEC.md) it comes from, written as text, JSON or JUnit.

use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub check: String,
    /// The cniVersion the check ran in, `-` for checks independent of it.
    pub version: String,
    pub outcome: Outcome,
    pub reason: String,
    pub section: &'static str,
}

/// The checks of one plugin binary.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plugin: String,
    pub kind: String,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(plugin: &str, kind: &str) -> Report {
        Report { plugin: plugin.to_string(), kind: kind.to_string(), checks: Vec::new() }
    }

    pub fn push(&mut self, check: &str, version: &str, section: &'static str, outcome: Result<String, Verdict>) {
        let (outcome, reason) = match outcome {
            Ok(reason) => (Outcome::Pass, reason),
            Err(Verdict::Fail(reason)) => (Outcome::Fail, reason),
            Err(Verdict::Skip(reason)) => (Outcome::Skip, reason),
        };
        self.checks.push(Check { check: check.to_string(), version: version.to_string(), outcome, reason, section });
    }

    pub fn skip(&mut self, check: &str, version: &str, section: &'static str, reason: impl Into<String>) {
        self.push(check, version, section, Err(Verdict::Skip(reason.into())));
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
    }

    pub fn failed(&self) -> bool {
        self.count(Outcome::Fail) > 0
    }
}

/// Why a check did not pass: a departure from the spec, or a reason it could not run.
#[derive(Debug, Clone)]
pub enum Verdict {
    Fail(String),
    Skip(String),
}

impl From<String> for Verdict {
    fn from(s: String) -> Verdict {
        Verdict::Fail(s)
    }
}

pub fn fail<T>(reason: impl Into<String>) -> Result<T, Verdict> {
    Err(Verdict::Fail(reason.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Junit,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "text" => Format::Text,
            "json" => Format::Json,
            "junit" => Format::Junit,
            _ => return None,
        })
    }
}

pub fn render(reports: &[Report], format: Format) -> String {
    match format {
        Format::Text => reports.iter().map(text).collect::<Vec<_>>().join("\n") + &total(reports),
        Format::Json => serde_json::to_string_pretty(reports).expect("reports serialize") + "\n",
        Format::Junit => junit(reports),
    }
}

fn text(r: &Report) -> String {
    let mut out = format!("{} ({})\n", r.plugin, r.kind);
    for c in &r.checks {
        let tag = match c.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        };
        let _ = writeln!(out, "  {tag}  {:<6} {:<28} {}  [{}]", c.version, c.check, c.reason, c.section);
    }
    let _ = writeln!(
        out,
        "  {} passed, {} failed, {} skipped",
        r.count(Outcome::Pass),
        r.count(Outcome::Fail),
        r.count(Outcome::Skip)
    );
    out
}

/// The last line: every plugin's checks together.
fn total(reports: &[Report]) -> String {
    let sum = |o: Outcome| reports.iter().map(|r| r.count(o)).sum::<usize>();
    format!("\nconformance: {} passed, {} failed, {} skipped\n", sum(Outcome::Pass), sum(Outcome::Fail), sum(Outcome::Skip))
}

/// JUnit XML as CI systems read it: a testsuite per plugin, a testcase per check.
fn junit(reports: &[Report]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for r in reports {
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
            xml(&r.plugin),
            r.checks.len(),
            r.count(Outcome::Fail),
            r.count(Outcome::Skip)
        );
        for c in &r.checks {
            let name = xml(&format!("{} {}", c.version, c.check));
            let _ = write!(out, "    <testcase classname=\"{}\" name=\"{name}\">", xml(&r.plugin));
            let body = xml(&format!("{} [{}]", c.reason, c.section));
            match c.outcome {
                Outcome::Pass => {}
                Outcome::Fail => {
                    let _ = write!(out, "<failure message=\"{body}\">{body}</failure>");
                }
                Outcome::Skip => {
                    let _ = write!(out, "<skipped message=\"{body}\"/>");
                }
            }
            out.push_str("</testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_escapes_and_counts() {
        let mut r = Report::new("/x/<p>", "main");
        r.push("ADD", "1.0.0", "Section 2", Ok("ok".into()));
        r.push("DEL", "1.0.0", "Section 2", fail("bad \"quote\" & more"));
        r.skip("GC", "1.0.0", "Section 2", "before 1.1.0");
        let x = junit(&[r]);
        assert!(x.contains("name=\"/x/&lt;p&gt;\" tests=\"3\" failures=\"1\" skipped=\"1\""), "{x}");
        assert!(x.contains("bad &quot;quote&quot; &amp; more"), "{x}");
    }
}
