//! Rendering a one-shot report: CSV, JSON or a terminal table.
//!
//! The CSV columns are a contract (spreadsheets and scripts read them):
//! `tenant_id,customer,mailbox,display_name,signal,target,rule_id,rule_name,enabled,hidden,keeps_copy,severity,posture_blocked,fingerprint`,
//! one row per (detection, target), an empty `mailbox` for transport rules.
//! JSON is `{"detections": [Detection…], "tenants": [TenantSummary…]}`.

use std::io::Write;

use fwdwatch_shared::contracts::{Detection, TenantSummary};
use serde::Serialize;

/// The CSV header, in order.
pub const CSV_COLUMNS: [&str; 14] = [
    "tenant_id",
    "customer",
    "mailbox",
    "display_name",
    "signal",
    "target",
    "rule_id",
    "rule_name",
    "enabled",
    "hidden",
    "keeps_copy",
    "severity",
    "posture_blocked",
    "fingerprint",
];

/// What `fwdwatch report` found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub detections: Vec<Detection>,
    pub tenants: Vec<TenantSummary>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
    Table,
}

fn rows(report: &Report) -> impl Iterator<Item = [String; 14]> + '_ {
    report.detections.iter().flat_map(|d| {
        d.targets.iter().map(move |target| {
            [
                d.tenant_id.clone(),
                d.tenant_name.clone(),
                d.mailbox_address().to_owned(),
                d.mailbox
                    .as_ref()
                    .map(|m| m.display_name.clone())
                    .unwrap_or_default(),
                d.signal.as_str().to_owned(),
                target.clone(),
                d.rule_id.clone().unwrap_or_default(),
                d.rule_name.clone().unwrap_or_default(),
                d.enabled.to_string(),
                d.hidden.to_string(),
                d.keeps_copy.to_string(),
                d.severity.as_str().to_owned(),
                d.posture_blocked.to_string(),
                d.fingerprint.clone(),
            ]
        })
    })
}

/// Writes the report in `format` to `out`.
pub fn write(report: &Report, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(CSV_COLUMNS)?;
            for row in rows(report) {
                writer.write_record(&row)?;
            }
            writer.flush()?;
        }
        Format::Table => write_table(report, out)?,
    }
    Ok(())
}

fn write_table(report: &Report, out: &mut dyn Write) -> anyhow::Result<()> {
    // A narrower view for a terminal: the columns an operator scans first.
    let picked = [11usize, 1, 2, 4, 5, 7];
    let table: Vec<Vec<String>> = rows(report)
        .map(|row| picked.iter().map(|&i| row[i].clone()).collect())
        .collect();
    let header: Vec<String> = picked.iter().map(|&i| CSV_COLUMNS[i].to_owned()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count()).min(48);
        }
    }
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let text: String = c.chars().take(*w).collect();
                format!("{text:<w$}", w = *w)
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(&header))?;
    for row in &table {
        writeln!(out, "{}", line(row))?;
    }
    let failed = report
        .tenants
        .iter()
        .filter(|t| t.first_error().is_some())
        .count();
    writeln!(
        out,
        "\n{} forwards ({} targets) in {} tenants; {} tenants with a failed check",
        report.detections.len(),
        table.len(),
        report.tenants.len(),
        failed
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut transport = Detection::example();
        transport.mailbox = None;
        transport.signal = fwdwatch_shared::contracts::Signal::TransportRule;
        transport.targets = vec!["a@evil.example".into(), "b@evil.example".into()];
        Report {
            detections: vec![Detection::example(), transport],
            tenants: vec![TenantSummary::example()],
        }
    }

    #[test]
    fn csv_has_the_exact_header_and_one_row_per_target() {
        let mut out = Vec::new();
        write(&report(), Format::Csv, &mut out).expect("csv");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "tenant_id,customer,mailbox,display_name,signal,target,rule_id,rule_name,enabled,hidden,keeps_copy,severity,posture_blocked,fingerprint"
        );
        assert_eq!(lines.len(), 1 + 1 + 2, "one row per (detection, target)");
        assert!(lines[1].contains(",victim@contoso.com,"));
        assert!(
            lines[1].contains(",15394007230974001153,"),
            "u64 rule id kept exactly"
        );
        assert!(
            lines[2].starts_with("4fdbff88-1c2d-4e5f-8a9b-0c1d2e3f4a5b,Contoso Ltd,,"),
            "empty mailbox for transport rules: {}",
            lines[2]
        );
    }

    #[test]
    fn json_has_detections_and_tenants() {
        let mut out = Vec::new();
        write(&report(), Format::Json, &mut out).expect("json");
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid json");
        assert_eq!(value["detections"].as_array().map(Vec::len), Some(2));
        assert_eq!(value["tenants"][0]["type"], "tenant_summary");
    }

    #[test]
    fn table_lists_every_target() {
        let mut out = Vec::new();
        write(&report(), Format::Table, &mut out).expect("table");
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("collector@evil.example"));
        assert!(text.contains("b@evil.example"));
        assert!(
            text.contains("2 forwards (3 targets) in 1 tenants; 1 tenants with a failed check")
        );
    }
}
