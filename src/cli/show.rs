//! What the CLI prints: one function per report, text and JSON, so that
//! `--json` and `--quiet` are decided once in [`super::run`].

use std::collections::HashSet;
use std::io::{self, Write};

use serde_json::json;

use crate::commands::forget::SourcePlan;
use crate::commands::gc::GcReport;
use crate::commands::pg_backup::describe;
use crate::commands::pitr::{ArchiveView, describe_timeline};
use crate::id::SnapshotId;
use crate::repo::snapshot::Snapshot;
use crate::time::show;

pub fn snapshot_json(id: &str, s: &Snapshot) -> serde_json::Value {
    json!({
        "id": id,
        "short_id": &id[..8],
        "time": s.time.to_string(),
        "source": s.source,
        "sources": s.sources(),
        "label": s.label,
        "name": s.name,
        "hostname": s.hostname,
        "logical_size": s.logical_size(),
        "bytes_added": s.stats.bytes_added,
        "file_count": s.files.len(),
        "files": match &s.postgres {
            // A data directory has a thousand files: `restore` lists them.
            Some(_) => serde_json::Value::Null,
            None => s.files.iter().map(|f| json!({
                "name": f.name,
                "source_path": f.source_path,
                "size": f.size,
                "blake3": f.blake3,
                "page_size": f.page_size,
                "journal_mode": f.journal_mode,
            })).collect(),
        },
        "postgres": s.postgres.as_ref().map(|p| json!({
            "system_identifier": p.system_identifier.to_string(),
            "pgdata": p.pgdata,
            "timeline": p.timeline,
            "start_lsn": p.start_lsn,
            "stop_lsn": p.stop_lsn,
            "start_time": p.start_time,
            "stop_time": p.stop_time,
            "start_wal": p.start_wal,
            "stop_wal": p.stop_wal,
        })),
        "stats": s.stats,
    })
}

pub fn print_snapshots(
    w: &mut impl Write,
    list: &[(SnapshotId, Snapshot)],
    protected: &HashSet<SnapshotId>,
) -> io::Result<()> {
    if list.is_empty() {
        return writeln!(w, "no snapshots");
    }
    writeln!(
        w,
        "{:<8}  {:<20}  {:<10}  {:>10}  {:>10}  SOURCE",
        "ID", "TIME (UTC)", "LABEL", "SIZE", "ADDED"
    )?;
    for (id, s) in list {
        writeln!(
            w,
            "{:<8}  {:<20}  {:<10}  {:>10}  {:>10}  {}",
            id.short(),
            show(s.time),
            s.label.as_deref().unwrap_or("-"),
            human_bytes(s.logical_size()),
            human_bytes(s.stats.bytes_added),
            match &s.postgres {
                Some(pg) => format!("postgres {} ({})", pg.pgdata.display(), describe(pg)),
                None => s.sources().join(", "),
            } + if protected.contains(id) {
                " [protected]"
            } else {
                ""
            }
        )?;
    }
    writeln!(w, "{} snapshot(s)", list.len())
}

pub fn print_forget(w: &mut impl Write, plans: &[SourcePlan], dry_run: bool) -> io::Result<()> {
    let verb = if dry_run { "would forget" } else { "forgot" };
    for plan in plans {
        writeln!(
            w,
            "{}: keep {}, {verb} {}",
            plan.source,
            plan.keep.len(),
            plan.forget.len()
        )?;
        for k in &plan.keep {
            let reasons: Vec<String> = k.reasons.iter().map(|r| r.to_string()).collect();
            writeln!(
                w,
                "  keep    {}  {}  ({})",
                k.id.short(),
                show(k.time),
                reasons.join(", ")
            )?;
        }
        for f in &plan.forget {
            writeln!(w, "  forget  {}  {}", f.id.short(), show(f.time))?;
        }
    }
    if plans.iter().any(|p| !p.forget.is_empty()) && !dry_run {
        writeln!(w, "run `rewindb gc` to reclaim the space they used")?;
    }
    Ok(())
}

pub fn print_gc(w: &mut impl Write, r: &GcReport) -> io::Result<()> {
    let (delete, rewrite, reclaimed) = if r.dry_run {
        ("would delete", "would rewrite", "would reclaim")
    } else {
        ("deleted", "rewrote", "reclaimed")
    };
    writeln!(
        w,
        "{} snapshot(s), {} live chunks; {} packs: {delete} {}, {rewrite} {}",
        r.snapshots, r.live_chunks, r.packs_before, r.packs_deleted, r.packs_rewritten
    )?;
    writeln!(
        w,
        "pack data: {} -> {}{}",
        human_bytes(r.pack_bytes_before),
        human_bytes(r.pack_bytes_after),
        if r.dry_run { " (estimated)" } else { "" }
    )?;
    if r.wal_files_removed > 0 {
        writeln!(
            w,
            "WAL: {} file(s) no retained base backup needs, {}",
            r.wal_files_removed,
            human_bytes(r.wal_bytes_removed)
        )?;
    }
    if let Some((before, after)) = r.index_compacted {
        writeln!(
            w,
            "index compacted: {} -> {}",
            human_bytes(before),
            human_bytes(after)
        )?;
    }
    for note in &r.notes {
        writeln!(w, "note: {note}")?;
    }
    writeln!(
        w,
        "{reclaimed} {} in {:.2}s",
        human_bytes(r.reclaimed_bytes),
        r.duration_secs
    )
}

/// `run`'s report: one line per source on `w`; failures on `errors`
/// (stderr), also with `--quiet`: that is what cron mails.
pub fn print_run(
    w: &mut impl Write,
    errors: &mut impl Write,
    r: &crate::commands::run::RunReport,
    quiet: bool,
) -> io::Result<()> {
    use crate::commands::run::GcRun;
    for s in &r.sources {
        match (&s.error, &s.snapshot) {
            (Some(e), _) => {
                // Failures are printed even with --quiet: that is what cron mails.
                writeln!(errors, "rewindb: {}: FAILED: {e}", s.name)?;
            }
            (None, Some(id)) if !quiet => writeln!(
                w,
                "{}: snapshot {}, {} read, {} added, {:.2}s{}",
                s.name,
                id.short(),
                human_bytes(s.bytes_read),
                human_bytes(s.bytes_added),
                s.duration_secs,
                if s.kept + s.forgotten > 0 {
                    format!("; kept {}, forgot {}", s.kept, s.forgotten)
                } else {
                    String::new()
                }
            )?,
            _ => {}
        }
    }
    match &r.gc {
        GcRun::Failed { error } => writeln!(errors, "rewindb: gc: FAILED: {error}")?,
        GcRun::Ran { report } if !quiet => writeln!(
            w,
            "gc: reclaimed {} in {:.2}s",
            human_bytes(report.reclaimed_bytes),
            report.duration_secs
        )?,
        GcRun::NotDue { next, .. } if !quiet => writeln!(
            w,
            "gc: not due until {}",
            next.strftime("%Y-%m-%d %H:%M:%S UTC")
        )?,
        _ => {}
    }
    Ok(())
}

pub fn print_status(
    w: &mut impl Write,
    r: &crate::commands::status::StatusReport,
) -> io::Result<()> {
    use crate::commands::status::human_age;
    writeln!(
        w,
        "repository {} ({}): {} snapshot(s), {}",
        r.repository.display(),
        if r.encrypted {
            "encrypted"
        } else {
            "unencrypted"
        },
        r.snapshots,
        human_bytes(r.repository_bytes)
    )?;
    for s in &r.sources {
        let who = match &s.name {
            Some(name) => format!("{name} ({})", s.source),
            None => s.source.clone(),
        };
        let (Some(newest), Some(time), Some(age)) = (s.newest, s.newest_time, s.age_secs) else {
            writeln!(
                w,
                "{}{who}: never backed up",
                if s.stale { "STALE " } else { "" }
            )?;
            continue;
        };
        writeln!(
            w,
            "{}{who}: newest {} at {} ({} ago), {} snapshot(s){}",
            if s.stale { "STALE " } else { "" },
            newest.short(),
            show(time),
            human_age(age),
            s.snapshots,
            match &s.pitr_windows[..] {
                [] => String::new(),
                [win] => format!(", PITR window {} to {}", show(win.from), show(win.to)),
                _ => format!(", PITR windows on {} timelines:", s.pitr_windows.len()),
            }
        )?;
        if s.pitr_windows.len() > 1 {
            for win in &s.pitr_windows {
                writeln!(
                    w,
                    "  timeline {}: {} to {}",
                    win.timeline,
                    show(win.from),
                    show(win.to)
                )?;
            }
        }
    }
    for cluster in r.timelines.iter().filter(|c| c.timelines.len() > 1) {
        writeln!(w, "timelines of cluster {}:", cluster.system_identifier)?;
        for t in &cluster.timelines {
            writeln!(w, "  {}", describe_timeline(t))?;
        }
    }
    if r.damaged_snapshots > 0 {
        writeln!(
            w,
            "{} snapshot file(s) unreadable: run `rewindb check`",
            r.damaged_snapshots
        )?;
    }
    for note in &r.notes {
        writeln!(w, "note: {note}")?;
    }
    Ok(())
}

/// Each cluster's PITR windows (one per timeline), its timelines when
/// there is more than one, and notes (a second history, a backup that
/// cannot be restored).
pub fn print_archive(w: &mut impl Write, view: &ArchiveView) -> io::Result<()> {
    for win in &view.windows {
        writeln!(
            w,
            "PITR window of cluster {} on timeline {}: {} to {} (WAL up to {})",
            win.system_identifier,
            win.timeline,
            show(win.from),
            show(win.to),
            win.last_wal
        )?;
    }
    for cluster in view.clusters.iter().filter(|c| c.timelines.len() > 1) {
        writeln!(w, "timelines of cluster {}:", cluster.system_identifier)?;
        for t in &cluster.timelines {
            writeln!(w, "  {}", describe_timeline(t))?;
        }
    }
    for note in &view.notes {
        writeln!(w, "note: {note}")?;
    }
    Ok(())
}

/// The snapshots as a JSON array; a base backup carries its cluster's PITR
/// windows (one per timeline) and its own.
pub fn snapshots_json(
    list: &[(SnapshotId, Snapshot)],
    protected: &HashSet<SnapshotId>,
    view: &ArchiveView,
) -> serde_json::Value {
    list.iter()
        .map(|(id, s)| {
            let mut v = snapshot_json(&id.to_hex(), s);
            v["protected"] = json!(protected.contains(id));
            if let Some(pg) = &s.postgres {
                v["pitr_window"] = json!(view.window_of(pg));
                let windows: Vec<_> = view
                    .windows
                    .iter()
                    .filter(|w| w.system_identifier == pg.system_identifier)
                    .collect();
                v["pitr_windows"] = json!(windows);
                v["timelines"] = json!(
                    view.clusters
                        .iter()
                        .find(|c| c.system_identifier == pg.system_identifier)
                );
            }
            v
        })
        .collect()
}

/// 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
