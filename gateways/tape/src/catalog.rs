//! The catalog: an SQLite database of cartridges, jobs and where each part of a job is (which
//! cartridge, which tape file). It is a cache of what the tapes say: `scan` rebuilds it from the
//! cartridges' self-describing blocks.
//!
//! Writes are single statements or one transaction each, so a `kill -9` leaves every row either
//! written or not; a job still `running` when the gateway starts was interrupted and is marked so
//! ([`Catalog::mark_interrupted`]). Jobs and RPCs each open their own connection (WAL mode).

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Catalog failures.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {path}: {source}")]
    Sql {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("no job {0} in the catalog")]
    NoSuchJob(u64),
}

/// Job life cycle: `running` → `done` | `failed` | `cancelled`; `running` → `interrupted` when
/// the gateway died under it (found at the next open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Done,
    Failed,
    Cancelled,
    Interrupted,
    /// A cartridge holding one of its parts was recycled: it can no longer be restored.
    Expired,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
            JobState::Expired => "expired",
        }
    }

    fn parse(s: &str) -> JobState {
        match s {
            "running" => JobState::Running,
            "done" => JobState::Done,
            "cancelled" => JobState::Cancelled,
            "interrupted" => JobState::Interrupted,
            "expired" => JobState::Expired,
            _ => JobState::Failed,
        }
    }
}

/// One job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    pub id: u64,
    /// `backup` (a full backup) or `incremental` (the extents changed since `base_job`).
    pub kind: String,
    /// The job header's source, as JSON.
    pub source: serde_json::Value,
    pub state: JobState,
    pub total_blocks: u64,
    pub source_bytes: u64,
    pub bytes_written: u64,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub error: Option<String>,
    /// Incremental backups: the job they apply on top of (full or incremental).
    #[serde(default)]
    pub base_job: Option<u64>,
}

/// One part of a job on one cartridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRow {
    pub job: u64,
    pub part: u64,
    pub barcode: String,
    /// Tape file number of the part (file 0 is the label).
    pub file_number: u64,
    pub first_block: u64,
    pub blocks: u64,
    pub bytes: u64,
    /// The job continues in the next part.
    pub continued: bool,
}

/// One cartridge the gateway has labelled or scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartridgeRow {
    pub barcode: String,
    pub labelled_at: u64,
    /// Job parts on it.
    pub parts: u64,
    pub bytes: u64,
}

/// An open catalog.
#[derive(Debug)]
pub struct Catalog {
    conn: Connection,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cartridges (
    barcode TEXT PRIMARY KEY,
    labelled_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    state TEXT NOT NULL,
    total_blocks INTEGER NOT NULL,
    source_bytes INTEGER NOT NULL,
    bytes_written INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    error TEXT
);
CREATE TABLE IF NOT EXISTS parts (
    job INTEGER NOT NULL,
    part INTEGER NOT NULL,
    barcode TEXT NOT NULL,
    file_number INTEGER NOT NULL,
    first_block INTEGER NOT NULL,
    blocks INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    continued INTEGER NOT NULL,
    PRIMARY KEY (job, part)
);
";

impl Catalog {
    /// Opens or creates the catalog; jobs left `running` become `interrupted`.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let p = path.display().to_string();
        let err = |source| CatalogError::Sql {
            path: p.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // Catalogs from before incremental backups lack the base_job column.
        let has_base: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name = 'base_job'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(err)?
            > 0;
        if !has_base {
            conn.execute_batch("ALTER TABLE jobs ADD COLUMN base_job INTEGER")
                .map_err(err)?;
        }
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        Ok(Catalog { conn, path: p })
    }

    /// At gateway start: jobs still `running` were interrupted by the previous process's end.
    /// Returns how many.
    pub fn mark_interrupted(&self) -> Result<usize, CatalogError> {
        self.conn
            .execute(
                "UPDATE jobs SET state = 'interrupted', error = 'the gateway stopped during the job' \
                 WHERE state = 'running'",
                [],
            )
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: rusqlite::Error) -> CatalogError {
        CatalogError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    pub fn add_cartridge(&self, barcode: &str, labelled_at: u64) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO cartridges (barcode, labelled_at) VALUES (?1, ?2) \
                 ON CONFLICT(barcode) DO UPDATE SET labelled_at = excluded.labelled_at",
                params![barcode, labelled_at as i64],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Forgets a cartridge and the parts on it (relabelled or recycled).
    pub fn forget_cartridge(&self, barcode: &str) -> Result<(), CatalogError> {
        self.conn
            .execute_batch("BEGIN")
            .and_then(|_| {
                self.conn
                    .execute("DELETE FROM parts WHERE barcode = ?1", [barcode])
            })
            .and_then(|_| {
                self.conn
                    .execute("DELETE FROM cartridges WHERE barcode = ?1", [barcode])
            })
            .and_then(|_| self.conn.execute_batch("COMMIT"))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn cartridges(&self) -> Result<Vec<CartridgeRow>, CatalogError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT c.barcode, c.labelled_at, COUNT(p.job), COALESCE(SUM(p.bytes), 0) \
                 FROM cartridges c LEFT JOIN parts p ON p.barcode = c.barcode \
                 GROUP BY c.barcode ORDER BY c.barcode",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(CartridgeRow {
                    barcode: r.get(0)?,
                    labelled_at: r.get::<_, i64>(1)? as u64,
                    parts: r.get::<_, i64>(2)? as u64,
                    bytes: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn is_known_cartridge(&self, barcode: &str) -> Result<bool, CatalogError> {
        self.conn
            .query_row(
                "SELECT 1 FROM cartridges WHERE barcode = ?1",
                [barcode],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| self.err(e))
    }

    /// The id the next job gets.
    pub fn next_job_id(&self) -> Result<u64, CatalogError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM jobs", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|v| v as u64)
            .map_err(|e| self.err(e))
    }

    /// Records a job (insert, or replace a scanned copy of it).
    pub fn put_job(&self, j: &JobRow) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO jobs (id, kind, source, state, total_blocks, source_bytes, \
                 bytes_written, started_at, finished_at, error, base_job) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    j.id as i64,
                    j.kind,
                    j.source.to_string(),
                    j.state.as_str(),
                    j.total_blocks as i64,
                    j.source_bytes as i64,
                    j.bytes_written as i64,
                    j.started_at as i64,
                    j.finished_at.map(|v| v as i64),
                    j.error,
                    j.base_job.map(|v| v as i64),
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn finish_job(
        &self,
        id: u64,
        state: JobState,
        bytes_written: u64,
        finished_at: u64,
        error: Option<&str>,
    ) -> Result<(), CatalogError> {
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET state = ?2, bytes_written = ?3, finished_at = ?4, error = ?5 WHERE id = ?1",
                params![id as i64, state.as_str(), bytes_written as i64, finished_at as i64, error],
            )
            .map_err(|e| self.err(e))?;
        if n == 0 {
            return Err(CatalogError::NoSuchJob(id));
        }
        Ok(())
    }

    /// Records a part once its trailer and filemark are on tape.
    pub fn put_part(&self, p: &PartRow) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO parts (job, part, barcode, file_number, first_block, blocks, \
                 bytes, continued) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    p.job as i64,
                    p.part as i64,
                    p.barcode,
                    p.file_number as i64,
                    p.first_block as i64,
                    p.blocks as i64,
                    p.bytes as i64,
                    p.continued,
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The jobs with a part on `barcode`.
    pub fn jobs_on_cartridge(&self, barcode: &str) -> Result<Vec<JobRow>, CatalogError> {
        let sql = format!(
            "SELECT {} FROM jobs WHERE id IN (SELECT job FROM parts WHERE barcode = ?1) ORDER BY id",
            Self::JOB_COLUMNS
        );
        let mut st = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map([barcode], Self::job_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// The jobs retention still protects: running ones, those that finished after `before`
    /// (Unix seconds), and every job their incremental chains build on.
    pub fn needed_jobs(&self, before: u64) -> Result<HashSet<u64>, CatalogError> {
        let jobs = self.jobs()?;
        let by_id: std::collections::HashMap<u64, &JobRow> =
            jobs.iter().map(|j| (j.id, j)).collect();
        let mut needed = HashSet::new();
        for j in &jobs {
            let recent =
                j.state == JobState::Running || j.finished_at.unwrap_or(j.started_at) > before;
            let mut next = recent.then_some(j.id);
            while let Some(id) = next {
                if !needed.insert(id) {
                    break;
                }
                next = by_id.get(&id).and_then(|r| r.base_job);
            }
        }
        Ok(needed)
    }

    /// Marks a job expired (a part of it was erased).
    pub fn expire_job(&self, id: u64) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE jobs SET state = 'expired', error = 'a cartridge holding a part was recycled' \
                 WHERE id = ?1",
                [id as i64],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
        let source: String = r.get(2)?;
        let state: String = r.get(3)?;
        Ok(JobRow {
            id: r.get::<_, i64>(0)? as u64,
            kind: r.get(1)?,
            source: serde_json::from_str(&source).unwrap_or(serde_json::Value::String(source)),
            state: JobState::parse(&state),
            total_blocks: r.get::<_, i64>(4)? as u64,
            source_bytes: r.get::<_, i64>(5)? as u64,
            bytes_written: r.get::<_, i64>(6)? as u64,
            started_at: r.get::<_, i64>(7)? as u64,
            finished_at: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
            error: r.get(9)?,
            base_job: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        })
    }

    const JOB_COLUMNS: &'static str = "id, kind, source, state, total_blocks, source_bytes, \
                                       bytes_written, started_at, finished_at, error, base_job";

    pub fn jobs(&self) -> Result<Vec<JobRow>, CatalogError> {
        let sql = format!("SELECT {} FROM jobs ORDER BY id", Self::JOB_COLUMNS);
        let mut st = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], Self::job_from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn job(&self, id: u64) -> Result<JobRow, CatalogError> {
        let sql = format!("SELECT {} FROM jobs WHERE id = ?1", Self::JOB_COLUMNS);
        self.conn
            .query_row(&sql, [id as i64], Self::job_from_row)
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or(CatalogError::NoSuchJob(id))
    }

    /// The parts of a job in part order.
    pub fn parts(&self, job: u64) -> Result<Vec<PartRow>, CatalogError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT job, part, barcode, file_number, first_block, blocks, bytes, continued \
                 FROM parts WHERE job = ?1 ORDER BY part",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([job as i64], |r| {
                Ok(PartRow {
                    job: r.get::<_, i64>(0)? as u64,
                    part: r.get::<_, i64>(1)? as u64,
                    barcode: r.get(2)?,
                    file_number: r.get::<_, i64>(3)? as u64,
                    first_block: r.get::<_, i64>(4)? as u64,
                    blocks: r.get::<_, i64>(5)? as u64,
                    bytes: r.get::<_, i64>(6)? as u64,
                    continued: r.get(7)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, state: JobState) -> JobRow {
        JobRow {
            id,
            kind: "backup".into(),
            source: serde_json::json!({"nsid": 1}),
            state,
            total_blocks: 10,
            source_bytes: 10 << 20,
            bytes_written: 0,
            started_at: 100,
            finished_at: None,
            error: None,
            base_job: None,
        }
    }

    #[test]
    fn jobs_parts_and_cartridges_round_trip() {
        let d = tempfile::tempdir().expect("tmp");
        let c = Catalog::open(&d.path().join("cat.db")).expect("open");
        assert_eq!(c.next_job_id().expect("id"), 1);
        c.add_cartridge("A1", 5).expect("cart");
        c.add_cartridge("A2", 6).expect("cart");
        c.put_job(&job(1, JobState::Running)).expect("job");
        let p1 = PartRow {
            job: 1,
            part: 1,
            barcode: "A1".into(),
            file_number: 1,
            first_block: 0,
            blocks: 6,
            bytes: 6 << 20,
            continued: true,
        };
        let p2 = PartRow {
            part: 2,
            barcode: "A2".into(),
            first_block: 6,
            blocks: 4,
            continued: false,
            ..p1.clone()
        };
        c.put_part(&p2).expect("part");
        c.put_part(&p1).expect("part");
        c.finish_job(1, JobState::Done, 10 << 20, 200, None)
            .expect("finish");
        assert_eq!(c.parts(1).expect("parts"), vec![p1, p2]);
        let j = c.job(1).expect("job");
        assert_eq!(
            (j.state, j.finished_at, j.bytes_written),
            (JobState::Done, Some(200), 10 << 20)
        );
        assert_eq!(c.next_job_id().expect("id"), 2);
        let carts = c.cartridges().expect("carts");
        assert_eq!(carts.len(), 2);
        assert_eq!((carts[0].parts, carts[0].bytes), (1, 6 << 20));
        assert!(matches!(c.job(9), Err(CatalogError::NoSuchJob(9))));
        assert!(matches!(
            c.finish_job(9, JobState::Done, 0, 0, None),
            Err(CatalogError::NoSuchJob(9))
        ));
        c.forget_cartridge("A1").expect("forget");
        assert_eq!(c.parts(1).expect("parts").len(), 1);
        assert!(!c.is_known_cartridge("A1").expect("known"));
    }

    #[test]
    fn retention_keeps_recent_jobs_and_the_chains_they_build_on() {
        let d = tempfile::tempdir().expect("tmp");
        let c = Catalog::open(&d.path().join("cat.db")).expect("open");
        // 1 <- 2 <- 3 (incrementals), 4 alone; 3 is recent, the others old; 5 runs.
        for (id, base, finished) in [
            (1, None, 10),
            (2, Some(1), 20),
            (3, Some(2), 500),
            (4, None, 30),
        ] {
            let mut j = job(id, JobState::Done);
            j.base_job = base;
            j.finished_at = Some(finished);
            c.put_job(&j).expect("job");
        }
        c.put_job(&job(5, JobState::Running)).expect("job");
        let n = c.needed_jobs(100).expect("needed");
        assert_eq!(n, HashSet::from([1, 2, 3, 5]));
        assert_eq!(c.needed_jobs(1000).expect("needed"), HashSet::from([5]));
    }

    #[test]
    fn a_running_job_is_interrupted_after_reopen() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("cat.db");
        {
            let c = Catalog::open(&p).expect("open");
            c.put_job(&job(3, JobState::Running)).expect("job");
            c.put_job(&job(4, JobState::Done)).expect("job");
        }
        let c = Catalog::open(&p).expect("reopen");
        assert_eq!(
            c.job(3).expect("3").state,
            JobState::Running,
            "open alone changes nothing"
        );
        assert_eq!(c.mark_interrupted().expect("mark"), 1);
        assert_eq!(c.job(3).expect("3").state, JobState::Interrupted);
        assert_eq!(c.job(4).expect("4").state, JobState::Done);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_with_its_path() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("cat.db");
        std::fs::write(&p, vec![0x55u8; 4096]).expect("write");
        let e = Catalog::open(&p).expect_err("not sqlite");
        assert!(e.to_string().contains("cat.db"), "{e}");
    }
}
