//! A real PostgreSQL for the import scenario: Debian's `postgresql`
//! package, a cluster made in the scenario's scratch folder and started on
//! a free port on 127.0.0.1, stopped when dropped. PostgreSQL refuses to
//! run as root: as root (CI), it runs as the `postgres` user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::harness::free_port;

pub struct Postgres {
    child: Child,
    pub port: u16,
}

/// The folder of the newest installed PostgreSQL's programs.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (Debian's `postgresql`; .ci/cosmosdb-server/run-test installs it)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL server under /usr/lib/postgresql/*/bin")
}

fn as_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// `program args`, as the `postgres` user when this process is root.
fn command(program: &Path, args: &[&str]) -> Command {
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

impl Postgres {
    pub fn start(scratch: &Path) -> Self {
        let bin = bin_dir();
        let dir = scratch.join("postgres");
        std::fs::create_dir_all(&dir).unwrap();
        if as_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
            assert!(status.success(), "chown the PostgreSQL folder");
            // The scratch folder must be passable for the postgres user.
            let _ = Command::new("chmod").args(["755"]).arg(scratch).status();
        }
        let data = dir.join("data");
        let out = command(&bin.join("initdb"), &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres"])
            .stdout(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let log = std::fs::File::create(scratch.join("postgres.log")).unwrap();
        let child = command(
            &bin.join("postgres"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-p",
                &port.to_string(),
                "-k",
                dir.to_str().unwrap(),
                "-h",
                "127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("postgres runs");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, port }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable", self.port)
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return client;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "PostgreSQL does not take connections: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: a fast shutdown (the postgres user owns the process, so
        // `kill` from root reaches it).
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Altinn Events' tables as its migrations leave them (`src/Events/
/// Migration`, v0.00 to v0.59, in version order: `events.events` as
/// v0.21 made it with the columns of v0.57-v0.59, `events.subscription` as
/// v0.03 made it with v0.23's hash, v0.30's resource filter and v0.52's
/// subunits), without Altinn's roles, grants, cron jobs and trigram index.
pub const ALTINN_SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS events;
CREATE TABLE events.events (
    sequenceno     bigserial,
    cloudevent     jsonb NOT NULL,
    registeredtime timestamptz DEFAULT (now() AT TIME ZONE 'utc'),
    CONSTRAINT events_pkey PRIMARY KEY (sequenceno)
);
CREATE UNIQUE INDEX idx_events_id_source ON events.events ((cloudevent -> 'id'), (cloudevent -> 'source'));
CREATE INDEX idx_events_computed_time ON events.events (registeredtime);
CREATE INDEX idx_events_cloudevent_id ON events.events ((cloudevent ->> 'id'));
CREATE INDEX idx_events_cloudevent_subject ON events.events ((cloudevent ->> 'subject'));
CREATE INDEX idx_events_cloudevent_resource_sequenceno ON events.events ((cloudevent ->> 'resource'), sequenceno);
CREATE TABLE events.subscription (
    id               bigserial,
    sourcefilter     varchar,
    subjectfilter    varchar,
    typefilter       varchar,
    consumer         varchar NOT NULL,
    endpointurl      varchar NOT NULL,
    createdby        varchar NOT NULL,
    validated        boolean NOT NULL,
    "time"           timestamptz NOT NULL,
    sourcefilterhash varchar(32),
    resourcefilter   varchar,
    includesubunits  boolean DEFAULT false,
    CONSTRAINT eventssubscription_pkey PRIMARY KEY (id)
);
CREATE INDEX idx_subscription_resourcefilter ON events.subscription (resourcefilter);
ALTER TABLE events.events ADD COLUMN idempotencykey uuid;
CREATE UNIQUE INDEX events_idempotencykey_idx ON events.events (idempotencykey) WHERE idempotencykey IS NOT NULL;
CREATE TABLE events.event_status (id smallint PRIMARY KEY, name text NOT NULL UNIQUE);
INSERT INTO events.event_status VALUES (1, 'Registered'), (2, 'Processed'), (3, 'RetryExhausted');
ALTER TABLE events.events
    ADD COLUMN status smallint REFERENCES events.event_status(id),
    ADD COLUMN retrycount int DEFAULT 0,
    ADD COLUMN retryreason text,
    ADD COLUMN lastretried timestamptz;
"#;
