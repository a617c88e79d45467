//! The job store in an embedded SQLite database (`fooocus-jobs.sqlite3` in the output folder):
//! one row per job (the request that plans it again, its state, its error) and one per image
//! (named, then written). WAL journal with `synchronous = FULL`: a change is on disk when its
//! call returns, so neither a killed process nor a power cut loses an accepted job.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use super::events::{JobId, JobImage, JobState};
use super::store::{JobStore, StoreFault, StoredJob};
use crate::pipeline::meta::request_of_plan;
use crate::pipeline::plan::Plan;

/// The database's file name in the output folder.
pub const DATABASE_FILE: &str = "fooocus-jobs.sqlite3";

/// The schema's version (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id       INTEGER PRIMARY KEY,
    request  TEXT NOT NULL,
    state    TEXT NOT NULL,
    error    TEXT
);
CREATE TABLE IF NOT EXISTS images (
    job_id   INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx      INTEGER NOT NULL,
    seed     INTEGER NOT NULL,
    path     TEXT NOT NULL,
    written  INTEGER NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS skipped (
    job_id   INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx      INTEGER NOT NULL,
    PRIMARY KEY (job_id, idx)
);
";

/// A `jobs` row: id, request (JSON), state, error.
type JobRow = (i64, String, String, Option<String>);

/// Jobs in a SQLite file.
pub struct SqliteStore {
    db: Connection,
    path: PathBuf,
}

fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Stopped => "stopped",
        JobState::Failed => "failed",
    }
}

fn state_of(name: &str) -> Option<JobState> {
    Some(match name {
        "queued" => JobState::Queued,
        "running" => JobState::Running,
        "done" => JobState::Done,
        "stopped" => JobState::Stopped,
        "failed" => JobState::Failed,
        _ => return None,
    })
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreFault> {
        let fault = |e: rusqlite::Error| {
            StoreFault(format!(
                "the job database {} cannot be opened ({e}): move it away to start with an \
                 empty queue",
                path.display()
            ))
        };
        let db = Connection::open(path).map_err(fault)?;
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fault)?;
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(fault)?;
        db.pragma_update(None, "synchronous", "FULL")
            .map_err(fault)?;
        db.pragma_update(None, "foreign_keys", "ON")
            .map_err(fault)?;
        let version: i64 = db
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(fault)?;
        if version > SCHEMA_VERSION {
            return Err(StoreFault(format!(
                "the job database {} was written by a newer fooocus-rs (schema {version}): \
                 update fooocus-rs, or move the file away",
                path.display()
            )));
        }
        db.execute_batch(SCHEMA).map_err(fault)?;
        db.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(fault)?;
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    fn fault(&self, doing: &str, e: impl std::fmt::Display) -> StoreFault {
        StoreFault(format!(
            "cannot {doing} in the job database {}: {e}",
            self.path.display()
        ))
    }

    fn execute(
        &self,
        doing: &str,
        sql: &str,
        values: impl rusqlite::Params,
    ) -> Result<(), StoreFault> {
        self.db
            .execute(sql, values)
            .map(|_| ())
            .map_err(|e| self.fault(doing, e))
    }

    fn image_row(&self, id: JobId, image: &JobImage, written: bool) -> Result<(), StoreFault> {
        self.execute(
            "record an image",
            "INSERT INTO images (job_id, idx, seed, path, written) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (job_id, idx) DO UPDATE SET seed = ?3, path = ?4, written = ?5",
            params![
                id as i64,
                image.index as i64,
                image.seed as i64,
                image.path,
                written
            ],
        )
    }

    /// Forgets finished jobs beyond the newest `keep`.
    fn forget_old(&self, keep: usize) -> Result<(), StoreFault> {
        self.execute(
            "forget old jobs",
            "DELETE FROM jobs WHERE state IN ('done', 'stopped', 'failed') AND id NOT IN
             (SELECT id FROM jobs WHERE state IN ('done', 'stopped', 'failed')
              ORDER BY id DESC LIMIT ?1)",
            params![keep as i64],
        )
    }

    fn read_jobs(&self) -> rusqlite::Result<Vec<JobRow>> {
        let mut query = self
            .db
            .prepare("SELECT id, request, state, error FROM jobs ORDER BY id")?;
        let rows = query.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect()
    }

    fn read_images(&self, id: i64) -> rusqlite::Result<Vec<(JobImage, bool)>> {
        let mut query = self.db.prepare_cached(
            "SELECT idx, seed, path, written FROM images WHERE job_id = ?1 ORDER BY idx",
        )?;
        let rows = query.query_map([id], |r| {
            let image = JobImage {
                index: r.get::<_, i64>(0)? as usize,
                seed: r.get::<_, i64>(1)? as u64,
                path: r.get(2)?,
            };
            Ok((image, r.get(3)?))
        })?;
        rows.collect()
    }

    fn read_skipped(&self, id: i64) -> rusqlite::Result<Vec<usize>> {
        let mut query = self
            .db
            .prepare_cached("SELECT idx FROM skipped WHERE job_id = ?1 ORDER BY idx")?;
        let rows = query.query_map([id], |r| Ok(r.get::<_, i64>(0)? as usize))?;
        rows.collect()
    }

    /// One job row and its images as a [`StoredJob`]; a row this version cannot read is
    /// reported and left out.
    fn stored_job(
        &self,
        (id, request, state, error): JobRow,
    ) -> Result<Option<StoredJob>, StoreFault> {
        let (Ok(request), Some(state)) = (serde_json::from_str(&request), state_of(&state)) else {
            tracing::warn!(
                "job {id} in {} cannot be read: left out",
                self.path.display()
            );
            return Ok(None);
        };
        let images = self
            .read_images(id)
            .map_err(|e| self.fault("read a job's images", e))?;
        let skipped = self
            .read_skipped(id)
            .map_err(|e| self.fault("read a job's skipped images", e))?;
        let (written, pending): (Vec<_>, Vec<_>) = images.into_iter().partition(|(_, w)| *w);
        Ok(Some(StoredJob {
            id: id as JobId,
            request,
            state,
            images: written.into_iter().map(|(image, _)| image).collect(),
            pending: pending.into_iter().map(|(image, _)| image).collect(),
            skipped,
            error,
        }))
    }
}

impl JobStore for SqliteStore {
    fn accepted(&mut self, id: JobId, plan: &Plan) -> Result<(), StoreFault> {
        let request = serde_json::to_string(&request_of_plan(plan))
            .map_err(|e| self.fault("write a job", e))?;
        self.execute(
            "record a job",
            "INSERT INTO jobs (id, request, state) VALUES (?1, ?2, 'queued')",
            params![id as i64, request],
        )
    }

    fn started(&mut self, id: JobId) -> Result<(), StoreFault> {
        self.execute(
            "record a start",
            "UPDATE jobs SET state = 'running' WHERE id = ?1",
            params![id as i64],
        )
    }

    fn saving(&mut self, id: JobId, image: &JobImage) -> Result<(), StoreFault> {
        self.image_row(id, image, false)
    }

    fn saved(&mut self, id: JobId, image: &JobImage) -> Result<(), StoreFault> {
        self.image_row(id, image, true)
    }

    fn skipped(&mut self, id: JobId, index: usize) -> Result<(), StoreFault> {
        self.execute(
            "record a skip",
            "INSERT OR IGNORE INTO skipped (job_id, idx) VALUES (?1, ?2)",
            params![id as i64, index as i64],
        )
    }

    fn ended(&mut self, id: JobId, state: JobState, error: Option<&str>) -> Result<(), StoreFault> {
        self.execute(
            "record a job's end",
            "UPDATE jobs SET state = ?2, error = ?3 WHERE id = ?1",
            params![id as i64, state_name(state), error],
        )
    }

    fn restore(&mut self, keep: usize) -> Result<Vec<StoredJob>, StoreFault> {
        self.forget_old(keep)?;
        let rows = self
            .read_jobs()
            .map_err(|e| self.fault("read the jobs", e))?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            jobs.extend(self.stored_job(row)?);
        }
        Ok(jobs)
    }
    fn last_id(&self) -> Result<JobId, StoreFault> {
        let last: Option<i64> = self
            .db
            .query_row("SELECT MAX(id) FROM jobs", [], |r| r.get(0))
            .map_err(|e| self.fault("read the last job id", e))?;
        Ok(last.unwrap_or(0).max(0) as JobId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::request::GenerateRequest;

    fn image(index: usize, path: &str) -> JobImage {
        JobImage {
            index,
            seed: 40 + index as u64,
            path: path.into(),
        }
    }

    /// A job row as `accepted` writes it (without needing a plan's model files).
    fn accept(store: &SqliteStore, id: JobId, prompt: &str) {
        let request = GenerateRequest {
            prompt: prompt.into(),
            image_number: Some(3),
            ..Default::default()
        };
        store
            .execute(
                "record a job",
                "INSERT INTO jobs (id, request, state) VALUES (?1, ?2, 'queued')",
                params![id as i64, serde_json::to_string(&request).unwrap()],
            )
            .unwrap();
    }

    #[test]
    fn every_change_is_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        let mut store = SqliteStore::open(&path).unwrap();
        for id in 1..=3 {
            accept(&store, id, &format!("job {id}"));
        }
        store.started(1).unwrap();
        store.saving(1, &image(0, "d/a.png")).unwrap();
        store.saved(1, &image(0, "d/a.png")).unwrap();
        store.skipped(1, 1).unwrap();
        store.saving(1, &image(2, "d/c.png")).unwrap();
        store.ended(2, JobState::Failed, Some("no model")).unwrap();
        drop(store);

        let jobs = SqliteStore::open(&path).unwrap().restore(10).unwrap();
        let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(jobs[0].state, JobState::Running);
        assert_eq!(jobs[0].request.prompt, "job 1");
        assert_eq!(jobs[0].images, [image(0, "d/a.png")]);
        assert_eq!(jobs[0].pending, [image(2, "d/c.png")]);
        assert_eq!(jobs[0].skipped, [1]);
        assert_eq!(
            (jobs[1].state, jobs[1].error.as_deref()),
            (JobState::Failed, Some("no model"))
        );
        assert_eq!(jobs[2].state, JobState::Queued);
    }

    #[test]
    fn only_the_newest_finished_jobs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join(DATABASE_FILE)).unwrap();
        for id in 1..=6 {
            accept(&store, id, "x");
            if id != 2 {
                store.ended(id, JobState::Done, None).unwrap();
            }
        }
        let kept: Vec<JobId> = store.restore(2).unwrap().iter().map(|j| j.id).collect();
        // The unfinished job stays whatever its age; the newest id always survives.
        assert_eq!(kept, [2, 5, 6]);
        // A row this version cannot read still counts for the next id.
        store
            .execute(
                "add a row from the future",
                "INSERT INTO jobs (id, request, state) VALUES (9, '{', 'queued')",
                [],
            )
            .unwrap();
        assert_eq!(store.restore(2).unwrap().len(), 3);
        assert_eq!(store.last_id().unwrap(), 9);
    }

    #[test]
    fn a_file_that_is_no_database_or_from_a_newer_version_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let e = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("move it away"),
            "{e}"
        );

        std::fs::remove_file(&path).unwrap();
        drop(SqliteStore::open(&path).unwrap());
        let db = Connection::open(&path).unwrap();
        db.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(db);
        let e = SqliteStore::open(&path).err().unwrap().to_string();
        assert!(e.contains("newer fooocus-rs"), "{e}");
    }
}
