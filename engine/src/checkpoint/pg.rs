//! Checkpoints in a table beside the PostgreSQL log (`[log] postgres`):
//! `S.checkpoints (seq bigint primary key, bytes bytea, written_at
//! timestamptz)` in the log's schema `S`, created by the first save (reading
//! creates nothing); a save and its trimming are one transaction. A session per call: checkpoints are written minutes apart.

use anyhow::Context;
use recman_events::log::pg_store::PgPlace;
use tokio_postgres::{Client, NoTls};

use super::{BoxFuture, CheckpointStore};

/// The checkpoints of the PostgreSQL log at `place`.
#[derive(Clone, Debug)]
pub struct PgCheckpoints {
    place: PgPlace,
}

impl PgCheckpoints {
    pub fn new(place: PgPlace) -> PgCheckpoints {
        PgCheckpoints { place }
    }

    fn table(&self) -> String {
        // The schema name is checked by `PgPlace::new` (a plain identifier).
        format!("{}.checkpoints", self.place.schema)
    }

    async fn connect(&self) -> anyhow::Result<Client> {
        let mut config: tokio_postgres::Config = self
            .place
            .url
            .parse()
            .context("the PostgreSQL connection string does not parse")?;
        if let Some(pw) = &self.place.password {
            config.password(pw.as_bytes());
        }
        config.connect_timeout(std::time::Duration::from_secs(10));
        let (client, conn) = config
            .connect(NoTls)
            .await
            .with_context(|| format!("connecting to {} for checkpoints", self.place.display()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .batch_execute("SET synchronous_commit = on; SET statement_timeout = '300s'")
            .await
            .with_context(|| format!("setting up a session with {}", self.place.display()))?;
        Ok(client)
    }

    /// Creates the schema and table (a save; reading creates nothing).
    async fn create(&self, c: &Client) -> anyhow::Result<()> {
        c.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {t} (seq bigint PRIMARY KEY, bytes bytea NOT NULL,
                 written_at timestamptz NOT NULL DEFAULT now())",
            s = self.place.schema,
            t = self.table()
        ))
        .await
        .with_context(|| format!("creating {} in {}", self.table(), self.place.display()))
    }

    /// Whether the table exists (none: no checkpoint was ever saved).
    async fn exists(&self, c: &Client) -> anyhow::Result<bool> {
        let row = c
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&self.table()])
            .await
            .context("looking for the checkpoints table")?;
        Ok(row.get(0))
    }
}

fn seq_param(seq: u64) -> anyhow::Result<i64> {
    i64::try_from(seq).context("sequence number out of range")
}

impl CheckpointStore for PgCheckpoints {
    fn save(&self, seq: u64, bytes: Vec<u8>, keep: usize) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let mut c = self.connect().await?;
            self.create(&c).await?;
            let tx = c.transaction().await?;
            let s = seq_param(seq)?;
            tx.execute(
                &format!(
                    "INSERT INTO {} (seq, bytes) VALUES ($1, $2)
                     ON CONFLICT (seq) DO UPDATE SET bytes = EXCLUDED.bytes, written_at = now()",
                    self.table()
                ),
                &[&s, &bytes],
            )
            .await
            .with_context(|| format!("saving checkpoint {seq} in {}", self.table()))?;
            let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
            tx.execute(
                &format!(
                    "DELETE FROM {t} WHERE seq NOT IN (SELECT seq FROM {t} ORDER BY seq DESC LIMIT $1)",
                    t = self.table()
                ),
                &[&keep],
            )
            .await
            .context("removing old checkpoints")?;
            tx.commit().await.context("committing a checkpoint")?;
            Ok(())
        })
    }

    fn list(&self) -> BoxFuture<'_, anyhow::Result<Vec<u64>>> {
        Box::pin(async move {
            let c = self.connect().await?;
            if !self.exists(&c).await? {
                return Ok(Vec::new());
            }
            let rows = c
                .query(&format!("SELECT seq FROM {} ORDER BY seq", self.table()), &[])
                .await
                .context("listing checkpoints")?;
            Ok(rows.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
        })
    }

    fn load(&self, seq: u64) -> BoxFuture<'_, anyhow::Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            let c = self.connect().await?;
            if !self.exists(&c).await? {
                return Ok(None);
            }
            let row = c
                .query_opt(
                    &format!("SELECT bytes FROM {} WHERE seq = $1", self.table()),
                    &[&seq_param(seq)?],
                )
                .await
                .with_context(|| format!("reading checkpoint {seq}"))?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    fn place(&self) -> String {
        format!("{} (table {})", self.place.display(), self.table())
    }
}
