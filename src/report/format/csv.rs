//! One CSV record per row, numbers unformatted, for spreadsheets and scripts.

use anyhow::Result;

use super::cells::Exporter;
use crate::report::{Report, Stat};

pub struct Csv;

fn num(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

impl Exporter for Csv {
    fn serialize(&self, report: &Report) -> Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header: Vec<String> = report.columns.clone();
        for name in [
            "n",
            "status",
            "best_val_acc_mean",
            "best_val_acc_std",
            "final_val_acc_mean",
            "final_val_acc_std",
            "test_acc_mean",
            "test_acc_std",
            "runs_validated_on_test",
            "best_epoch_mean",
            "epochs_done_min",
            "epochs_done_max",
            "epochs_planned",
            "wall_seconds_mean",
            "images_per_sec_mean",
            "run_ids",
        ] {
            header.push(name.into());
        }
        w.write_record(&header)?;
        for row in &report.rows {
            let mut rec: Vec<String> = report
                .columns
                .iter()
                .map(|c| row.values[c].clone())
                .collect();
            let pair = |s: &Stat| [num(s.mean), num(s.std)];
            rec.push(row.run_ids.len().to_string());
            rec.push(row.status.clone());
            rec.extend(pair(&row.best_val_acc));
            rec.extend(pair(&row.final_val_acc));
            rec.extend(pair(&row.test_acc));
            rec.push(row.val_is_test.to_string());
            rec.push(num(row.best_epoch.mean));
            rec.push(row.epochs_done_min.to_string());
            rec.push(row.epochs_done_max.to_string());
            rec.push(row.epochs_planned.to_string());
            rec.push(num(row.wall_seconds.mean));
            rec.push(num(row.images_per_sec.mean));
            rec.push(row.run_ids.join(" "));
            w.write_record(&rec)?;
        }
        w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
    }
}
