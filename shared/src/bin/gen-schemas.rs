//! Writes `docs/schemas/*.schema.json` and `*.example.json` from the contract types.
//!
//! Run from the workspace root after changing a message:
//! `cargo run -p fwdwatch-shared --bin gen-schemas`.

use std::path::PathBuf;

use fwdwatch_shared::contracts::schema;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas"));
    std::fs::create_dir_all(&dir)?;
    for doc in schema::all() {
        let schema_path = dir.join(format!("{}.schema.json", doc.name));
        let example_path = dir.join(format!("{}.example.json", doc.name));
        std::fs::write(&schema_path, schema::render(&doc.schema))?;
        std::fs::write(&example_path, schema::render(&doc.example))?;
        println!(
            "wrote {} and {}",
            schema_path.display(),
            example_path.display()
        );
    }
    Ok(())
}
