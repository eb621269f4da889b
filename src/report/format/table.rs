//! Aligned plain text for the terminal.

use anyhow::Result;

use super::cells::{metric_cells, metric_titles, preamble, titles, Exporter};
use crate::report::Report;

pub struct Table;

impl Exporter for Table {
    fn serialize(&self, report: &Report) -> Result<Vec<u8>> {
        let mut out = preamble(report).join("\n") + "\n\n";
        let mut header: Vec<String> = titles(&report.columns);
        header.extend(metric_titles(report).iter().map(|s| s.to_string()));
        let body: Vec<Vec<String>> = report
            .rows
            .iter()
            .map(|row| {
                let mut cells: Vec<String> = report
                    .columns
                    .iter()
                    .map(|c| row.values[c].clone())
                    .collect();
                cells.extend(metric_cells(report, row));
                cells
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                body.iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for line in std::iter::once(&header).chain(body.iter()) {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        if !report.broken.is_empty() {
            out.push_str(&format!(
                "\n{} broken run folders (left out above):\n",
                report.broken.len()
            ));
            for b in &report.broken {
                out.push_str(&format!("  {}: {}\n", b.dir.display(), b.problem));
            }
        }
        Ok(out.into_bytes())
    }
}
