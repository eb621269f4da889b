//! Report formats: one small `Exporter` trait, one file per format, and
//! `cells` for the text that the table and markdown share.

mod cells;
mod csv;
mod json;
mod markdown;
mod table;

pub(crate) use cells::titles;
pub use cells::Exporter;

/// The formats `report --format` writes, one file each in this folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    #[value(alias = "md")]
    Markdown,
    Csv,
    Json,
}

pub fn exporter(format: Format) -> Box<dyn Exporter> {
    match format {
        Format::Table => Box::new(table::Table),
        Format::Markdown => Box::new(markdown::Markdown),
        Format::Csv => Box::new(csv::Csv),
        Format::Json => Box::new(json::Json),
    }
}
