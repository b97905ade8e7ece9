//! The server's jobs: backups, checks and restores started through the API.
//! They run one at a time, in order, on a thread of their own (each opens the
//! repository with the lock its command takes, so a `run` from cron and the
//! server exclude each other as two `run`s do); the API answers at once with
//! the job, and `GET /jobs/{id}` follows it.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use crate::progress::Counters;

/// How many finished jobs the server remembers.
const KEEP_FINISHED: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Backup,
    Check,
    Restore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Succeeded,
    Failed,
}

/// What a job produced.
pub struct Outcome {
    /// The new snapshot (a backup).
    pub snapshot: Option<String>,
    /// The command's JSON report.
    pub result: Value,
}

/// A job's work, run on the jobs thread. `Err` carries a message and,
/// when the work got that far, its report (a check's problems).
pub type Work = Box<dyn FnOnce() -> Result<Outcome, (String, Option<Value>)> + Send>;

struct Job {
    id: u64,
    kind: Kind,
    source: Option<String>,
    who: String,
    state: State,
    queued: Timestamp,
    started: Option<Timestamp>,
    finished: Option<Timestamp>,
    progress: Arc<Counters>,
    snapshot: Option<String>,
    result: Option<Value>,
    error: Option<String>,
}

/// A job as the API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct JobView {
    pub id: u64,
    pub kind: Kind,
    pub source: Option<String>,
    pub who: String,
    pub state: State,
    pub queued: Timestamp,
    pub started: Option<Timestamp>,
    pub finished: Option<Timestamp>,
    pub progress: Progress,
    pub snapshot: Option<String>,
    pub result: Option<Value>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

impl Job {
    fn view(&self) -> JobView {
        let done = self.progress.done.load(Ordering::Relaxed);
        JobView {
            id: self.id,
            kind: self.kind,
            source: self.source.clone(),
            who: self.who.clone(),
            state: self.state,
            queued: self.queued,
            started: self.started,
            finished: self.finished,
            // A database that grew while it was read: more done than
            // its size said at the start.
            progress: Progress {
                done,
                total: self.progress.total.load(Ordering::Relaxed).max(done),
            },
            snapshot: self.snapshot.clone(),
            result: self.result.clone(),
            error: self.error.clone(),
        }
    }

    fn active(&self) -> bool {
        matches!(self.state, State::Queued | State::Running)
    }
}

/// Called with each job as it finishes (metrics, alerts, the audit log).
pub type OnFinish = Box<dyn Fn(&JobView) + Send + Sync>;

pub struct Jobs {
    list: Arc<Mutex<Vec<Job>>>,
    queue: Mutex<Sender<(u64, Work)>>,
}

impl Jobs {
    /// Starts the jobs thread.
    pub fn start(on_finish: OnFinish) -> Jobs {
        let list: Arc<Mutex<Vec<Job>>> = Arc::default();
        let (tx, rx) = channel::<(u64, Work)>();
        let shared = list.clone();
        std::thread::Builder::new()
            .name("rewindb-jobs".into())
            .spawn(move || {
                for (id, work) in rx {
                    let progress = {
                        let mut jobs = shared.lock().unwrap_or_else(|e| e.into_inner());
                        let Some(job) = jobs.iter_mut().find(|j| j.id == id) else {
                            continue;
                        };
                        job.state = State::Running;
                        job.started = Some(Timestamp::now());
                        job.progress.clone()
                    };
                    crate::progress::track(Some(progress));
                    // A panic is a failed job, not a dead jobs thread.
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                        .unwrap_or_else(|_| {
                            Err(("the job panicked; see the server's log".into(), None))
                        });
                    crate::progress::track(None);
                    let view = {
                        let mut jobs = shared.lock().unwrap_or_else(|e| e.into_inner());
                        let Some(job) = jobs.iter_mut().find(|j| j.id == id) else {
                            continue;
                        };
                        job.finished = Some(Timestamp::now());
                        match outcome {
                            Ok(o) => {
                                job.state = State::Succeeded;
                                job.snapshot = o.snapshot;
                                job.result = Some(o.result);
                            }
                            Err((message, report)) => {
                                job.state = State::Failed;
                                job.error = Some(message);
                                job.result = report;
                            }
                        }
                        job.view()
                    };
                    on_finish(&view);
                }
            })
            .expect("the jobs thread starts");
        Jobs {
            list,
            queue: Mutex::new(tx),
        }
    }

    /// Queues `work`, unless `busy` finds an active job in its way (whose
    /// id is returned instead).
    pub fn submit(
        &self,
        kind: Kind,
        source: Option<String>,
        who: &str,
        busy: impl Fn(&JobView) -> bool,
        work: Work,
    ) -> Result<JobView, u64> {
        let mut jobs = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = jobs.iter().find(|j| j.active() && busy(&j.view())) {
            return Err(j.id);
        }
        let id = jobs.last().map_or(1, |j| j.id + 1);
        let job = Job {
            id,
            kind,
            source,
            who: who.to_string(),
            state: State::Queued,
            queued: Timestamp::now(),
            started: None,
            finished: None,
            progress: Arc::default(),
            snapshot: None,
            result: None,
            error: None,
        };
        let view = job.view();
        jobs.push(job);
        let finished = jobs.iter().filter(|j| !j.active()).count();
        if finished > KEEP_FINISHED {
            let mut drop = finished - KEEP_FINISHED;
            jobs.retain(|j| {
                let old = !j.active() && drop > 0;
                drop -= usize::from(old);
                !old
            });
        }
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((id, work))
            .expect("the jobs thread runs");
        Ok(view)
    }

    pub fn get(&self, id: u64) -> Option<JobView> {
        let jobs = self.list.lock().unwrap_or_else(|e| e.into_inner());
        jobs.iter().find(|j| j.id == id).map(Job::view)
    }

    /// Every job remembered, newest first.
    pub fn all(&self) -> Vec<JobView> {
        let jobs = self.list.lock().unwrap_or_else(|e| e.into_inner());
        jobs.iter().rev().map(Job::view).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wait(jobs: &Jobs, id: u64) -> JobView {
        for _ in 0..500 {
            let v = jobs.get(id).unwrap();
            if !matches!(v.state, State::Queued | State::Running) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("job {id} did not finish");
    }

    #[test]
    fn one_job_per_source_at_a_time_and_outcomes_are_kept() {
        let finished = Arc::new(Mutex::new(Vec::new()));
        let seen = finished.clone();
        let jobs = Jobs::start(Box::new(move |v| seen.lock().unwrap().push(v.id)));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let same = |v: &JobView| v.source.as_deref() == Some("app");
        let first = jobs
            .submit(
                Kind::Backup,
                Some("app".into()),
                "t",
                same,
                Box::new(move || {
                    gate.recv().unwrap();
                    Ok(Outcome {
                        snapshot: Some("abc".into()),
                        result: Value::Null,
                    })
                }),
            )
            .unwrap();
        // The same source again: refused with the running job's id.
        let busy = jobs.submit(
            Kind::Backup,
            Some("app".into()),
            "t",
            same,
            Box::new(|| unreachable!()),
        );
        assert_eq!(busy.unwrap_err(), first.id);
        let failing = jobs
            .submit(
                Kind::Check,
                None,
                "t",
                |_| false,
                Box::new(|| Err(("broken".into(), None))),
            )
            .unwrap();
        release.send(()).unwrap();
        let done = wait(&jobs, first.id);
        assert_eq!(
            (done.state, done.snapshot.as_deref()),
            (State::Succeeded, Some("abc"))
        );
        let failed = wait(&jobs, failing.id);
        assert_eq!(
            (failed.state, failed.error.as_deref()),
            (State::Failed, Some("broken"))
        );
        assert_eq!(*finished.lock().unwrap(), vec![first.id, failing.id]);
        assert_eq!(jobs.all()[0].id, failing.id);
    }
}
