//! `backup command` and `backup pg-dump`: a command's standard output as a
//! deduplicated snapshot, and restoring it to a file or to standard output.
//!
//! The output is cut with FastCDC as it arrives (never a temporary file of
//! the whole stream). A chunk that is not in the previous snapshot of the
//! same name is delta-encoded against the chunk that followed the last one
//! both streams share: content-defined boundaries re-synchronise after a
//! change, so that chunk is the changed chunk's old version. The snapshot is
//! committed only if the command exits 0 (and, for pg_dump, its output ends
//! with the dump's completion line); otherwise the error carries the tail of
//! the command's stderr.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::error::{Error, Result, io_err};
use crate::id::{ChunkId, SnapshotId};
use crate::pipeline::store::{Run, StoredFile};
use crate::repo::Repository;
use crate::repo::delta::DeltaEncoder;
use crate::repo::reader::BlobReader;
use crate::repo::snapshot::{FileEntry, Snapshot, SourceKind, StreamInfo};
use crate::repo::writer::BlobWriter;

/// Bytes of the command's stderr kept for the error message.
const STDERR_TAIL: usize = 2048;
/// The last line of a complete plain-format pg_dump.
pub const PG_DUMP_COMPLETE: &str = "-- PostgreSQL database dump complete";

#[derive(Clone, Debug)]
pub struct StreamOptions {
    pub name: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    pub kind: SourceKind,
    pub label: Option<String>,
    /// The command the snapshot records instead of `command` (an upload
    /// stored by `serve`'s import runs `cat` on it, but came from a client).
    pub recorded_as: Option<Vec<String>>,
}

/// The pg_dump command line for `backup pg-dump`: plain SQL (measured to
/// dedup better than `--format=custom --compress=0`, see `docs/benchmarks.md`).
pub fn pg_dump_command(pg_dump: &str, conninfo: &str, extra: &[String]) -> Vec<String> {
    let mut cmd = vec![
        pg_dump.to_string(),
        "--format=plain".to_string(),
        format!("--dbname={conninfo}"),
    ];
    cmd.extend(extra.iter().cloned());
    cmd
}

/// The name a pg_dump snapshot gets when `--name` is not given: the
/// database named in the connection string.
pub fn default_dump_name(conninfo: &str) -> String {
    let db = conninfo
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("dbname="))
        .map(|v| v.trim_matches('\'').to_string())
        .or_else(|| std::env::var("PGDATABASE").ok())
        .unwrap_or_else(|| "postgres".to_string());
    format!("pg_dump-{db}")
}

/// Checks the command can be run (given, and found on PATH when it has no
/// `/`) before a repository is opened or created for it.
pub fn check_command(command: &[String]) -> Result<()> {
    let program = command
        .first()
        .ok_or_else(|| Error::Usage("give the command to run after --".into()))?;
    let found = if program.contains('/') {
        std::path::Path::new(program).is_file()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
    };
    if !found {
        return Err(Error::Usage(format!(
            "cannot run {program:?}: not found{}; no snapshot was saved (is it installed?)",
            if program.contains('/') {
                ""
            } else {
                " on PATH"
            }
        )));
    }
    Ok(())
}

/// Runs the command and stores its output as a snapshot.
pub fn backup_stream(repo: &Repository, opts: &StreamOptions) -> Result<(SnapshotId, Snapshot)> {
    let (program, args) = opts
        .command
        .split_first()
        .ok_or_else(|| Error::Usage("give the command to run after --".into()))?;
    let started = Instant::now();
    let time = jiff::Timestamp::now();
    let previous = repo.snapshots()?;
    let mut writer = BlobWriter::new(repo)?;
    let mut encoder = DeltaEncoder::new(repo, crate::repo::delta::FAST_LEVEL)?;
    let parent = previous
        .ok
        .iter()
        .rev()
        .filter(|(_, s)| s.stream.as_ref().is_some_and(|st| st.name == opts.name))
        .find_map(|(_, s)| s.files.first())
        .filter(|_| repo.delta_bases());
    let bases = match parent.map(|f| writer.reader().manifest(f)) {
        Some(Ok(ids)) => ids,
        Some(Err(e)) => {
            tracing::warn!(
                "{}: previous snapshot unreadable ({e}); no deltas",
                opts.name
            );
            Vec::new()
        }
        None => Vec::new(),
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Usage(format!(
                "cannot run {program:?}: {e}; no snapshot was saved (is it installed and on PATH?)"
            ))
        })?;
    let mut stderr = child.stderr.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let (stored, stderr_tail) = std::thread::scope(|s| {
        // Drain stderr meanwhile (a full pipe would stall the command),
        // keeping its tail for the error message.
        let tail = s.spawn(move || {
            let mut tail = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            tail
        });
        let stored = store_stream(&mut writer, &mut encoder, stdout, &bases);
        (
            stored,
            tail.join().expect("the stderr reader does not panic"),
        )
    });
    let status = child
        .wait()
        .map_err(io_err(format!("waiting for {program}")))?;
    let tail =
        String::from_utf8_lossy(&stderr_tail[stderr_tail.len().saturating_sub(STDERR_TAIL)..])
            .trim()
            .to_string();
    let failed = |why: String| {
        Error::Failed(format!(
            "{} {why}; no snapshot was saved{}",
            opts.command.join(" "),
            if tail.is_empty() {
                String::new()
            } else {
                format!(". Its stderr ended with:\n{tail}")
            }
        ))
    };
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        return Err(failed(match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (_, Some(signal)) => format!("was killed by signal {signal}"),
            _ => format!("failed ({status})"),
        }));
    }
    let (stored, tail) = stored?;
    if opts.kind == SourceKind::PgDump && !has_line(&tail, PG_DUMP_COMPLETE) {
        // Exit status 0 and no completion line: the dump was cut short.
        return Err(failed(format!(
            "exited 0 but its output does not end with {PG_DUMP_COMPLETE:?} (cut short?)"
        )));
    }
    let manifest = writer.add_manifest(&stored.ids)?;
    let recorded = opts.recorded_as.as_ref().unwrap_or(&opts.command);
    let file = FileEntry {
        name: opts.name.clone(),
        source_path: recorded[0].clone().into(),
        size: stored.size,
        blake3: stored.blake3.to_hex().to_string(),
        page_size: 0,
        journal_mode: String::new(),
        mode: 0o600,
        chunk_count: stored.ids.len() as u64,
        manifest,
        owner: None,
    };
    drop(encoder);
    let run = Run {
        started,
        time,
        source: opts.kind,
        label: opts.label.clone(),
        name: None,
    };
    let info = StreamInfo {
        name: opts.name.clone(),
        command: recorded.clone(),
    };
    run.commit(repo, writer, vec![file], None, Some(info))
}

/// Whether `line` is among the last lines of `tail` (pg_dump 15.14 and later
/// follow the completion line with an `\unrestrict` line).
pub fn has_line(tail: &[u8], line: &str) -> bool {
    String::from_utf8_lossy(tail)
        .lines()
        .any(|l| l.trim_end() == line)
}

/// Stores the stream; returns it as stored and its last 512 bytes (for the
/// completeness check).
fn store_stream(
    writer: &mut BlobWriter<'_>,
    encoder: &mut DeltaEncoder<'_>,
    source: impl Read,
    bases: &[ChunkId],
) -> Result<(StoredFile, Vec<u8>)> {
    let params = writer.chunker();
    let crypto = writer.crypto().clone();
    let position: HashMap<ChunkId, usize> =
        bases.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut hasher = blake3::Hasher::new();
    let mut ids = Vec::new();
    let mut size = 0u64;
    let mut tail = Vec::new();
    // Where in the previous stream the next chunk would be, had nothing changed.
    let mut next_base = 0usize;
    let chunks = fastcdc::v2020::StreamCDC::new(
        source,
        params.cdc_min as usize,
        params.cdc_avg as usize,
        params.cdc_max as usize,
    );
    for chunk in chunks {
        let chunk = chunk.map_err(|e| io_err("reading the command's output")(e.into()))?;
        let data = &chunk.data;
        hasher.update(data);
        size += data.len() as u64;
        let id = crypto.chunk_id(data);
        let delta = match position.get(&id) {
            Some(&at) => {
                next_base = at + 1;
                None
            }
            None => match resync(encoder, bases, next_base, data) {
                Some(at) => {
                    next_base = at + 1;
                    encoder.encode(id, data, bases[at])?
                }
                None => None,
            },
        };
        writer.add_with_base(id, data, delta)?;
        ids.push(id);
        tail.extend_from_slice(&data[data.len().saturating_sub(512)..]);
        tail.drain(..tail.len().saturating_sub(512));
    }
    let stored = StoredFile {
        ids,
        blake3: hasher.finalize(),
        size,
    };
    Ok((stored, tail))
}

/// Bytes compared at the start of a changed chunk and its candidate base.
const RESYNC_PREFIX: usize = 64;

/// The previous stream's chunk that a changed chunk replaces: the one at
/// `expected` if it starts with the same bytes, else a neighbour that does.
/// Content-defined cut points survive most edits, so a changed chunk
/// usually starts as its old version did; when an edit removed a cut point,
/// two old chunks became one and the count is off by one from there on,
/// which comparing starts corrects.
fn resync(
    encoder: &mut DeltaEncoder<'_>,
    bases: &[ChunkId],
    expected: usize,
    data: &[u8],
) -> Option<usize> {
    let prefix = &data[..data.len().min(RESYNC_PREFIX)];
    let candidates = [
        expected,
        expected + 1,
        expected + 2,
        expected.wrapping_sub(1),
    ];
    candidates
        .into_iter()
        .filter(|&at| at < bases.len())
        .find(|&at| {
            encoder
                .base_bytes(&bases[at])
                .is_some_and(|base| base.starts_with(prefix))
        })
        .or((expected < bases.len()).then_some(expected))
}

/// Writes a stream snapshot's file to `out`, every chunk verified before it
/// is written; the whole-file blake3 is checked at the end (a mismatch is an
/// error after the bytes went out: the exit code says so).
pub fn restore_to_writer(repo: &Repository, file: &FileEntry, out: &mut impl Write) -> Result<u64> {
    let mut reader = BlobReader::new(repo)?;
    let ids = reader.manifest(file)?;
    let mut hasher = blake3::Hasher::new();
    let mut size = 0u64;
    for id in &ids {
        let data = reader.read(id)?;
        hasher.update(&data);
        size += data.len() as u64;
        out.write_all(&data)
            .map_err(io_err("writing the restored stream"))?;
    }
    out.flush().map_err(io_err("writing the restored stream"))?;
    let hash = hasher.finalize();
    if size != file.size || hash.to_hex().as_str() != file.blake3 {
        return Err(Error::Verification(format!(
            "{} does not match what was backed up ({size} bytes, blake3 {hash}; expected {} \
             bytes, blake3 {})",
            file.name, file.size, file.blake3
        )));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names_and_command() {
        assert_eq!(
            default_dump_name("host=/tmp dbname=shop user=x"),
            "pg_dump-shop"
        );
        let cmd = pg_dump_command("pg_dump", "host=/tmp dbname=shop", &["--no-owner".into()]);
        assert_eq!(
            cmd,
            [
                "pg_dump",
                "--format=plain",
                "--dbname=host=/tmp dbname=shop",
                "--no-owner"
            ]
        );
    }
}
