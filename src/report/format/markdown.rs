//! A GitHub-flavoured Markdown table, as report.md embeds it.

use anyhow::Result;

use super::cells::{metric_cells, metric_titles, preamble, titles, Exporter};
use crate::report::Report;

pub struct Markdown;

fn escape(cell: &str) -> String {
    cell.replace('|', "\\|")
}

impl Exporter for Markdown {
    fn serialize(&self, report: &Report) -> Result<Vec<u8>> {
        let mut out = String::new();
        for line in preamble(report) {
            out.push_str(&format!("{}\n\n", escape(&line)));
        }
        let mut header: Vec<String> = titles(&report.columns);
        header.extend(metric_titles(report).iter().map(|s| s.to_string()));
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        out.push_str(&format!("|{}|\n", vec!["---"; header.len()].join("|")));
        for row in &report.rows {
            let mut cells: Vec<String> = report
                .columns
                .iter()
                .map(|c| escape(&row.values[c]))
                .collect();
            cells.extend(metric_cells(report, row).iter().map(|c| escape(c)));
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        if !report.broken.is_empty() {
            out.push_str("\nBroken run folders (left out above):\n\n");
            for b in &report.broken {
                out.push_str(&format!(
                    "- `{}`: {}\n",
                    b.dir.display(),
                    escape(&b.problem)
                ));
            }
        }
        Ok(out.into_bytes())
    }
}
