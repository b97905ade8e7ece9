//! `forget`: remove snapshots by a retention policy (per source) or by id.
//!
//! Only snapshot files go; the chunks that no other snapshot references stay
//! in the packs until `gc`. A protected snapshot (`protect`) and the newest
//! snapshot of each source are never removed by a policy; forgetting a
//! protected snapshot by id is refused.

use std::collections::{BTreeMap, HashSet};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;
use crate::retention::{self, Candidate, Policy, Reason};
use crate::selection::is_of_source;

#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    pub policy: Policy,
    /// Snapshots named by id (or unique prefix) instead of a policy.
    pub ids: Vec<String>,
    /// Apply the policy only to snapshots of this source.
    pub source: Option<String>,
    /// Apply the policy only to this group (a [`Snapshot::source_key`]).
    pub group: Option<String>,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Kept {
    pub id: SnapshotId,
    pub time: Timestamp,
    pub reasons: Vec<Reason>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Forgotten {
    pub id: SnapshotId,
    pub time: Timestamp,
}

/// What happens (or, with `--dry-run`, would happen) to one source's snapshots.
#[derive(Clone, Debug, Serialize)]
pub struct SourcePlan {
    pub source: String,
    pub keep: Vec<Kept>,
    pub forget: Vec<Forgotten>,
}

impl ForgetOptions {
    /// Checked before the repository is opened (and so before any lock wait).
    pub fn validate(&self) -> Result<()> {
        if self.ids.is_empty() && self.policy.is_empty() {
            return Err(Error::Usage(
                "give a policy (--keep-last, --keep-hourly, --keep-daily, --keep-weekly, \
                 --keep-monthly, --keep-yearly, --keep-within, --keep-label) or snapshot ids"
                    .into(),
            ));
        }
        if !self.ids.is_empty() && (!self.policy.is_empty() || self.source.is_some()) {
            return Err(Error::Usage(
                "give either snapshot ids or a policy (--keep-*, --source), not both".into(),
            ));
        }
        Ok(())
    }
}

/// Plans and (unless `dry_run`) removes snapshots. Needs the exclusive lock
/// unless `dry_run`. Sources come out in a stable order (by name).
/// `protect` / `unprotect`: marks (or unmarks) the snapshots `specs` name
/// (ids or unique prefixes) so that no policy removes them. Every spec is
/// resolved before anything changes. Returns the snapshots changed.
pub fn protect(repo: &Repository, specs: &[String], on: bool) -> Result<Vec<SnapshotId>> {
    let list = repo.snapshots()?;
    let ids: Vec<SnapshotId> = specs
        .iter()
        .map(|spec| list.find(spec).map(|(id, _)| *id))
        .collect::<Result<_, _>>()?;
    for id in &ids {
        repo.set_protected(id, on)?;
    }
    Ok(ids)
}

pub fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<Vec<SourcePlan>> {
    opts.validate()?;
    let list = repo.snapshots()?;
    let protected = repo.protected()?;
    let plans = if opts.ids.is_empty() {
        by_policy(&list.ok, &protected, opts)?
    } else {
        by_id(&list, &protected, &opts.ids)?
    };
    if !opts.dry_run {
        for plan in &plans {
            for f in &plan.forget {
                repo.remove_snapshot(&f.id)?;
                tracing::info!("forgot snapshot {} of {}", f.id.short(), plan.source);
            }
        }
    }
    Ok(plans)
}

fn by_policy(
    snaps: &[(SnapshotId, Snapshot)],
    protected: &HashSet<SnapshotId>,
    opts: &ForgetOptions,
) -> Result<Vec<SourcePlan>> {
    let mut groups: BTreeMap<String, Vec<&(SnapshotId, Snapshot)>> = BTreeMap::new();
    for entry in snaps {
        if opts
            .source
            .as_deref()
            .is_none_or(|src| is_of_source(&entry.1, src))
            && opts
                .group
                .as_deref()
                .is_none_or(|g| entry.1.source_key() == g)
        {
            groups.entry(entry.1.source_key()).or_default().push(entry);
        }
    }
    if groups.is_empty()
        && let Some(src) = &opts.source
    {
        return Err(Error::Usage(format!(
            "no snapshot of {src:?} in the repository; list them with `rewindb snapshots`"
        )));
    }
    let mut plans = Vec::new();
    for (source, group) in groups {
        let candidates: Vec<Candidate> = group
            .iter()
            .map(|(id, s)| Candidate {
                time: s.time,
                protected: protected.contains(id),
                label: s.label.clone(),
            })
            .collect();
        let decisions = retention::apply(&opts.policy, &candidates, &TimeZone::UTC);
        let mut plan = SourcePlan {
            source,
            keep: Vec::new(),
            forget: Vec::new(),
        };
        for ((id, s), reasons) in group.iter().map(|e| (&e.0, &e.1)).zip(decisions) {
            if reasons.is_empty() {
                plan.forget.push(Forgotten {
                    id: *id,
                    time: s.time,
                });
            } else {
                plan.keep.push(Kept {
                    id: *id,
                    time: s.time,
                    reasons,
                });
            }
        }
        plans.push(plan);
    }
    Ok(plans)
}

fn by_id(
    list: &crate::repo::SnapshotList,
    protected: &HashSet<SnapshotId>,
    ids: &[String],
) -> Result<Vec<SourcePlan>> {
    let mut groups: BTreeMap<String, Vec<Forgotten>> = BTreeMap::new();
    let mut seen = HashSet::new();
    // Every id is resolved before anything is removed.
    for spec in ids {
        let (id, snap) = list.find(spec)?;
        if protected.contains(id) {
            return Err(Error::Usage(format!(
                "snapshot {} is protected; run `rewindb unprotect {}` first",
                id.short(),
                id.short()
            )));
        }
        if seen.insert(*id) {
            groups
                .entry(snap.source_key())
                .or_default()
                .push(Forgotten {
                    id: *id,
                    time: snap.time,
                });
        }
    }
    Ok(groups
        .into_iter()
        .map(|(source, forget)| SourcePlan {
            source,
            keep: Vec::new(),
            forget,
        })
        .collect())
}
