//! What the CLI prints after a command that changed or checked something:
//! backups, checks, stats and repairs, as text (`--json` prints the same
//! reports through serde).

use std::io::{self, Write};

use crate::commands::check::{CheckReport, short_ids};
use crate::commands::maintenance::{RepairReport, RepoStats};
use crate::commands::pg_backup::describe;
use crate::commands::pg_check::PgCheckReport;
use crate::id::SnapshotId;
use crate::repo::snapshot::Snapshot;

use super::show::{human_bytes, print_archive};

/// One line for a saved snapshot, by kind.
pub fn print_backup(w: &mut impl Write, id: SnapshotId, snap: &Snapshot) -> io::Result<()> {
    let s = snap.stats;
    if let Some(pg) = &snap.postgres {
        return writeln!(
            w,
            "base backup {} saved: {} files, {} read, {} of {} chunks new ({} as deltas), {} \
             added to the repository, {}, WAL {} to {} archived, {:.2}s",
            id.short(),
            snap.files.len(),
            human_bytes(s.bytes_read),
            s.chunks_new,
            s.chunks,
            s.chunks_delta,
            human_bytes(s.bytes_added),
            describe(pg),
            pg.start_wal,
            pg.stop_wal,
            s.duration_secs
        );
    }
    if let Some(stream) = &snap.stream {
        return writeln!(
            w,
            "snapshot {} saved: {} ({}), {} of {} chunks new ({} as deltas), {} added to the \
             repository, {:.2}s",
            id.short(),
            stream.name,
            human_bytes(s.bytes_read),
            s.chunks_new,
            s.chunks,
            s.chunks_delta,
            human_bytes(s.bytes_added),
            s.duration_secs
        );
    }
    writeln!(
        w,
        "snapshot {} saved: {} database{}, {} read, {} of {} chunks new ({} as deltas; {} \
         before compression), {} added to the repository, {:.2}s",
        id.short(),
        snap.files.len(),
        if snap.files.len() == 1 { "" } else { "s" },
        human_bytes(s.bytes_read),
        s.chunks_new,
        s.chunks,
        s.chunks_delta,
        human_bytes(s.bytes_new),
        human_bytes(s.bytes_added),
        s.duration_secs
    )
}

/// `check postgres`: one line per item; with `quiet`, only the problems.
pub fn print_pg_check(w: &mut impl Write, report: &PgCheckReport, quiet: bool) -> io::Result<()> {
    for item in report.items.iter().filter(|i| !quiet || !i.ok) {
        let mark = if item.ok { "ok     " } else { "PROBLEM" };
        writeln!(w, "{mark}  {:<16} {}", item.what, item.detail)?;
    }
    Ok(())
}

/// `check`: what was looked at, the archive's timelines, and each problem
/// with the snapshots it affects.
pub fn print_check(w: &mut impl Write, report: &CheckReport, read_data: bool) -> io::Result<()> {
    writeln!(
        w,
        "checked {} snapshots, {} packs, {} live chunks ({} referenced by snapshots, the rest \
         delta bases they need), {} WAL files{}",
        report.snapshots,
        report.packs,
        report.chunks_live,
        report.chunks_referenced,
        report.wal_files,
        if read_data {
            format!(
                ", {} chunks read ({})",
                report.chunks_read,
                human_bytes(report.bytes_read)
            )
        } else {
            String::new()
        }
    )?;
    if report.orphan_packs > 0 {
        writeln!(
            w,
            "{} pack(s) are not in the index (left by an interrupted run; harmless)",
            report.orphan_packs
        )?;
    }
    print_archive(w, &report.archive)?;
    for p in &report.problems {
        writeln!(w, "problem: {}", p.what)?;
        if !p.affected_snapshots.is_empty() {
            writeln!(
                w,
                "  affects snapshots: {}",
                short_ids(&p.affected_snapshots)
            )?;
        }
    }
    Ok(())
}

pub fn print_stats(w: &mut impl Write, s: &RepoStats) -> io::Result<()> {
    writeln!(
        w,
        "repository:     {}\nencryption:     {}\nsnapshots:      {}\npacks:          {} (sealed at {})\nchunks:         {}\nstored size:    {}\n\
         unique data:    {} (uncompressed)\nlogical size:   {}\ndedup ratio:    {:.2}x \
         (logical / stored)",
        s.repository,
        s.encryption,
        s.snapshots,
        s.packs,
        human_bytes(s.pack_target_bytes),
        s.chunks,
        human_bytes(s.stored_bytes),
        human_bytes(s.unique_bytes),
        human_bytes(s.logical_bytes),
        s.dedup_ratio
    )
}

pub fn print_repair(w: &mut impl Write, report: &RepairReport) -> io::Result<()> {
    writeln!(
        w,
        "index rebuilt: {} packs, {} chunks",
        report.packs_indexed, report.chunks_indexed
    )?;
    if report.deltas_dropped > 0 {
        writeln!(
            w,
            "{} delta chunk(s) left out: their base is in no readable pack; the next backup \
             stores those pages again",
            report.deltas_dropped
        )?;
    }
    Ok(())
}
