//! Parquet output: rows into `ROOT/TABLE/date=YYYY-MM-DD/hour=HH/NAME.parquet`,
//! each file written under a hidden name (`.NAME.parquet.tmp`, which Spark,
//! DuckDB and Hive skip), synced, then renamed. Writing the same name again
//! replaces the file whole.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::{Cell, ColType, Column, Row};

/// `("YYYY-MM-DD", "HH")` of a time (UTC).
pub fn partition(ts_ns: u64) -> (String, String) {
    let t = linecap_writer::names::utc_rfc3339(ts_ns);
    (t[..10].to_string(), t[11..13].to_string())
}

fn schema(cols: &[Column]) -> Arc<Schema> {
    Arc::new(Schema::new(
        cols.iter()
            .map(|c| {
                let ty = match c.ty {
                    ColType::I64 => DataType::Int64,
                    ColType::Str => DataType::Utf8,
                };
                Field::new(c.name, ty, true)
            })
            .collect::<Vec<_>>(),
    ))
}

fn batch(cols: &[Column], rows: &[&Row]) -> io::Result<RecordBatch> {
    let arrays: Vec<ArrayRef> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| -> ArrayRef {
            match c.ty {
                ColType::I64 => {
                    Arc::new(Int64Array::from_iter(rows.iter().map(
                        |r| match r.cells.get(i) {
                            Some(Cell::I64(v)) => Some(*v),
                            _ => None,
                        },
                    )))
                }
                ColType::Str => {
                    Arc::new(StringArray::from_iter(rows.iter().map(
                        |r| match r.cells.get(i) {
                            Some(Cell::Str(s)) => Some(s.as_str()),
                            _ => None,
                        },
                    )))
                }
            }
        })
        .collect();
    RecordBatch::try_new(schema(cols), arrays).map_err(io::Error::other)
}

/// Sync a directory (so a rename in it is durable).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `rows` to `path` (hidden name, sync, rename).
pub fn write_file(path: &Path, cols: &[Column], rows: &[&Row]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let file = File::create(&tmp)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut w =
            ArrowWriter::try_new(file, schema(cols), Some(props)).map_err(io::Error::other)?;
        if !rows.is_empty() {
            w.write(&batch(cols, rows)?).map_err(io::Error::other)?;
        }
        let file = w.into_inner().map_err(io::Error::other)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Write rows into their hour partitions under `root/table/` as files named
/// `stem.parquet`; returns the partition directories written.
pub fn write_partitioned(
    root: &Path,
    table: &str,
    stem: &str,
    cols: &[Column],
    rows: &[Row],
) -> io::Result<Vec<PathBuf>> {
    let mut parts: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for r in rows {
        parts.entry(partition(r.ts_ns)).or_default().push(r);
    }
    let mut dirs = Vec::new();
    for ((date, hour), rows) in parts {
        let dir = root
            .join(table)
            .join(format!("date={date}"))
            .join(format!("hour={hour}"));
        write_file(&dir.join(format!("{stem}.parquet")), cols, &rows)?;
        dirs.push(dir);
    }
    Ok(dirs)
}

/// Read back a table written by this module (all files under `dir`, hidden
/// ones skipped), rows in file order. For tests and checks.
pub fn read_rows(dir: &Path, cols: &[Column]) -> io::Result<Vec<Row>> {
    use arrow_array::Array;
    let mut files = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        if !d.exists() {
            return Ok(());
        }
        let mut es: Vec<_> = fs::read_dir(d)?.collect::<Result<_, _>>()?;
        es.sort_by_key(|e| e.file_name());
        for e in es {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') || n.starts_with('_') {
                continue;
            }
            if e.file_type()?.is_dir() {
                walk(&e.path(), out)?;
            } else if n.ends_with(".parquet") {
                out.push(e.path());
            }
        }
        Ok(())
    }
    walk(dir, &mut files)?;
    let mut rows = Vec::new();
    for f in files {
        let r =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(File::open(&f)?)
                .and_then(|b| b.build())
                .map_err(io::Error::other)?;
        for b in r {
            let b = b.map_err(io::Error::other)?;
            for i in 0..b.num_rows() {
                let mut cells = Vec::with_capacity(cols.len());
                for (j, c) in cols.iter().enumerate() {
                    let a = b.column(j);
                    cells.push(if a.is_null(i) {
                        Cell::Null
                    } else {
                        match c.ty {
                            ColType::I64 => a
                                .as_any()
                                .downcast_ref::<Int64Array>()
                                .map_or(Cell::Null, |x| Cell::I64(x.value(i))),
                            ColType::Str => a
                                .as_any()
                                .downcast_ref::<StringArray>()
                                .map_or(Cell::Null, |x| Cell::Str(x.value(i).to_string())),
                        }
                    });
                }
                rows.push(Row { ts_ns: 0, cells });
            }
        }
    }
    Ok(rows)
}
